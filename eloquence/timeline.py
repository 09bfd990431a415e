"""One turn's timeline on one clock: where each millisecond between speech and reply goes.

`TurnTimeline` collects instants (`time.perf_counter()`) from three places:
- the session's events: the VAD's end of speech (`user_state_changed` → listening), the final
  transcript (`user_input_transcribed`), the committed turn (the user message);
- the agent's nodes (`CoachAgent`, when its `timeline` is set): LLM request, first token, the
  first clause handed to the TTS, the TTS request, the first audio from the TTS sidecar;
- the harness (`eloquence talk`, the bench): the last voiced input sample (t0) and the first
  frame the output captured (t1); and the STT plugin's `flush_sent` event (providers/stt.py emits
  it; another STT may not, and the mark stays None).

`resolve(t0, t1)` picks the instants of the turn that played (the last LLM request before the
reply's first frame, not a preemptive one that was discarded) and returns each mark of
`eloquence.stages.TIMELINE` in ms after t0 (None when it did not happen).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .stages import TIMELINE_KEYS


class TurnTimeline:
    def __init__(self) -> None:
        self._marks: dict[str, list[float]] = defaultdict(list)

    def mark(self, key: str, at: float | None = None) -> None:
        if key not in TIMELINE_KEYS:
            raise KeyError(f"unknown timeline mark {key!r}")
        self._marks[key].append(time.perf_counter() if at is None else at)

    def clear(self) -> None:
        self._marks.clear()

    def attach(self, session: Any) -> None:
        """Listen to the session's end of speech, final transcripts and committed user turns."""

        def on_user_state(ev: Any) -> None:
            if ev.new_state == "listening" and ev.old_state == "speaking":
                self.mark("vad_end_of_speech")

        def on_transcribed(ev: Any) -> None:
            if ev.is_final:
                self.mark("stt_final")

        def on_item(ev: Any) -> None:
            if getattr(ev.item, "role", None) == "user":
                self.mark("turn_committed")

        session.on("user_state_changed", on_user_state)
        session.on("user_input_transcribed", on_transcribed)
        session.on("conversation_item_added", on_item)

    def attach_stt(self, stt: Any) -> Callable[[], None]:
        """The STT plugin's `flush_sent` event, if it emits one; returns what detaches it (an STT
        can outlive the turn: the bench shares one pipeline between turns)."""

        def on_flush(*_: Any) -> None:
            self.mark("stt_flush_sent")

        stt.on("flush_sent", on_flush)
        return lambda: stt.off("flush_sent", on_flush)

    def resolve(self, t0: float | None, t1: float | None) -> dict[str, float | None]:
        """Each mark in ms after t0 (the last voiced input sample), for the reply that played at t1."""
        out: dict[str, float | None] = dict.fromkeys(TIMELINE_KEYS)
        if t0 is None:
            return out

        def first(key: str, after: float | None) -> float | None:
            if after is None:
                return None
            return next((t for t in sorted(self._marks.get(key, ())) if t >= after), None)

        def last(key: str, before: float | None) -> float | None:
            times = [t for t in self._marks.get(key, ()) if before is None or t <= before]
            return max(times) if times else None

        at: dict[str, float | None] = {"last_voiced_input": t0}
        at["vad_end_of_speech"] = first("vad_end_of_speech", t0)
        speech_end = at["vad_end_of_speech"] or t0
        at["stt_flush_sent"] = first("stt_flush_sent", speech_end)
        # the sidecar's own VAD may finalize on the pause before the flush goes out: the turn's
        # final is the first after the end of speech, whichever came first
        at["stt_final"] = first("stt_final", speech_end)
        at["turn_committed"] = first("turn_committed", t0)
        # the generation that played: the last request before the first frame (a preemptive
        # generation may have started earlier on a transcript that then changed)
        request = last("llm_request", t1)
        at["llm_request"] = request
        for key in ("llm_first_token", "tts_text", "tts_request", "tts_first_audio"):
            at[key] = first(key, request)
        at["output_first_frame"] = t1
        for key, value in at.items():
            out[key] = None if value is None else round((value - t0) * 1000, 1)
        return out
