"""The bench's French questions: spoken reproducibly, marked French, and reported beside English."""

from __future__ import annotations

from pathlib import Path

import pytest

from eloquence_bench.corpus import FRENCH_QUESTIONS, FRENCH_VOICE, build_french_corpus
from eloquence_bench.french import espeak_available
from eloquence_bench.report import markdown

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def test_french_questions_are_spoken_the_same_on_every_build(tmp_path: Path) -> None:
    fresh = build_french_corpus(tmp_path)
    cached = build_french_corpus(tmp_path)  # read back from the cache
    assert [u.text for u in fresh] == list(FRENCH_QUESTIONS)
    assert {(u.language, u.kind, u.voice) for u in fresh} == {("fr", "question", FRENCH_VOICE.label)}
    assert [u.sha256 for u in fresh] == [u.sha256 for u in cached]
    assert [u.sha256 for u in build_french_corpus(tmp_path / "again")] == [u.sha256 for u in fresh]
    assert all(1.0 < u.duration_s < 8.0 for u in fresh)
    assert fresh[0].describe()["language"] == "fr"


def test_the_report_shows_the_french_e2e_beside_the_english_one() -> None:
    def stages(e2e_ms: float) -> dict:  # type: ignore[type-arg]
        return {"e2e": {"n": 2, "p50_ms": e2e_ms, "p95_ms": e2e_ms, "max_ms": e2e_ms, "mean_ms": e2e_ms}}

    result = {
        "machine": {"cpu_model": "cpu", "cores_logical": 2, "load_average": [0, 0, 0]},
        "created": "now",
        "quick": True,
        "models": {},
        "stages": stages(900.0),
        "turns": [{}, {}],
        "quality": {"wer_mean": 0.05, "false_endpoints": {}},
        "french": {"stages": stages(1300.0), "turns": [{}, {}], "quality": {"wer_mean": 0.4}},
    }
    text = markdown(result)
    assert "French turns (AgentSession, 2 turns)" in text
    assert "French e2e p50 1300 ms beside English 900 ms" in text
