"""AzureTTS: the livekit-agents TTS plugin for the azure-tts sidecar (Azure Speech or Piper).

`synthesize()` streams `POST /v1/synthesize`; `stream()` speaks the sidecar's websocket protocol
over pooled sockets (API.md). Sentence chunking and the Azure→Piper fallback are the sidecar's
job, not this plugin's.

The AudioEmitter lifecycle is the point of this file (the users' earlier plugin crashed with
"AudioEmitter isn't started"):
- `initialize()` is the first statement of every `_run`, even for empty text;
- one SynthesizeStream is one segment: `start_segment` before the first push, `end_segment` in
  `finally`, and audio arriving after the segment ended is dropped, never pushed;
- `flush()` at each sentence end, so a finished sentence plays without waiting for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from livekit.agents import APIConnectionError, APIConnectOptions, APIError, APITimeoutError, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given

from ._http import SidecarSession, error_message, raise_for_sidecar_status, sidecar_event, to_api_error
from .log import logger
from .models import TTSSampleRates, TTSVoiceContexts

DEFAULT_BASE_URL = "http://127.0.0.1:5002"
SUPPORTED_SAMPLE_RATES: tuple[int, ...] = (16000, 24000)
NUM_CHANNELS = 1
# The sidecar sends 200 ms chunks; frame at the same size so frames map onto chunks.
FRAME_SIZE_MS = 200
# A pooled socket is reused across turns; refresh it now and then like the official plugins.
WS_MAX_SESSION_S = 600.0
# Sidecar error codes worth another attempt (before the first byte only; the framework decides).
RETRYABLE_WS_CODES = frozenset({"overloaded", "internal", "engine_error", "engine_throttled", "timeout"})


def resolve_tts_url(base_url: str | None = None) -> str:
    """Explicit URL, else AZURE_TTS_URL, else its alias PIPER_TTS_URL, else the local default."""
    url = base_url or os.environ.get("AZURE_TTS_URL") or os.environ.get("PIPER_TTS_URL") or DEFAULT_BASE_URL
    return url.rstrip("/")


@dataclass
class _TTSOptions:
    base_url: str
    voice: str | None
    context: str | None
    language: str | None
    sample_rate: int

    def voice_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"sample_rate": self.sample_rate}
        for key in ("voice", "context", "language"):
            if (value := getattr(self, key)) is not None:
                fields[key] = value
        return fields

    def synthesize_json(self, text: str) -> dict[str, Any]:
        return {"text": text, "format": "pcm", **self.voice_fields()}

    def config_message(self) -> str:
        return json.dumps({"type": "config", **self.voice_fields()})

    @property
    def ws_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/stream"


class AzureTTS(tts.TTS):
    def __init__(
        self,
        *,
        base_url: str | None = None,
        voice: str | None = None,
        context: TTSVoiceContexts | str | None = None,
        language: str | None = None,
        sample_rate: TTSSampleRates | int = 24000,
        http_session: aiohttp.ClientSession | None = None,
        api_key: str | None = None,
    ) -> None:
        """Client of the azure-tts sidecar.

        Args:
            base_url: sidecar root; defaults to AZURE_TTS_URL, then PIPER_TTS_URL, then
                http://127.0.0.1:5002.
            voice: an explicit voice (wins over `context`).
            context: the voice context, e.g. "greeting" or "coaching".
            language: language hint for the sidecar's voice choice.
            sample_rate: declared here and requested on every call (16000 or 24000); the
                framework's FallbackAdapter builds its resampler from it.
            http_session: an aiohttp session to share; by default the agent job's session, or
                outside a job one bounded keep-alive session of its own.
            api_key: the sidecar's shared key (`Authorization: Bearer`); defaults to SIDECAR_API_KEY.
        """
        if sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SUPPORTED_SAMPLE_RATES}, got {sample_rate}")
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True),
            sample_rate=sample_rate,
            num_channels=NUM_CHANNELS,
        )
        self._opts = _TTSOptions(
            base_url=resolve_tts_url(base_url),
            voice=voice,
            context=context,
            language=language,
            sample_rate=sample_rate,
        )
        self._http = SidecarSession(http_session, api_key=api_key)
        self._sockets = _SocketPool(connect=self._connect_ws)
        self._streams = weakref.WeakSet[SynthesizeStream]()

    @property
    def model(self) -> str:
        return self._opts.voice or self._opts.context or "default"

    @property
    def provider(self) -> str:
        return "azure-tts"

    @property
    def base_url(self) -> str:
        return self._opts.base_url

    def update_options(
        self,
        *,
        voice: NotGivenOr[str | None] = NOT_GIVEN,
        context: NotGivenOr[TTSVoiceContexts | str | None] = NOT_GIVEN,
        language: NotGivenOr[str | None] = NOT_GIVEN,
    ) -> None:
        """Change the voice for streams created from now on (running streams keep theirs)."""
        if is_given(voice):
            self._opts.voice = voice
        if is_given(context):
            self._opts.context = context
        if is_given(language):
            self._opts.language = language

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SynthesizeStream:
        stream = SynthesizeStream(tts=self, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    def prewarm(self) -> None:
        self._sockets.prewarm()

    async def aclose(self) -> None:
        for stream in list(self._streams):
            await stream.aclose()
        self._streams.clear()
        await self._sockets.aclose()
        await self._http.aclose()

    async def _connect_ws(self, timeout: float) -> aiohttp.ClientWebSocketResponse:
        try:
            return await asyncio.wait_for(
                self._http.get().ws_connect(self._opts.ws_url, headers=self._http.headers), timeout
            )
        except Exception as e:
            raise to_api_error(e) from e


class _SocketPool:
    """`utils.ConnectionPool` of sidecar websockets that stay healthy while idle.

    aiohttp answers the sidecar's heartbeat pings only inside `receive()`, so an idle socket that
    nobody reads is closed by the sidecar after about 45 s, and the next turn would fail once and
    retry. An idle socket is therefore read by a small task that answers pings and notices a close;
    `acquire()` stops it and skips a socket that died meanwhile.
    """

    def __init__(self, *, connect: Callable[[float], Awaitable[aiohttp.ClientWebSocketResponse]]) -> None:
        self._connect = connect
        self._idle_readers: dict[aiohttp.ClientWebSocketResponse, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[bool]] = set()
        self._pool = utils.ConnectionPool[aiohttp.ClientWebSocketResponse](
            connect_cb=self._connect_idle,
            close_cb=self._close,
            max_session_duration=WS_MAX_SESSION_S,
            mark_refreshed_on_get=False,
        )
        self.last_acquire_time = 0.0
        self.last_connection_reused = False

    def prewarm(self) -> None:
        self._pool.prewarm()

    async def acquire(self, *, timeout: float) -> aiohttp.ClientWebSocketResponse:
        while True:
            ws = await self._pool.get(timeout=timeout)
            self.last_acquire_time = self._pool.last_acquire_time
            self.last_connection_reused = self._pool.last_connection_reused
            reader = self._idle_readers.pop(ws, None)
            if reader is not None and not reader.done():
                await utils.aio.cancel_and_wait(reader)
                if not ws.closed:
                    return ws
            self._pool.remove(ws)  # closed while idle: take another one

    def release(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A socket after a clean `segment_end`: idle and reusable."""
        self._read_while_idle(ws)
        self._pool.put(ws)

    def discard(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A socket left mid-segment: closed now (without waiting), so the sidecar stops at once."""
        self._pool.remove(ws)
        task = asyncio.create_task(ws.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        await self._pool.aclose()
        for reader in list(self._idle_readers.values()):
            await utils.aio.cancel_and_wait(reader)
        self._idle_readers.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _connect_idle(self, timeout: float) -> aiohttp.ClientWebSocketResponse:
        ws = await self._connect(timeout)
        self._read_while_idle(ws)  # prewarmed sockets wait in the pool too
        return ws

    def _read_while_idle(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async def read() -> None:
            # receive() answers pings itself; it returns only on a close or a stray message,
            # and either way this socket must not serve another segment
            with contextlib.suppress(Exception):
                await ws.receive()

        self._idle_readers[ws] = asyncio.create_task(read())

    async def _close(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if (reader := self._idle_readers.pop(ws, None)) is not None:
            await utils.aio.cancel_and_wait(reader)
        await ws.close()


class ChunkedStream(tts.ChunkedStream):
    """One `POST /v1/synthesize` per attempt; audio is pushed as the chunked body arrives."""

    def __init__(self, *, tts: AzureTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tts: AzureTTS = tts
        self._opts = replace(tts._opts)

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        request_id = utils.shortuuid()
        output_emitter.initialize(
            request_id=request_id,
            sample_rate=self._opts.sample_rate,
            num_channels=NUM_CHANNELS,
            mime_type="audio/pcm",
            frame_size_ms=FRAME_SIZE_MS,
        )
        if not self._input_text.strip():
            return  # nothing to say; the sidecar would answer an empty 200 anyway

        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._conn_options.timeout, sock_read=self._conn_options.timeout
        )
        pushed = False
        try:
            async with self._tts._http.get().post(
                f"{self._opts.base_url}/v1/synthesize",
                json=self._opts.synthesize_json(self._input_text),
                headers=self._tts._http.headers,
                timeout=timeout,
            ) as resp:
                await raise_for_sidecar_status(resp)
                _check_sample_rate(resp.headers, self._opts.sample_rate)
                async for chunk in resp.content.iter_any():
                    output_emitter.push(chunk)
                    pushed = True
                output_emitter.flush()
        except Exception as e:
            error = e if isinstance(e, APIError) else to_api_error(e, request_id=request_id)
            if pushed:
                # The framework retries a ChunkedStream even after audio went out, and the user
                # would hear the start again: after the first byte, never retry.
                error.retryable = False
            if error is e:
                raise
            raise error from e


def _check_sample_rate(headers: Any, expected: int) -> None:
    declared = headers.get("X-Sample-Rate")
    if declared is None or not declared.isdigit() or int(declared) != expected:
        raise APIError(
            f"azure-tts answered at X-Sample-Rate={declared}, but {expected} Hz was requested",
            retryable=False,
        )


class _Segment:
    """The one segment of one SynthesizeStream, as the AudioEmitter must see it.

    Started once before the first push and ended once; after the end (a normal segment_end,
    an error or an interruption) any audio still arriving is dropped, never pushed.
    """

    def __init__(self, emitter: tts.AudioEmitter) -> None:
        self._emitter = emitter
        self.started = False
        self.ended = False
        self.dropped_bytes = 0

    def start(self) -> None:
        self._emitter.start_segment(segment_id=utils.shortuuid())
        self.started = True

    @property
    def open(self) -> bool:
        return self.started and not self.ended

    def push(self, data: bytes) -> None:
        if self.open:
            self._emitter.push(data)
        else:
            self.dropped_bytes += len(data)

    def flush(self) -> None:
        if self.open:
            self._emitter.flush()

    def end(self) -> None:
        if self.open:
            self.ended = True  # stop routing first, then end
            self._emitter.end_segment()


class SynthesizeStream(tts.SynthesizeStream):
    """One segment over `WS /v1/stream`: config, text as it comes, flush, then segment_end."""

    def __init__(self, *, tts: AzureTTS, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, conn_options=conn_options)
        self._tts: AzureTTS = tts
        self._opts = replace(tts._opts)

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        request_id = utils.shortuuid()
        output_emitter.initialize(
            request_id=request_id,
            sample_rate=self._opts.sample_rate,
            num_channels=NUM_CHANNELS,
            mime_type="audio/pcm",
            frame_size_ms=FRAME_SIZE_MS,
            stream=True,
        )
        segment = _Segment(output_emitter)
        try:
            first_text = await self._first_text()
            if first_text is None:
                return  # empty or whitespace input: no socket, no segment, no error
            await self._speak(first_text, segment)
        except APIError:
            raise
        except Exception as e:
            raise to_api_error(e, request_id=request_id) from e
        finally:
            segment.end()
            if segment.dropped_bytes:
                logger.debug(
                    "dropped %d bytes of audio that came after the segment ended", segment.dropped_bytes
                )

    async def _first_text(self) -> str | None:
        """Wait for text that has something to say; None when the segment ends without any."""
        pending = ""
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                break
            pending += item
            if pending.strip():
                return pending
        return None

    async def _speak(self, first_text: str, segment: _Segment) -> None:
        sockets = self._tts._sockets
        ws = await sockets.acquire(timeout=self._conn_options.timeout)
        self._acquire_time = sockets.last_acquire_time
        self._connection_reused = sockets.last_connection_reused
        flush_sent = asyncio.Event()
        finished = False
        segment.start()
        tasks = [
            asyncio.create_task(self._send(ws, first_text, flush_sent)),
            asyncio.create_task(self._receive(ws, segment, flush_sent)),
        ]
        try:
            await asyncio.gather(*tasks)
            finished = True
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            if finished:
                sockets.release(ws)
            else:
                sockets.discard(ws)

    async def _send(
        self, ws: aiohttp.ClientWebSocketResponse, first_text: str, flush_sent: asyncio.Event
    ) -> None:
        await ws.send_str(self._opts.config_message())
        self._mark_started()
        await ws.send_str(json.dumps({"type": "text", "text": first_text}))
        # livekit-agents 1.8 drops text pushed after a stream's first flush: one flush ends it
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                break
            await ws.send_str(json.dumps({"type": "text", "text": item}))
        await ws.send_str(json.dumps({"type": "flush"}))
        flush_sent.set()

    async def _receive(
        self, ws: aiohttp.ClientWebSocketResponse, segment: _Segment, flush_sent: asyncio.Event
    ) -> None:
        while True:
            try:
                msg = await ws.receive(timeout=self._conn_options.timeout)
            except TimeoutError:
                # silence is normal while the LLM is still writing; after the flush it is a stall
                if flush_sent.is_set():
                    raise APITimeoutError("azure-tts sent nothing after the flush") from None
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                segment.push(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                event = sidecar_event(msg.data, "azure-tts")
                kind = event.get("type")
                if kind == "sentence_end":
                    segment.flush()
                elif kind == "segment_end":
                    segment.end()
                    return
                elif kind == "error":
                    raise APIError(
                        f"azure-tts: {error_message({'error': event}, 'error')}",
                        body=event,
                        retryable=event.get("code") in RETRYABLE_WS_CODES,
                    )
                else:
                    logger.debug("ignoring azure-tts event %s", kind)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise APIConnectionError("azure-tts websocket failed mid-segment") from ws.exception()
            else:  # CLOSE, CLOSING, CLOSED
                raise APIConnectionError(f"azure-tts closed the websocket mid-segment (code {ws.close_code})")
