"""Per-user STT, TTS and LLM limits inside the agent's pipeline nodes.

The user is the one the API's token names (job metadata `user_id`; without one, the room).
Each limit counts a unit where the work starts (eloquence/rate_limits.py defines the units):

- `stt_node`: one recognition stream per agent activity. Over the limit it starts late, never drops
  audio (the frames wait in the node's input).
- `tts_node`: one unit per sentence end in the text on its way to synthesis. Over the limit the
  sentence waits its turn; the sentence before it is still playing, so a pace is rarely heard.
- `llm_node`: one unit per reply to a new user message. Over the limit the agent says "One moment"
  at once, waits for the window and then answers; if the user is still over it after
  `MAX_LLM_WAIT_S` the turn ends on "One moment". Never an exception.

A normal turn (one stream, one reply of a few sentences, a preemptive generation and its rerun)
stays well under 10 / 5 / 2 per second (tests/eloquence/test_turn_limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from livekit import rtc
from livekit.agents import ModelSettings, llm, stt
from livekit.agents.types import FlushSentinel

from .rate_limits import RateLimits, per_second
from .settings import AppSettings

logger = logging.getLogger("eloquence.turn_limits")

Kind = Literal["stt", "tts", "llm"]
ONE_MOMENT = {"en": "One moment, please.", "fr": "Un instant, s'il vous plaît."}
MAX_LLM_WAIT_S = 3.0
SENTENCE_END_RE = re.compile(r"[.!?…]+(?=\s|$)")


@dataclass
class LimitStats:
    """What the limits did in one session (read by tests, the bench and the metrics)."""

    units: dict[str, int] = field(default_factory=lambda: {"stt": 0, "tts": 0, "llm": 0})
    waits: dict[str, int] = field(default_factory=lambda: {"stt": 0, "tts": 0, "llm": 0})
    waited_s: dict[str, float] = field(default_factory=lambda: {"stt": 0.0, "tts": 0.0, "llm": 0.0})
    one_moments: int = 0

    @property
    def tripped(self) -> bool:
        return any(self.waits.values()) or self.one_moments > 0


class UserLimits:
    """One user's STT/TTS/LLM budgets, counted in `limits` (memory, or Redis across replicas)."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        user_key: str,
        stt_per_s: int = 10,
        tts_per_s: int = 5,
        llm_per_s: int = 2,
        on_limited: Callable[[Kind], None] | None = None,
    ) -> None:
        self._limits = limits
        self.user_key = user_key
        self._items = {
            "stt": per_second(stt_per_s),
            "tts": per_second(tts_per_s),
            "llm": per_second(llm_per_s),
        }
        self._on_limited = on_limited
        self._last_reply_to: str | None = None
        self.stats = LimitStats()

    @classmethod
    def from_settings(
        cls,
        settings: AppSettings,
        limits: RateLimits,
        *,
        user_id: str | None,
        room: str | None = None,
        on_limited: Callable[[Kind], None] | None = None,
    ) -> UserLimits:
        user_key = f"user:{user_id}" if user_id else f"room:{room or 'local'}"
        return cls(
            limits,
            user_key=user_key,
            stt_per_s=settings.stt_per_s,
            tts_per_s=settings.tts_per_s,
            llm_per_s=settings.llm_per_s,
            on_limited=on_limited,
        )

    async def take(self, kind: Kind) -> float:
        """Count one unit now: 0.0 if allowed, else the seconds until one would be (nothing counted)."""
        retry_after = await self._limits.hit(self._items[kind], kind, self.user_key)
        if retry_after == 0.0:
            self.stats.units[kind] += 1
        return retry_after

    async def pace(self, kind: Kind, *, max_wait_s: float | None = None) -> bool:
        """Wait until a unit is allowed and count it; False if `max_wait_s` passed first."""
        started = time.monotonic()
        retry_after = await self.take(kind)
        if retry_after == 0.0:
            return True
        self.stats.waits[kind] += 1
        if self._on_limited is not None:
            self._on_limited(kind)
        try:
            while retry_after > 0.0:
                if max_wait_s is not None and time.monotonic() - started + retry_after > max_wait_s:
                    return False
                await asyncio.sleep(retry_after)
                retry_after = await self.take(kind)
            return True
        finally:
            self.stats.waited_s[kind] += time.monotonic() - started

    async def take_reply(self, chat_ctx: llm.ChatContext) -> float:
        """One LLM unit per new user message: a rerun for the same message (preemptive generation
        redone, a tool follow-up) is free. 0.0 if allowed, else the seconds to wait."""
        message = _last_user_text(chat_ctx)
        if message is not None and message == self._last_reply_to:
            return 0.0
        retry_after = await self.take("llm")
        if retry_after == 0.0:
            self._last_reply_to = message
        return retry_after

    async def wait_reply(self, chat_ctx: llm.ChatContext, *, max_wait_s: float) -> bool:
        """After a refused `take_reply`: wait for an LLM unit (at most `max_wait_s`)."""
        if not await self.pace("llm", max_wait_s=max_wait_s):
            return False
        self._last_reply_to = _last_user_text(chat_ctx)
        return True

    async def paced_sentences(self, text: AsyncIterable[str]) -> AsyncIterator[str]:
        """`text` unchanged, one TTS unit taken (waiting if needed) before each sentence end passes."""
        open_sentence = False
        async for chunk in text:
            ends = len(SENTENCE_END_RE.findall(chunk))
            for _ in range(ends):
                await self.pace("tts")
            tail = SENTENCE_END_RE.split(chunk)[-1] if ends else chunk
            open_sentence = bool(tail.strip()) if ends else open_sentence or bool(chunk.strip())
            yield chunk
        if open_sentence:  # the last sentence had no end mark: synthesized at the end of input
            await self.pace("tts")


