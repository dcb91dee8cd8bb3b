"""Config validation and the `facestream` command's behaviour on bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engines.errors import ConfigError
from engines.models.encoder import EngineSettings
from pipeline.cli.main import app
from pipeline.config.service import load_config
from pipeline.errors import ConfigFileError

runner = CliRunner()


def test_defaults_need_no_file() -> None:
    """With no file the embedded defaults apply: ONNX Runtime on the CPU, fp32."""
    config = load_config(None)
    assert config.engine.backend == "onnxruntime"
    assert config.engine.settings().device == "cpu"


def test_typo_names_the_key(tmp_path: Path) -> None:
    """An unknown key is an error naming the key, never silently ignored."""
    path = tmp_path / "facestream.toml"
    path.write_text("[engine]\nbackend = 'onnxruntime'\nthread = 2\n")
    with pytest.raises(ConfigFileError, match=r"engine\.thread: Extra inputs are not permitted"):
        load_config(path)


def test_out_of_range_and_unknown_backend(tmp_path: Path) -> None:
    """Bounds and the backend list are checked; the message names the field."""
    path = tmp_path / "facestream.toml"
    path.write_text("[engine]\nbackend = 'openvino'\nmin_batch = 0\n")
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert "engine.backend" in str(caught.value)
    assert "engine.min_batch" in str(caught.value)


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    """A file that is not TOML fails with the file name."""
    path = tmp_path / "broken.toml"
    path.write_text("[engine\n")
    with pytest.raises(ConfigFileError, match=r"broken\.toml: not valid TOML"):
        load_config(path)


def test_engine_settings_reject_unknown_backend() -> None:
    """The engines layer lists the valid backends when given an unknown one."""
    with pytest.raises(ConfigError, match="valid: onnxruntime, tensorrt, torch, auto"):
        EngineSettings(backend="openvino")


def test_check_config_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """`facestream check-config` on a bad file prints one error line and exits non-zero."""
    path = tmp_path / "facestream.toml"
    path.write_text("[engin]\n")
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "engin" in result.output


def test_check_config_accepts_valid_file(tmp_path: Path) -> None:
    """A valid file is echoed back as JSON with defaults filled in."""
    path = tmp_path / "facestream.toml"
    path.write_text(f"data_dir = '{tmp_path}'\n[engine]\nthreads = 2\n")
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["engine"]["threads"] == 2


def test_engines_list_json(tmp_path: Path) -> None:
    """`facestream engines build` then `list --json` shows the encoder, the default detector
    and the anti-spoof CNN (liveness is on by default), each with its model id."""
    path = tmp_path / "facestream.toml"
    path.write_text(f"data_dir = '{tmp_path / 'data'}'\n")
    built = runner.invoke(app, ["engines", "build", "--config", str(path)])
    assert built.exit_code == 0, built.output
    assert "engine ready: onnxruntime-cpu" in built.output
    listed = runner.invoke(app, ["engines", "list", "--config", str(path), "--json"])
    entries = json.loads(listed.output.strip().splitlines()[-1])
    model_ids = sorted(entry["model_id"] for entry in entries)
    assert len(model_ids) == 3
    assert model_ids[0].startswith("blazeface_full")
    assert model_ids[1].startswith("dlib_resnet_v1-")
    assert model_ids[2].startswith("minifasnet_ensemble-")


def test_backend_alias_and_bad_precision_on_command_line(tmp_path: Path) -> None:
    """`--backend ort` is ONNX Runtime; `--precision fp8` is one error line naming the field."""
    path = tmp_path / "facestream.toml"
    path.write_text(f"data_dir = '{tmp_path / 'data'}'\n")
    built = runner.invoke(app, ["engines", "build", "--config", str(path), "--backend", "ort"])
    assert built.exit_code == 0, built.output
    assert "engine ready: onnxruntime-cpu" in built.output
    bad = runner.invoke(app, ["engines", "build", "--config", str(path), "--precision", "fp8"])
    assert bad.exit_code == 2
    assert "engine.precision" not in bad.output
    assert "precision" in bad.output
    assert bad.output.count("\n") == 1


def test_auto_backend_resolves_to_onnxruntime_on_cpu() -> None:
    """`auto` on a CPU machine becomes onnxruntime, keeping every other setting."""
    from engines.models.encoder import resolve_backend  # noqa: PLC0415

    resolved = resolve_backend(EngineSettings(backend="auto", threads=3, max_batch=32))
    assert (resolved.backend, resolved.threads, resolved.max_batch) == ("onnxruntime", 3, 32)


def test_doors_are_validated(tmp_path: Path) -> None:
    """[[doors]] sections load with defaults; a repeated id or K > N is an error naming it."""
    path = tmp_path / "facestream.toml"
    path.write_text("[[doors]]\nid = 'front'\ncameras = ['cam1']\nrequired_matches = 2\n")
    (door,) = load_config(path).doors
    assert (door.id, door.required_matches, door.window_encodings) == ("front", 2, 5)
    path.write_text("[[doors]]\nid = 'a'\ncameras = ['c']\n[[doors]]\nid = 'a'\ncameras = ['d']\n")
    with pytest.raises(ConfigFileError, match="door ids must be unique; repeated: a"):
        load_config(path)
    path.write_text("[[doors]]\nid = 'a'\ncameras = ['c']\nrequired_matches = 9\n")
    with pytest.raises(ConfigFileError, match=r"doors\.0"):
        load_config(path)


def test_documented_example_config_is_valid() -> None:
    """docs/facestream.example.toml, which the README points to, stays a valid config."""
    example = Path(__file__).resolve().parents[1] / "docs" / "facestream.example.toml"
    config = load_config(example)
    assert [camera.id for camera in config.capture.cameras] == ["front-door", "lobby"]
    assert config.doors[0].cameras == ["front-door"]
    assert config.api.port == 8080


def test_short_api_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "facestream.toml"
    path.write_text("[api]\ntoken = 'short'\n")
    with pytest.raises(ConfigFileError, match=r"api\.token"):
        load_config(path)


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is what `facestream config reference` prints for today's models:
    regenerate it with that command after changing a config model."""
    reference = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    result = runner.invoke(app, ["config", "reference"])
    assert result.exit_code == 0
    assert reference.read_text(encoding="utf-8") == result.stdout
    for section in ("`[engine]`", "`[[capture.cameras]]`", "`[[doors]]`", "`[api]`", "`[mqtt]`"):
        assert section in result.stdout


