"""Fallback chains across endpoints, built from the framework's own `FallbackAdapter`s.

A second whisper-stt or azure-tts sidecar URL, and cloud Mistral then the local LLM. Azure→Piper
inside one azure-tts sidecar is that sidecar's job, not this module's. One endpoint gives the
plain plugin, so a single-sidecar deployment pays nothing for the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from livekit.agents import llm, stt, tts

from .stt import WhisperSTT
from .tts import AzureTTS

if TYPE_CHECKING:
    from .endpoints import MistralEndpoint

# Switch to the next sidecar quickly: one quick retry on the failing one, then move on.
STT_ATTEMPT_TIMEOUT_S = 5.0
STT_RETRY_INTERVAL_S = 0.1
MAX_RETRY_PER_STT = 1
MAX_RETRY_PER_TTS = 1
LLM_ATTEMPT_TIMEOUT_S = 10.0


def _require(urls: Sequence[Any], what: str) -> None:
    if isinstance(urls, str):
        raise TypeError(f"{what} takes a sequence of endpoints, not one string")
    if not urls:
        raise ValueError(f"{what} needs at least one endpoint")


def build_stt(urls: Sequence[str], **kw: Any) -> stt.STT:
    """WhisperSTT for one URL, else `stt.FallbackAdapter` over one WhisperSTT per URL.

    `kw` goes to every WhisperSTT (language, http_session, ...).
    """
    _require(urls, "build_stt")
    instances = [WhisperSTT(base_url=url, **kw) for url in urls]
    if len(instances) == 1:
        return instances[0]
    return stt.FallbackAdapter(
        list(instances),
        attempt_timeout=STT_ATTEMPT_TIMEOUT_S,
        max_retry_per_stt=MAX_RETRY_PER_STT,
        retry_interval=STT_RETRY_INTERVAL_S,
    )


def build_tts(urls: Sequence[str], **kw: Any) -> tts.TTS:
    """AzureTTS for one URL, else `tts.FallbackAdapter` over one AzureTTS per URL.

    `kw` goes to every AzureTTS (voice, context, sample_rate, http_session, ...); all declare
    the same rate, so the adapter never resamples.
    """
    _require(urls, "build_tts")
    instances = [AzureTTS(base_url=url, **kw) for url in urls]
    if len(instances) == 1:
        return instances[0]
    return tts.FallbackAdapter(list(instances), max_retry_per_tts=MAX_RETRY_PER_TTS)


def build_llm(endpoints: Sequence[Mapping[str, Any] | MistralEndpoint], **kw: Any) -> llm.LLM:
    """MistralLLM for one endpoint, else `llm.FallbackAdapter` in the given order (typically
    cloud Mistral first, then the local LLM server).

    Each endpoint is a `MistralEndpoint` (as `providers.endpoints.resolve_mistral_endpoint` gives)
    or a mapping of MistralLLM's `base_url` / `api_key` / `model` (or the endpoint's field names);
    `kw` goes to every MistralLLM (temperature, max_tokens, ...).
    """
    from .llm import MistralLLM

    _require(endpoints, "build_llm")
    instances: list[llm.LLM] = [MistralLLM(**_llm_fields(endpoint), **kw) for endpoint in endpoints]
    if len(instances) == 1:
        return instances[0]
    return llm.FallbackAdapter(instances, attempt_timeout=LLM_ATTEMPT_TIMEOUT_S)


def _llm_fields(endpoint: Mapping[str, Any] | MistralEndpoint) -> dict[str, Any]:
    from .endpoints import MistralEndpoint

    if isinstance(endpoint, MistralEndpoint):
        return {"base_url": endpoint.server_url, "api_key": endpoint.api_key, "model": endpoint.model}
    fields = dict(endpoint)
    if "server_url" in fields:
        fields["base_url"] = fields.pop("server_url")
    fields.pop("is_local", None)
    unknown = set(fields) - {"base_url", "api_key", "model"}
    if unknown:
        raise ValueError(f"unknown endpoint fields {sorted(unknown)}; use base_url, api_key and model")
    return fields
