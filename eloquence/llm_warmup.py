"""Every exercise's opening, in each language, put into the local LLM server's prompt cache.

The first reply of a session sends the exercise's system prompt and its greeting before the
user's words. A cold llama.cpp server evaluates all of it (about a second on two cores); a
warm one finds that prefix in its prompt cache and evaluates only the user's words. Nothing
says which exercise comes first, so `warm_llm_prompts` sends each opening once, through the
same plugin and message conversion a session uses (so the cached tokens are the same), with a
one-token budget. Remote endpoints are left alone: warming them costs money and helps nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable

from livekit.agents import APIConnectOptions, llm

from .exercises import REGISTRY, SUPPORTED_LANGUAGES, Exercise
from .settings import AppSettings

logger = logging.getLogger("eloquence.llm_warmup")

WARM_USER_TEXT = "Hello."
WARM_TIMEOUT_S = 60.0


def opening_context(exercise: Exercise, language: str, user_text: str = WARM_USER_TEXT) -> llm.ChatContext:
    """The context of a session's first reply: system prompt, spoken greeting, the user's words."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=exercise.instructions(language))
    ctx.add_message(role="assistant", content=exercise.greeting(language))
    ctx.add_message(role="user", content=user_text)
    return ctx


async def warm_llm_prompts(
    settings: AppSettings,
    *,
    exercises: Iterable[Exercise] | None = None,
    languages: Iterable[str] = SUPPORTED_LANGUAGES,
    timeout_s: float = WARM_TIMEOUT_S,
) -> int:
    """Send every opening to the local LLM server once; returns how many were warmed.

    Failures are logged, not raised: a cold cache only makes the first turn slower.
    """
    from providers.fallback import build_llm

    from .agent import llm_endpoints

    local = [endpoint for endpoint in llm_endpoints(settings) if endpoint.is_local]
    if not local:
        return 0
    model = build_llm(local[:1], max_tokens=1, cache_size=0)
    warmed = 0
    started = time.perf_counter()
    try:
        for exercise in exercises if exercises is not None else list(REGISTRY):
            for language in languages:
                if language not in exercise.text:
                    continue
                ctx = opening_context(exercise, language)
                # one attempt with a long timeout: a busy server is slow, and a retry only adds work
                conn = APIConnectOptions(max_retry=0, timeout=timeout_s)
                try:
                    async with asyncio.timeout(timeout_s):
                        async with model.chat(chat_ctx=ctx, conn_options=conn) as stream:
                            async for _ in stream:
                                pass
                except Exception as e:  # noqa: BLE001 - a cold cache is slower, not broken
                    logger.warning("could not warm the LLM for %s (%s): %s", exercise.name, language, e)
                    return warmed
                warmed += 1
    finally:
        await model.aclose()
    logger.info("LLM prompt cache warmed: %d openings in %.1f s", warmed, time.perf_counter() - started)
    return warmed


def warm_llm_prompts_in_background(settings: AppSettings) -> threading.Thread:
    """`warm_llm_prompts` in a daemon thread with its own event loop (for synchronous start-up code)."""
    thread = threading.Thread(
        target=lambda: asyncio.run(warm_llm_prompts(settings)), name="llm-warmup", daemon=True
    )
    thread.start()
    return thread