def test_check_config_hides_the_secrets_it_prints(tmp_path: Path) -> None:
    """Passwords in URLs (Redis, camera, webhook, MQTT), credential query values and secret
    fields never reach check-config's output; the rest of each URL still does."""
    secrets = ["redis-pass-1", "hook-pass-2", "tok-3", "webhook-secret-4-0123456789",
               "mqtt-pass-5", "mqtt-pass-6", "cam-pass-7", "api-token-8-0123456789"]  # fmt: skip
    path = tmp_path / "facestream.toml"
    path.write_text(
        f"data_dir = '{tmp_path}'\n"
        "[gallery]\nredis_url = 'redis://:redis-pass-1@127.0.0.1:6379/0'\n"
        "[events]\n"
        "webhook_urls = ['https://hook:hook-pass-2@hooks.example/door?token=tok-3&door=front']\n"
        "webhook_secret = 'webhook-secret-4-0123456789'\n"
        "[mqtt]\nurl = 'mqtt://mq:mqtt-pass-5@broker:1883'\npassword = 'mqtt-pass-6'\n"
        "[api]\ntoken = 'api-token-8-0123456789'\n"
        "[[capture.cameras]]\nid = 'front-door'\nurl = 'rtsp://admin:cam-pass-7@10.0.0.5/live'\n"
    )
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    for secret in secrets:
        assert secret not in result.output
    printed = json.loads(result.stdout)
    assert printed["gallery"]["redis_url"] == "redis://:***@127.0.0.1:6379/0"
    assert printed["events"]["webhook_urls"] == [
        "https://hook:***@hooks.example/door?token=***&door=front"
    ]
    assert printed["capture"]["cameras"][0]["url"] == "rtsp://admin:***@10.0.0.5/live"
    assert printed["mqtt"]["url"] == "mqtt://mq:***@broker:1883"


