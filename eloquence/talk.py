"""`eloquence talk IN.wav`: one spoken turn through a real AgentSession, with no LiveKit server.

The WAV is the microphone (real-time pace), a WAV file is the speaker, and the real providers
talk to the sidecars and the LLM server, which are started here when they are not running.

`run_talk_turn(...)` is the reusable part (the bench calls it per utterance): it greets, plays
the utterance, waits for the reply, and returns a `TalkReport` with the transcript, the greeting,
the reply, the client messages and the per-stage latencies, `<stage>_ms` for each stage of
eloquence/stages.py (from the framework's metrics; `e2e_ms` is t0 → t1, measured by this
harness, see eloquence/wav_io.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .exercises import SUPPORTED_LANGUAGES, Exercise, UnknownExerciseError, get_exercise
from .settings import AppSettings
from .stages import STAGES, TIMELINE
from .wav_io import SAMPLE_RATE, WavFormatError, read_wav

logger = logging.getLogger("eloquence.talk")

TALK_SERVICES = ("whisper-stt", "azure-tts", "local-llm")
_POLL_S = 0.05


class TalkError(RuntimeError):
    """The turn could not be completed; the message says what failed and where."""


@dataclass
class TalkTimings:
    """`<stage>_ms` for each stage of eloquence/stages.py, in its order (the keys of `talk --json`)."""

    stt_final_ms: float | None = None
    end_of_turn_ms: float | None = None
    llm_ttft_ms: float | None = None
    llm_first_sentence_ms: float | None = None
    tts_first_audio_ms: float | None = None
    e2e_ms: float | None = None
    """t0 (last voiced input sample delivered) → t1 (first voiced reply frame captured)."""


@dataclass
class TalkReport:
    exercise: str
    language: str
    greeting: str
    transcript: str
    reply: str
    timings: TalkTimings
    replies: list[str] = field(default_factory=list)
    """Every agent reply after the utterance began (more than one means a false endpoint)."""
    user_turns: int = 0
    false_endpoints: int = 0
    """Replies whose audio started before the end of the user's speech (t0)."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    input_duration_s: float = 0.0
    pacing_max_early_ms: float = 0.0
    """How far ahead of real time any input frame reached the session (0 when paced)."""
    reply_offset_s: float | None = None
    """Where the reply starts in the output WAV (the greeting comes first)."""
    reply_audio_s: float = 0.0
    timeline: dict[str, float | None] = field(default_factory=dict)
    """The turn's instants in ms after t0, keyed as `eloquence.stages.TIMELINE` (eloquence/timeline.py)."""
    output_path: str | None = None
    output_sample_rate: int | None = None
    error: str | None = None
    """None when the agent replied; `talk --json` prints only `{"error": ...}` when the turn could not run."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Observed:
    """What the session reported while the harness ran."""

    items: list[tuple[float, Any]] = field(default_factory=list)  # (perf_counter, ChatMessage)
    fatal: str | None = None


def _describe_error(ev: Any) -> str:
    source = getattr(ev, "source", None)
    label = getattr(source, "label", None) or type(source).__name__
    error = getattr(ev, "error", None)
    inner = getattr(error, "error", error)
    return f"{label}: {inner}"


async def _wait_until(predicate: Any, *, timeout: float, what: str, observed: _Observed) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if observed.fatal:
            raise TalkError(observed.fatal)
        if time.monotonic() > deadline:
            raise TalkError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(_POLL_S)


async def run_talk_turn(
    *,
    audio: np.ndarray | str | Path,
    exercise: str | Exercise = "default",
    settings: AppSettings | None = None,
    language: str | None = None,
    pipeline: Any = None,
    llm_endpoint: Any = None,
    turn_handling: Any = None,
    output_path: str | Path | None = None,
    trailing_silence_s: float | None = None,
    settle_s: float = 0.4,
    timeout_s: float = 90.0,
) -> TalkReport:
    """One greeting + one user utterance + the reply, through a real AgentSession.

    `audio` is a WAV path or float32 mono samples at 16 kHz. `pipeline` (an `agent.Pipeline`)
    lets a caller reuse warm providers across turns; otherwise they are built from `settings`
    (and `llm_endpoint`, a `providers.endpoints.MistralEndpoint`) and closed at the end.
    """
    from .agent import (
        CoachAgent,
        build_pipeline,
        build_session,
        default_turn_handling,
        spoken_reply_options,
    )
    from .client_messages import ClientMessages, turn_metrics
    from .timeline import TurnTimeline
    from .wav_io import WavAudioInput, WavAudioOutput

    settings = settings or AppSettings()
    exercise_obj = get_exercise(exercise) if isinstance(exercise, str) else exercise
    lang = exercise_obj.resolve_language(language or settings.language)
    samples = read_wav(audio) if isinstance(audio, str | Path) else np.asarray(audio, dtype=np.float32)
    if trailing_silence_s is None:
        # long enough for the slowest commit (a "mid-sentence" verdict waits max_delay)
        trailing_silence_s = settings.max_endpointing_delay + 1.5

    owned_pipeline = pipeline is None
    if pipeline is None:
        pipeline = build_pipeline(settings, exercise_obj, language=lang, llm_endpoint=llm_endpoint)
    if turn_handling is None:
        turn_handling = default_turn_handling(settings, language=lang)
        # a file cannot pause, so a false interruption cannot be resumed: say so up front
        turn_handling["interruption"] = {**turn_handling["interruption"], "resume_false_interruption": False}
    # no echo from a file: user speech may interrupt the agent from its first word
    session = build_session(
        settings=settings, pipeline=pipeline, turn_handling=turn_handling, aec_warmup_duration=None
    )
    mic = WavAudioInput(samples=samples, sample_rate=SAMPLE_RATE, trailing_silence_s=trailing_silence_s)
    speaker = WavAudioOutput()
    session.input.audio = mic
    session.output.audio = speaker
    messages = ClientMessages()
    messages.attach(session)
    timeline = TurnTimeline()
    timeline.attach(session)
    detach_stt = timeline.attach_stt(pipeline.stt)

    observed = _Observed()

    def on_item(ev: Any) -> None:
        observed.items.append((time.perf_counter(), ev.item))

    def on_error(ev: Any) -> None:
        recoverable = getattr(getattr(ev, "error", None), "recoverable", True)
        if not recoverable:
            observed.fatal = f"the session failed: {_describe_error(ev)}"
        else:
            logger.warning("recoverable error: %s", _describe_error(ev))

    def on_close(ev: Any) -> None:
        if getattr(ev, "error", None) is not None and not observed.fatal:
            observed.fatal = f"the session closed on an error: {_describe_error(ev)}"

    session.on("conversation_item_added", on_item)
    session.on("error", on_error)
    session.on("close", on_close)

    agent = CoachAgent(
        exercise=exercise_obj,
        language=lang,
        spoken_reply=spoken_reply_options(settings),
        greeting_tts=getattr(pipeline, "greeting_tts", None),
    )
    agent.timeline = timeline
    try:
        await session.start(agent=agent)
        # the greeting is spoken first; the measured turn is the user's
        await _wait_until(
            lambda: agent.greeting_handle is not None, timeout=10, what="the greeting", observed=observed
        )
        assert agent.greeting_handle is not None
        await _wait_until(
            agent.greeting_handle.done, timeout=timeout_s, what="the greeting to be spoken", observed=observed
        )

        utterance_at = time.perf_counter()
        mic.start_utterance()
        await _wait_until(
            mic.utterance_done.is_set,
            timeout=timeout_s + mic.duration_s,
            what="the utterance",
            observed=observed,
        )

        def replied_and_idle() -> bool:
            return (
                any(_is_reply(item, at, utterance_at) for at, item in observed.items)
                and session.agent_state == "listening"
                and session.user_state != "speaking"
                and session.current_speech is None
            )

        await _wait_until(replied_and_idle, timeout=timeout_s, what="the agent's reply", observed=observed)
        # stay a little longer: a second (false-endpoint) reply would show up here
        settle_until = time.monotonic() + settle_s
        while time.monotonic() < settle_until:
            await asyncio.sleep(_POLL_S)
            if not replied_and_idle():
                await _wait_until(
                    replied_and_idle, timeout=timeout_s, what="the agent's reply", observed=observed
                )
                settle_until = time.monotonic() + settle_s
    finally:
        mic.close()
        detach_stt()
        with contextlib.suppress(Exception):
            await session.aclose()
        await messages.aclose()
        if owned_pipeline:
            await pipeline.aclose()

    user_items = [
        item for at, item in observed.items if at >= utterance_at and getattr(item, "role", None) == "user"
    ]
    replies = [item for at, item in observed.items if _is_reply(item, at, utterance_at)]
    greeting_items = [
        item
        for at, item in observed.items
        if at < utterance_at and getattr(item, "role", None) == "assistant"
    ]

    t0 = mic.last_voiced_at
    voiced_segments = [
        s for s in speaker.segments if s.first_voiced_at is not None and s.started_at >= utterance_at
    ]
    after_t0 = [
        s
        for s in voiced_segments
        if t0 is not None and s.first_voiced_at is not None and s.first_voiced_at >= t0
    ]
    reply_segment = after_t0[0] if after_t0 else None
    false_endpoints = len(voiced_segments) - len(after_t0)

    user_metrics = user_items[-1].metrics if user_items else None
    stages: dict[str, float | None] = {
        **turn_metrics(user_metrics, replies[-1].metrics if replies else None),
        "e2e_ms": (
            round((reply_segment.first_voiced_at - t0) * 1000, 1)
            if reply_segment is not None and reply_segment.first_voiced_at is not None and t0 is not None
            else None
        ),
    }
    timings = TalkTimings(**{stage.field: stages.get(stage.field) for stage in STAGES})

    written: str | None = None
    if output_path is not None:
        written = str(speaker.write(output_path))

    return TalkReport(
        exercise=exercise_obj.name,
        language=lang,
        greeting=" ".join(i.text_content or "" for i in greeting_items).strip()
        or exercise_obj.greeting(lang),
        transcript=" ".join(i.text_content or "" for i in user_items).strip(),
        reply=(replies[-1].text_content or "") if replies else "",
        replies=[r.text_content or "" for r in replies],
        user_turns=len(user_items),
        false_endpoints=false_endpoints,
        timings=timings,
        messages=list(messages.messages),
        input_duration_s=round(len(samples) / SAMPLE_RATE, 3),
        pacing_max_early_ms=round(mic.max_early_s * 1000, 2),
        reply_offset_s=round(reply_segment.offset_s, 3) if reply_segment is not None else None,
        reply_audio_s=round(sum(s.duration_s for s in voiced_segments), 3),
        timeline=timeline.resolve(t0, reply_segment.first_voiced_at if reply_segment is not None else None),
        output_path=written,
        output_sample_rate=speaker.output_sample_rate,
    )


def _is_reply(item: Any, at: float, utterance_at: float) -> bool:
    return (
        at >= utterance_at
        and getattr(item, "role", None) == "assistant"
        and bool((item.text_content or "").strip())
    )


# --- CLI --------------------------------------------------------------------------------------


def _print_report(report: TalkReport, *, input_path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"eloquence talk — {input_path} ({report.exercise}, {report.language})", show_lines=True
    )
    table.add_column("", style="bold cyan", no_wrap=True)
    table.add_column("")
    table.add_row("greeting", report.greeting)
    table.add_row("you said", report.transcript or "[red](nothing recognised)")
    table.add_row("reply", report.reply or "[red](no reply)")
    if report.false_endpoints or len(report.replies) > 1:
        table.add_row(
            "[yellow]warning", f"{len(report.replies)} replies, {report.false_endpoints} before you finished"
        )
    console.print(table)

    stages = Table(title="latency per stage (ms)")
    stages.add_column("stage")
    stages.add_column("ms", justify="right")
    for stage in STAGES:
        value = getattr(report.timings, stage.field)
        stages.add_row(stage.label, "—" if value is None else f"{value:.0f}")
    console.print(stages)

    marks = Table(title="timeline (ms after the last voiced input sample)")
    marks.add_column("instant")
    marks.add_column("ms", justify="right")
    for mark in TIMELINE:
        value = report.timeline.get(mark.key)
        marks.add_row(mark.label, "—" if value is None else f"{value:.0f}")
    console.print(marks)
    if report.output_path:
        console.print(f"reply audio: {report.output_path} ({report.reply_audio_s:.1f} s of speech)")


def _fail(message: str, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": message}))
    print(f"eloquence talk: {message}", file=sys.stderr)  # plain: no wrapping inside paths and URLs
    return 1


class _OneLineFormatter(logging.Formatter):
    """A log line per record, the exception summarised on it: a CLI user gets no traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f" ({type(exc).__name__}: {exc})"
        return line


