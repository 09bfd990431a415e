"""docker-compose.yml and the Dockerfiles, checked without a Docker engine.

The compose file must parse (docker-compose 1.29 from Debian, or the `docker compose` plugin), run
exactly the commands of `eloquence.services`, probe health on the ports those commands listen on,
and build from files that exist and that .dockerignore does not drop. Inside the compose network no
container may look for another at loopback, server-side LiveKit calls go to the internal URL, and a
plain `docker compose up` (no profile, no Mistral) runs the LLM the agent calls.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from eloquence.services import ALL_SERVICES, CONTAINER_SERVICES, LOCAL_LLM, ServiceDefinition
from eloquence.settings import AppSettings

_SETTINGS_ENV = {
    alias
    for info in AppSettings.model_fields.values()
    for alias in (
        info.validation_alias.choices
        if hasattr(info.validation_alias, "choices")
        else [info.validation_alias]
    )
    if isinstance(alias, str)
}

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TURN_FILE = ROOT / "docker" / "compose.turn.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SIDECAR_EXTRAS = {
    "whisper-stt": "whisper-stt",
    "azure-tts": "azure-tts",
    "local-llm": "llm",
    "api": "agent",
    "agent": "agent",
}


def _compose_cli() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return ["docker", "compose"]
    pytest.fail(
        "neither docker-compose nor the docker compose plugin is installed: apt-get install docker-compose"
    )


def _run_compose(
    *args: str,
    env_overrides: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    files: tuple[Path, ...] = (COMPOSE_FILE,),
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_overrides or {})
    file_args = [arg for f in files for arg in ("-f", str(f))]
    return subprocess.run(
        [*_compose_cli(), "--project-directory", str(ROOT), *file_args, *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def _example_env() -> dict[str, str]:
    return {"ELOQUENCE_ENV_FILE": str(ENV_EXAMPLE)}


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as compose itself resolves it, with .env.example as the env file."""
    result = _run_compose("--env-file", str(ENV_EXAMPLE), "config", env_overrides=_example_env())
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_validates() -> None:
    result = _run_compose("--env-file", str(ENV_EXAMPLE), "config", "-q", env_overrides=_example_env())
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_livekit_keys(tmp_path: Path) -> None:
    # The keys come from the environment only: with none, compose names the missing variable.
    no_keys = tmp_path / "empty.env"
    no_keys.write_text("")
    result = _run_compose(
        "--env-file",
        str(no_keys),
        "config",
        "-q",
        env_overrides=_example_env(),
        drop=("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"),
    )
    assert result.returncode != 0
    assert "LIVEKIT_API_KEY" in result.stderr or "LIVEKIT_API_SECRET" in result.stderr


@pytest.mark.parametrize("name", sorted(CONTAINER_SERVICES))
def test_compose_runs_the_service_definition_command(resolved: dict[str, Any], name: str) -> None:
    assert resolved["services"][name]["command"] == ALL_SERVICES[name].container_command()


@pytest.mark.parametrize("name", sorted(CONTAINER_SERVICES))
def test_compose_carries_the_service_cpu_weight(resolved: dict[str, Any], name: str) -> None:
    """`cpu_shares` is the service definition's weight (Docker's default 1024 when unset)."""
    shares = resolved["services"][name].get("cpu_shares", 1024)
    assert shares == ALL_SERVICES[name].compose_cpu_shares, name
    assert "cpus" not in resolved["services"][name]  # a hard cap is no priority


def _container_port(definition: ServiceDefinition) -> int:
    command = definition.container_command()
    return int(command[command.index("--port") + 1])


