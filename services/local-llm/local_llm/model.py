"""The GGUF model: one llama.cpp context, one generation at a time, run in worker threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from llama_cpp import Llama, LlamaRAMCache, LogitsProcessorList

from .chat_request import ChatRequest

logger = logging.getLogger("local_llm.model")


class ModelBusyError(RuntimeError):
    """The model stayed busy with other requests for longer than the queue timeout."""


class ContextLengthError(ValueError):
    """The prompt does not fit the context window."""


@dataclass
class TokenDelta:
    text: str


@dataclass
class Finished:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class _UsageCounter:
    """Counts tokens through llama.cpp's logits-processor hook (its stream reports no usage).

    The hook runs once per sampled token; on the first call the context holds exactly the prompt.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.sampled = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.sampled == 0:
            self.prompt_tokens = len(input_ids)
        self.sampled += 1
        return scores


class GGUFChatModel:
    def __init__(
        self,
        *,
        model_path: Path,
        name: str,
        chat_format: str | None,
        threads: int,
        batch_threads: int,
        context_size: int,
        prompt_cache_mb: int,
    ) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"model file not found: {model_path}")
        self.name = name
        self.path = model_path
        self.context_size = context_size
        self._llama = Llama(
            model_path=str(model_path),
            n_ctx=context_size,
            n_threads=threads,
            n_threads_batch=batch_threads,
            chat_format=chat_format or None,
            verbose=False,
        )
        if prompt_cache_mb > 0:
            # Llama already reuses the KV prefix of the previous request; the RAM cache also keeps
            # other conversations' prefixes (several rooms served by one process).
            self._llama.set_cache(LlamaRAMCache(capacity_bytes=prompt_cache_mb << 20))
        # One llama.cpp context cannot run two generations: requests take turns.
        self._lock = threading.Lock()

    def warm_up(self) -> float:
        """One tiny completion, so that the first real turn does not pay llama.cpp's first-call setup."""
        start = time.perf_counter()
        request = ChatRequest(
            messages=[{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hello"}],
            stream=True,
            max_tokens=2,
        )
        for _ in self.generate(request, cancelled=threading.Event(), wait_s=None):
            pass
        return time.perf_counter() - start

    def generate(
        self, request: ChatRequest, *, cancelled: threading.Event, wait_s: float | None
    ) -> Iterator[TokenDelta | Finished]:
        """Stream one completion; blocking, so call it from a worker thread and iterate it there.

        Stops at the next token once `cancelled` is set (the client went away).
        """
        if not self._lock.acquire(timeout=-1 if wait_s is None else wait_s):
            raise ModelBusyError(f"the model stayed busy for {wait_s:.0f} s")
        try:
            usage = _UsageCounter()
            try:
                stream = cast(
                    Iterator[dict[str, Any]],
                    self._llama.create_chat_completion(
                        messages=request.messages,  # type: ignore[arg-type]
                        stream=True,
                        max_tokens=request.max_tokens,
                        logits_processor=LogitsProcessorList([usage]),
                        **request.sampling,
                    ),
                )
            except ValueError as e:
                raise _map_value_error(e) from None
            finished = False
            try:
                while True:
                    try:
                        # After the last chunk, this call saves the prompt cache, still under the lock.
                        chunk = next(stream)
                    except StopIteration:
                        break
                    except ValueError as e:
                        raise _map_value_error(e) from None
                    choice = chunk["choices"][0]
                    if text := choice["delta"].get("content"):
                        yield TokenDelta(text)
                    if choice.get("finish_reason") and not finished:
                        finished = True
                        yield Finished(choice["finish_reason"], usage.prompt_tokens, usage.sampled)
                    if cancelled.is_set():
                        if not finished:
                            logger.info("generation cancelled after %d tokens", usage.sampled)
                        return
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            if not finished:
                yield Finished("stop", usage.prompt_tokens, usage.sampled)
        finally:
            self._lock.release()


def _map_value_error(e: ValueError) -> ValueError:
    if "context window" in str(e):
        return ContextLengthError(str(e))
    return e
