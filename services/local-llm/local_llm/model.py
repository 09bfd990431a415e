"""The GGUF model: one llama.cpp context, one generation at a time, each in a thread of its own.

CPU priority: on a box shared with speech recognition and synthesis, the start of a reply is
latency-critical (the voice is waiting for its first clause) and the rest is bulk work (it only
has to stay ahead of playback). Each generation runs in a dedicated thread that lowers its own
priority (`decode_nice`) once the first clause is out (a clause punctuation mark, or
`urgent_tokens` tokens). Lowering needs no privilege, and the thread ends with the generation,
so the next request's prompt evaluation starts at full priority again.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from llama_cpp import Llama, LlamaRAMCache, LogitsProcessorList

from .chat_request import ChatRequest

logger = logging.getLogger("local_llm.model")

# the first clause of a reply ends on one of these
_CLAUSE_END = re.compile(r"[,.;:!?…]")
_DONE = object()


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
        decode_nice: int = 0,
        urgent_tokens: int = 12,
        repeat_penalty: float = 1.0,
    ) -> None:
        if not model_path.is_file():
            raise FileNotFoundError(f"model file not found: {model_path}")
        self.name = name
        self.path = model_path
        self.context_size = context_size
        self.decode_nice = decode_nice
        self.urgent_tokens = urgent_tokens
        self.repeat_penalty = repeat_penalty
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

        The generation runs in a thread of its own (see the module docstring); it stops at the
        next token once `cancelled` is set (the client went away) or this iterator is closed.
        """
        if not self._lock.acquire(timeout=-1 if wait_s is None else wait_s):
            raise ModelBusyError(f"the model stayed busy for {wait_s:.0f} s")
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        stop = threading.Event()

        def run() -> None:
            try:
                for event in self._generate(request, stop=lambda: cancelled.is_set() or stop.is_set()):
                    events.put(event)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                events.put(e)
            finally:
                self._lock.release()
                events.put(_DONE)

        try:
            threading.Thread(target=run, name="llm-generation", daemon=True).start()
        except BaseException:
            self._lock.release()
            raise
        try:
            while (item := events.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # a caller that stops iterating stops the generation at its next token

    def _generate(self, request: ChatRequest, *, stop: Callable[[], bool]) -> Iterator[TokenDelta | Finished]:
        usage = _UsageCounter()
        sampling = {"repeat_penalty": self.repeat_penalty, **request.sampling}
        try:
            stream = cast(
                Iterator[dict[str, Any]],
                self._llama.create_chat_completion(
                    messages=request.messages,  # type: ignore[arg-type]
                    stream=True,
                    max_tokens=request.max_tokens,
                    logits_processor=LogitsProcessorList([usage]),
                    **sampling,
                ),
            )
        except ValueError as e:
            raise _map_value_error(e) from None
        finished = False
        urgent = self.decode_nice > 0
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
                    if urgent and (_CLAUSE_END.search(text) or usage.sampled >= self.urgent_tokens):
                        urgent = False
                        _lower_thread_priority(self.decode_nice)
                if choice.get("finish_reason") and not finished:
                    finished = True
                    yield Finished(choice["finish_reason"], usage.prompt_tokens, usage.sampled)
                if stop():
                    if not finished:
                        logger.info("generation cancelled after %d tokens", usage.sampled)
                    return
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if not finished:
            yield Finished("stop", usage.prompt_tokens, usage.sampled)


def _lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value (Linux: per thread; elsewhere a no-op)."""
    if not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as e:  # e.g. a seccomp profile that forbids it: the generation goes on
        logger.debug("could not lower the generation thread's priority: %s", e)


def _map_value_error(e: ValueError) -> ValueError:
    if "context window" in str(e):
        return ContextLengthError(str(e))
    return e
