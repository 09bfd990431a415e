"""WhisperSTT: the livekit-agents STT plugin for the whisper-stt sidecar (faster-whisper).

`recognize()` posts a WAV to `POST /v1/audio/transcriptions`; `stream()` speaks the sidecar's
websocket protocol (API.md). With `manual_flush`, the agent's VAD ends the turn: its end of speech
calls the stream's `flush()`, which becomes the sidecar's `{"type":"flush"}` and always yields one
final at once.

If the socket drops mid-utterance, the framework re-runs `_run()` but does not replay the frames
it already consumed, so the stream keeps every frame since the last final (and any flush not yet
answered) and re-sends them on the new socket: no word is lost and no final is emitted twice.

A sentence cut by a pause: the stream asks the sidecar for turn context, so the final after the
pause is the whole sentence transcribed as one piece, and says which finals it `replaces`. The
framework only appends finals, so the stream sends it the words that are new (the tail of the whole
transcript past the words already sent), and puts the whole one in the event's metadata
(`turn_transcript`, with `heard`: the turn's text as the framework has put it together).
`providers.turn_transcript.TurnRevisions` turns that into the user's message at the end of the turn.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import aiohttp
import numpy as np
from livekit import rtc
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APITimeoutError,
    stt,
    utils,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given

from ._http import SidecarSession, error_message, raise_for_sidecar_status, sidecar_event, to_api_error
from .log import logger
from .models import STTLanguages
from .turn_transcript import unheard_tail

DEFAULT_BASE_URL = "http://127.0.0.1:8001"
SAMPLE_RATE = 16000
# A sidecar restart must not cost the user a turn: retry every 100 ms (the framework's first
# retry is 100 ms too) for about 10 s, instead of livekit's default 2 s interval.
STREAM_CONNECT_OPTIONS = APIConnectOptions(max_retry=100, retry_interval=0.1, timeout=5.0)
# Bound on the audio kept for a replay: an utterance longer than this is re-sent only in part.
MAX_REPLAY_S = 60.0
# Sidecar websocket error codes that a new connection may cure.
RETRYABLE_WS_CODES = frozenset({"overloaded", "internal"})
# Errors after which the sidecar keeps the stream going (one frame or message was discarded).
NON_FATAL_WS_CODES = frozenset({"invalid_audio", "invalid_message"})
# The last flush's final may wait behind other streams' finals in the sidecar's queue.
LAST_FINAL_TIMEOUT_S = 30.0


def resolve_stt_url(base_url: str | None = None) -> str:
    """Explicit URL, else WHISPER_STT_URL, else the local default."""
    return (base_url or os.environ.get("WHISPER_STT_URL") or DEFAULT_BASE_URL).rstrip("/")


@dataclass
class _STTOptions:
    base_url: str
    language: str | None

    def stream_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        query: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "context": "turn"}
        if self.language:
            query["language"] = self.language
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/stream?{urlencode(query)}"


class WhisperSTT(stt.STT):
    def __init__(
        self,
        *,
        base_url: str | None = None,
        language: STTLanguages | str | None = None,
        http_session: aiohttp.ClientSession | None = None,
        conn_options: APIConnectOptions = STREAM_CONNECT_OPTIONS,
        api_key: str | None = None,
    ) -> None:
        """Client of the whisper-stt sidecar.

        Args:
            base_url: sidecar root; defaults to WHISPER_STT_URL, then http://127.0.0.1:8001.
            language: ISO code; None lets the sidecar use its default.
            http_session: an aiohttp session to share; by default the agent job's session, or
                outside a job one bounded keep-alive session of its own.
            conn_options: retry settings for streams opened with the framework's default options
                (the agent passes those unless told otherwise); reconnects take ~100 ms.
            api_key: the sidecar's shared key (`Authorization: Bearer`); defaults to SIDECAR_API_KEY.
        """
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=True, interim_results=True, manual_flush=True)
        )
        self._opts = _STTOptions(base_url=resolve_stt_url(base_url), language=language)
        self._http = SidecarSession(http_session, api_key=api_key)
        self._conn_options = conn_options
        self._streams = weakref.WeakSet[SpeechStream]()
        self._prewarm_task: asyncio.Task[None] | None = None

    @property
    def model(self) -> str:
        return "whisper"

    @property
    def provider(self) -> str:
        return "whisper-stt"

    @property
    def base_url(self) -> str:
        return self._opts.base_url

    def update_options(self, *, language: NotGivenOr[STTLanguages | str | None] = NOT_GIVEN) -> None:
        """Change the language for new requests and streams (running streams keep theirs)."""
        if is_given(language):
            self._opts.language = language

    def prewarm(self) -> None:
        """Open the HTTP connection now, so that the first turn does not pay for it."""
        if self._prewarm_task is None or self._prewarm_task.done():
            self._prewarm_task = asyncio.create_task(self._prewarm())

    async def _prewarm(self) -> None:
        try:
            async with self._http.get().get(
                f"{self._opts.base_url}/health", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                await resp.read()
        except (TimeoutError, aiohttp.ClientError) as e:
            logger.warning("whisper-stt prewarm failed: %s", type(e).__name__)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        lang = language if is_given(language) else self._opts.language
        frame = rtc.combine_audio_frames(buffer)
        form = aiohttp.FormData()
        form.add_field("file", frame.to_wav_bytes(), filename="audio.wav", content_type="audio/wav")
        form.add_field("response_format", "verbose_json")
        if lang:
            form.add_field("language", lang)
        request_id = utils.shortuuid()
        try:
            async with self._http.get().post(
                f"{self._opts.base_url}/v1/audio/transcriptions",
                data=form,
                headers=self._http.headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=conn_options.timeout, sock_read=30),
            ) as resp:
                await raise_for_sidecar_status(resp)
                result = await resp.json()
        except APIError:
            raise
        except Exception as e:
            raise to_api_error(e, request_id=request_id) from e

        segments = result.get("segments") or []
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=request_id,
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(result.get("language") or lang or ""),
                    text=(result.get("text") or "").strip(),
                    start_time=0.0,
                    end_time=float(result.get("duration") or frame.duration),
                    confidence=_confidence([s.get("avg_logprob") for s in segments]),
                )
            ],
        )

    def stream(
        self,
        *,
        language: NotGivenOr[STTLanguages | str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SpeechStream:
        opts = replace(self._opts)
        if is_given(language):
            opts.language = language
        if conn_options is DEFAULT_API_CONNECT_OPTIONS:
            conn_options = self._conn_options  # the agent's default: reconnect in ms, not 2 s
        stream = SpeechStream(stt=self, opts=opts, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        for stream in list(self._streams):
            await stream.aclose()
        self._streams.clear()
        if self._prewarm_task is not None:
            await utils.aio.cancel_and_wait(self._prewarm_task)
        await self._http.aclose()


def _confidence(avg_logprobs: list[Any]) -> float:
    values = [float(v) for v in avg_logprobs if v is not None]
    if not values:
        return 0.0
    return float(min(1.0, max(0.0, math.exp(sum(values) / len(values)))))


_FLUSH = None  # a flush marker in the replay buffer


class _ReplayBuffer:
    """Audio consumed since the last final, plus flushes not yet answered, in stream order.

    Positions count 16 kHz samples since the stream started. After a reconnect everything here
    is sent again, from `start`, which is then the new socket's time zero.
    """

    def __init__(self, *, max_samples: int) -> None:
        self._items: deque[tuple[int, bytes | None]] = deque()
        self._max_samples = max_samples
        self._warned = False
        self.start = 0
        self.end = 0

    def add_audio(self, pcm: bytes) -> None:
        self._items.append((self.end, pcm))
        self.end += len(pcm) // 2
        if self.end - self.start > self._max_samples:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "no final for %.0f s: after a reconnect only the last %.0f s would be re-sent",
                    (self.end - self.start) / SAMPLE_RATE,
                    self._max_samples / SAMPLE_RATE,
                )
            self.finalized(until=self.end - self._max_samples, answered_flush=False)

    def add_flush(self) -> None:
        self._items.append((self.end, _FLUSH))

    @property
    def pending_flushes(self) -> int:
        return sum(1 for _, item in self._items if item is _FLUSH)

    def finalized(self, *, until: int, answered_flush: bool) -> None:
        """A final covered the audio before `until`; if it answered a flush, that flush is done."""
        if answered_flush:
            for i, (pos, item) in enumerate(self._items):
                if item is _FLUSH:
                    del self._items[i]
                    until = max(until, pos)  # a flush finalizes everything sent before it
                    break
        until = max(self.start, min(until, self.end))
        kept: deque[tuple[int, bytes | None]] = deque()
        for pos, item in self._items:
            if item is _FLUSH:
                kept.append((pos, item))  # still waiting for its final
            elif pos + len(item) // 2 > until:
                cut = max(0, until - pos)
                kept.append((pos + cut, item[cut * 2 :]))
        self._items = kept
        self.start = until

    def replay(self) -> list[bytes | None]:
        return [item for _, item in self._items]

    def items(self) -> list[tuple[int, bytes | None]]:
        return list(self._items)


class SpeechStream(stt.RecognizeStream):
    def __init__(self, *, stt: WhisperSTT, opts: _STTOptions, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=stt, conn_options=conn_options, sample_rate=SAMPLE_RATE)
        self._stt: WhisperSTT = stt
        self._opts = opts
        self._replay = _ReplayBuffer(max_samples=int(MAX_REPLAY_S * SAMPLE_RATE))
        self._origin = 0  # stream position of the current socket's time zero
        self._speaking = False
        self._fresh_samples = 0  # consumed since the last usage report (re-sent audio excluded)
        self._request_id = ""
        # this socket's finals (utterance id -> the text the framework got), for those that replace them
        self._sent: OrderedDict[int, str] = OrderedDict()

    async def _run(self) -> None:
        ws = await self._connect()
        self._request_id = utils.shortuuid()
        self._origin = self._replay.start
        self._sent.clear()  # utterance ids count from 1 again on a new socket
        answered = asyncio.Event()  # set while every flush sent so far has had its final
        if self._replay.pending_flushes == 0:
            answered.set()
        send = asyncio.create_task(self._send(ws, answered))
        receive = asyncio.create_task(self._receive(ws, answered))
        try:
            await _first_of(send, receive)
            # input ended (end_input flushed): wait for that flush's final, then close
            waiter = asyncio.create_task(asyncio.wait_for(answered.wait(), LAST_FINAL_TIMEOUT_S))
            try:
                await _first_of(waiter, receive)
            except TimeoutError:
                raise APITimeoutError("whisper-stt did not answer the last flush") from None
            finally:
                await utils.aio.cancel_and_wait(waiter)
        finally:
            await utils.aio.cancel_and_wait(send, receive)
            await ws.close()
        self._report_usage()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        try:
            return await asyncio.wait_for(
                self._stt._http.get().ws_connect(self._opts.stream_url(), headers=self._stt._http.headers),
                self._conn_options.timeout,
            )
        except Exception as e:
            raise to_api_error(e) from e

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, answered: asyncio.Event) -> None:
        flush_msg = json.dumps({"type": "flush"})
        try:
            # first what an earlier socket consumed but did not finalize
            for item in self._replay.replay():
                await (ws.send_str(flush_msg) if item is _FLUSH else ws.send_bytes(item))
            async for data in self._input_ch:  # ends at once when the input already ended
                if isinstance(data, self._FlushSentinel):
                    self._replay.add_flush()
                    answered.clear()
                    await ws.send_str(flush_msg)
                    self._stt.emit("flush_sent")  # the turn timeline's "flush sent" (eloquence/timeline.py)
                else:
                    pcm = _mono_pcm16(data)
                    self._replay.add_audio(pcm)  # kept before sending: a failed send is re-sent
                    self._fresh_samples += len(pcm) // 2
                    await ws.send_bytes(pcm)
        except (aiohttp.ClientError, ConnectionError) as e:
            raise APIConnectionError("whisper-stt websocket dropped while sending audio") from e

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, answered: asyncio.Event) -> None:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._on_event(sidecar_event(msg.data, "whisper-stt"))
                if self._replay.pending_flushes == 0:
                    answered.set()
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise APIConnectionError("whisper-stt websocket failed") from ws.exception()
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                raise APIConnectionError(f"whisper-stt closed the websocket (code {ws.close_code})")

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start_of_speech":
            if not self._speaking:  # a replay after a reconnect starts the same speech again
                self._speaking = True
                self._event_ch.send_nowait(
                    stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH, request_id=self._request_id)
                )
        elif kind == "interim":
            if text := (event.get("text") or "").strip():
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.INTERIM_TRANSCRIPT,
                        request_id=self._request_id,
                        alternatives=[self._speech_data(event, text)],
                    )
                )
        elif kind == "final":
            self._on_final(event)
        elif kind == "end_of_speech":
            if self._speaking:
                self._speaking = False
                self._event_ch.send_nowait(
                    stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, request_id=self._request_id)
                )
        elif kind == "error":
            code = event.get("code")
            if code in NON_FATAL_WS_CODES:  # the sidecar dropped one message; the stream goes on
                logger.warning("whisper-stt: %s", error_message({"error": event}, "error"))
                return
            raise APIError(
                f"whisper-stt: {error_message({'error': event}, 'error')}",
                body=event,
                retryable=code in RETRYABLE_WS_CODES,
            )
        else:
            logger.debug("ignoring whisper-stt event %s", kind)

    def _on_final(self, event: dict[str, Any]) -> None:
        end = self._origin + round(float(event.get("end_s") or 0.0) * SAMPLE_RATE)
        self._replay.finalized(until=end, answered_flush=self._answers_flush(event, end))
        text = (event.get("text") or "").strip()
        data = self._speech_data(event, text, avg_logprob=event.get("avg_logprob"))
        replaced = [self._sent[i] for i in event.get("replaces") or [] if i in self._sent]
        if heard := " ".join(t for t in replaced if t):
            # the framework already has the turn's start: it gets the new words, the metadata the rest
            data.text = unheard_tail(heard, text)
            data.metadata = {"turn_transcript": text, "heard": f"{heard} {data.text}".strip()}
        if isinstance(event.get("utterance_id"), int):
            self._sent[event["utterance_id"]] = data.text
            while len(self._sent) > 32:
                self._sent.popitem(last=False)
        # an empty final still matters: it answers the agent's flush at once
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                request_id=self._request_id,
                alternatives=[data],
            )
        )
        self._report_usage()

    def _answers_flush(self, event: dict[str, Any], end: int) -> bool:
        if "reason" in event:  # the sidecar says why it finalized: "flush", "end_of_speech", ...
            return bool(event["reason"] == "flush")
        # a sidecar without `reason`: a flush final ends at or after the flush's position
        for pos, item in self._replay.items():
            if item is _FLUSH:
                return end >= pos
        return False

    def _speech_data(self, event: dict[str, Any], text: str, avg_logprob: Any = None) -> stt.SpeechData:
        start = (self._origin / SAMPLE_RATE) + float(event.get("start_s") or 0.0)
        end = (self._origin / SAMPLE_RATE) + float(event.get("end_s") or 0.0)
        return stt.SpeechData(
            language=LanguageCode(event.get("language") or self._opts.language or ""),
            text=text,
            start_time=start + self.start_time_offset,
            end_time=end + self.start_time_offset,
            confidence=_confidence([avg_logprob]) if avg_logprob is not None else 0.0,
        )

    def _report_usage(self) -> None:
        if self._fresh_samples <= 0:
            return
        duration, self._fresh_samples = self._fresh_samples / SAMPLE_RATE, 0
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.RECOGNITION_USAGE,
                request_id=self._request_id,
                recognition_usage=stt.RecognitionUsage(audio_duration=duration),
            )
        )


async def _first_of(main: asyncio.Task[Any], watched: asyncio.Task[Any]) -> None:
    """Wait for `main`; an error (or an early end) of `watched` meanwhile is raised instead."""
    await asyncio.wait({main, watched}, return_when=asyncio.FIRST_COMPLETED)
    if watched.done():
        watched.result()  # raises its error
        if not main.done():
            raise APIConnectionError("whisper-stt stream stopped receiving")
    main.result()


def _mono_pcm16(frame: rtc.AudioFrame) -> bytes:
    if frame.num_channels == 1:
        return frame.data.tobytes()
    samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    return bytes(samples.mean(axis=1).astype(np.int16).tobytes())