_PROCESS_LIMITS: dict[int, RateLimits] = {}


def process_rate_limits(settings: AppSettings) -> RateLimits:
    """One `RateLimits` per job process (and event loop): memory counts the sessions of this
    process; with REDIS_URL every process and replica shares the counts."""
    loop_id = id(asyncio.get_running_loop())
    limits = _PROCESS_LIMITS.get(loop_id)
    if limits is None:
        limits = _PROCESS_LIMITS[loop_id] = RateLimits(
            redis_url=settings.redis_url, namespace="eloquence-agent"
        )
    return limits


def _last_user_text(chat_ctx: llm.ChatContext) -> str | None:
    for item in reversed(chat_ctx.items):
        if item.type == "message" and item.role == "user":
            return item.text_content or ""
    return None


class RateLimitedNodes:
    """Mixin for an `Agent` (before `Agent` in the bases): counts the user's units in the STT, LLM
    and TTS nodes, then hands over to the next class's node.

    Set `user_limits` (and `language`, for the "one moment" sentence) before the session starts;
    None turns the limits off.
    """

    user_limits: UserLimits | None = None
    language: str = "en"

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent]:
        if self.user_limits is not None:
            await self.user_limits.pace("stt")
        async with contextlib.aclosing(super().stt_node(audio, model_settings)) as events:
            async for event in events:
                yield event

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterator[llm.ChatChunk | str | FlushSentinel]:
        limits = self.user_limits
        if limits is not None:
            retry_after = await limits.take_reply(chat_ctx)
            if retry_after > 0.0:
                limits.stats.one_moments += 1
                logger.info("LLM limit reached for %s: saying one moment", limits.user_key)
                yield ONE_MOMENT.get(self.language, ONE_MOMENT["en"]) + " "
                yield FlushSentinel()  # spoken now, not after the answer
                if not await limits.wait_reply(chat_ctx, max_wait_s=MAX_LLM_WAIT_S):
                    return
        async with contextlib.aclosing(super().llm_node(chat_ctx, tools, model_settings)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def tts_node(self, text: AsyncIterable[str], model_settings: ModelSettings) -> AsyncIterator[Any]:
        if self.user_limits is not None:
            text = self.user_limits.paced_sentences(text)
        async with contextlib.aclosing(super().tts_node(text, model_settings)) as frames:
            async for frame in frames:
                yield frame