@pytest.mark.parametrize("name", sorted(CONTAINER_SERVICES))
def test_healthcheck_probes_the_port_the_command_listens_on(resolved: dict[str, Any], name: str) -> None:
    definition = ALL_SERVICES[name]
    service = resolved["services"][name]
    probe = " ".join(service["healthcheck"]["test"])
    urls = re.findall(r"https?://[\w.\-]+:(\d+)(/[^'\" ]*)?", probe)
    assert urls, f"{name}: healthcheck probes no URL: {probe}"
    port, path = urls[0]
    assert int(port) == _container_port(definition) == definition.default_port
    assert (path or "/") == definition.health_path
    exposed = {str(p).split("/")[0] for p in service.get("expose", [])}
    published = {
        str(p.get("target") if isinstance(p, dict) else p).split(":")[-1].split("/")[0]
        for p in service.get("ports", [])
    }
    assert str(definition.default_port) in exposed | published


def test_livekit_and_redis_healthchecks_match_their_ports(raw: dict[str, Any]) -> None:
    livekit = raw["services"]["livekit"]
    assert {"${ELOQUENCE_PUBLISH_ADDRESS:-0.0.0.0}:7880:7880", "7881:7881", "7882:7882/udp"} <= set(
        livekit["ports"]
    )
    assert ":7880/" in " ".join(livekit["healthcheck"]["test"])
    livekit_config = yaml.safe_load((ROOT / "docker" / "livekit.yaml").read_text())
    assert livekit_config["port"] == 7880
    assert livekit_config["rtc"]["tcp_port"] == 7881 and livekit_config["rtc"]["udp_port"] == 7882
    assert raw["services"]["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_every_service_has_a_healthcheck_restart_policy_and_limits(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), (
            f"{name}: no restart policy"
        )
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no resource limits"


def test_dependencies_wait_for_health(raw: dict[str, Any]) -> None:
    services = raw["services"]
    for name in ("api", "agent"):
        depends = services[name]["depends_on"]
        for dependency in ("livekit", "whisper-stt", "azure-tts", "local-llm"):
            assert depends[dependency]["condition"] == "service_healthy", (name, dependency)
    assert services["livekit"]["depends_on"]["redis"]["condition"] == "service_healthy"
    # A profiled service cannot be a dependency of an always-on one (compose would refuse to start).
    profiled = {n for n, s in services.items() if s.get("profiles")}
    for name, service in services.items():
        if not service.get("profiles"):
            assert not set(service.get("depends_on", {})) & profiled, name


def test_profiles(raw: dict[str, Any]) -> None:
    services = raw["services"]
    assert services["sip"]["profiles"] == ["sip"]
    assert services["caddy"]["profiles"] == ["tls"]
    assert services["sip"]["image"].startswith("livekit/sip")
    assert services["livekit"]["image"].startswith("livekit/livekit-server")
    always_on = {n for n, s in services.items() if not s.get("profiles")}
    # a plain `docker compose up` runs a whole coach, the local LLM included
    assert always_on == {"livekit", "redis", "whisper-stt", "azure-tts", "local-llm", "api", "agent"}


