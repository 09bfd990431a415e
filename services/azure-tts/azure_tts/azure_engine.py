"""Azure Speech through the official SDK: cloud (key + region) or an on-prem container (host).

Audio streams out of the SDK's `synthesizing` events as they arrive. Throttling
(TooManyRequests) is retried with exponential backoff and jitter, and only before the first
byte; authentication errors fail at once; waits are bounded. The SDK's own retry is switched off
so that retries are counted once, here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

import azure.cognitiveservices.speech as speechsdk
import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .errors import EngineAuthError, EngineThrottledError, EngineTimeoutError, SynthesisError
from .voices import VoiceInfo

logger = logging.getLogger("azure_tts.azure")

OUTPUT_FORMATS = {
    16000: speechsdk.SpeechSynthesisOutputFormat.Raw16Khz16BitMonoPcm,
    24000: speechsdk.SpeechSynthesisOutputFormat.Raw24Khz16BitMonoPcm,
}
# Azure voices are mastered close to full scale; a fixed gain keeps every streamed sample at or
# below 80 % without waiting for a sentence's peak.
HEADROOM_GAIN = 0.8
SDK_ALL_CHUNKS_TIMEOUT_MS = 120_000
_AUTH_CODES = {
    speechsdk.CancellationErrorCode.AuthenticationFailure,
    speechsdk.CancellationErrorCode.Forbidden,
}
# Characters XML 1.0 cannot carry at all; the service would reject the whole SSML.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def build_ssml(
    text: str,
    *,
    voice: str,
    language: str,
    rate: float | None = None,
    pitch: str | None = None,
    style: str | None = None,
) -> str:
    """SSML for `text` spoken literally: the text is XML-escaped, attributes are quoted."""
    body = escape(_XML_INVALID.sub(" ", text))
    prosody = ""
    if rate is not None and rate != 1.0:
        prosody += f" rate={quoteattr(f'{(rate - 1) * 100:+.0f}%')}"
    if pitch:
        prosody += f" pitch={quoteattr(pitch)}"
    if prosody:
        body = f"<prosody{prosody}>{body}</prosody>"
    if style:
        body = f"<mstts:express-as style={quoteattr(style)}>{body}</mstts:express-as>"
    return (
        "<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' "
        f"xmlns:mstts='http://www.w3.org/2001/mstts' xml:lang={quoteattr(language)}>"
        f"<voice name={quoteattr(voice)}>{body}</voice></speak>"
    )


def voice_language(voice: str) -> str:
    """ "fr-FR-DeniseNeural" -> "fr-FR"."""
    parts = voice.split("-")
    return "-".join(parts[:2]) if len(parts) >= 3 else "en-US"


@dataclass(eq=False)
class _PooledSynthesizer:
    """A SpeechSynthesizer kept with its open connection; `sink` receives the current request's
    audio pieces (bytes) and then its final result, in the order the SDK fires its events."""

    synthesizer: speechsdk.SpeechSynthesizer
    sink: Callable[[object], None] | None = None
    broken: bool = False
    idle_since: float = 0.0
    _callbacks: list[object] = field(default_factory=list)
    _connection: speechsdk.Connection | None = None

    def __post_init__(self) -> None:
        def on_audio(evt: speechsdk.SpeechSynthesisEventArgs) -> None:
            if (sink := self.sink) is not None:
                sink(bytes(evt.result.audio_data))

        def on_end(evt: speechsdk.SpeechSynthesisEventArgs) -> None:
            if (sink := self.sink) is not None:
                sink(evt.result)

        def on_disconnected(_: object) -> None:
            self.broken = True  # the service closed it (idle timeout): never reuse it

        self._callbacks += [on_audio, on_end, on_disconnected]
        self.synthesizer.synthesizing.connect(on_audio)
        self.synthesizer.synthesis_completed.connect(on_end)
        self.synthesizer.synthesis_canceled.connect(on_end)
        self._connection = speechsdk.Connection.from_speech_synthesizer(self.synthesizer)
        self._connection.disconnected.connect(on_disconnected)

    def open(self) -> None:
        assert self._connection is not None
        self._connection.open(False)


class AzureSpeechEngine:
    name = "azure"

    def __init__(
        self,
        *,
        key: str | None,
        region: str | None,
        host: str | None,
        voices: Sequence[str],
        default_voice: str,
        max_attempts: int = 4,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 2.0,
        first_byte_timeout_s: float = 10.0,
        chunk_timeout_s: float = 10.0,
        pool_size: int = 2,
        pool_idle_s: float = 60.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        if not host and not (key and region):
            raise ValueError(
                "Azure Speech needs AZURE_SPEECH_HOST, or AZURE_SPEECH_KEY and AZURE_SPEECH_REGION"
            )
        names = list(dict.fromkeys([default_voice, *voices]))
        self._infos = [VoiceInfo(name=n, engine=self.name, language=voice_language(n)) for n in names]
        self.default_voice = default_voice
        self._key, self._region, self._host = key, region, host
        self._max_attempts = max_attempts
        self._retry_initial_s, self._retry_max_s = retry_initial_s, retry_max_s
        self._first_byte_timeout_s = first_byte_timeout_s
        self._chunk_timeout_s = chunk_timeout_s
        self._pool_size = pool_size
        self._pool_idle_s = pool_idle_s
        self._idle: dict[int, list[_PooledSynthesizer]] = {rate: [] for rate in OUTPUT_FORMATS}
        self._configs: dict[int, speechsdk.SpeechConfig] = {}
        self._on_retry = on_retry
        self._background: set[asyncio.Task[None]] = set()

    @property
    def voices(self) -> list[VoiceInfo]:
        return list(self._infos)

    @property
    def endpoint(self) -> str:
        return self._host or f"region {self._region}"

    def _config(self, sample_rate: int) -> speechsdk.SpeechConfig:
        if sample_rate not in self._configs:
            if self._host:
                config = speechsdk.SpeechConfig(host=self._host, subscription=self._key)
            else:
                config = speechsdk.SpeechConfig(subscription=self._key, region=self._region)
            config.set_speech_synthesis_output_format(OUTPUT_FORMATS[sample_rate])
            config.set_property_by_name("SpeechSynthesis_MaxRetryTimes", "0")
            config.set_property_by_name(
                "SpeechSynthesis_FirstChunkTimeoutMs", str(int(self._first_byte_timeout_s * 1000))
            )
            # Backstops only: the waits in _AzureSpeech are the real bounds.
            config.set_property_by_name("SpeechSynthesis_AllChunkTimeoutMs", str(SDK_ALL_CHUNKS_TIMEOUT_MS))
            self._configs[sample_rate] = config
        return self._configs[sample_rate]

    def _acquire(self, sample_rate: int) -> _PooledSynthesizer:
        idle = self._idle[sample_rate]
        now = time.monotonic()
        while idle:
            lease = idle.pop()
            # Reuse only recent connections: the service closes idle ones, and a request sent into
            # a socket it is closing waits for the SDK's first-chunk timeout.
            if not lease.broken and now - lease.idle_since < self._pool_idle_s:
                return lease
        synthesizer = speechsdk.SpeechSynthesizer(speech_config=self._config(sample_rate), audio_config=None)
        return _PooledSynthesizer(synthesizer=synthesizer)

    def _release(self, lease: _PooledSynthesizer, sample_rate: int) -> None:
        lease.sink = None
        lease.idle_since = time.monotonic()
        idle = self._idle[sample_rate]
        if not lease.broken and len(idle) < self._pool_size:
            idle.append(lease)

    async def warm_up(self) -> None:
        """Open one connection ahead of the first request; a failure is logged, not fatal."""
        if self._pool_size == 0:
            return
        lease = self._acquire(24000)
        try:
            await asyncio.wait_for(asyncio.to_thread(lease.open), self._first_byte_timeout_s)
        except Exception as e:  # noqa: BLE001 - the fallback (or a later request) deals with a down Azure
            logger.warning("could not open a connection to Azure Speech at %s: %s", self.endpoint, e)
            return
        self._release(lease, 24000)

    async def synthesize(
        self,
        text: str,
        *,
        voice: str,
        sample_rate: int,
        rate: float | None = None,
        pitch: str | None = None,
        style: str | None = None,
        language: str | None = None,
    ) -> AsyncGenerator[bytes, None]:
        ssml = build_ssml(
            text, voice=voice, language=language or voice_language(voice), rate=rate, pitch=pitch, style=style
        )
        speech: _AzureSpeech | None = None
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(EngineThrottledError),
            wait=wait_exponential_jitter(initial=self._retry_initial_s, max=self._retry_max_s),
            stop=stop_after_attempt(self._max_attempts),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                speech = await self._start(ssml, sample_rate)
        assert speech is not None
        try:
            while (pcm := await speech.next_piece(self._chunk_timeout_s)) is not None:
                yield pcm
        finally:
            self._finish(speech)

    def _before_retry(self, state: RetryCallState) -> None:
        logger.info("Azure Speech throttled; retry %d", state.attempt_number)
        if self._on_retry is not None:
            self._on_retry("throttled")

    async def _start(self, ssml: str, sample_rate: int) -> _AzureSpeech:
        """Send the SSML and wait for the first audio piece (or the end, or the error)."""
        speech = _AzureSpeech(lease=self._acquire(sample_rate), sample_rate=sample_rate, engine=self)
        speech.start(ssml)
        try:
            await speech.wait_first(self._first_byte_timeout_s)
        except BaseException:
            self._finish(speech)
            raise
        return speech

    def _finish(self, speech: _AzureSpeech) -> None:
        """Return the synthesizer to the pool, or stop it (a cancelled or failed request) and drop it."""
        if speech.result_received:
            self._release(speech.lease, speech.sample_rate)  # a broken one is dropped there
            return
        speech.lease.sink = None
        speech.lease.broken = True
        task = asyncio.get_running_loop().create_task(_stop(speech))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        for task in list(self._background):
            await asyncio.wait({task}, timeout=2)
        self._idle = {rate: [] for rate in OUTPUT_FORMATS}


async def _stop(speech: _AzureSpeech) -> None:
    try:
        await asyncio.wait_for(
            asyncio.to_thread(lambda: speech.lease.synthesizer.stop_speaking_async().get()), 5
        )
    except Exception as e:  # noqa: BLE001 - best effort: the synthesizer is dropped either way
        logger.debug("stop_speaking failed: %s", e)


class _AzureSpeech:
    """One `speak_ssml_async` call: its audio pieces, then its result, arrive on an asyncio queue."""

    def __init__(self, *, lease: _PooledSynthesizer, sample_rate: int, engine: AzureSpeechEngine) -> None:
        self.lease = lease
        self.sample_rate = sample_rate
        self.done = False
        self.result_received = False
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._pending: list[bytes] = []
        self._received = 0
        self._carry = b""

    def _put(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # loop closed at shutdown
            pass

    def start(self, ssml: str) -> None:
        self.lease.sink = self._put
        try:
            self.lease.synthesizer.speak_ssml_async(ssml)
        except Exception as e:  # the SDK refused the call itself (bad state)
            self.lease.broken = True
            self.result_received = True
            raise SynthesisError(f"Azure Speech SDK failed: {e}", engine="azure") from e

    async def wait_first(self, timeout: float) -> None:
        if (first := await self._next(timeout, first=True)) is not None:
            self._pending.append(first)

    async def next_piece(self, timeout: float) -> bytes | None:
        if self._pending:
            return self._pending.pop(0)
        if self.done:
            return None
        return await self._next(timeout, first=False)

    async def _next(self, timeout: float, *, first: bool) -> bytes | None:
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                what = "the first audio" if first else "more audio"
                raise EngineTimeoutError(
                    f"Azure Speech sent no {what} within {timeout:.0f} s", engine="azure"
                ) from None
            if isinstance(item, bytes):
                self._received += len(item)
                if pcm := self._scale(item):
                    return pcm
                continue
            assert isinstance(item, speechsdk.SpeechSynthesisResult)
            self._check_result(item)
            self.done = True
            # The result holds all the audio: anything the events did not deliver is sent now.
            return self._scale(bytes(item.audio_data[self._received :])) or None

    def _scale(self, pcm: bytes) -> bytes:
        """Apply the headroom gain; an odd byte waits for the next piece so samples stay aligned."""
        data = self._carry + pcm
        even = len(data) // 2 * 2
        self._carry = data[even:]
        samples = np.frombuffer(data[:even], dtype="<i2").astype(np.float32) * HEADROOM_GAIN
        return samples.astype("<i2").tobytes()

    def _check_result(self, result: speechsdk.SpeechSynthesisResult) -> None:
        self.result_received = True
        if result.reason != speechsdk.ResultReason.Canceled:
            return
        self.lease.broken = True
        details = result.cancellation_details
        message = f"Azure Speech at {self._engine.endpoint}: {details.error_details or details.reason}"
        code = details.error_code
        if code == speechsdk.CancellationErrorCode.TooManyRequests:
            raise EngineThrottledError(message, engine="azure")
        if code in _AUTH_CODES:
            raise EngineAuthError(
                f"{message} (check AZURE_SPEECH_KEY and AZURE_SPEECH_REGION, or the container's key)",
                engine="azure",
            )
        if code == speechsdk.CancellationErrorCode.ServiceTimeout:
            raise EngineTimeoutError(message, engine="azure")
        raise SynthesisError(message, engine="azure")
