"""The messages the users' client listens for, produced in one place.

Schema (JSON, one object per data packet, topic `eloquence`, reliable). The bytes are pure ASCII:
every non-ASCII character is escaped (`"é"` → `\\u00e9`), because the users' Flutter client
decodes a packet with `String.fromCharCodes(data)`, one byte per character, which turns UTF-8 "é"
into "Ã©". Escaped JSON reads the same through `fromCharCodes` and through `utf8.decode`.

    {"type": "transcription", "text": "<user speech>", "final": true | false}
    {"type": "transcription_revised", "text": "<the whole turn>"}
    {"type": "ai_response",   "response": "<the coach's reply text>"}
    {"type": "metrics",       "data": {"stt_final_ms": ..., "end_of_turn_ms": ..., "llm_ttft_ms": ...,
                                        "llm_first_sentence_ms": ..., "tts_first_audio_ms": ...,
                                        "e2e_ms": ..., "interrupted": false}}

Per turn the order is: transcriptions (interims, then the final), `ai_response`, then `metrics`.
When a pause split the turn and the STT heard it again as one piece, a `transcription_revised`
comes before the reply: its text replaces the turn's finals (a client that does not know the type
ignores it and keeps the finals it showed).
A stage the turn did not reach is absent from `data` rather than zero; the stages are those of
`eloquence/stages.py`. In a room the messages are published on the data channel; under
`eloquence talk` the same objects go into the JSON report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .stages import STAGES

if TYPE_CHECKING:
    from livekit import rtc
    from livekit.agents import AgentSession
    from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

logger = logging.getLogger("eloquence.client_messages")

TOPIC = "eloquence"
_MAX_PENDING = 256

MessageSink = Callable[[bytes], Awaitable[None]]
"""Delivers one encoded message: a LiveKit room (`room_sink`), a WebRTC data channel (playground)."""


def encode_message(message: Mapping[str, Any]) -> bytes:
    """One message as a data packet: compact JSON, ASCII only (see the module docstring)."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def room_sink(room: rtc.Room, topic: str = TOPIC) -> MessageSink:
    async def publish(payload: bytes) -> None:
        await room.local_participant.publish_data(payload, reliable=True, topic=topic)

    return publish


def turn_metrics(user: Mapping[str, Any] | None, assistant: Mapping[str, Any] | None) -> dict[str, float]:
    """Per-stage latencies of one turn (`<stage>_ms`, rounded) from the framework's per-message metrics."""
    data: dict[str, float] = {}
    for stage in STAGES:
        value = ((user if stage.message == "user" else assistant) or {}).get(stage.metric)
        if isinstance(value, int | float) and value >= 0:
            data[stage.field] = round(float(value) * 1000, 1)
    return data


class ClientMessages:
    """Produces `transcription`, `ai_response` and `metrics` messages.

    With a room (or another `sink`) it sends each one, in order, from one sender task;
    without one it only collects them. `messages` always holds everything produced, in order.
    """

    def __init__(
        self, *, room: rtc.Room | None = None, topic: str = TOPIC, sink: MessageSink | None = None
    ) -> None:
        self._sink = sink if sink is not None else room_sink(room, topic) if room is not None else None
        self._topic = topic
        self.messages: list[dict[str, Any]] = []
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._last_user_metrics: Mapping[str, Any] | None = None
        self._turn_finals: list[str] = []

    # -- the message kinds ------------------------------------------------------------
    def transcription(self, text: str, *, final: bool) -> dict[str, Any]:
        return self._emit({"type": "transcription", "text": text, "final": final})

    def transcription_revised(self, text: str) -> dict[str, Any]:
        return self._emit({"type": "transcription_revised", "text": text})

    def ai_response(self, response: str) -> dict[str, Any]:
        return self._emit({"type": "ai_response", "response": response})

    def metrics(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return self._emit({"type": "metrics", "data": dict(data)})

    # -- wiring to a session ----------------------------------------------------------------
    def attach(self, session: AgentSession) -> None:
        """Produce the messages from the session's own events."""
        session.on("user_input_transcribed", self._on_user_input_transcribed)
        session.on("conversation_item_added", self._on_conversation_item_added)

    def _on_user_input_transcribed(self, ev: UserInputTranscribedEvent) -> None:
        if ev.transcript.strip():
            self.transcription(ev.transcript, final=ev.is_final)
            if ev.is_final:
                self._turn_finals.append(ev.transcript)

    def _on_conversation_item_added(self, ev: ConversationItemAddedEvent) -> None:
        from livekit.agents.llm import ChatMessage

        item = ev.item
        if not isinstance(item, ChatMessage):
            return
        if item.role == "user":
            self._last_user_metrics = dict(item.metrics or {})
            said, self._turn_finals = " ".join(" ".join(self._turn_finals).split()), []
            text = " ".join((item.text_content or "").split())
            if said and text and text != said:  # the whole turn, heard again as one piece
                self.transcription_revised(text)
            return
        if item.role != "assistant":
            return
        text = item.text_content or ""
        if not text.strip():
            return
        self.ai_response(text)
        data: dict[str, Any] = turn_metrics(self._last_user_metrics, item.metrics)
        data["interrupted"] = bool(item.interrupted)
        self.metrics(data)
        self._last_user_metrics = None

    # -- delivery ---------------------------------------------------------------------------
    def _emit(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages.append(message)
        if self._sink is not None:
            self._enqueue(encode_message(message))
        return message

    def _enqueue(self, payload: bytes) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=_MAX_PENDING)
            self._sender = asyncio.create_task(self._send_loop(), name="eloquence-client-messages")
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            logger.warning("client message queue full (%d); dropping a message", _MAX_PENDING)

    async def _send_loop(self) -> None:
        assert self._queue is not None and self._sink is not None
        while (payload := await self._queue.get()) is not None:
            try:
                await self._sink(payload)
            except Exception as e:  # the data channel is best effort; the voice session goes on
                logger.warning("could not publish a client message on %r: %s", self._topic, e)

    async def aclose(self, timeout: float = 2.0) -> None:
        """Send what is queued (bounded by `timeout`), then stop the sender."""
        if self._queue is None or self._sender is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._sender), timeout)
        except TimeoutError:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
