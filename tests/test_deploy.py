"""deploy/ and the Dockerfile, checked as far as a machine without Docker allows: hadolint,
install steps in step with .ci/run and pyproject, configs that load, compose wiring, Kubernetes
schemas, promtool on the Prometheus config and alert rules (with unit tests per alert), every
metric the dashboard and alerts use really exported, and a real Prometheus scraping a running
service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ports import free_port

from pipeline.config.service import FaceStreamConfig, load_config
from pipeline.metrics import PipelineMetrics, StyleMetrics
from pipeline.service.service import FaceStreamService, run_service
from pipeline.style.config import StyleStreamConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "deploy-test-token-0123456789"
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _tool(name: str) -> str:
    # hadolint comes from a wheel: in the virtual environment's bin, maybe not on PATH
    path = shutil.which(name) or shutil.which(name, path=str(ROOT / ".venv" / "bin"))
    if path is None:
        pytest.skip(f"{name} is not installed (see .ci/run)")
    return path


def _dockerfile_stages() -> dict[str, str]:
    """Stage name -> the stage's text."""
    stages: dict[str, str] = {}
    current = None
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = ""
        if current is not None:
            stages[current] += line + "\n"
    return stages


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _package_groups() -> dict[str, list[str]]:
    """Group -> packages, as deploy/system-packages.sh --list reads them."""
    text = (DEPLOY / "system-packages.txt").read_text(encoding="utf-8")
    return {
        group: subprocess.run(
            ["bash", str(DEPLOY / "system-packages.sh"), "--list", group],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for group in re.findall(r"^\[([a-z-]+)\]", text, re.MULTILINE)
    }


def test_system_packages_come_from_one_list() -> None:
    """deploy/system-packages.txt is the only package list: .ci/run, the Makefile and every
    Dockerfile stage install through deploy/system-packages.sh and name no package."""
    groups = _package_groups()
    assert "redis-server" in groups["runtime"]  # the embedded Redis when no URL is configured
    assert any(p.startswith("gstreamer1.0-plugins") for p in groups["runtime"])
    assert {"chromium", "chromium-driver"} <= set(groups["test"])
    assert "libcairo2-dev" in groups["build"]  # PyGObject's build: the fresh-machine failure
    for path in (ROOT / ".ci" / "run", ROOT / "Makefile", DOCKERFILE):
        text = path.read_text(encoding="utf-8")
        assert "apt-get install" not in text, f"{path.name} installs packages of its own"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "system-packages.sh runtime build" in makefile
    assert "system-packages.sh test" in makefile
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in ("make install", "make lint", "make audit", "make test"):
        assert command in ci_run


def test_dockerfile_targets_install_what_the_package_list_and_pyproject_name() -> None:
    stages = _dockerfile_stages()
    assert {"cpu", "gpu"} <= set(stages)
    assert "system-packages.sh runtime image" in stages["cpu-runtime"]
    assert "system-packages.sh build" in stages["cpu-build"]
    assert "system-packages.sh runtime build gpu-image" in stages["gpu"]
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert "--no-deps" not in dockerfile  # a plain install carries every default model
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    for used in re.findall(r'install --no-cache-dir "\.\[([a-z,]+)\]"', dockerfile):
        assert set(used.split(",")) <= set(extras), used
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for source in copied.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert "USER 10001" in stages["cpu"]
    assert "USER 10001" in stages["gpu"]
    assert "HEALTHCHECK" in stages["cpu"]
    assert "/healthz" in stages["cpu"]
    assert "--token-required" in stages["cpu"]
    assert "TOKEN=" not in dockerfile  # no secret baked in


@pytest.mark.parametrize(
    "path",
    ["facestream.docker.toml", "facestream.gpu.toml", "facestream.compose.toml"],
)
def test_shipped_configs_are_valid(path: str) -> None:
    config = load_config(DEPLOY / path)
    assert str(config.data_dir) == "/data"


def test_compose_wires_every_part() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"facestream", "redis", "prometheus", "grafana", "rtsp"} <= set(services)
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly" in redis_command
    # no password-less user, and the password from a secret, never a command line argument
    assert "user default off" in redis_command
    assert "/run/secrets/redis_password" in redis_command
    assert "redis_password" in services["redis"]["secrets"]
    assert "redis_password" in services["facestream"]["secrets"]
    assert "REDIS_PASSWORD" in {secret.get("environment") for secret in compose["secrets"].values()}
    assert services["facestream"]["build"]["target"] == "cpu"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"compose mounts {source}, which is missing"
    referenced = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    documented = {
        line.split("=")[0]
        for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert referenced <= documented, referenced - documented
    camera_url = load_config(DEPLOY / "facestream.compose.toml").capture.cameras[0].url
    assert camera_url == "rtsp://rtsp:8554/sample"
    assert "/sample" in (DEPLOY / "rtsp" / "mediamtx.yml").read_text(encoding="utf-8")


def _k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            documents.append((path, document))
    return documents


def test_kubernetes_manifests_match_the_schemas() -> None:
    import kubernetes_validate  # noqa: PLC0415  (test-only dependency)

    version = kubernetes_validate.latest_version()
    documents = _k8s_documents()
    kinds = {document["kind"] for _, document in documents}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Secret"} <= kinds
    for _path, document in documents:
        kubernetes_validate.validate(document, version, strict=True)
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).exists(), resource
    # the validator is not a rubber stamp: a misspelt field fails
    broken = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"portz": []},
    }
    with pytest.raises(kubernetes_validate.ValidationError, match="portz"):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kubernetes_deployment_runs_the_shipped_config() -> None:
    documents = {
        document["kind"]: document
        for _, document in _k8s_documents()
        if document["metadata"]["name"] == "facestream-shard-0" or document["kind"] == "Secret"
    }
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--token-required" in container["args"]
    config_text = documents["ConfigMap"]["data"]["facestream.toml"]
    config = FaceStreamConfig.model_validate(tomllib.loads(config_text))
    assert config.gallery.redis_url is not None  # one Redis, shared by the shards
    assert config.gallery.redis_url.startswith("redis://facestream@")  # the ACL user
    assert not config.gallery.allow_insecure_redis
    password = next(v for v in container["env"] if v["name"] == "FACESTREAM_REDIS_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["key"] == "redis-password"


def test_only_facestream_reaches_redis_in_kubernetes() -> None:
    """The NetworkPolicy selects the Redis pods and lets in facestream's pods only; Redis
    itself turns its password-less user off."""
    documents = _k8s_documents()
    (policy,) = [document for _, document in documents if document["kind"] == "NetworkPolicy"]
    (redis_set,) = [
        document
        for _, document in documents
        if document["kind"] == "StatefulSet" and document["metadata"]["name"] == "redis"
    ]
    redis_labels = redis_set["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    facestream = next(document for _, document in documents if document["kind"] == "Deployment")
    facestream_labels = facestream["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= facestream_labels.items()
    assert not source["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    redis_command = " ".join(redis_set["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "user default off" in redis_command


def _exported_metric_names() -> set[str]:
    """What the service (PipelineMetrics) and the style stream (StyleMetrics) export."""
    families = [
        *PipelineMetrics.create().registry.collect(),
        *StyleMetrics.create().registry.collect(),
    ]
    names: set[str] = set()
    for family in families:
        names.add(family.name)
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in _HISTOGRAM_SUFFIXES)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def _promql_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bfacestream_[a-z_]+\b", text))


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exported = _exported_metric_names()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "facestream.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 10
    used = set().union(*(_promql_metric_names(expr) for expr in expressions))
    for needed in (
        "facestream_frames_dropped_total",
        "facestream_capture_to_decision_seconds_bucket",
        "facestream_match_distance_bucket",
        "facestream_decisions_total",
        "facestream_events_pending",
        "facestream_camera_up",
        "facestream_style_frames_in_total",
        "facestream_style_frames_dropped_total",
        "facestream_style_engine_errors_total",
        "facestream_style_target_fps",
    ):
        assert needed in used
    rules = (DEPLOY / "prometheus" / "alert-rules.yml").read_text(encoding="utf-8")
    used |= _promql_metric_names(rules)
    assert used <= exported, used - exported


def test_promtool_checks_config_rules_and_alert_unit_tests() -> None:
    promtool = _tool("promtool")
    prometheus_dir = DEPLOY / "prometheus"
    for arguments in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alert-rules.yml"],
        ["test", "rules", "alert-rules.test.yml"],
    ):
        result = subprocess.run(
            [promtool, *arguments], capture_output=True, text=True, cwd=prometheus_dir, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((prometheus_dir / "alert-rules.yml").read_text())
    tests = yaml.safe_load((prometheus_dir / "alert-rules.test.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert alerts == tested, alerts ^ tested


@pytest.fixture
def running_service(tmp_path: Path, serve_api: ServeApi) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with (
        run_service(FaceStreamConfig(data_dir=tmp_path / "data")) as service,
        serve_api(service, TOKEN) as base_url,
    ):
        yield base_url


def test_real_prometheus_scrapes_the_service(tmp_path: Path, running_service: str) -> None:
    binary = _tool("prometheus")
    target = running_service.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "facestream", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        result: list[dict[str, Any]] = []
        while not result and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                reply = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": 'facestream_engine_info{role="encoder"}'},
                )
            except httpx.TransportError:
                continue
            if reply.status_code == 200:
                result = reply.json()["data"]["result"]
        assert result, "Prometheus did not scrape facestream_engine_info within 60 s"
        assert result[0]["metric"]["backend"] == "onnxruntime-cpu"
        assert result[0]["metric"]["job"] == "facestream"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_kubernetes_workers_statefulset_shards_its_cameras() -> None:
    """The workers' StatefulSet: its pods take their shard from their ordinal, the shard count
    is its replica count, its config is valid, and its pods may reach Redis."""
    documents = _k8s_documents()
    (workers,) = [
        document
        for _, document in documents
        if document["kind"] == "StatefulSet" and document["metadata"]["name"] == "facestream-worker"
    ]
    (config_map,) = [
        document
        for _, document in documents
        if document["kind"] == "ConfigMap" and document["metadata"]["name"] == "facestream-workers"
    ]
    pod = workers["spec"]["template"]["spec"]
    container = pod["containers"][0]
    shards = next(v for v in container["env"] if v["name"] == "FACESTREAM_CAPTURE_SHARDS")
    assert int(shards["value"]) == workers["spec"]["replicas"] >= 1
    config = FaceStreamConfig.model_validate(tomllib.loads(config_map["data"]["facestream.toml"]))
    assert config.capture.shard == "ordinal"
    assert len(config.capture.cameras) >= workers["spec"]["replicas"]
    assert any(
        volume.get("configMap", {}).get("name") == "facestream-workers" for volume in pod["volumes"]
    )
    (policy,) = [document for _, document in documents if document["kind"] == "NetworkPolicy"]
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= workers["spec"]["template"]["metadata"]["labels"].items()
    services = [document for _, document in documents if document["kind"] == "Service"]
    assert any(
        service["metadata"]["name"] == workers["spec"]["serviceName"] for service in services
    )


def _stylize_config(arguments: list[str], password_file: Path) -> StyleStreamConfig:
    """The StyleStreamConfig that `facestream stylize ARGUMENTS` builds (its --options that are
    config fields), with the password file the environment would name."""
    assert arguments[0] == "stylize"
    fields = set(StyleStreamConfig.model_fields)
    values: dict[str, Any] = {"rtsp_password_file": password_file}
    options = arguments[1:]
    for name, value in zip(options[::2], options[1::2], strict=True):
        key = name.removeprefix("--").replace("-", "_")
        if key in fields:
            values[key] = value
    return StyleStreamConfig.model_validate(values)


def test_compose_runs_the_style_stream_behind_an_rtsp_login(tmp_path: Path) -> None:
    """The compose file's stylize service publishes RTSP on all interfaces with a login whose
    password is a compose secret read through FACESTREAM_STYLE_RTSP_PASSWORD_FILE (never an
    argument), keeps the login-less MJPEG port on the host's loopback, and is scraped by
    Prometheus on its metrics port; its arguments make a valid style stream config."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    stylize = compose["services"]["stylize"]
    password_file = stylize["environment"]["FACESTREAM_STYLE_RTSP_PASSWORD_FILE"]
    (secret,) = stylize["secrets"]
    assert password_file == f"/run/secrets/{secret}"
    assert compose["secrets"][secret]["environment"] == "STYLE_RTSP_PASSWORD"
    assert not any("password" in argument.lower() for argument in stylize["command"][1::2])
    config = _stylize_config(stylize["command"], tmp_path / "password")
    assert config.rtsp_host == "0.0.0.0"
    assert config.rtsp_username is not None
    assert not config.rtsp_anonymous
    assert config.source == "rtsp://rtsp:8554/sample"
    assert config.target_fps is not None
    mjpeg = next(port for port in stylize["ports"] if str(port).endswith(":8090"))
    assert mjpeg.startswith("127.0.0.1:")
    metrics_port = stylize["command"][stylize["command"].index("--metrics-port") + 1]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (style_job,) = [
        job for job in prometheus["scrape_configs"] if job["job_name"] == "facestream-style"
    ]
    assert style_job["static_configs"][0]["targets"] == [f"stylize:{metrics_port}"]
    assert metrics_port in " ".join(stylize["healthcheck"]["test"])


def test_kubernetes_style_deployment_reads_its_rtsp_password_from_the_secret(
    tmp_path: Path,
) -> None:
    """deploy/k8s/style.yaml: the Deployment's arguments make a valid style stream config with
    an RTSP login; the password file named by FACESTREAM_STYLE_RTSP_PASSWORD_FILE is the
    Secret's style-rtsp-password key, mounted read-only; the Service exposes the RTSP, MJPEG
    and metrics ports the container opens, and Prometheus's annotation names the metrics
    port; the style pods cannot reach Redis (they do not use it)."""
    documents = _k8s_documents()
    (deployment,) = [
        document
        for _, document in documents
        if document["kind"] == "Deployment" and document["metadata"]["name"] == "facestream-style"
    ]
    (service,) = [
        document
        for _, document in documents
        if document["kind"] == "Service" and document["metadata"]["name"] == "facestream-style"
    ]
    (secret,) = [document for _, document in documents if document["kind"] == "Secret"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = _stylize_config(container["args"], tmp_path / "password")
    assert config.rtsp_username is not None
    assert config.rtsp_host == "0.0.0.0"
    password_file = Path(
        next(
            v["value"]
            for v in container["env"]
            if v["name"] == "FACESTREAM_STYLE_RTSP_PASSWORD_FILE"
        )
    )
    mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == str(password_file.parent)
    )
    assert mount["readOnly"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (item,) = volume["secret"]["items"]
    assert item["path"] == password_file.name
    assert item["key"] in secret["stringData"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container_ports == {
        "rtsp": config.rtsp_port,
        "mjpeg": config.mjpeg_port,
        "metrics": int(container["args"][container["args"].index("--metrics-port") + 1]),
    }
    assert {port["targetPort"] for port in service["spec"]["ports"]} == set(container_ports)
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == container_ports["metrics"]
    (policy,) = [document for _, document in documents if document["kind"] == "NetworkPolicy"]
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert not allowed.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