def test_no_secret_in_the_compose_file(raw: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key in ("LIVEKIT_API_SECRET", "LIVEKIT_API_KEY"):
        assert f": {example[key]}" not in text and f"={example[key]}" not in text
    for name, service in raw["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if re.search(r"KEY|SECRET|PASSWORD|TOKEN", key):
                assert str(value).startswith("${") or "${" in str(value), (
                    f"{name}: {key} is written in the file"
                )
        if service.get("image", "").startswith("eloquence/") or name == "sip":
            assert service["env_file"] == "${ELOQUENCE_ENV_FILE:-.env}", name
        else:  # third-party images get no secret they do not need
            assert "env_file" not in service, name


def test_env_example_documents_every_interpolated_variable() -> None:
    interpolated = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text() + TURN_FILE.read_text()))
    documented = set(re.findall(r"^#?\s*(\w+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    assert interpolated - documented == set()
    # Settings the code reads must be documented as well.
    for variable in (
        "WHISPER_STT_URL",
        "AZURE_TTS_URL",
        "LOCAL_LLM_URL",
        "MISTRAL_API_KEY",
        "MISTRAL_BASE_URL",
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "WHISPER_STT_PORT",
        "AZURE_TTS_PORT",
        "LOCAL_LLM_PORT",
        "API_PORT",
        "AGENT_HEALTH_PORT",
        "ELOQUENCE_STATE_DIR",
    ):
        assert variable in documented, variable


def _env_example() -> dict[str, str]:
    """The variables .env.example sets (not the commented ones)."""
    return dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )


def _container_env(resolved: dict[str, Any], name: str) -> dict[str, str]:
    """What a container's process sees: the env_file (.env.example here), then `environment:`."""
    service = resolved["services"][name]
    env = _env_example() if service.get("env_file") else {}
    env.update({k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()})
    return env


def _listening_port(resolved: dict[str, Any], name: str) -> int | None:
    command = resolved["services"][name].get("command") or []
    if "--port" in command:
        return int(command[command.index("--port") + 1])
    return {"livekit": 7880, "redis": 6379}.get(name)  # the images' own ports


ELOQUENCE_SERVICES = ("whisper-stt", "azure-tts", "local-llm", "api", "agent")


@pytest.mark.parametrize("name", ELOQUENCE_SERVICES)
def test_no_container_looks_for_another_service_at_loopback(resolved: dict[str, Any], name: str) -> None:
    """Inside a container 127.0.0.1 is the container itself: every service URL names a compose service.

    LIVEKIT_URL is the exception: the API hands it to clients, who reach LiveKit from outside.
    """
    env = _container_env(resolved, name)
    always_on = {n for n, s in resolved["services"].items() if not s.get("profiles")}
    for key, value in env.items():
        if not key.endswith("_URL") or key == "LIVEKIT_URL" or not value:
            continue
        parts = urlsplit(value)
        assert parts.hostname in always_on, f"{name}: {key}={value} is not a service every `up` runs"
        assert parts.port == _listening_port(resolved, parts.hostname), f"{name}: {key}={value}"


@pytest.mark.parametrize("name", ["api", "agent"])
def test_server_side_livekit_calls_use_the_internal_url(resolved: dict[str, Any], name: str) -> None:
    env = _container_env(resolved, name)
    settings = AppSettings(**{k: v for k, v in env.items() if k.startswith("LIVEKIT_")})
    assert settings.livekit_server_url == "http://livekit:7880"
    # clients still get the public URL from the env file
    assert settings.livekit_url == _env_example()["LIVEKIT_URL"]


def test_a_plain_up_runs_the_llm_the_agent_calls(resolved: dict[str, Any]) -> None:
    """No profile and no Mistral settings: the agent's only LLM endpoint is a service that runs."""
    from eloquence.agent import llm_endpoints

    env = _container_env(resolved, "agent")
    assert not env.get("MISTRAL_API_KEY") and not env.get("MISTRAL_BASE_URL")
    settings = AppSettings(**{k: v for k, v in env.items() if k in _SETTINGS_ENV})
    (endpoint,) = llm_endpoints(settings)
    served = urlsplit(endpoint.server_url)
    service = resolved["services"][served.hostname]
    assert not service.get("profiles")
    assert service["command"] == LOCAL_LLM.container_command()
    assert served.port == _listening_port(resolved, served.hostname)


def test_with_mistral_configured_the_local_llm_is_the_fallback(resolved: dict[str, Any]) -> None:
    from eloquence.agent import llm_endpoints

    env = {**_container_env(resolved, "agent"), "MISTRAL_API_KEY": "k" * 32}
    settings = AppSettings(**{k: v for k, v in env.items() if k in _SETTINGS_ENV})
    cloud, local = llm_endpoints(settings)
    assert not cloud.is_local and local.is_local
    assert urlsplit(local.server_url).hostname == LOCAL_LLM.name


def test_the_compose_services_are_named_as_the_service_definitions(resolved: dict[str, Any]) -> None:
    assert set(CONTAINER_SERVICES) <= set(resolved["services"])


def test_every_required_variable_has_a_value_in_env_example() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    example = _env_example()
    assert required and all(example.get(v) for v in required), required - set(example)


def test_every_variable_set_for_a_container_is_read_somewhere() -> None:
    """A misspelt variable is silently ignored: each one is read by some code or compose file."""
    sources = "\n".join(
        path.read_text(errors="replace")
        for folder in ("eloquence", "providers", "services")
        for path in (ROOT / folder).rglob("*.py")
    )
    sources += COMPOSE_FILE.read_text() + TURN_FILE.read_text()
    sources += "".join(p.read_text() for p in (ROOT / "services").glob("*/Dockerfile"))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for name in ELOQUENCE_SERVICES:
        documented |= set(raw["services"][name].get("environment") or {})
    prefixes = ["", *re.findall(r"env_prefix=[\"'](\w+)[\"']", sources)]

    def read(variable: str) -> bool:
        # a quoted name, an interpolation, or a pydantic-settings field (after its env_prefix)
        fields = [variable[len(p) :].lower() for p in prefixes if variable.startswith(p)]
        pattern = rf"[\"'{{$]{variable}\b|" + "|".join(rf"^\s+{f}\s*:" for f in fields)
        return re.search(pattern, sources, flags=re.MULTILINE) is not None

    unread = {v for v in documented if not read(v)}
    assert unread == set()


def test_turn_overlay_parses_and_requires_its_domain_and_node_ip() -> None:
    files = (COMPOSE_FILE, TURN_FILE)
    base = {**_example_env()}
    result = _run_compose("--env-file", str(ENV_EXAMPLE), "config", "-q", env_overrides=base, files=files)
    assert result.returncode != 0 and "LIVEKIT_NODE_IP" in result.stderr + result.stdout
    configured = {**base, "LIVEKIT_TURN_DOMAIN": "turn.example.com", "LIVEKIT_NODE_IP": "203.0.113.10"}
    result = _run_compose("--env-file", str(ENV_EXAMPLE), "config", env_overrides=configured, files=files)
    assert result.returncode == 0, result.stderr
    livekit = yaml.safe_load(result.stdout)["services"]["livekit"]
    assert livekit["environment"]["LIVEKIT_TURN_ENABLED"] == "true"
    assert livekit["environment"]["NODE_IP"] == "203.0.113.10"
    published = {
        (str(p.get("published")), p.get("protocol", "tcp")) for p in livekit["ports"] if isinstance(p, dict)
    }
    assert {("5349", "tcp"), ("3478", "udp"), ("30000", "udp")} <= published


def test_caddy_and_turn_certificates_come_from_the_certs_folder(raw: dict[str, Any]) -> None:
    caddy = raw["services"]["caddy"]
    assert "./docker/certs:/certs:ro" in caddy["volumes"]
    assert "./docker/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    turn = yaml.safe_load(TURN_FILE.read_text())["services"]["livekit"]
    assert "./docker/certs:/certs:ro" in turn["volumes"]
    assert turn["environment"]["LIVEKIT_TURN_CERT"].endswith("/certs/turn.crt}")


# --------------------------------------------------------------------------- Dockerfiles


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [path, *(str(Path(*Path(path).parts[: i + 1])) for i in range(len(Path(path).parts)))]
        if any(
            fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates
        ):
            ignored = not negate
    return ignored


def _compose_builds(raw: dict[str, Any]) -> dict[str, tuple[Path, Path]]:
    builds = {}
    for name, service in raw["services"].items():
        build = service.get("build")
        if build:
            context = (ROOT / build["context"]).resolve()
            builds[name] = (context, context / build.get("dockerfile", "Dockerfile"))
    return builds


def test_each_eloquence_service_has_its_own_dockerfile(raw: dict[str, Any]) -> None:
    builds = _compose_builds(raw)
    assert builds["whisper-stt"][1] == ROOT / "services/whisper-stt/Dockerfile"
    assert builds["azure-tts"][1] == ROOT / "services/azure-tts/Dockerfile"
    assert builds["local-llm"][1] == ROOT / "services/local-llm/Dockerfile"
    assert builds["api"][1] == ROOT / "Dockerfile"
    assert raw["services"]["agent"]["image"] == raw["services"]["api"]["image"]  # one app image


def test_dockerfile_sources_exist_and_survive_dockerignore(raw: dict[str, Any]) -> None:
    patterns = _dockerignore_patterns()
    for name, (context, dockerfile) in _compose_builds(raw).items():
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        copied = 0
        for instruction, args in _instructions(dockerfile):
            if instruction not in ("COPY", "ADD"):
                continue
            parts = shlex.split(args)
            if any(p.startswith("--from") for p in parts):
                continue
            sources = [p for p in parts if not p.startswith("--")][:-1]
            for source in sources:
                assert (context / source).exists(), f"{dockerfile}: COPY {source} does not exist"
                assert not _ignored(source.rstrip("/"), patterns), (
                    f"{dockerfile}: {source} is in .dockerignore"
                )
                copied += 1
        assert copied, f"{dockerfile} copies nothing"
    for name, service in raw["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: volume source {source} is missing"


@pytest.mark.parametrize("name", ["whisper-stt", "azure-tts", "local-llm", "api"])
def test_dockerfile_installs_only_its_extra_and_runs_as_non_root(raw: dict[str, Any], name: str) -> None:
    _, dockerfile = _compose_builds(raw)[name]
    instructions = _instructions(dockerfile)
    installs = " ".join(args for instruction, args in instructions if instruction == "RUN" and "pip " in args)
    extras = set(re.findall(r"\[([\w,-]+)\]'", installs))
    assert extras == {SIDECAR_EXTRAS[name]}, f"{dockerfile}: installs {extras}"
    users = [args for instruction, args in instructions if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile}: runs as root"
    cmd = [args for instruction, args in instructions if instruction == "CMD"][-1]
    assert yaml.safe_load(cmd) == ALL_SERVICES[name].container_command()


def test_llama_cpp_is_built_portably() -> None:
    flags = "-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"
    assert flags in (ROOT / "services/local-llm/Dockerfile").read_text()


@pytest.mark.parametrize(
    ("dockerfile", "arg"),
    [
        ("services/whisper-stt/Dockerfile", "WHISPER_MODEL_NAME"),
        ("services/azure-tts/Dockerfile", "PIPER_VOICE_NAME"),
        ("services/local-llm/Dockerfile", "LLM_MODEL_URL"),
    ],
)
def test_model_is_baked_in_and_chosen_by_a_build_arg(raw: dict[str, Any], dockerfile: str, arg: str) -> None:
    instructions = _instructions(ROOT / dockerfile)
    assert any(i == "ARG" and a.startswith(arg) for i, a in instructions)
    # The build arg reaches a RUN that puts the model into the image, and compose passes it through.
    assert any(i == "RUN" and f"${arg}" in a for i, a in instructions)
    passed = {a for s in raw["services"].values() for a in (s.get("build") or {}).get("args", {})}
    assert arg in passed


def test_images_copy_every_package_directory_pyproject_names(raw: dict[str, Any]) -> None:
    """pip builds the wheel inside the image: a package directory left out of the COPY fails the build."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tops = {Path(directory).parts[0] for directory in setuptools["package-dir"].values()}
    for dockerfile in (d for _, d in _compose_builds(raw).values()):
        copied = set()
        for instruction, args in _instructions(dockerfile):
            if instruction == "COPY" and "--from" not in args:
                copied |= {Path(src).parts[0] for src in shlex.split(args)[:-1] if not src.startswith("--")}
        assert tops <= copied, f"{dockerfile}: does not COPY {sorted(tops - copied)}"


def test_the_installed_wheel_holds_every_package() -> None:
    """Images install a wheel, not the source tree: a subpackage missing from pyproject is missing there."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for top, directory in setuptools["package-dir"].items():
        for init in (ROOT / directory).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / directory)
            package = ".".join((top, *relative.parts))
            assert package in listed, f"{package} is not in [tool.setuptools] packages"
