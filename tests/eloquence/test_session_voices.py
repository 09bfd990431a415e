"""Which voice a real session speaks with: the greeting in the "greeting" context, the replies in the
exercise's "coaching" context, both within the session's language.

The catalog's choice for every language, context and engine is tests/services/test_tts_voices.py's;
here a real AgentSession (`build_pipeline` + `CoachAgent`) greets and answers one turn through a
real azure-tts sidecar, and we check who actually spoke:
- Azure through the real Speech SDK against the USP stand-in, which records each SSML's voice name
  (fr-FR-DeniseNeural greets, fr-FR-HenriNeural coaches; an English session never gets either);
- offline, Piper for English and espeak-ng for French, with a female espeak-ng variant for the
  greeting and a male one for coaching, told apart by their pitch.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from fakes.azure_speech_server import AzureSpeechStandIn
from fakes.mistral_server import FakeMistralServer
from livekit.agents import AgentSession
from prometheus_client.parser import text_string_to_metric_families

from eloquence.agent import CoachAgent, build_pipeline
from eloquence.exercises import get_exercise
from eloquence.services import AZURE_TTS, ServiceProcess, free_port, running_service
from eloquence.settings import AppSettings
from eloquence.wav_io import WavAudioOutput
from eloquence_bench.speech import PIPER_NO_NOISE_ENV
from sidecar_common.pcm import pcm16_to_float

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

COMMON_ENV = {"PIPER_THREADS": "1", "TTS_CACHE_BYTES": "0", **PIPER_NO_NOISE_ENV}
REPLIES = {
    "en": "Take one slow breath before your first sentence.",
    "fr": "Respirez lentement avant votre première phrase.",
}
QUESTIONS = {"en": "How do I calm my nerves?", "fr": "Comment calmer mon trac ?"}


@pytest.fixture(scope="module")
def azure_service(stand_in: AzureSpeechStandIn, service_log_dir: Path) -> Iterator[ServiceProcess]:
    """Azure (the default contexts: Denise greets, Henri coaches) with the offline engines as fallback."""
    env = {**COMMON_ENV, "TTS_ENGINE": "azure", "AZURE_SPEECH_HOST": stand_in.url}
    with running_service(AZURE_TTS, service_log_dir / "voices-azure", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def offline_service(service_log_dir: Path) -> Iterator[ServiceProcess]:
    """Piper (English) and espeak-ng (French): a female variant greets, a male one coaches."""
    contexts = {
        "greeting": {"azure": "fr-FR-DeniseNeural", "espeak": "espeak-fr+f3"},
        "coaching": {"azure": "fr-FR-HenriNeural", "espeak": "espeak-fr+m3"},
    }
    env = {
        **COMMON_ENV,
        "TTS_ENGINE": "piper",
        "ESPEAK_VOICES": json.dumps(["fr+m3", "fr+f3"]),
        "VOICE_CONTEXTS": json.dumps(contexts),
    }
    with running_service(AZURE_TTS, service_log_dir / "voices-offline", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
async def mistral() -> AsyncIterator[FakeMistralServer]:
    async with FakeMistralServer(token_delay_s=0.002) as server:
        yield server


@dataclass
class SpokenSession:
    greeting: np.ndarray
    reply: np.ndarray
    sample_rate: int


async def _greet_and_answer(tts_url: str, language: str, mistral: FakeMistralServer) -> SpokenSession:
    """One real session: the greeting, then one text turn answered by the fake Mistral, both spoken."""
    from providers.endpoints import MistralEndpoint

    settings = AppSettings(
        AZURE_TTS_URL=tts_url,
        WHISPER_STT_URL=f"http://127.0.0.1:{free_port()}",  # no audio in: the STT is left out below
        MISTRAL_API_KEY=None,
        MISTRAL_BASE_URL=None,
    )
    endpoint = MistralEndpoint(
        server_url=mistral.url, api_key="k", model="mistral-small-latest", is_local=False
    )
    exercise = get_exercise("confidence_boost")
    pipeline = build_pipeline(settings, exercise, language=language, llm_endpoint=endpoint)
    # text in, speech out: the pipeline's LLM and both of its TTS, no STT
    session = AgentSession(
        llm=pipeline.llm, tts=pipeline.tts, aec_warmup_duration=None, user_away_timeout=None
    )
    speaker = WavAudioOutput()
    session.output.audio = speaker
    agent = CoachAgent(exercise=exercise, language=language, greeting_tts=pipeline.greeting_tts)
    mistral.script(REPLIES[language])
    try:
        await session.start(agent=agent)
        assert agent.greeting_handle is not None
        await asyncio.wait_for(agent.greeting_handle, 60)
        await asyncio.wait_for(session.run(user_input=QUESTIONS[language]), 60)
    finally:
        await session.aclose()
        await pipeline.aclose()

    assert speaker.output_sample_rate is not None
    rate = speaker.output_sample_rate
    audio = pcm16_to_float(speaker.audio().tobytes())
    voiced = [s for s in speaker.segments if s.duration_s > 0.2]
    assert len(voiced) >= 2, [(s.offset_s, s.duration_s) for s in speaker.segments]
    greeting, *replies = voiced

    def cut(offset_s: float, duration_s: float) -> np.ndarray:
        start = int(offset_s * rate)
        return audio[start : start + int(duration_s * rate)]

    reply_start = replies[0].offset_s
    reply_end = replies[-1].offset_s + replies[-1].duration_s
    return SpokenSession(
        greeting=cut(greeting.offset_s, greeting.duration_s),
        reply=cut(reply_start, reply_end - reply_start),
        sample_rate=rate,
    )


@pytest.mark.parametrize(
    ("language", "greeting_voice", "coaching_voice"),
    [
        ("fr", "fr-FR-DeniseNeural", "fr-FR-HenriNeural"),
        ("en", "en-US-JennyNeural", "en-US-JennyNeural"),  # never a French voice in an English session
    ],
)
async def test_on_azure_the_greeting_speaks_in_its_context_and_the_replies_in_coaching(
    stand_in: AzureSpeechStandIn,
    azure_service: ServiceProcess,
    mistral: FakeMistralServer,
    language: str,
    greeting_voice: str,
    coaching_voice: str,
) -> None:
    stand_in.reset()
    spoken = await _greet_and_answer(azure_service.url, language, mistral)
    assert spoken.greeting.size and spoken.reply.size

    greeting_text = get_exercise("confidence_boost").greeting(language)
    said = [(r.voice, r.text) for r in stand_in.requests]
    greeting_voices = {voice for voice, text in said if text in greeting_text}
    reply_voices = {voice for voice, text in said if text in REPLIES[language]}
    assert greeting_voices == {greeting_voice}, said
    assert reply_voices == {coaching_voice}, said
    assert {voice for voice, _ in said} == {greeting_voice, coaching_voice}


def _median_pitch_hz(audio: np.ndarray, rate: int) -> float:
    """Median F0 of the louder frames (autocorrelation, 70-400 Hz): about 100 Hz for espeak-ng's male
    French variants, about 200 Hz for fr+f3 (measured here on the greeting text)."""
    size, hop = int(0.04 * rate), int(0.01 * rate)
    shortest, longest = int(rate / 400), int(rate / 70)
    level = float(np.sqrt(np.mean(audio**2)))
    pitches = []
    for start in range(0, audio.size - size, hop):
        frame = audio[start : start + size] - audio[start : start + size].mean()
        if np.sqrt(np.mean(frame**2)) < 0.5 * level:
            continue
        corr = np.correlate(frame, frame, "full")[size - 1 :]
        lag = shortest + int(np.argmax(corr[shortest:longest]))
        if corr[0] > 0 and corr[lag] / corr[0] > 0.5:
            pitches.append(rate / lag)
    assert pitches, "no voiced frame"
    return float(np.median(pitches))


async def _characters_by_engine(service: ServiceProcess) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{service.url}/metrics") as resp:
        text = await resp.text()
    return {
        sample.labels["engine"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "azure_tts_characters"
        for sample in family.samples
        if sample.name == "azure_tts_characters_total"
    }


async def test_offline_french_greets_and_coaches_in_espeak_with_each_contexts_voice(
    offline_service: ServiceProcess, mistral: FakeMistralServer
) -> None:
    before = await _characters_by_engine(offline_service)
    spoken = await _greet_and_answer(offline_service.url, "fr", mistral)
    after = await _characters_by_engine(offline_service)
    assert after.get("espeak", 0) > before.get("espeak", 0)
    assert after.get("piper", 0) == before.get("piper", 0)  # nothing French went to the English voice

    greeting_hz = _median_pitch_hz(spoken.greeting, spoken.sample_rate)
    reply_hz = _median_pitch_hz(spoken.reply, spoken.sample_rate)
    assert greeting_hz > 160 > 130 > reply_hz, (greeting_hz, reply_hz)  # fr+f3 greets, fr+m3 coaches


async def test_offline_english_is_spoken_by_piper_only(
    offline_service: ServiceProcess, mistral: FakeMistralServer
) -> None:
    before = await _characters_by_engine(offline_service)
    spoken = await _greet_and_answer(offline_service.url, "en", mistral)
    after = await _characters_by_engine(offline_service)
    assert spoken.greeting.size and spoken.reply.size
    assert after.get("piper", 0) > before.get("piper", 0)
    assert after.get("espeak", 0) == before.get("espeak", 0)  # an English session never gets espeak-ng
