"""The one table of stages: the framework's metric names, the talk report, the client messages."""

from __future__ import annotations

import typing
from dataclasses import fields

from livekit.agents.llm.chat_context import MetricsReport

from eloquence.client_messages import turn_metrics
from eloquence.stages import STAGE_KEYS, STAGES
from eloquence.talk import TalkTimings


def test_every_stage_reads_a_metric_the_framework_reports() -> None:
    reported = typing.get_type_hints(MetricsReport)
    for stage in STAGES:
        assert stage.metric in reported, stage
    assert len(set(STAGE_KEYS)) == len(STAGES)


def test_talk_timings_are_the_stages_in_order() -> None:
    assert [f.name for f in fields(TalkTimings)] == [stage.field for stage in STAGES]


def test_client_metrics_take_each_stage_from_its_own_message() -> None:
    user = {"transcription_delay": 0.4805, "end_of_turn_delay": 0.31, "llm_node_ttft": 9.0}
    assistant = {
        "llm_node_ttft": 0.2,
        "llm_node_ttfs": 0.35,
        "tts_node_ttfb": 0.05,
        "e2e_latency": 1.2,
        "transcription_delay": 9.0,
    }
    data = turn_metrics(user, assistant)
    assert data == {
        "stt_final_ms": 480.5,
        "end_of_turn_ms": 310.0,
        "llm_ttft_ms": 200.0,
        "llm_first_sentence_ms": 350.0,
        "tts_first_audio_ms": 50.0,
        "e2e_ms": 1200.0,
    }
    assert list(data) == [stage.field for stage in STAGES]
    # a stage the turn did not reach is absent, not zero; a negative value is not a latency
    assert turn_metrics({"transcription_delay": -1.0}, None) == {}
