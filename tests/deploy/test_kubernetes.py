"""deploy/kubernetes renders with kubectl's kustomize and validates against Kubernetes' schemas.

No cluster runs here: `kubectl kustomize` (no --enable-helm) renders, `kubernetes-validate --strict`
checks every object against the API schemas, and the rest checks what a schema cannot: the same
commands, ports and health paths as eloquence/services.py, secrets only by reference, probes,
resources, autoscalers and budgets that point at real Deployments, and the NetworkPolicies.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from eloquence.services import ALL_SERVICES

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
LIVEKIT_VALUES = KUBERNETES / "livekit" / "values.yaml"
SIDECARS = ("whisper-stt", "azure-tts", "local-llm")
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN")


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed: scripts/install.sh installs it (apt or the release binary)")
    return path


@cache
def _render(path: Path) -> str:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _objects(path: Path = KUBERNETES) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(_render(path)) if doc]


def _by_kind(kind: str, path: Path = KUBERNETES) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _objects(path) if o["kind"] == kind}


def _validate(manifest: Path) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.fail("kubernetes-validate is not installed: pip install -e '.[test]'")
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _port(container: dict[str, Any], name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == name_or_number)


# --------------------------------------------------------------------------- render and validate


def test_the_base_renders_the_workloads_and_autoscalers() -> None:
    deployments = _by_kind("Deployment")
    assert {"whisper-stt", "azure-tts", "local-llm", "api", "agent"} <= set(deployments)
    hpas = _by_kind("HorizontalPodAutoscaler")
    assert set(SIDECARS) <= set(hpas)
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, name
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    assert "agent" not in hpas  # sized from the capacity table, not from CPU
    assert {o["metadata"].get("namespace") for o in _objects() if o["kind"] != "Namespace"} == {"eloquence"}


@pytest.mark.parametrize("overlay", ["", "overlays/monitoring", "overlays/no-local-llm"])
def test_rendered_manifests_pass_strict_schema_validation(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(_render(KUBERNETES / overlay))
    result = _validate(manifest)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The check above can fail: a misspelt field in the agent Deployment is caught."""
    agent = _by_kind("Deployment")["agent"]
    agent["spec"]["replica"] = agent["spec"].pop("replicas")
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump(agent))
    result = _validate(manifest)
    assert result.returncode != 0 and "replica" in result.stdout + result.stderr


# --------------------------------------------------------------------------- one definition of each service


def _millicores(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def test_sidecar_cpu_requests_follow_the_service_cpu_weights() -> None:
    """A CPU request is the container's share under contention: the sidecars' requests are in the
    ratio of their definitions' `cpu_weight` (the LLM's bulk decoding yields to STT and TTS)."""
    per_weight = {
        name: _millicores(_container(_by_kind("Deployment")[name])["resources"]["requests"]["cpu"])
        / ALL_SERVICES[name].cpu_weight
        for name in SIDECARS
    }
    assert len(set(per_weight.values())) == 1, per_weight


@pytest.mark.parametrize("name", [*SIDECARS, "api", "agent"])
def test_each_deployment_runs_the_service_definition(name: str) -> None:
    definition = ALL_SERVICES[name]
    container = _container(_by_kind("Deployment")[name])
    assert container["command"] == definition.container_command()
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == definition.health_path, (name, probe)
        assert _port(container, get["port"]) == definition.default_port, (name, probe)
    service = _by_kind("Service").get(name)
    if name != "agent":  # the agent dials out; nothing connects to it but probes and the scraper
        assert service is not None
        (port,) = service["spec"]["ports"]
        assert port["port"] == definition.default_port


def test_compose_and_kubernetes_run_the_same_images() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, deployment in _by_kind("Deployment").items():
        if name in ALL_SERVICES:
            image = _container(deployment)["image"]
            assert image.split(":")[0] == compose[name]["image"].split(":")[0], name


@pytest.mark.parametrize("name", [*SIDECARS, "api", "agent", "redis"])
def test_every_container_has_requests_limits_and_runs_unprivileged(name: str) -> None:
    deployment = _by_kind("Deployment")[name]
    container = _container(deployment)
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), (name, bound)
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_config_urls_reach_services_on_their_ports() -> None:
    (config,) = _by_kind("ConfigMap").values()
    services = _by_kind("Service")
    for key in ("WHISPER_STT_URL", "AZURE_TTS_URL", "LOCAL_LLM_URL"):
        url = urlsplit(config["data"][key])
        (port,) = services[url.hostname]["spec"]["ports"]
        assert url.port == port["port"], key
    # LiveKit's Service comes from the Helm release: its name and port are set in our values file
    values = yaml.safe_load(LIVEKIT_VALUES.read_text())
    internal = urlsplit(config["data"]["LIVEKIT_INTERNAL_URL"])
    assert internal.hostname == values["fullnameOverride"]
    assert internal.port == values["loadBalancer"]["servicePort"] == values["livekit"]["port"]
    assert config["data"]["LIVEKIT_URL"].startswith("wss://")


