"""The universal agent in text mode, checked with the framework's RunResult assertions.

- the greeting and persona of every exercise, in English and French (no model needed: the
  greeting is said, not generated);
- a reply per exercise through MistralLLM against the deterministic Mistral-protocol test server,
  which also shows which system prompt (persona) the agent sent;
- an exercise's quick replies reach the session's LLM through `build_pipeline`;
- one smoke turn against the real local LLM service;
- the worker registers under LIVEKIT_AGENT_NAME and serves the framework's health endpoint.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakes.mistral_server import FakeMistralServer
from livekit.agents import AgentSession

from eloquence.agent import (
    CoachAgent,
    _SessionCountLoad,
    build_pipeline,
    build_session,
    default_turn_handling,
)
from eloquence.exercises import Exercise, ExerciseText, exercise_names, get_exercise
from eloquence.services import AGENT, LOCAL_LLM, ServiceProcess, free_port, running_service
from eloquence.settings import AppSettings
from eloquence.turn_detector import TranscriptTurnDetector


def _settings(**env: str | None) -> AppSettings:
    return AppSettings(**{"MISTRAL_API_KEY": None, "MISTRAL_BASE_URL": None, **env})


async def _start(session: AgentSession, agent: CoachAgent):  # type: ignore[no-untyped-def]
    result = await session.start(agent=agent, capture_run=True)
    result.expect.skip_next_event_if(type="agent_handoff")
    return result


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize("name", exercise_names())
async def test_each_exercise_greets_in_its_persona(name: str, language: str) -> None:
    exercise = get_exercise(name)
    session = build_session(settings=_settings(), pipeline=None)
    agent = CoachAgent(exercise=exercise, language=language)
    try:
        result = await _start(session, agent)
        greeting = result.expect.next_event().is_message(role="assistant").event().item
        result.expect.no_more_events()
    finally:
        await session.aclose()
    assert greeting.text_content == exercise.greeting(language)
    assert agent.instructions == exercise.instructions(language)
    if name == "confidence_boost" and language == "fr":
        assert greeting.text_content.startswith("Bonjour ! Je suis Marie, votre coach en confiance")


@pytest.fixture(scope="module")
async def mistral() -> AsyncIterator[FakeMistralServer]:
    async with FakeMistralServer(token_delay_s=0.005) as server:
        yield server


def _content(message: dict) -> str:  # type: ignore[type-arg]
    content = message.get("content")
    return content if isinstance(content, str) else "".join(c.get("text", "") for c in content or [])


@pytest.mark.parametrize("language", ["en", "fr"])
@pytest.mark.parametrize("name", exercise_names())
async def test_each_exercise_answers_in_persona_through_mistral(
    mistral: FakeMistralServer, name: str, language: str
) -> None:
    from providers.llm import MistralLLM

    exercise = get_exercise(name)
    llm = MistralLLM(api_key="test-key", base_url=mistral.url, model="mistral-small-latest")
    session = build_session(settings=_settings(), llm_model=llm)
    said = "Je suis nerveux avant de parler" if language == "fr" else "I get nervous before I speak"
    try:
        await _start(session, CoachAgent(exercise=exercise, language=language))
        seen = len(mistral.requests)
        result = await session.run(user_input=said)
        reply = result.expect.next_event().is_message(role="assistant").event().item
        result.expect.no_more_events()
    finally:
        await session.aclose()
        await llm.aclose()

    assert reply.text_content == f"You said: {said}. Tell me more."  # the server's deterministic echo
    (request,) = mistral.requests[seen:]
    messages = request["messages"]
    # the persona is the system prompt, the greeting is the history, the user's words come last
    assert messages[0] == {"role": "system", "content": exercise.instructions(language)}
    assert [m["role"] for m in messages[1:]] == ["assistant", "user"]
    assert _content(messages[1]) == exercise.greeting(language)
    assert _content(messages[2]) == said
    assert request["stream"] is True


async def test_a_second_turn_keeps_the_conversation(mistral: FakeMistralServer) -> None:
    from providers.llm import MistralLLM

    llm = MistralLLM(api_key="test-key", base_url=mistral.url, model="mistral-small-latest")
    session = build_session(settings=_settings(), llm_model=llm)
    mistral.script("Breathe slowly for four seconds.", "Yes, once more before you start.")
    try:
        await _start(session, CoachAgent(exercise=get_exercise("presentation_skills")))
        first = await session.run(user_input="How do I calm down?")
        first.expect.next_event().is_message(role="assistant")
        second = await session.run(user_input="Should I do it again?")
        reply = second.expect.next_event().is_message(role="assistant").event().item
    finally:
        await session.aclose()
        await llm.aclose()
    assert reply.text_content == "Yes, once more before you start."
    roles = [m["role"] for m in mistral.requests[-1]["messages"]]
    assert roles == ["system", "assistant", "user", "assistant", "user"]


async def test_an_exercise_quick_reply_answers_small_talk_without_the_llm(mistral: FakeMistralServer) -> None:
    from providers.endpoints import MistralEndpoint

    small_talk = Exercise(
        name="small_talk",
        title="Small talk",
        voice_context="coaching",
        text={
            "en": ExerciseText(persona="You coach small talk.", greeting="Hi!"),
            "fr": ExerciseText(
                persona="Tu coaches la conversation.",
                greeting="Salut !",
                quick_replies={"merci": "Avec plaisir !"},
            ),
        },
    )
    endpoint = MistralEndpoint(
        server_url=mistral.url, api_key="test-key", model="mistral-small-latest", is_local=False
    )
    # the path the worker and `talk` take: the exercise's replies go into the session's LLM
    pipeline = build_pipeline(_settings(), small_talk, language="fr", llm_endpoint=endpoint)
    session = build_session(settings=_settings(), llm_model=pipeline.llm)
    mistral.script("Respirez lentement avant de commencer.")
    try:
        await _start(session, CoachAgent(exercise=small_talk, language="fr"))
        seen = len(mistral.requests)
        thanks = await session.run(user_input="Merci beaucoup !")
        quick = thanks.expect.next_event().is_message(role="assistant").event().item
        thanks.expect.no_more_events()
        assert len(mistral.requests) == seen, "small talk must not reach the LLM"
        question = await session.run(user_input="Merci, mais comment je calme mon trac ?")
        answer = question.expect.next_event().is_message(role="assistant").event().item
    finally:
        await session.aclose()
        await pipeline.aclose()
    assert quick.text_content == "Avec plaisir !"
    assert answer.text_content == "Respirez lentement avant de commencer."
    assert len(mistral.requests) == seen + 1


def test_turn_handling_is_tuned_for_latency_without_cloud_models() -> None:
    options = default_turn_handling(_settings())
    assert options["preemptive_generation"] == {"enabled": True, "preemptive_tts": True}
    assert options["interruption"]["enabled"] is True and options["interruption"]["mode"] == "vad"
    # a finished sentence commits after a short silence; an unfinished one waits for the rest
    assert options["endpointing"]["min_delay"] <= 0.5 < options["endpointing"]["max_delay"]
    assert isinstance(options["turn_detection"], TranscriptTurnDetector)
    eot = default_turn_handling(_settings(ELOQUENCE_TURN_DETECTOR="eot"))["turn_detection"]
    assert getattr(eot, "model", None) == "turn-detector-v1-mini"  # the local model, not the cloud one
    assert default_turn_handling(_settings(ELOQUENCE_TURN_DETECTOR="vad"))["turn_detection"] == "vad"
    with pytest.raises(ValueError, match="ELOQUENCE_TURN_DETECTOR"):
        default_turn_handling(_settings(ELOQUENCE_TURN_DETECTOR="cloud"))


def test_worker_load_counts_sessions_not_the_machines_cpu() -> None:
    class Server:
        active_jobs = [object(), object()]

    load = _SessionCountLoad(4)
    assert load(Server()) == 0.5  # type: ignore[arg-type]
    Server.active_jobs = [object()] * 9
    assert load(Server()) == 1.0  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def worker(service_log_dir: Path) -> Iterator[ServiceProcess]:
    env = {
        "LIVEKIT_AGENT_NAME": "coach-under-test",
        # nothing listens there: the worker keeps retrying, its health endpoint still answers
        "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "a-secret-for-the-worker-test-0123456789",
    }
    with running_service(AGENT, service_log_dir, env=env, timeout=90) as proc:
        yield proc


def test_worker_serves_health_and_registers_under_livekit_agent_name(worker: ServiceProcess) -> None:
    with urllib.request.urlopen(worker.url + "/", timeout=5) as resp:
        assert resp.status == 200
    with urllib.request.urlopen(worker.url + "/worker", timeout=5) as resp:
        info = json.loads(resp.read())
    assert info["agent_name"] == "coach-under-test"
    assert info["worker_type"] == "JT_ROOM"


@pytest.fixture(scope="module")
def local_llm(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(LOCAL_LLM, service_log_dir) as proc:
        yield proc


async def test_smoke_turn_against_the_real_local_llm(local_llm: ServiceProcess) -> None:
    from providers.llm import MistralLLM

    llm = MistralLLM(base_url=local_llm.url, model="local", max_tokens=48)
    session = build_session(settings=_settings(), llm_model=llm)
    try:
        await _start(session, CoachAgent(exercise=get_exercise("presentation_skills")))
        result = await session.run(user_input="How do I start my presentation?")
        reply = result.expect.next_event().is_message(role="assistant").event().item
        result.expect.no_more_events()
    finally:
        await session.aclose()
        await llm.aclose()
    assert len((reply.text_content or "").split()) >= 2, reply.text_content
    assert reply.metrics.get("llm_node_ttft", -1) > 0
