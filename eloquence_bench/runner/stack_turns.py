"""Per utterance through the real stack: `eloquence.talk.run_talk_turn` (a real AgentSession
with the real providers and sidecars), one warm pipeline shared by every turn, as a worker
keeps its connections warm between turns.

t0 and t1 are the talk harness's own (eloquence/wav_io.py): the last input sample above -40 dBFS
delivered at real-time pace, and the first reply frame above -40 dBFS at `capture_frame`. The
stages are those of eloquence/stages.py, keyed as in bench.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eloquence.settings import AppSettings
from eloquence.stages import STAGES

from ..corpus import Utterance
from ..pacing import PacingError
from ..quality import wer
from ..report import mean, summarize

# one 20 ms frame: a stalled event loop that then hands over a burst of frames is not real time
PACING_TOLERANCE_MS = 20.0


def local_stack_settings(*, stt: str, tts: str, llm: str) -> AppSettings:
    """The defaults in code (`AppSettings()`), pointed at the bench's own services only: no Mistral
    endpoint and no fallback URL from the environment takes part."""
    return AppSettings().model_copy(
        update={
            "whisper_stt_url": stt,
            "azure_tts_url": tts,
            "local_llm_url": llm,
            "mistral_api_key": None,
            "mistral_base_url": None,
            "whisper_stt_fallback_url": None,
            "azure_tts_fallback_url": None,
        }
    )


async def run_stack_turns(
    utterances: list[Utterance],
    *,
    settings: Any,
    warmup: Utterance,
    on_turn: Callable[[dict[str, Any]], None] | None = None,
    language: str | None = None,
) -> list[dict[str, Any]]:
    """`language`: the sessions' (None: ELOQUENCE_LANGUAGE); a French turn runs on the French models."""
    from eloquence.agent import build_pipeline
    from eloquence.exercises import get_exercise
    from eloquence.talk import TalkError, run_talk_turn

    language = language or settings.language
    pipeline = build_pipeline(settings, get_exercise("default"), language=language)
    turns: list[dict[str, Any]] = []
    try:
        await run_talk_turn(audio=warmup.samples, settings=settings, pipeline=pipeline, language=language)
        for utterance in utterances:
            started = time.perf_counter()
            turn: dict[str, Any] = {
                "utterance_id": utterance.id,
                "kind": utterance.kind,
                "text": utterance.text,
            }
            try:
                report = await run_talk_turn(
                    audio=utterance.samples, settings=settings, pipeline=pipeline, language=language
                )
            except TalkError as e:
                turn.update(error=str(e), stages={}, timeline={})
            else:
                elapsed = time.perf_counter() - started
                if elapsed < utterance.duration_s:
                    raise PacingError(
                        f"{utterance.id}: the turn took {elapsed:.2f} s for {utterance.duration_s:.2f} s "
                        "of audio: it was not delivered in real time"
                    )
                if report.pacing_max_early_ms > PACING_TOLERANCE_MS:
                    # a stalled event loop handed over a burst of frames (a busy box): this turn's
                    # figures are not real time, so it counts as an error; the others still count
                    turn.update(
                        error=f"pacing: an input frame reached the session "
                        f"{report.pacing_max_early_ms:.1f} ms ahead of real time",
                        stages={},
                        timeline={},
                        pacing_max_early_ms=report.pacing_max_early_ms,
                    )
                    turns.append(turn)
                    if on_turn is not None:
                        on_turn(turn)
                    continue
                stages = {stage.key: getattr(report.timings, stage.field) for stage in STAGES}
                turn.update(
                    stages={k: v for k, v in stages.items() if v is not None},
                    # the turn's instants on one clock, ms after t0 (eloquence/timeline.py)
                    timeline=report.timeline,
                    transcript=report.transcript,
                    wer=_wer(utterance.text, report.transcript, language),
                    reply=report.reply,
                    replies=len(report.replies),
                    false_endpoints=report.false_endpoints,
                    # answered into the pause: reply audio before the end of the user's speech
                    false_endpoint=report.false_endpoints > 0,
                    split_turn=report.user_turns > 1,
                    pacing_max_early_ms=report.pacing_max_early_ms,
                    error=None if report.reply else "no reply",
                )
            turns.append(turn)
            if on_turn is not None:
                on_turn(turn)
    finally:
        await pipeline.aclose()
    return turns


def _wer(reference: str, hypothesis: str, language: str) -> float:
    if language == "fr":  # accents are spelling: the English normalizer would drop them
        from ..quality import french_wer

        return round(french_wer([reference], [hypothesis]), 4)
    return wer(reference, hypothesis)


def quality_summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """bench.json `quality`: mean WER, and false endpoints (replies into a pause) beside the errors."""
    ok = [t for t in turns if not t.get("error")]
    paused = [t for t in ok if t["kind"] == "paused"]
    false_endpoints = sum(1 for t in paused if t.get("false_endpoint"))
    return {
        "wer_mean": mean(t["wer"] for t in ok if "wer" in t),
        "false_endpoints": {
            "n": len(paused),
            "count": false_endpoints,
            "rate": round(false_endpoints / len(paused), 3) if paused else None,
            "split_turns": sum(1 for t in paused if t.get("split_turn")),
            "on_questions": sum(1 for t in ok if t["kind"] == "question" and t.get("false_endpoint")),
        },
        "errors": len(turns) - len(ok),
        # the same sentences with and without a pause inside (a pause must not change them)
        "paused_vs_unpaused": {kind: _kind_summary(ok, kind) for kind in ("paused", "unpaused")},
    }


def _kind_summary(turns: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    chosen = [t for t in turns if t["kind"] == kind and "wer" in t]
    return {
        "n": len(chosen),
        "wer_mean": mean(t["wer"] for t in chosen),
        "wer": wer(" ".join(t["text"] for t in chosen), " ".join(t["transcript"] for t in chosen))
        if chosen
        else None,
        "e2e_p50_ms": summarize([t["stages"].get("e2e") for t in chosen])["p50_ms"],
    }
