"""The raw baselines: each engine called directly, on the same inputs and models as the stack.

- STT: faster-whisper's `transcribe` of the utterance plus the endpointing silence the sidecar
  holds when it is flushed (same model directory, threads, beam size and compute type);
- LLM: the `mistralai` SDK streaming from the same local LLM server, same messages;
- TTS: Piper synthesizing the same text with the same voice, to its first chunk.

Blocking engine calls run in a worker thread, generators included, as in the sidecars.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


@dataclass(frozen=True)
class EngineConfig:
    """What the sidecars run with; the raw baselines use exactly the same."""

    stt_model_path: str
    stt_threads: int = 2
    stt_beam_size: int = 1
    stt_compute_type: str = "int8"
    stt_language: str = "en"
    tts_voice_path: str = ""
    tts_threads: int = 1
    llm_model: str = "local"
    llm_max_tokens: int = 80

    def describe(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LLMTiming:
    """perf_counter times of one streamed reply."""

    t_start: float
    t_first_token: float
    t_first_sentence: float
    t_end: float
    text: str
    first_sentence: str

    @property
    def ttft_ms(self) -> float:
        return (self.t_first_token - self.t_start) * 1000

    @property
    def first_sentence_ms(self) -> float:
        return (self.t_first_sentence - self.t_start) * 1000


def first_sentence_done(text: str) -> bool:
    """True once `text` holds a complete sentence (what the TTS can start speaking)."""
    return SENTENCE_END.search(text.strip() + " ") is not None if text.strip() else False


class RawWhisper:
    def __init__(self, *, config: EngineConfig) -> None:
        from faster_whisper import WhisperModel

        self._config = config
        self._model = WhisperModel(
            config.stt_model_path,
            device="cpu",
            compute_type=config.stt_compute_type,
            cpu_threads=config.stt_threads,
        )

    def _transcribe(self, samples: np.ndarray) -> tuple[str, float]:
        start = time.perf_counter()
        segments, _ = self._model.transcribe(
            samples,
            language=self._config.stt_language,
            beam_size=self._config.stt_beam_size,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        text = " ".join(s.text.strip() for s in segments)  # decoding happens while iterating
        return text, (time.perf_counter() - start) * 1000

    async def transcribe(self, samples: np.ndarray) -> tuple[str, float]:
        """(transcript, milliseconds) for one utterance."""
        return await asyncio.to_thread(self._transcribe, samples)


class RawPiper:
    def __init__(self, *, config: EngineConfig) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = config.tts_threads
        options.inter_op_num_threads = 1
        voice_path = Path(config.tts_voice_path)
        piper_config = PiperConfig.from_dict(json.loads(Path(f"{voice_path}.json").read_text()))
        self._voice = PiperVoice(
            config=piper_config,
            session=onnxruntime.InferenceSession(str(voice_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"]),
        )

    def _first_chunk(self, text: str) -> tuple[float, int]:
        start = time.perf_counter()
        chunks = iter(self._voice.synthesize(text))
        first = next(chunks)
        elapsed = (time.perf_counter() - start) * 1000
        for _ in chunks:  # finish the utterance so the next measurement starts idle
            pass
        return elapsed, first.audio_float_array.size

    async def first_audio(self, text: str) -> float:
        """Milliseconds from the call to Piper's first audio chunk for `text`."""
        elapsed, _ = await asyncio.to_thread(self._first_chunk, text)
        return elapsed


@dataclass
class RawMistral:
    """The `mistralai` SDK pointed at the same server the stack's LLM provider uses."""

    server_url: str
    model: str
    max_tokens: int = 80
    api_key: str = "local"
    retry_budget_s: float = 30.0
    retries: int = field(default=0, init=False)
    _client: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        from mistralai.client import Mistral

        self._client = Mistral(api_key=self.api_key, server_url=self.server_url)

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        on_first_sentence: asyncio.Future[LLMTiming] | None = None,
        until_first_sentence: bool = False,
    ) -> LLMTiming:
        """Stream one reply to its end; `on_first_sentence` resolves as soon as a sentence is complete.

        An overloaded server (429/503, before any token) is retried after its Retry-After, as
        the stack's provider does; the wait counts in the measured time and in `retries`.
        """
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay

        start = time.perf_counter()
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_overloaded),
            wait=_retry_after,
            stop=stop_after_delay(self.retry_budget_s),
            before_sleep=self._count_retry,
            reraise=True,
        ):
            with attempt:
                return await self._stream_once(messages, start, on_first_sentence, until_first_sentence)
        raise AssertionError("unreachable")

    def _count_retry(self, _: Any) -> None:
        self.retries += 1

    async def _stream_once(
        self,
        messages: list[dict[str, str]],
        start: float,
        on_first_sentence: asyncio.Future[LLMTiming] | None,
        until_first_sentence: bool,
    ) -> LLMTiming:
        t_first: float | None = None
        t_sentence: float | None = None
        text = sentence = ""
        response = await self._client.chat.stream_async(
            model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=0.0
        )
        async with response as events:
            async for event in events:
                choices = event.data.choices
                delta = choices[0].delta.content if choices else None
                if not isinstance(delta, str) or not delta:
                    continue
                now = time.perf_counter()
                t_first = t_first or now
                text += delta
                if t_sentence is None and first_sentence_done(text):
                    t_sentence, sentence = now, text.strip()
                    if on_first_sentence is not None and not on_first_sentence.done():
                        on_first_sentence.set_result(
                            LLMTiming(start, t_first, t_sentence, now, text, sentence)
                        )
                    if until_first_sentence:
                        break  # closing the stream stops the server's generation
        end = time.perf_counter()
        if t_first is None or not text.strip():
            raise RuntimeError("the LLM streamed no text")
        timing = LLMTiming(start, t_first, t_sentence or end, end, text, sentence or text.strip())
        if on_first_sentence is not None and not on_first_sentence.done():
            on_first_sentence.set_result(timing)  # a reply without a sentence end: the whole reply
        return timing

    async def aclose(self) -> None:
        with_close = getattr(self._client, "__aexit__", None)
        if with_close is not None:
            await self._client.__aexit__(None, None, None)


def _overloaded(e: BaseException) -> bool:
    return getattr(e, "status_code", None) in (429, 503)


def _retry_after(state: Any) -> float:
    error = state.outcome.exception() if state.outcome else None
    headers = getattr(error, "headers", None) or {}
    try:
        return min(5.0, max(0.05, float(headers.get("retry-after", "0.5"))))
    except ValueError:
        return 0.5


@functools.cache
def piper_version() -> str:
    from importlib.metadata import version

    return version("piper-tts")
