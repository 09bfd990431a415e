"""Which Mistral-compatible server to talk to: one resolver for MistralLLM, the agent, `eloquence up`
and `talk`.

This module reads the environment only when called and never touches the network. It does not
import livekit or the SDK itself, but importing it runs `providers/__init__.py`, which registers the
plugin: livekit-agents and mistralai load with it (about 1 s).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger("eloquence.providers")

MISTRAL_CLOUD_URL = "https://api.mistral.ai"
LOCAL_LLM_DEFAULT_URL = "http://127.0.0.1:8004"
DEFAULT_CLOUD_MODEL = "mistral-small-latest"
DEFAULT_LOCAL_MODEL = "local"
"""The local LLM service serves whatever GGUF it loaded, whatever the request's model name."""

# The SDK appends /v1/chat/completions itself; users' notes often put that in the base URL.
_API_PATH = re.compile(r"/v1(?:/.*)?$")


@dataclass(frozen=True)
class MistralEndpoint:
    server_url: str
    """The server root the `mistralai` SDK takes (`server_url=`), without /v1."""
    api_key: str | None
    model: str
    is_local: bool
    """True when this is the local LLM service (`eloquence up` then starts it)."""


def resolve_mistral_endpoint(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> MistralEndpoint:
    """Explicit arguments first, then MISTRAL_API_KEY / MISTRAL_BASE_URL / MISTRAL_MODEL / LOCAL_LLM_URL.

    With no base URL: Mistral's cloud when an API key is set, otherwise the local LLM service,
    whose key is SIDECAR_API_KEY (when set).
    """
    env = os.environ if environ is None else environ
    explicit_key = api_key
    api_key = api_key or env.get("MISTRAL_API_KEY") or None
    base_url = base_url or env.get("MISTRAL_BASE_URL") or None
    model = model or env.get("MISTRAL_MODEL") or None
    local_url = normalize_server_url(env.get("LOCAL_LLM_URL") or LOCAL_LLM_DEFAULT_URL)

    if base_url:
        server_url = normalize_server_url(base_url)
    elif api_key:
        server_url = MISTRAL_CLOUD_URL
    else:
        server_url = local_url
    is_local = server_url == local_url
    if is_local:
        # the local LLM sidecar takes the sidecars' shared key (SIDECAR_API_KEY), never the cloud key
        api_key = explicit_key or env.get("SIDECAR_API_KEY") or None
    return MistralEndpoint(
        server_url=server_url,
        api_key=api_key,
        model=model or (DEFAULT_LOCAL_MODEL if is_local else DEFAULT_CLOUD_MODEL),
        is_local=is_local,
    )


def normalize_server_url(url: str) -> str:
    """Strip whitespace, trailing slashes and a trailing /v1... path (with a warning: the SDK adds it)."""
    cleaned = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/]+", cleaned):
        raise ValueError(f"not an http(s) URL: {url!r}")
    stripped = _API_PATH.sub("", cleaned)
    if stripped != cleaned:
        logger.warning(
            "Mistral base URL %r includes the API path; using the server root %r (the SDK adds /v1/...)",
            url,
            stripped,
        )
    return stripped
