"""The deployment files in deploy/ pass the validators that work offline, and name real settings.

No Docker daemon or Kubernetes cluster here: the Dockerfile goes through hadolint, compose.yaml
through ``docker compose config`` (or Debian's ``docker-compose``), haproxy.cfg through ``haproxy
-c``, the manifests through ``kubernetes-validate`` (the API's JSON schemas, offline) and ``kubectl
kustomize``. A test skips only when its tool is absent (``make setup`` installs them all), and
every ``VOXGATE_*`` variable the files set must load into :class:`Settings` (a misspelt one is an
error there, ``extra="forbid"``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from voxgate.core.config import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "VOXGATE_ADMIN_TOKEN": "admin-secret",
    "VOXGATE_JWT_SECRET": "jwt-secret",
    "VOXGATE_SHARED_TOKEN": "shared-secret",
}


def tool(name: str) -> str:
    """The tool's path: on PATH, or beside this Python (pip-installed validators)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (make setup installs it)")
    return found


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return [tool("docker-compose")]


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [*compose_command(), "-f", str(DEPLOY / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )


def published_ports(service: dict[str, Any]) -> set[int]:
    """Host ports, whichever form ``config`` normalised them to ("H:C", "IP:H:C/tcp", a dict)."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["published"]))
        else:
            ports.add(int(str(port).split("/")[0].split(":")[-2]))
    return ports


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def loads_as_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("VOXGATE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("VOXGATE_"):
            monkeypatch.setenv(key, value)
    return Settings()


# --- Dockerfile -------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    result = run([tool("hadolint"), str(DEPLOY / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_bakes_the_models_and_runs_as_a_user_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "voxgate models --prepare" in text
    assert "COPY --from=models /opt/voxgate/models" in final_stage
    assert "\nUSER 10001" in final_stage
    assert "HEALTHCHECK" in final_stage and "/healthz" in final_stage
    assert "VOXGATE_MODEL_CACHE=/opt/voxgate/models" in final_stage


# --- compose ----------------------------------------------------------------------------------


def test_compose_config_is_valid_with_three_replicas_behind_haproxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = compose_config(**SECRETS)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert {"voxgate", "haproxy", "postgres", "redis", "llm", "engines"} <= set(services)
    gateway = services["voxgate"]
    assert gateway["deploy"]["replicas"] == 3
    assert 8080 in published_ports(services["haproxy"]) and "ports" not in gateway
    env = gateway["environment"]
    assert env["VOXGATE_DATABASE_URL"].startswith("postgresql://voxgate:pg-secret@postgres")
    assert env["VOXGATE_LLM__BASE_URL"] == "http://llm:8081/v1"
    for name in ("voxgate", "engines"):
        settings = loads_as_settings(services[name]["environment"], monkeypatch)
        assert settings.server.admin_token is not None
        assert settings.server.admin_token.get_secret_value() == "admin-secret"
    assert loads_as_settings(env, monkeypatch).llm.provider == "openai"


def test_compose_refuses_to_start_without_the_shared_secrets() -> None:
    result = compose_config(**{k: v for k, v in SECRETS.items() if k != "VOXGATE_JWT_SECRET"})
    assert result.returncode != 0
    assert "VOXGATE_JWT_SECRET" in result.stderr


def test_the_haproxy_config_is_valid() -> None:
    result = run([tool("haproxy"), "-c", "-f", str(DEPLOY / "haproxy.cfg")])
    # Offline the replicas' name does not resolve: a warning, not an error.
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "haproxy.cfg").read_text()
    assert "timeout tunnel 1h" in text and "option httpchk GET /healthz" in text


# --- Kubernetes -------------------------------------------------------------------------------


def test_the_manifests_match_the_kubernetes_schemas() -> None:
    files = [str(p) for p in sorted((DEPLOY / "k8s").glob("*.yaml")) if p.stem != "kustomization"]
    result = run([tool("kubernetes-validate"), "--strict", *files])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(manifests())


def test_kustomize_renders_every_manifest() -> None:
    result = run([tool("kubectl"), "kustomize", str(DEPLOY / "k8s")])
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == len(manifests())


def test_the_gateway_is_ready_on_healthz_drains_before_stopping_and_keeps_websockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in manifests()}
    pod = by_kind[("Deployment", "voxgate")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "httpGet" not in container["livenessProbe"]  # a draining pod answers 503
    pre_stop = "\n".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "/api/admin/drain" in pre_stop
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    annotations = by_kind[("Ingress", "voxgate")]["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    config = by_kind[("ConfigMap", "voxgate")]["data"]
    env = {e["name"]: "x" for e in container["env"]} | config
    env["VOXGATE_DATABASE_URL"] = "postgresql://voxgate:x@db/voxgate"
    settings = loads_as_settings(env, monkeypatch)
    assert settings.stt.provider == "wyoming" and settings.llm.provider == "openai"
    engines = by_kind[("Deployment", "voxgate-engines")]["spec"]["template"]["spec"]
    engine_env = {e["name"]: e.get("value", "x") for e in engines["containers"][0]["env"]}
    engine_env["VOXGATE_DATABASE_URL"] = "postgresql://voxgate:x@db/voxgate"
    loads_as_settings(engine_env, monkeypatch)
