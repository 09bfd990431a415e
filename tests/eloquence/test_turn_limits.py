"""Per-user STT/TTS/LLM limits in the agent's nodes: a normal turn never trips one, a limited turn
says "one moment" and still answers, sentences are paced not dropped, Redis shares the counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakes.mistral_server import FakeMistralServer
from livekit.agents import AgentSession
from support.redis_server import RedisServer, running_redis

from eloquence.agent import CoachAgent, build_session
from eloquence.exercises import get_exercise
from eloquence.rate_limits import RateLimits
from eloquence.settings import AppSettings
from eloquence.turn_limits import ONE_MOMENT, UserLimits
from providers.llm import MistralLLM

SPEAKING_S = 1.0
"""The shortest spoken turn: a second of speech (the test's stand-in for the microphone)."""


def _settings() -> AppSettings:
    return AppSettings(MISTRAL_API_KEY=None, MISTRAL_BASE_URL=None)


@pytest.fixture(scope="module")
async def mistral() -> AsyncIterator[FakeMistralServer]:
    async with FakeMistralServer(token_delay_s=0.002) as server:
        yield server


async def _session(mistral: FakeMistralServer, limits: UserLimits) -> tuple[AgentSession, MistralLLM]:
    llm = MistralLLM(api_key="test-key", base_url=mistral.url, model="mistral-small-latest", cache_size=0)
    session = build_session(settings=_settings(), llm_model=llm)
    agent = CoachAgent(exercise=get_exercise("default"))
    agent.user_limits = limits
    result = await session.start(agent=agent, capture_run=True)
    result.expect.skip_next_event_if(type="agent_handoff")
    return session, llm


async def test_normal_turns_never_trip_a_limit(mistral: FakeMistralServer) -> None:
    limits = UserLimits(RateLimits(), user_key="user:normal")  # the guide's 10 / 5 / 2 per second
    session, llm = await _session(mistral, limits)
    try:
        for said in ("I get nervous before I speak.", "What should I do first?", "Thanks, and then?"):
            await asyncio.sleep(SPEAKING_S)  # the user says it: no spoken turn is instantaneous
            result = await session.run(user_input=said)
            reply = result.expect.next_event().is_message(role="assistant").event().item
            assert reply.text_content == f"You said: {said}. Tell me more."
    finally:
        await session.aclose()
        await llm.aclose()
    assert limits.stats.units["llm"] == 3
    assert not limits.stats.tripped, limits.stats


async def test_over_the_llm_limit_the_agent_says_one_moment_then_answers(mistral: FakeMistralServer) -> None:
    shared = RateLimits()
    limits = UserLimits(shared, user_key="user:busy")
    other_session = UserLimits(shared, user_key="user:busy")  # the same user in another session
    assert await other_session.take("llm") == 0.0 and await other_session.take("llm") == 0.0
    session, llm = await _session(mistral, limits)
    try:
        result = await session.run(user_input="Help me with my talk.")
        replies = []
        while True:
            try:
                replies.append(result.expect.next_event().is_message(role="assistant").event().item)
            except AssertionError:
                break
        # the session is still fine: the next turn is answered normally
        again = await session.run(user_input="And the ending?")
        later = again.expect.next_event().is_message(role="assistant").event().item
    finally:
        await session.aclose()
        await llm.aclose()
    text = " ".join(r.text_content or "" for r in replies)
    assert text.startswith(ONE_MOMENT["en"])
    assert "You said: Help me with my talk." in text
    assert later.text_content == "You said: And the ending?. Tell me more."
    assert limits.stats.one_moments == 1 and limits.stats.waits["llm"] == 1


async def test_sentences_are_paced_never_dropped() -> None:
    limits = UserLimits(RateLimits(), user_key="user:talkative", tts_per_s=5)
    chunks = ["One. Two! Three? ", "Four. Five. Six", ". Seven and", " no end"]

    async def text() -> AsyncIterator[str]:
        for chunk in chunks:
            yield chunk

    out = [chunk async for chunk in limits.paced_sentences(text())]
    assert out == chunks
    assert limits.stats.units["tts"] == 7  # six sentence ends, and the seventh sentence has none
    assert limits.stats.waits["tts"] >= 1  # the sixth unit within a second had to wait


async def test_a_rerun_for_the_same_user_message_costs_no_second_llm_unit() -> None:
    from livekit.agents import llm

    limits = UserLimits(RateLimits(), user_key="user:preemptive", llm_per_s=1)
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="Hello there")
    assert await limits.take_reply(ctx) == 0.0
    assert await limits.take_reply(ctx) == 0.0  # preemptive generation redone, or a tool follow-up
    ctx.add_message(role="user", content="Another question")
    assert await limits.take_reply(ctx) > 0.0  # a new message within the second: over 1/s
    assert limits.stats.units["llm"] == 1


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


async def test_two_agent_processes_share_a_users_budget_through_redis(redis: RedisServer) -> None:
    first = UserLimits(RateLimits(redis_url=redis.url), user_key="user:everywhere", llm_per_s=2)
    second = UserLimits(RateLimits(redis_url=redis.url), user_key="user:everywhere", llm_per_s=2)
    assert await first.take("llm") == 0.0
    assert await second.take("llm") == 0.0
    assert await first.take("llm") > 0.0
    assert await second.take("llm") > 0.0
    stranger = UserLimits(RateLimits(redis_url=redis.url), user_key="user:someone-else", llm_per_s=2)
    assert await stranger.take("llm") == 0.0
