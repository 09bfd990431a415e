"""A turn's timeline: instants on one clock, resolved for the reply that played."""

from __future__ import annotations

import pytest

from eloquence.stages import TIMELINE_KEYS
from eloquence.timeline import TurnTimeline


def test_marks_resolve_to_ms_after_t0_for_the_generation_that_played() -> None:
    tl = TurnTimeline()
    t0 = 100.0
    tl.mark("vad_end_of_speech", t0 - 2.0)  # the greeting's turn: before t0, ignored
    tl.mark("vad_end_of_speech", t0 + 0.30)
    tl.mark("stt_final", t0 + 0.25)  # a final before the end of speech (a pause): not the flush's
    tl.mark("stt_final", t0 + 0.50)
    tl.mark("turn_committed", t0 + 0.55)
    # a preemptive generation on an earlier transcript, then the one that played
    tl.mark("llm_request", t0 + 0.26)
    tl.mark("llm_first_token", t0 + 0.40)
    tl.mark("llm_request", t0 + 0.51)
    tl.mark("llm_first_token", t0 + 0.60)
    tl.mark("tts_text", t0 + 0.65)
    tl.mark("tts_request", t0 + 0.61)
    tl.mark("tts_first_audio", t0 + 0.75)
    out = tl.resolve(t0, t0 + 0.76)
    assert set(out) == set(TIMELINE_KEYS)
    assert out["last_voiced_input"] == 0.0
    assert out["vad_end_of_speech"] == 300.0
    assert out["stt_final"] == 500.0
    assert out["stt_flush_sent"] is None  # the STT plugin emitted no flush_sent
    assert out["llm_request"] == 510.0 and out["llm_first_token"] == 600.0
    assert out["tts_first_audio"] == 750.0 and out["output_first_frame"] == 760.0


def test_a_final_before_the_flush_is_the_turn_final() -> None:
    """The sidecar's VAD finalized on the pause before the agent's flush went out."""
    tl = TurnTimeline()
    t0 = 10.0
    tl.mark("vad_end_of_speech", t0 + 0.30)
    tl.mark("stt_final", t0 + 0.31)
    tl.mark("stt_flush_sent", t0 + 0.33)
    out = tl.resolve(t0, t0 + 0.7)
    assert out["stt_final"] == 310.0 and out["stt_flush_sent"] == 330.0


def test_no_end_of_speech_gives_an_empty_timeline() -> None:
    assert set(TurnTimeline().resolve(None, None).values()) == {None}


def test_an_unknown_mark_is_refused() -> None:
    with pytest.raises(KeyError):
        TurnTimeline().mark("llm_frist_token")
