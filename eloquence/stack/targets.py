"""Where each service of the local stack answers, and whether this machine may start it.

Ports: each service listens where its URL setting points (`WHISPER_STT_URL`, `AZURE_TTS_URL`,
`LOCAL_LLM_URL`), or on `WHISPER_STT_PORT` / `AZURE_TTS_PORT` / `LOCAL_LLM_PORT` / `PLAYGROUND_PORT` /
`API_PORT` / `AGENT_HEALTH_PORT` when set. The processes the stack starts get the resulting URLs in their
environment (the API finds the playground's session host through `PLAYGROUND_URL`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..services import (
    AGENT,
    ALL_SERVICES,
    API,
    AZURE_TTS,
    LOCAL_LLM,
    PLAYGROUND,
    WHISPER_STT,
    ServiceDefinition,
    ServiceProcess,
    is_loopback,
)
from ..settings import AppSettings

if TYPE_CHECKING:
    from providers.endpoints import MistralEndpoint

STACK_ORDER = (WHISPER_STT.name, AZURE_TTS.name, LOCAL_LLM.name, PLAYGROUND.name, API.name, AGENT.name)
"""Start order: the playground's session host, the API and the agent come after the services they call."""
FIRST_WAVE = (WHISPER_STT.name, AZURE_TTS.name, LOCAL_LLM.name)
"""The services nothing else of the stack needs at start-up: started together, first."""
_URL_SETTINGS = {
    WHISPER_STT.name: "whisper_stt_url",
    AZURE_TTS.name: "azure_tts_url",
    LOCAL_LLM.name: "local_llm_url",
}


@dataclasses.dataclass(frozen=True)
class ServiceTarget:
    """Where one service is expected, and whether this machine may start it."""

    definition: ServiceDefinition
    url: str
    """Base URL the clients use."""
    on_loopback: bool
    checked: bool = True
    """False for a cloud endpoint (remote Mistral), which has no /health to poll."""
    setting: str = ""
    """What chose the URL, for error messages."""

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname or "127.0.0.1"
        return "127.0.0.1" if host == "localhost" else host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme in ("https", "wss") else 80)

    @property
    def health_url(self) -> str:
        return self.url.rstrip("/") + self.definition.health_path

    def process(self, env: Mapping[str, str], log_dir: Path) -> ServiceProcess:
        """The local process of this service, logging to `<log_dir>/<name>.log`."""
        return ServiceProcess(
            definition=self.definition,
            port=self.port,
            host=self.host,
            log_path=log_dir / f"{self.name}.log",
            env=env,
        )


def mistral_endpoint(settings: AppSettings, local_url: str) -> MistralEndpoint:
    """The one resolver's answer (providers.endpoints), with the local LLM service at `local_url`."""
    from providers.endpoints import resolve_mistral_endpoint

    return resolve_mistral_endpoint(
        api_key=settings.mistral_api_key,
        base_url=settings.mistral_base_url,
        model=settings.mistral_model,
        environ={"LOCAL_LLM_URL": local_url},
    )


def resolve_target(
    name: str, settings: AppSettings, environ: Mapping[str, str] | None = None
) -> ServiceTarget:
    """Where `name` should answer, from the settings and the `*_PORT` overrides."""
    environ = os.environ if environ is None else environ
    try:
        definition = ALL_SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; valid: {', '.join(STACK_ORDER)}") from None
    target = _configured_target(definition, settings, environ)
    if name != LOCAL_LLM.name:
        return target
    endpoint = mistral_endpoint(settings, target.url)
    if not endpoint.is_local:
        # Mistral's cloud, Scaleway or another server: nothing to start, and no /health to poll.
        return ServiceTarget(
            definition,
            endpoint.server_url,
            on_loopback=False,
            checked=False,
            setting="MISTRAL_BASE_URL / MISTRAL_API_KEY",
        )
    return dataclasses.replace(target, url=endpoint.server_url)


def _configured_target(
    definition: ServiceDefinition, settings: AppSettings, environ: Mapping[str, str]
) -> ServiceTarget:
    port_override = environ.get(definition.port_env or "")
    if port_override:
        try:
            port = int(port_override)
        except ValueError:
            raise ValueError(f"{definition.port_env}={port_override!r} is not a port number") from None
        return ServiceTarget(
            definition, definition.url(port), on_loopback=True, setting=str(definition.port_env)
        )
    if definition.name == API.name:
        return ServiceTarget(
            definition, definition.url(settings.api_port), on_loopback=True, setting="API_PORT"
        )
    if definition.name == AGENT.name:
        port = settings.agent_health_port
        return ServiceTarget(definition, definition.url(port), on_loopback=True, setting="AGENT_HEALTH_PORT")
    if definition.name == PLAYGROUND.name:
        from ..playground.settings import PlaygroundSettings

        port = PlaygroundSettings().host_port  # PLAYGROUND_PORT, from a .env too
        return ServiceTarget(definition, definition.url(port), on_loopback=True, setting="PLAYGROUND_PORT")
    url = str(getattr(settings, _URL_SETTINGS[definition.name])).rstrip("/")
    host = urlsplit(url).hostname or ""
    return ServiceTarget(definition, url, on_loopback=is_loopback(host), setting=str(definition.url_env))


def client_environment(targets: Sequence[ServiceTarget]) -> dict[str, str]:
    """The URL variables through which the started processes find each other."""
    env: dict[str, str] = {}
    for target in targets:
        if target.definition.name == API.name:
            env["API_PORT"] = str(target.port)
        elif target.definition.name == AGENT.name:
            env["AGENT_HEALTH_PORT"] = str(target.port)
        elif target.definition.url_env and target.checked:
            # An unchecked target is the cloud LLM: the processes resolve it from the same settings.
            env[target.definition.url_env] = target.url
    return env
