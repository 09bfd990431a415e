"""An LLM that fails for good (mid-stream, or on every attempt) ends the turn with a short spoken
apology, and the session goes on to answer the next turn."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes.mistral_server import FakeMistralServer, Reply
from livekit.agents import APIConnectOptions

from eloquence.agent import CoachAgent, build_session
from eloquence.exercises import get_exercise
from eloquence.settings import AppSettings
from eloquence.turn_recovery import APOLOGY
from providers.llm import MistralLLM


@pytest.fixture
async def mistral() -> AsyncIterator[FakeMistralServer]:
    async with FakeMistralServer(token_delay_s=0.005) as server:
        yield server


async def _reply_text(session, said: str) -> str:  # type: ignore[no-untyped-def]
    result = await session.run(user_input=said)
    return result.expect.next_event().is_message(role="assistant").event().item.text_content or ""


@pytest.mark.parametrize(
    ("failure", "attempts", "spoken_before"),
    [
        # cut mid-stream: never retried (the words would be said twice)
        (Reply(text="Breathe in slowly and then", disconnect_after_tokens=3), 1, True),
        # refused before the first token, on the first try and on the retry
        (Reply(status=503), 2, False),
    ],
)
async def test_a_failed_llm_turn_is_an_apology_and_the_next_turn_is_answered(
    mistral: FakeMistralServer, failure: Reply, attempts: int, spoken_before: bool
) -> None:
    llm = MistralLLM(api_key="test-key", base_url=mistral.url, model="mistral-small-latest", cache_size=0)
    session = build_session(settings=AppSettings(MISTRAL_API_KEY=None, MISTRAL_BASE_URL=None), llm_model=llm)
    session._conn_options.llm_conn_options = APIConnectOptions(max_retry=1, retry_interval=0.05, timeout=5)
    mistral.script(*[failure] * attempts, "Pause before your main point.")
    try:
        result = await session.start(agent=CoachAgent(exercise=get_exercise("default")), capture_run=True)
        result.expect.skip_next_event_if(type="agent_handoff")
        first = await _reply_text(session, "How do I calm my nerves?")
        second = await _reply_text(session, "And then?")
    finally:
        await session.aclose()
        await llm.aclose()
    assert first.endswith(APOLOGY["en"])
    assert first.startswith("Breathe") == spoken_before
    assert second == "Pause before your main point."