def _quiet_logs() -> None:
    """Warnings and errors only, one line each, on stderr: stdout carries the report."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    for name in ("livekit", "livekit.agents", "eloquence", "providers"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _check_running(settings: AppSettings) -> dict[str, str]:
    """--no-start: every service must already answer its /health."""
    from .services import check_health
    from .stack import resolve_target

    urls: dict[str, str] = {}
    for name in TALK_SERVICES:
        target = resolve_target(name, settings)
        if target.checked:
            healthy, detail = check_health(target.health_url, timeout=2.0)
            if not healthy:
                raise TalkError(
                    f"{name} is not answering at {target.health_url} ({detail}); start it with `eloquence up`"
                )
        urls[name] = target.url
    return urls


def _language_flag(value: str | None) -> str | None:
    """`--language fr` / `fr-FR` -> "fr"; a language no exercise speaks is an error, not a silent fallback."""
    if value is None:
        return None
    short = value.strip().lower().replace("_", "-").split("-")[0]
    if short not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language {value!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}")
    return short


async def _cli_turn(args: argparse.Namespace, exercise: Exercise, settings: AppSettings) -> TalkReport:
    def quiet_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # a failed session leaves framework tasks whose errors were already reported as one line
        exc = context.get("exception")
        logger.debug("%s%s", context.get("message"), f" ({type(exc).__name__}: {exc})" if exc else "")

    asyncio.get_running_loop().set_exception_handler(quiet_handler)
    # a local LLM just started has an empty prompt cache: the exercise's opening goes in first
    # (near free when it is there already), so this turn is timed like any later one
    from .llm_warmup import warm_llm_prompts

    language = exercise.resolve_language(settings.language)
    await warm_llm_prompts(settings, exercises=[exercise], languages=[language])
    return await run_talk_turn(
        audio=args.input, exercise=exercise, settings=settings, output_path=args.output
    )


def main(args: argparse.Namespace) -> int:
    """`eloquence talk IN.wav [-o OUT.wav] [--exercise X] [--language en|fr] [--json] [--no-start]`."""
    from .services import ServiceStartError
    from .stack import ServiceUnavailableError, ensure_services

    as_json = bool(args.json)
    _quiet_logs()
    try:
        read_wav(args.input)  # fail fast on a bad input, before starting anything
        exercise = get_exercise(args.exercise)
        language = _language_flag(getattr(args, "language", None))
    except (WavFormatError, UnknownExerciseError, ValueError) as e:
        return _fail(str(e), as_json=as_json)

    settings = AppSettings()
    if language is not None:  # the flag wins over ELOQUENCE_LANGUAGE
        settings = settings.model_copy(update={"language": language})
    log_dir = Path(settings.state_dir) / "logs"
    try:
        with contextlib.ExitStack() as stack:
            if args.no_start:
                urls = _check_running(settings)
            else:
                urls = stack.enter_context(ensure_services(TALK_SERVICES, settings, log_dir))
            settings = settings.model_copy(
                update={
                    "whisper_stt_url": urls["whisper-stt"],
                    "azure_tts_url": urls["azure-tts"],
                    **(
                        {"local_llm_url": urls["local-llm"]}
                        if not (settings.mistral_api_key or settings.mistral_base_url)
                        else {}
                    ),
                }
            )
            report = asyncio.run(_cli_turn(args, exercise, settings))
    except (TalkError, ServiceStartError, ServiceUnavailableError, WavFormatError, OSError, ValueError) as e:
        # ValueError: a malformed setting (a URL that is not one, ...), named in the message
        return _fail(str(e), as_json=as_json)
    except KeyboardInterrupt:
        _fail("interrupted", as_json=as_json)
        return 130

    if not report.reply:
        report.error = "the agent did not reply"
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        _print_report(report, input_path=args.input)
    return 0 if report.reply else 1
