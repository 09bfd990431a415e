"""Text chunks to audio: cache, engine, Azure→offline fallback before the first byte, metrics.

One `SpeechSession` serves one HTTP response or one websocket segment. Its engine may change only
until its first audio byte has gone out; after that a failure is an error, never a second voice
(and never duplicated audio).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Protocol

from .audio_cache import AudioCache, CacheKey
from .errors import SynthesisError
from .metrics import TTSMetrics
from .sentence_chunker import SentenceChunker
from .voices import OFFLINE_ENGINES, VoiceCatalog, VoiceChoice, VoiceInfo

logger = logging.getLogger("azure_tts.synthesis")


class SpeechEngine(Protocol):
    name: str

    @property
    def default_voice(self) -> str: ...

    @property
    def voices(self) -> list[VoiceInfo]: ...

    async def warm_up(self) -> None: ...

    async def aclose(self) -> None: ...

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        sample_rate: int,
        rate: float | None = None,
        pitch: str | None = None,
        style: str | None = None,
        language: str | None = None,
    ) -> AsyncGenerator[bytes, None]: ...


@dataclass(frozen=True)
class SpeechOptions:
    sample_rate: int = 24000
    rate: float | None = None
    pitch: str | None = None
    style: str | None = None
    context: str | None = None
    language: str | None = None


class TextToSpeech:
    """Everything a request needs: engines, voices, cache, admission and metrics."""

    def __init__(
        self,
        *,
        engines: Mapping[str, SpeechEngine],
        catalog: VoiceCatalog,
        cache: AudioCache,
        metrics: TTSMetrics,
        fallback: bool,
        max_concurrent: int,
        chunk_max_chars: int = 100,
    ) -> None:
        self.engines = dict(engines)
        self.catalog = catalog
        self.cache = cache
        self.metrics = metrics
        # An offline engine (Piper, else espeak-ng for a language Piper lacks) stands in for the primary.
        self.fallback = fallback and any(
            e in self.engines and e != catalog.primary_engine for e in OFFLINE_ENGINES
        )
        self.max_concurrent = max_concurrent
        self._chunk_max_chars = chunk_max_chars
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def primary_engine(self) -> str:
        return self.catalog.primary_engine

    def chunker(self, language: str | None = None) -> SentenceChunker:
        return SentenceChunker(language=language, max_chars=self._chunk_max_chars)

    def try_admit(self, transport: str) -> bool:
        """Take a synthesis slot; False (and counted) when every slot is busy."""
        if self._active >= self.max_concurrent:
            self.metrics.rejected.labels(transport).inc()
            return False
        self._active += 1
        self.metrics.active.set(self._active)
        return True

    def release(self) -> None:
        self._active -= 1
        self.metrics.active.set(self._active)

    def session(self, choice: VoiceChoice, options: SpeechOptions) -> SpeechSession:
        return SpeechSession(tts=self, choice=choice, options=options)


class SpeechSession:
    def __init__(self, *, tts: TextToSpeech, choice: VoiceChoice, options: SpeechOptions) -> None:
        self._tts = tts
        self.choice = choice
        self.options = options
        self.committed = False
        """True once audio has gone out: the engine and voice are fixed from then on."""
        self.fallback_reason: str | None = None
        self._started = time.perf_counter()

    async def speak(self, text: str) -> AsyncGenerator[bytes, None]:
        """16-bit mono PCM pieces for one text chunk."""
        choice, opts, metrics = self.choice, self.options, self._tts.metrics
        style = opts.style or choice.style
        key = CacheKey(
            choice.engine, f"{choice.voice}|{style}|{opts.pitch}", opts.rate, opts.sample_rate, text
        )
        cached = self._tts.cache.get(key)
        if cached is not None:
            metrics.cache_hits.labels(choice.engine).inc()
            self._first_byte(choice.engine)
            yield cached
            return
        metrics.cache_misses.labels(choice.engine).inc()
        engine = self._tts.engines[choice.engine]
        pieces: list[bytes] = []
        start = time.perf_counter()
        stream = engine.synthesize(
            text,
            voice=choice.voice,
            sample_rate=opts.sample_rate,
            rate=opts.rate,
            pitch=opts.pitch,
            style=style,
            language=choice.language,
        )
        try:
            async with aclosing(stream):
                async for pcm in stream:
                    if not pieces:
                        self._first_byte(choice.engine)
                    pieces.append(pcm)
                    yield pcm
        except SynthesisError as e:
            metrics.errors.labels(choice.engine, e.code).inc()
            if self.committed or not self._tts.fallback or choice.engine != self._tts.primary_engine:
                raise
            stand_in = self._tts.catalog.choose_fallback(context=opts.context, language=opts.language)
            if stand_in is None:  # no offline voice speaks this language
                raise
            logger.warning(
                "%s failed before the first byte, falling back to %s: %s", choice.engine, stand_in.engine, e
            )
            metrics.fallbacks.labels(choice.engine, stand_in.engine, e.code).inc()
            self.fallback_reason = e.code
            self.choice = stand_in
            self.options = replace(opts, pitch=None, style=None)
            async with aclosing(self.speak(text)) as fallback:
                async for pcm in fallback:
                    yield pcm
            return
        metrics.chunk_seconds.labels(choice.engine).observe(time.perf_counter() - start)
        metrics.characters.labels(choice.engine).inc(len(text))
        self._tts.cache.put(key, b"".join(pieces))
        metrics.cache_bytes.set(self._tts.cache.size_bytes)

    def _first_byte(self, engine: str) -> None:
        if not self.committed:
            self.committed = True
            self._tts.metrics.time_to_first_byte.labels(engine).observe(time.perf_counter() - self._started)