# --------------------------------------------------------------------------- secrets


def test_secrets_come_only_from_a_secret() -> None:
    (config,) = _by_kind("ConfigMap").values()
    assert not [k for k in config["data"] if SECRET_NAME.search(k)]
    for name, deployment in _by_kind("Deployment").items():
        for env in _container(deployment).get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{name}: {env['name']} is inline"
                assert env["valueFrom"]["secretKeyRef"]["name"] == "eloquence-secrets"
    assert "Secret" not in {o["kind"] for o in _objects()}  # created by the operator, never shipped


def test_sidecars_get_no_livekit_or_api_secret() -> None:
    for name in SIDECARS:
        names = {env["name"] for env in _container(_by_kind("Deployment")[name]).get("env", [])}
        assert names <= {"SIDECAR_API_KEY", "AZURE_SPEECH_KEY"}, name


def test_the_livekit_values_hold_no_key_and_use_the_base_redis() -> None:
    values = yaml.safe_load(LIVEKIT_VALUES.read_text())
    assert not values["livekit"].get("keys")
    assert values["storeKeysInSecret"] == {"enabled": True, "existingSecret": "livekit-keys"}
    redis_host, redis_port = values["livekit"]["redis"]["address"].split(":")
    (redis_service,) = _by_kind("Service")["redis"]["spec"]["ports"]
    assert redis_host.split(".")[:2] == ["redis", "eloquence"] and int(redis_port) == redis_service["port"]
    assert values["livekit"]["turn"]["enabled"] and values["livekit"]["turn"]["secretName"]


# --------------------------------------------------------------------------- disruption and isolation


def test_agents_drain_before_they_are_killed() -> None:
    from livekit.agents.worker import DRAIN_TIMEOUT

    agent = _by_kind("Deployment")["agent"]
    assert agent["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= DRAIN_TIMEOUT
    assert agent["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_each_disruption_budget_covers_a_deployment() -> None:
    budgets = _by_kind("PodDisruptionBudget")
    assert budgets["agent"]["spec"]["maxUnavailable"] == 1
    deployments = _by_kind("Deployment")
    for name, budget in budgets.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


def test_only_the_agent_the_api_and_the_scraper_reach_the_sidecars() -> None:
    policy = _by_kind("NetworkPolicy")["sidecars"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    deployments = _by_kind("Deployment")
    selected = {
        name
        for name, d in deployments.items()
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    }
    assert selected == set(SIDECARS)
    (rule,) = policy["spec"]["ingress"]
    pods, namespaces = rule["from"]
    (expression,) = pods["podSelector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/name" and set(expression["values"]) == {"agent", "api"}
    assert namespaces == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_the_monitoring_overlay_adds_service_monitors_on_metrics() -> None:
    monitors = _by_kind("ServiceMonitor", KUBERNETES / "overlays" / "monitoring")
    services = _by_kind("Service")
    for monitor in monitors.values():
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services.values() if selector.items() <= s["metadata"]["labels"].items()]
        assert matched and all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in matched)
    (agent_monitor,) = _by_kind("PodMonitor", KUBERNETES / "overlays" / "monitoring").values()
    (endpoint,) = agent_monitor["spec"]["podMetricsEndpoints"]
    agent = _container(_by_kind("Deployment")["agent"])
    assert (
        endpoint["path"] == "/metrics"
        and _port(agent, endpoint["port"]) == ALL_SERVICES["agent"].default_port
    )
    base_kinds = {o["kind"] for o in _objects()}
    assert not base_kinds & {"ServiceMonitor", "PodMonitor"}  # custom resources stay out of the base


def test_the_no_local_llm_overlay_removes_it_and_its_fallback() -> None:
    overlay = KUBERNETES / "overlays" / "no-local-llm"
    assert not [o for o in _objects(overlay) if o["metadata"]["name"] == "local-llm"]
    (config,) = _by_kind("ConfigMap", overlay).values()
    assert config["data"]["ELOQUENCE_LLM_LOCAL_FALLBACK"] == "false"