def test_a_door_watching_an_unlisted_camera_is_a_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in a door's camera list loads (a camera may still be added over the API) but
    is logged naming the unknown id, the known ones and the likely intended one."""
    path = tmp_path / "facestream.toml"
    path.write_text(
        "[[capture.cameras]]\nid = 'front-door'\nurl = 'rtsp://10.0.0.5/live'\n"
        "[[capture.cameras]]\nid = 'lobby'\nurl = 'rtsp://10.0.0.6/live'\n"
        "[[doors]]\nid = 'front'\ncameras = ['front-dor', 'lobby']\n"
    )
    with caplog.at_level(logging.WARNING, logger="pipeline.config.service"):
        config = load_config(path)
    assert config.doors[0].cameras == ["front-dor", "lobby"]
    [warning] = [record.getMessage() for record in caplog.records]
    assert "door 'front' watches camera 'front-dor'" in warning
    assert "known: 'front-door', 'lobby'" in warning
    assert "did you mean 'front-door'?" in warning
    assert str(path) in warning


def test_a_door_opting_out_of_liveness_shows_in_check_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A door is secure by default (requires liveness, liveness on); one that says
    ``require_liveness = false`` loads, is logged as a warning naming the door, and
    check-config prints the opt-out."""
    path = tmp_path / "facestream.toml"
    path.write_text(
        "[[capture.cameras]]\nid = 'lobby'\nurl = 'rtsp://10.0.0.6/live'\n"
        "[[doors]]\nid = 'front'\ncameras = ['lobby']\n"
        "[[doors]]\nid = 'garage'\ncameras = ['lobby']\nrequire_liveness = false\n"
    )
    with caplog.at_level(logging.WARNING, logger="pipeline.config.service"):
        config = load_config(path)
    assert config.liveness.enabled is True
    assert [door.require_liveness for door in config.doors] == [True, False]
    [warning] = [record.getMessage() for record in caplog.records]
    assert "door 'garage' does not require liveness" in warning
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert [door["require_liveness"] for door in printed["doors"]] == [True, False]
    assert printed["liveness"]["enabled"] is True


def test_a_door_requiring_liveness_with_liveness_off_names_both_keys(tmp_path: Path) -> None:
    """A door requiring liveness (the default) while [liveness] is disabled is a config error
    naming the door's require_liveness and liveness.enabled."""
    path = tmp_path / "facestream.toml"
    path.write_text(
        "[liveness]\nenabled = false\n"
        "[[capture.cameras]]\nid = 'lobby'\nurl = 'rtsp://10.0.0.6/live'\n"
        "[[doors]]\nid = 'front'\ncameras = ['lobby']\n"
    )
    result = runner.invoke(app, ["check-config", str(path)])
    assert result.exit_code != 0
    assert "doors.0.require_liveness (front)" in result.output
    assert "liveness.enabled is false" in result.output


def test_the_old_process_section_is_read_as_recognition_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old.toml"
    old.write_text("[process]\ndetect_every_frames = 3\n[process.match]\nmax_distance = 0.55\n")
    with caplog.at_level(logging.WARNING):
        config = load_config(old)
    assert config.recognition.detect_every_frames == 3
    assert config.recognition.match.max_distance == 0.55
    assert any("[process] is now called [recognition]" in r.message for r in caplog.records)
    both = tmp_path / "both.toml"
    both.write_text("[process]\ndetect_every_frames = 3\n[recognition]\ndetect_every_frames = 2\n")
    with pytest.raises(ConfigError, match=r"\[recognition\] or its old name \[process\]"):
        load_config(both)
