"""N whole AgentSessions at once: the capacity figure (sessions per node at e2e p95 ≤ 1.5 s).

Each session is what `eloquence talk` runs (a real AgentSession: Silero VAD, the turn detector,
the providers, the reply shaping), in a process of its own, as the agent worker gives each job
its own process. A session says its greeting, then speaks its utterances one turn after
another, in real time, offset per session so that sessions do not say the same sentence at once.
All the sessions start together and share the one set of services.

`python -m eloquence_bench.runner.agent_sessions worker ...` is one session (JSON lines out);
`run_agent_sessions(...)` starts N of them and summarizes every turn of every session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..report import stage_stats, summarize

CAPACITY_P95_MS = 1500.0
"""A level is within capacity when its e2e p95 is at most this and no turn failed."""
TURN_TIMEOUT_S = 120.0


async def run_agent_sessions(
    *,
    sessions: int,
    turns_per_session: int,
    utterance_ids: list[str],
    urls: dict[str, str],
    work_dir: Path,
    log_dir: Path,
    until: float | None = None,
) -> dict[str, Any]:
    """`sessions` worker processes at once; the level's turns, e2e stats and errors.

    `until` (a `time.time()`): each session keeps taking turns over its utterances until then (the
    session soak, session_soak.py) instead of `turns_per_session` turns."""
    from eloquence.stages import STAGE_KEYS

    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    procs = []
    for i in range(sessions):
        # offset per session: session i starts at utterance i (they do not speak the same sentence)
        ids = [utterance_ids[(i + k) % len(utterance_ids)] for k in range(turns_per_session)]
        argv = [
            sys.executable,
            "-m",
            "eloquence_bench.runner.agent_sessions",
            "worker",
            "--work-dir",
            str(work_dir),
            "--stt",
            urls["whisper-stt"],
            "--tts",
            urls["azure-tts"],
            "--llm",
            urls["llm"],
            *(["--until", str(until)] if until is not None else []),
            *ids,
        ]
        stderr = open(log_dir / f"session-{sessions}-{i}.log", "wb")  # noqa: SIM115 - the child's
        procs.append(
            await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=stderr)
        )
        stderr.close()
    turns: list[dict[str, Any]] = []
    timeout = TURN_TIMEOUT_S * (turns_per_session + 1) + max(0.0, (until or 0.0) - time.time())
    for i, proc in enumerate(procs):
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            turns.append({"session": i, "error": f"session {i} timed out after {timeout:.0f} s"})
            continue
        lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        if proc.returncode != 0 and not lines:
            turns.append({"session": i, "error": f"session {i} exited with {proc.returncode}"})
        turns += [{"session": i, **line} for line in lines]
    ok = [t for t in turns if not t.get("error")]
    e2e = summarize([t["stages"]["e2e"] for t in ok if t.get("stages", {}).get("e2e") is not None])
    return {
        "sessions": sessions,
        "turns": len(turns),
        "errors": len(turns) - len(ok),
        "error_samples": sorted({str(t["error"]) for t in turns if t.get("error")})[:5],
        "false_endpoints": sum(int(t.get("false_endpoints", 0)) for t in ok),
        "wall_s": round(time.perf_counter() - started, 1),
        "stages": stage_stats(ok, STAGE_KEYS),
        "e2e": e2e,
        "within_capacity": bool(ok)
        and len(ok) == len(turns)
        and e2e["p95_ms"] is not None
        and e2e["p95_ms"] <= CAPACITY_P95_MS,
        "turn_samples": turns,
    }


def capacity(levels: dict[str, dict[str, Any]]) -> int:
    """Sessions per node: the largest level within capacity (every smaller one too), else 0."""
    best = 0
    for n in sorted(levels, key=int):
        if not levels[n]["within_capacity"]:
            break
        best = int(n)
    return best


# --------------------------------------------------------------------------- one session


async def _session(args: argparse.Namespace) -> int:
    from eloquence.agent import build_pipeline
    from eloquence.exercises import get_exercise
    from eloquence.stages import STAGES
    from eloquence.talk import TalkError, run_talk_turn

    from ..corpus import build_corpus
    from .stack_turns import local_stack_settings

    by_id = {u.id: u for u in build_corpus(args.work_dir)}
    settings = local_stack_settings(stt=args.stt, tts=args.tts, llm=args.llm)
    pipeline = build_pipeline(settings, get_exercise("default"), language=settings.language)
    ids = list(args.ids)
    if args.until is not None:  # the soak: go round the utterances until the deadline
        ids = _until(ids, args.until)
    try:
        for uid in ids:
            utterance = by_id[uid]
            try:
                report = await run_talk_turn(audio=utterance.samples, settings=settings, pipeline=pipeline)
            except TalkError as e:
                line: dict[str, Any] = {"utterance_id": uid, "error": str(e)}
            else:
                stages = {s.key: getattr(report.timings, s.field) for s in STAGES}
                line = {
                    "utterance_id": uid,
                    "stages": {k: v for k, v in stages.items() if v is not None},
                    "timeline": report.timeline,
                    "false_endpoints": report.false_endpoints,
                    "reply_audio_s": report.reply_audio_s,
                    # a stalled event loop (an overloaded process) hands frames over in a burst
                    "pacing_max_early_ms": report.pacing_max_early_ms,
                    "error": None if report.reply else "no reply",
                }
            print(json.dumps(line), flush=True)
    finally:
        await pipeline.aclose()
    return 0


def _until(ids: list[str], deadline: float) -> Any:
    while time.time() < deadline:
        yield from ids[:1]
        ids = ids[1:] + ids[:1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eloquence_bench.runner.agent_sessions")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="one session: talk turns over the given utterances")
    worker.add_argument("--work-dir", type=Path, required=True)
    worker.add_argument("--stt", required=True)
    worker.add_argument("--tts", required=True)
    worker.add_argument("--llm", required=True)
    worker.add_argument("--until", type=float, default=None, help="keep taking turns until this time.time()")
    worker.add_argument("ids", nargs="+")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(_session(args))


if __name__ == "__main__":
    sys.exit(main())
