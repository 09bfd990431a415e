"""The latency stages of one turn, and the marks of its timeline, named once.

Each stage has one key. The bench uses it as is (`bench.json`: `stages.<key>`,
`turns[].stages.<key>`); the client `metrics` message and the `eloquence talk` report use it
with a unit, `<key>_ms`. The value comes from livekit-agents' per-message metrics
(`ChatMessage.metrics[metric]`, in seconds) on the user's or the agent's message. Under
`eloquence talk` and the bench, `e2e` is the harness's own t0 → t1 instead (eloquence/wav_io.py).
`CLIENT_STAGES` are measured by a client outside the session (the browser's e2e), bench only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Stage:
    key: str
    metric: str
    """The livekit-agents `ChatMessage.metrics` key (seconds)."""
    message: Literal["user", "assistant"]
    """Which message of the turn carries the metric."""
    label: str

    @property
    def field(self) -> str:
        """The name in milliseconds: client `metrics` data and `eloquence talk` timings."""
        return f"{self.key}_ms"


STAGES: tuple[Stage, ...] = (
    Stage("stt_final", "transcription_delay", "user", "STT: end of speech → final"),
    Stage("end_of_turn", "end_of_turn_delay", "user", "end of speech → turn committed"),
    Stage("llm_ttft", "llm_node_ttft", "assistant", "LLM: time to first token"),
    Stage("llm_first_sentence", "llm_node_ttfs", "assistant", "LLM: first sentence"),
    Stage("tts_first_audio", "tts_node_ttfb", "assistant", "TTS: first audio"),
    Stage("e2e", "e2e_latency", "assistant", "end of speech → first audio"),
)
STAGE_KEYS: tuple[str, ...] = tuple(stage.key for stage in STAGES)


@dataclass(frozen=True)
class ClientStage:
    """A stage a client measures itself: no session metric carries it, so `talk` and the client
    `metrics` message leave it out; the bench records it beside the stages above."""

    key: str
    label: str


BROWSER_E2E = ClientStage("browser_e2e", "browser: end of speech → first audio heard")
"""The playground page's own clock, in headless Chromium (eloquence/playground/browser.py): what a
person at the page waits. The bench runs one such turn when a Chromium is installed."""
CLIENT_STAGES: tuple[ClientStage, ...] = (BROWSER_E2E,)


@dataclass(frozen=True)
class Mark:
    """One instant of a turn's timeline (eloquence/timeline.py), in ms after the end of speech."""

    key: str
    label: str


TIMELINE: tuple[Mark, ...] = (
    Mark("last_voiced_input", "last voiced input sample"),
    Mark("vad_end_of_speech", "VAD end of speech"),
    Mark("stt_flush_sent", "STT flush sent"),
    Mark("stt_final", "STT final received"),
    Mark("turn_committed", "turn committed"),
    Mark("llm_request", "LLM request sent"),
    Mark("llm_first_token", "LLM first token"),
    Mark("tts_text", "first clause handed to the TTS"),
    Mark("tts_request", "TTS request sent"),
    Mark("tts_first_audio", "first audio from the TTS sidecar"),
    Mark("output_first_frame", "first frame captured by the output"),
)
TIMELINE_KEYS: tuple[str, ...] = tuple(mark.key for mark in TIMELINE)
