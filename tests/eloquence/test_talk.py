"""`eloquence talk`: full audio turns through a real AgentSession with the real sidecars and LLM.

The sidecars (whisper-stt, azure-tts with Piper, the local LLM) run as subprocesses on free
loopback ports; `talk` runs as the user runs it (`python -m eloquence talk ... --json`) and, for
the endpointing fixture, through `run_talk_turn` in-process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from eloquence.services import (
    API,
    AZURE_TTS,
    LOCAL_LLM,
    WHISPER_STT,
    ServiceDefinition,
    free_port,
    running_service,
)
from eloquence.settings import AppSettings
from eloquence.stages import TIMELINE_KEYS
from eloquence.talk import TalkError, run_talk_turn
from eloquence_bench.quality import wer
from eloquence_bench.speech import silence, speak, speak_with_pause, to_wav

REPO = Path(__file__).resolve().parents[2]
QUESTION_WAV = REPO / "samples" / "question.wav"
QUESTION_TEXT = "I want to feel more confident when I speak in public."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(service_log_dir: Path) -> Iterator[dict[str, str]]:
    """The three services talk needs, each a real process (low thread counts: 2 shared cores)."""
    with (
        running_service(WHISPER_STT, service_log_dir, env={"WHISPER_CPU_THREADS": "2"}) as stt,
        running_service(AZURE_TTS, service_log_dir) as tts,
        running_service(LOCAL_LLM, service_log_dir) as llm,
    ):
        yield {"WHISPER_STT_URL": stt.url, "AZURE_TTS_URL": tts.url, "LOCAL_LLM_URL": llm.url}


def _env(urls: dict[str, str], **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MISTRAL_", "WHISPER_", "AZURE_", "LOCAL_LLM"))
    }
    return {**env, **urls, **extra}


def _talk(*args: str, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eloquence", "talk", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def _transcribe(stt_url: str, wav: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("file", wav, filename="reply.wav", content_type="audio/wav")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stt_url}/v1/audio/transcriptions", data=form) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["text"])


def _settings(urls: dict[str, str]) -> AppSettings:
    # by alias, as the environment would set them; these win over the test process's environment
    return AppSettings(**{**urls, "MISTRAL_API_KEY": None, "MISTRAL_BASE_URL": None})


async def test_a_full_spoken_turn_through_the_talk_command(stack: dict[str, str], tmp_path: Path) -> None:
    question = tmp_path / "question.wav"
    question.write_bytes(to_wav(np.concatenate([silence(0.3), speak(QUESTION_TEXT), silence(0.2)])))
    out = tmp_path / "reply.wav"
    # a short reply keeps the test quick; the cap is a setting like any other
    result = _talk(
        str(question),
        "-o",
        str(out),
        "--exercise",
        "confidence_boost",
        "--json",
        "--no-start",
        env=_env(stack, ELOQUENCE_LLM_MAX_TOKENS="40"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    assert report["exercise"] == "confidence_boost"
    assert "Marie" in report["greeting"]
    assert wer(QUESTION_TEXT, report["transcript"]) <= 0.15, report["transcript"]
    assert report["reply"].strip()
    assert report["user_turns"] == 1 and len(report["replies"]) == 1

    timings = report["timings"]
    assert timings["e2e_ms"] is not None and timings["e2e_ms"] > 0
    for stage in ("stt_final_ms", "llm_ttft_ms", "tts_first_audio_ms"):
        assert timings[stage] is not None and timings[stage] >= 0, stage

    # the turn on one clock, ms after the last voiced input sample, in causal order
    tl = report["timeline"]
    assert set(tl) == set(TIMELINE_KEYS)
    order = ("vad_end_of_speech", "stt_final", "llm_first_token", "tts_text", "tts_first_audio")
    assert tl["last_voiced_input"] == 0.0
    # the flush follows the end of speech; the final may come before it (the sidecar's VAD)
    assert 0 < tl["vad_end_of_speech"] <= tl["stt_flush_sent"], tl
    assert tl["vad_end_of_speech"] <= tl["stt_final"], tl
    assert tl["llm_request"] <= tl["llm_first_token"] <= tl["tts_text"], tl
    assert tl["tts_request"] <= tl["tts_first_audio"] <= tl["output_first_frame"] == timings["e2e_ms"], tl
    assert all(tl[key] is not None for key in order), tl

    # the reply audio is real speech: it transcribes back into words
    audio, rate = sf.read(out, dtype="float32")
    assert rate == report["output_sample_rate"]
    reply_audio = audio[int(report["reply_offset_s"] * rate) :]
    assert len(reply_audio) / rate > 0.5
    reply_audio = reply_audio[: 6 * rate]  # the first seconds are enough to hear words
    buf = io.BytesIO()
    sf.write(buf, reply_audio, rate, format="WAV", subtype="PCM_16")
    heard = await _transcribe(stack["WHISPER_STT_URL"], buf.getvalue())
    assert len(heard.split()) >= 2, heard

    # the client messages, in the order the client sees them
    messages = report["messages"]
    assert messages[:2] == [
        {"type": "ai_response", "response": report["greeting"]},
        {"type": "metrics", "data": messages[1]["data"]},
    ]
    kinds = [m["type"] for m in messages[2:]]  # the user's turn
    assert kinds[-2:] == ["ai_response", "metrics"], kinds
    assert set(kinds[:-2]) == {"transcription"}
    assert [m["final"] for m in messages[2:-2]][-1] is True  # interims, then the final
    finals = [m for m in report["messages"] if m["type"] == "transcription" and m["final"]]
    assert finals and wer(QUESTION_TEXT, " ".join(m["text"] for m in finals)) <= 0.15
    assert report["messages"][-2]["response"] == report["reply"]
    assert {"llm_ttft_ms", "tts_first_audio_ms"} <= set(report["messages"][-1]["data"])


@pytest.mark.parametrize("pause_s", [0.4, 0.7])
async def test_a_pause_mid_sentence_gets_exactly_one_reply(stack: dict[str, str], pause_s: float) -> None:
    audio = speak_with_pause("I would like some help with", "my job interview tomorrow morning", pause_s)
    report = await run_talk_turn(audio=audio, exercise="interview_prep", settings=_settings(stack))
    assert len(report.replies) == 1, report.replies
    assert report.false_endpoints == 0  # the reply's audio began after the sentence ended
    assert "help" in report.transcript.lower() and "interview" in report.transcript.lower(), report.transcript
    assert report.timings.e2e_ms is not None and report.timings.e2e_ms > 0


async def test_a_dead_sidecar_mid_session_is_a_clear_error(stack: dict[str, str]) -> None:
    urls = {**stack, "AZURE_TTS_URL": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(TalkError) as info:
        await run_talk_turn(audio=QUESTION_WAV, settings=_settings(urls), timeout_s=60)
    assert "tts" in str(info.value).lower()


def test_missing_file_is_a_clear_error(stack: dict[str, str], tmp_path: Path) -> None:
    result = _talk(str(tmp_path / "nope.wav"), "--no-start", env=_env(stack))
    assert result.returncode == 1
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_file_that_is_not_a_wav_is_a_clear_error(stack: dict[str, str], tmp_path: Path) -> None:
    fake = tmp_path / "question.wav"
    fake.write_text("this is not audio at all\n" * 20)
    flac = tmp_path / "question.flac.wav"
    flac.write_bytes(to_wav(speak("hello there"), fmt="FLAC", subtype="PCM_16"))
    for path in (fake, flac):
        result = _talk(str(path), "--no-start", "--json", env=_env(stack))
        assert result.returncode == 1
        assert "not a WAV" in result.stderr
        assert "not a WAV" in json.loads(result.stdout)["error"]
        assert "Traceback" not in result.stderr


def test_a_dead_sidecar_is_a_clear_error(stack: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = _talk(str(QUESTION_WAV), "--no-start", env=_env({**stack, "WHISPER_STT_URL": dead}))
    assert result.returncode == 1
    assert "whisper-stt is not answering" in result.stderr and dead in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_sidecar_that_breaks_mid_session_is_a_clear_error(stack: dict[str, str]) -> None:
    # healthy at /health, but it is not a TTS: the greeting's synthesis fails inside the session
    result = _talk(
        str(QUESTION_WAV), "--no-start", env=_env({**stack, "AZURE_TTS_URL": stack["WHISPER_STT_URL"]})
    )
    assert result.returncode == 1
    assert "eloquence talk: the session failed" in result.stderr and "azure-tts" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_an_unknown_exercise_is_a_clear_error(stack: dict[str, str]) -> None:
    result = _talk(str(QUESTION_WAV), "--exercise", "juggling", "--no-start", env=_env(stack))
    assert result.returncode == 1
    assert "unknown exercise 'juggling'" in result.stderr and "confidence_boost" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_says_clearly_when_there_is_no_sound_device(stack: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eloquence", "console"],
        capture_output=True,
        text=True,
        env=_env(stack),
        timeout=60,
    )
    assert result.returncode == 1
    assert "eloquence console:" in result.stderr
    assert "no sound system" in result.stderr or "no microphone or speaker" in result.stderr
    assert "Traceback" not in result.stderr


FAKE_LIVEKIT = ServiceDefinition(
    name="fake-livekit-talk",
    console_script="",
    module_argv=("fakes.livekit_server",),
    default_port=0,
    health_path="/",
)


async def test_api_health_reports_every_sidecar_up(stack: dict[str, str], service_log_dir: Path) -> None:
    tests_dir = str(REPO / "tests")
    with running_service(FAKE_LIVEKIT, service_log_dir, env={"PYTHONPATH": tests_dir}, timeout=60) as livekit:
        env = {
            **stack,
            "LIVEKIT_URL": f"ws://127.0.0.1:{livekit.port}",
            "MISTRAL_API_KEY": "",
            "MISTRAL_BASE_URL": "",
        }
        with running_service(API, service_log_dir / "api-all-up", env=env, timeout=60) as api:
            async with aiohttp.ClientSession() as http, http.get(f"{api.url}/api/livekit/health") as resp:
                assert resp.status == 200
                body = await resp.json()
    assert body["status"] == "ok", body
    assert body["livekit"]["reachable"] is True
    assert {name: s["healthy"] for name, s in body["services"].items()} == {
        "whisper-stt": True,
        "azure-tts": True,
        "local-llm": True,
    }
    assert body["services"]["whisper-stt"]["detail"]["ready"] is True
