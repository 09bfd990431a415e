"""`eloquence up --language fr`: a local stack that serves French, then a French turn through it.

`language_environment` is what `up` gives the processes; the end-to-end test runs the CLI as a
French user does on a fresh machine (no `.env`, no ELOQUENCE_* variable, a temp state dir and free
ports, LIVEKIT_URL on a closed port so no agent worker), then `talk --language fr` against it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.eloquence_cli import run_eloquence, stack_ports, without_engine_settings

from eloquence.stack import group_members
from eloquence.stack.commands import language_environment
from eloquence_bench.french import EspeakRecipe, espeak_available, speak_french
from eloquence_bench.speech import silence, to_wav


def test_french_sets_the_sessions_language_and_the_whisper_default() -> None:
    assert language_environment("fr", environ={}) == {"ELOQUENCE_LANGUAGE": "fr", "WHISPER_LANGUAGE": "fr"}
    assert language_environment("fr-FR", environ={})["ELOQUENCE_LANGUAGE"] == "fr"
    assert language_environment("en", environ={}) == {"ELOQUENCE_LANGUAGE": "en", "WHISPER_LANGUAGE": "en"}


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("en:tiny.en", "en:tiny.en,fr:base"),  # French added on the multilingual model
        ("en:tiny.en,", "en:tiny.en,fr:base"),
        ("en:tiny.en,fr:/models/whisper-small-fr", None),  # the user's French model is kept
        ("en:tiny.en,*:base", None),  # a wildcard serves French already
        ("fr-FR:base", None),
    ],
)
def test_a_whisper_model_map_without_the_language_gets_the_multilingual_model(
    models: str, expected: str | None
) -> None:
    env = language_environment("fr", environ={"WHISPER_MODELS": models})
    assert env.get("WHISPER_MODELS") == expected


def test_a_language_no_exercise_speaks_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported language 'de'; supported: en, fr"):
        language_environment("de", environ={})


# --- end to end ------------------------------------------------------------------------------


def _process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


@pytest.fixture
def bare_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh user's environment: no ELOQUENCE_*, no engine settings, free ports, its own state dir."""
    env = without_engine_settings()
    env.update(
        {
            "ELOQUENCE_STATE_DIR": str(tmp_path / "state"),  # the test's own stack file, not a setting
            **stack_ports(),
            "WHISPER_MODELS": "en:tiny.en",  # as an English deployment would have it
        }
    )
    try:
        yield env
    finally:
        state = Path(env["ELOQUENCE_STATE_DIR"]) / "stack.json"
        groups = (
            [int(r["pid"]) for r in json.loads(state.read_text())["services"].values() if r.get("pid")]
            if state.exists()
            else []
        )
        run_eloquence("down", env=env, cwd=tmp_path, timeout=60)
        for group in groups:
            if group_members(group):
                os.killpg(group, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(480)
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_up_in_french_serves_a_french_turn(bare_env: dict[str, str], tmp_path: Path) -> None:
    up = run_eloquence("up", "--language", "fr", "--detach", env=bare_env, cwd=tmp_path, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "Sessions speak fr" in up.stdout

    state = json.loads((Path(bare_env["ELOQUENCE_STATE_DIR"]) / "stack.json").read_text())
    services = state["services"]
    assert _process_environ(services["api"]["pid"])["ELOQUENCE_LANGUAGE"] == "fr"
    whisper = _process_environ(services["whisper-stt"]["pid"])
    assert (whisper["WHISPER_LANGUAGE"], whisper["WHISPER_MODELS"]) == ("fr", "en:tiny.en,fr:base")

    question = tmp_path / "question.wav"
    text = "Je voudrais préparer ma présentation de demain matin."
    speech = speak_french(text, EspeakRecipe("fr+m2", 140))
    question.write_bytes(to_wav(np.concatenate([silence(0.3), speech, silence(0.2)])))
    talk = run_eloquence(
        "talk", str(question), "--language", "fr", "-o", str(tmp_path / "reply.wav"), "--json", "--no-start",
        env=bare_env, cwd=tmp_path, timeout=180,
    )  # fmt: skip
    assert talk.returncode == 0, talk.stdout + talk.stderr
    report = json.loads(talk.stdout)
    assert report["language"] == "fr" and report["error"] is None
    assert "présentation" in report["transcript"].lower(), report["transcript"]
    assert report["reply"].strip() and report["reply_audio_s"] > 0.5
