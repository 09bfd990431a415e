"""When the LLM fails for good, the user hears a short apology instead of silence.

The framework already retries an LLM call that fails before its first chunk (and the fallback
adapter moves to the next endpoint); a failure after the first chunk is never retried, so that no
words are said twice. Either way, once the error reaches the agent's LLM node the turn would end
mute. `RecoveringLLMNode` ends it with one short sentence instead (the part of the reply already
spoken stays), logs the failure, counts it in the agent's metrics, and the session goes on: the
next turn calls the LLM afresh.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from livekit.agents import APIError, ModelSettings, llm
from livekit.agents.types import FlushSentinel

from .agent_metrics import ERRORS

logger = logging.getLogger("eloquence.turn_recovery")

APOLOGY = {
    "en": "Sorry, I lost my train of thought. Could you say that again?",
    "fr": "Pardon, j'ai perdu le fil. Pouvez-vous répéter ?",
}


class RecoveringLLMNode:
    """Mixin for an `Agent` (before `Agent` in the bases): an LLM failure becomes a spoken apology."""

    language: str = "en"

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterator[llm.ChatChunk | str | FlushSentinel]:
        said_something = False
        try:
            async with contextlib.aclosing(super().llm_node(chat_ctx, tools, model_settings)) as chunks:
                async for chunk in chunks:
                    said_something = said_something or bool(
                        chunk
                        if isinstance(chunk, str)
                        else getattr(getattr(chunk, "delta", None), "content", None)
                    )
                    yield chunk
        except APIError as e:
            ERRORS.labels("llm", "false").inc()
            logger.warning(
                "LLM failed %s the reply (%s); apologizing",
                "during" if said_something else "before",
                e.message if isinstance(e.message, str) else type(e).__name__,
            )
            apology = APOLOGY.get(self.language, APOLOGY["en"])
            yield (" " + apology) if said_something else apology
