"""`WS /v1/stream`: text streams in (LLM tokens), audio streams out sentence by sentence.

The receiving side chunks text as it arrives and queues complete chunks; one speaker task per
socket synthesizes them in order. A segment holds a synthesis slot from its first chunk to its
`segment_end`. Closing the socket cancels the speaker, which stops the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from contextlib import aclosing
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from sidecar_common.http import InvalidJSON, parse_json

from .errors import SynthesisError
from .messages import StreamConfig, StreamText, validation_message
from .pcm_frames import PCMFramer
from .sentence_chunker import SentenceChunker
from .synthesis import SpeechOptions, SpeechSession, TextToSpeech
from .voices import UnknownVoiceError, VoiceChoice

logger = logging.getLogger("azure_tts.stream")

CLOSE_TRY_AGAIN_LATER = 1013


class _Flush:
    """Marks the end of a segment in the speaker's queue."""


class StreamSocket:
    def __init__(self, *, tts: TextToSpeech, ws: web.WebSocketResponse, max_text_chars: int) -> None:
        self._tts = tts
        self._ws = ws
        self._max_text_chars = max_text_chars
        self._queue: asyncio.Queue[tuple[str | _Flush, VoiceChoice, SpeechOptions]] = asyncio.Queue()
        self._queued_chars = 0
        """Characters received and not yet spoken: bounded by max_text_chars."""
        self._choice: VoiceChoice | None = None
        self._options: SpeechOptions | None = None
        self._chunker: SentenceChunker | None = None
        self._segment_open = False
        self._speaking = False

    async def run(self) -> None:
        speaker = asyncio.create_task(self._speak_queue())
        try:
            async for msg in self._ws:
                if speaker.done():
                    break
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._error(
                        "invalid_message", "binary frames are not accepted; send JSON text messages"
                    )
                else:  # ERROR: the connection is gone
                    break
        finally:
            if not speaker.done():
                if self._speaking:
                    self._tts.metrics.cancelled.labels("ws").inc()
                speaker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await speaker

    # --- receiving ----------------------------------------------------------------------

    async def _on_text(self, data: str) -> None:
        try:
            message: Any = parse_json(data)
        except InvalidJSON as e:
            await self._error("invalid_message", f"not valid JSON: {e}")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "config":
            await self._on_config(message)
        elif kind == "text":
            await self._on_segment_text(message)
        elif kind == "flush":
            await self._on_flush()
        else:
            await self._error(
                "invalid_message", 'expected a JSON object with "type": "config", "text" or "flush"'
            )

    async def _on_config(self, message: dict[str, Any]) -> None:
        if self._segment_open:
            await self._error("invalid_message", "config is only accepted between segments (after a flush)")
            return
        try:
            config = StreamConfig.model_validate(message)
            choice = self._tts.catalog.choose(
                voice=config.voice, context=config.context, language=config.language
            )
        except ValidationError as e:
            await self._error("invalid_config", validation_message(e))
            return
        except UnknownVoiceError as e:
            await self._error(e.code, str(e), valid_voices=e.valid)
            return
        self._choice = choice
        self._options = SpeechOptions(
            sample_rate=config.sample_rate, rate=config.rate, pitch=config.pitch, style=config.style,
            context=config.context, language=config.language,
        )  # fmt: skip
        self._chunker = self._tts.chunker(config.language)

    async def _on_segment_text(self, message: dict[str, Any]) -> None:
        if self._chunker is None:
            await self._error("invalid_message", 'send {"type": "config", ...} before any text')
            return
        try:
            text = StreamText.model_validate(message).text
        except ValidationError as e:
            await self._error("invalid_message", validation_message(e))
            return
        if self._queued_chars + len(self._chunker.pending) + len(text) > self._max_text_chars:
            await self._error(
                "too_large", f"more than {self._max_text_chars} characters waiting to be spoken; text dropped"
            )
            return
        self._segment_open = True
        self._enqueue(self._chunker.push(text))

    async def _on_flush(self) -> None:
        if self._chunker is None:
            await self._error("invalid_message", 'send {"type": "config", ...} before a flush')
            return
        self._enqueue(self._chunker.flush())
        self._enqueue_item(_Flush())
        self._segment_open = False

    def _enqueue(self, chunks: list[str]) -> None:
        for chunk in chunks:
            self._queued_chars += len(chunk)
            self._enqueue_item(chunk)

    def _enqueue_item(self, item: str | _Flush) -> None:
        assert self._choice is not None and self._options is not None
        self._queue.put_nowait((item, self._choice, self._options))

    # --- speaking -----------------------------------------------------------------------

    async def _speak_queue(self) -> None:
        session: SpeechSession | None = None
        failed = False  # an error ended this segment: skip its remaining chunks
        try:
            while True:
                item, choice, options = await self._queue.get()
                if isinstance(item, _Flush):
                    if session is not None:
                        session, self._speaking = None, False
                        self._tts.release()
                    if not failed:
                        await self._send({"type": "segment_end"})
                    failed = False
                    continue
                self._queued_chars -= len(item)
                if failed:
                    continue
                if session is None:
                    if not self._tts.try_admit("ws"):
                        await self._error(
                            "overloaded", f"all {self._tts.max_concurrent} synthesis slots are busy"
                        )
                        await self._ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"overloaded")
                        return
                    session, self._speaking = self._tts.session(choice, options), True
                try:
                    await self._speak_chunk(session, item)
                except SynthesisError as e:
                    logger.warning("synthesis failed, segment ended: %s", e)
                    await self._error(e.code, str(e), engine=e.engine)
                    failed = True
                    session, self._speaking = None, False
                    self._tts.release()
        except ConnectionResetError:  # the client went away mid-send; run() counts the cancellation
            return
        finally:
            if session is not None:
                self._tts.release()

    async def _speak_chunk(self, session: SpeechSession, chunk: str) -> None:
        framer = PCMFramer(sample_rate=session.options.sample_rate)
        async with aclosing(session.speak(chunk)) as pieces:
            async for pcm in pieces:
                for frame in framer.push(pcm):
                    await self._ws.send_bytes(frame)
        if rest := framer.flush():
            await self._ws.send_bytes(rest)
        await self._send({"type": "sentence_end", "text": chunk})

    async def _send(self, event: dict[str, Any]) -> None:
        await self._ws.send_str(json.dumps(event))

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        if not self._ws.closed:
            await self._send({"type": "error", "code": code, "message": message, **extra})
