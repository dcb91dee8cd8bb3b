"""A fresh machine: deploy/system-packages.sh (what `make install` runs first) and
`facestream doctor`, each run as the user runs them, as subprocesses.

The install script's refusals are checked without changing the machine: a list file naming a
package that does not exist, a PATH without apt-get, and an unprivileged user without sudo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "system-packages.sh"
FACESTREAM = Path(sys.executable).with_name("facestream")
ABSENT_PACKAGE = "facestream-no-such-package"
PART_KEYS = {"name", "status", "runtime", "detail", "fix"}


def _run(
    argv: list[str], env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=65534", "--clear-groups", *argv]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, check=False, timeout=120, cwd=ROOT
    )


def _list_file(tmp_path: Path, packages: list[str]) -> Path:
    path = tmp_path / "packages.txt"
    path.write_text("[runtime]\n" + "\n".join(packages) + "\n", encoding="utf-8")
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    return path


def test_every_group_lists_packages_and_an_unknown_group_is_refused() -> None:
    for group in ("runtime", "build", "test", "image", "gpu-image"):
        listed = _run(["bash", str(SCRIPT), "--list", group])
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split(), group
    unknown = _run(["bash", str(SCRIPT), "--list", "runtim"])
    assert unknown.returncode == 2
    assert "no group [runtim]" in unknown.stderr
    assert _run(["bash", str(SCRIPT)]).returncode == 2  # no group named: usage


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian/Ubuntu machine")
def test_check_names_exactly_the_missing_packages(tmp_path: Path) -> None:
    present = "bash"  # essential on every Debian machine
    env = {**os.environ, "FACESTREAM_SYSTEM_PACKAGES": str(_list_file(tmp_path, [present]))}
    assert _run(["bash", str(SCRIPT), "--check", "runtime"], env).returncode == 0
    env["FACESTREAM_SYSTEM_PACKAGES"] = str(_list_file(tmp_path, [present, ABSENT_PACKAGE]))
    checked = _run(["bash", str(SCRIPT), "--check", "runtime"], env)
    assert checked.returncode == 1
    assert checked.stderr.strip() == f"system-packages: missing: {ABSENT_PACKAGE}"


def test_a_machine_without_apt_gets_the_missing_names(tmp_path: Path) -> None:
    # a PATH with only what the script itself needs: no dpkg-query, no apt-get
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "tr", "grep", "id", "dirname"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    env = {
        "PATH": str(bin_dir),
        "FACESTREAM_SYSTEM_PACKAGES": str(_list_file(tmp_path, ["redis-server", "gcc"])),
    }
    result = _run([str(bin_dir / "bash"), str(SCRIPT), "runtime"], env)
    assert result.returncode == 1
    assert "no apt-get" in result.stderr
    assert "redis-server gcc" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("dpkg-query") is None,
    reason="needs root (to become an unprivileged user) and dpkg",
)
def test_an_unprivileged_user_without_sudo_gets_the_command_and_nothing_installed() -> None:
    # pytest's tmp_path is private to root: the unprivileged user reads from a public folder
    with tempfile.TemporaryDirectory() as folder:
        public = Path(folder)
        env = {
            "PATH": os.environ["PATH"],
            "FACESTREAM_SYSTEM_PACKAGES": str(_list_file(public, ["bash", ABSENT_PACKAGE])),
        }
        shutil.copy(SCRIPT, public / "system-packages.sh")
        (public / "system-packages.sh").chmod(0o755)
        result = _run(["bash", str(public / "system-packages.sh"), "runtime"], env, user="nobody")
    assert result.returncode == 1, result.stderr
    assert (
        f"sudo apt-get update && sudo apt-get install -y --no-install-recommends {ABSENT_PACKAGE}"
        in result.stderr
    )


def _doctor(
    tmp_path: Path, config_text: str, env: dict[str, str] | None = None
) -> dict[str, object]:
    config = tmp_path / "facestream.toml"
    config.write_text(config_text, encoding="utf-8")
    result = _run([str(FACESTREAM), "doctor", "--config", str(config), "--json"], env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(report, dict)
    assert result.returncode == (0 if report["ok"] else 1), result.stderr
    return report


def _parts(report: dict[str, object]) -> dict[str, dict[str, object]]:
    parts = report["parts"]
    assert isinstance(parts, list)
    for part in parts:
        assert set(part) == PART_KEYS
        assert part["status"] in ("ok", "missing", "wrong_version", "unavailable")
    return {str(part["name"]): part for part in parts}


def test_doctor_reports_every_part_and_this_machine_runs_the_service(tmp_path: Path) -> None:
    # the model store of the checkout, which `make install` built
    report = _doctor(tmp_path, f'data_dir = "{ROOT / "data"}"\n')
    parts = _parts(report)
    for name in ("python", "redis-server", "gstreamer", "gstreamer:elements", "onnxruntime"):
        assert parts[name]["runtime"] is True
    for name in ("cuda", "tensorrt", "chromium", "gstreamer:rtsp-server"):
        assert parts[name]["runtime"] is False
    runtime_failures = {
        name: part["detail"]
        for name, part in parts.items()
        if part["runtime"] and part["status"] in ("missing", "wrong_version")
    }
    assert runtime_failures == {}
    assert report["ok"] is True


def test_doctor_names_what_is_missing_and_fails(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH without redis-server
    bin_dir.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "FACESTREAM_REDIS_SERVER"} | {
        "PATH": str(bin_dir)
    }
    config = (
        f'data_dir = "{tmp_path / "empty-store"}"\n'
        "[[capture.cameras]]\n"
        'id = "door"\n'
        'url = "rtsp://127.0.0.1:9/stream"\n'  # the discard port: nothing listens there
    )
    parts = _parts(report := _doctor(tmp_path, config, env))
    assert report["ok"] is False
    assert parts["redis-server"]["status"] == "missing"
    assert "make install" in str(parts["redis-server"]["fix"])
    assert parts["model-store"]["status"] == "missing"
    assert parts["model-store"]["fix"] == "facestream engines build"
    assert parts["camera:door"]["status"] == "unavailable"
    assert "does not answer" in str(parts["camera:door"]["detail"])
