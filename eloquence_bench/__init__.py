"""The benchmark: `eloquence bench [--quick] [--sessions N ...] [--soak N] [--out DIR]` runs `main`.

- `speech`, `corpus`, `quality`: Piper speech and the Whisper judge, the bench corpus, WER;
- `pacing`: real-time delivery and t0 (stdlib + numpy, also run by the pipecat peer);
- `baselines`: each engine called directly; `runner/`: the end-to-end run; `peers/`: the PyPI
  peers; `report`: bench.json, bench.md, bench.png; `components/`: per-component benchmarks.

This module imports only the standard library at load time (the pipecat peer imports the package
in its own venv).

`eloquence bench`: latency per stage through the real stack, under concurrency, against the raw
engines and against peers from PyPI; writes DIR/bench.json, DIR/bench.md and DIR/bench.png (the
keys of bench.json are documented in `report.py`).

- `--quick`: 2 utterances, 1 session, no peers (what the test suite runs);
- `--sessions 1 4 10`: the concurrency levels (default 1, 4 and 10; quick: 1);
- `--soak N`: N more turns per session at the largest level, with RSS per service after each turn;
- `--agent-sessions 1 2 4`: whole AgentSessions at once (default 1, 2 and 4; quick: none), the
  capacity figure (sessions per node at e2e p95 ≤ 1.5 s);
- `--soak-minutes M [--soak-sessions N]`: the session soak: N whole AgentSessions (default: the
  capacity found) taking turns for M minutes; errors, e2e, and RSS slope, threads and files per service.
Peers run in full mode; ELOQUENCE_BENCH_PEERS=1 adds them to a quick run, =0 leaves them out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path


def options_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .runner import BenchOptions

    peers_env = os.environ.get("ELOQUENCE_BENCH_PEERS")
    peers = getattr(args, "peers", None)
    if peers is None:
        peers = (peers_env == "1") if peers_env in ("0", "1") else not args.quick
    for n in args.sessions or []:
        if n < 1:
            raise ValueError(f"--sessions takes positive session counts, not {n}")
    if args.soak < 0:
        raise ValueError("--soak takes a number of turns per session (0 for none)")
    agent_sessions = getattr(args, "agent_sessions", None)
    for n in agent_sessions or []:
        if n < 1:
            raise ValueError(f"--agent-sessions takes positive session counts, not {n}")
    soak_minutes = float(getattr(args, "soak_minutes", 0) or 0)
    soak_sessions = getattr(args, "soak_sessions", None)
    if soak_minutes < 0 or (soak_sessions is not None and soak_sessions < 1):
        raise ValueError("--soak-minutes takes minutes (0 for none), --soak-sessions a positive count")
    return BenchOptions(
        soak_minutes=soak_minutes,
        soak_sessions=soak_sessions,
        agent_sessions=list(agent_sessions) if agent_sessions is not None else None,
        quick=bool(args.quick),
        sessions=list(args.sessions or []),
        soak=int(args.soak),
        out=Path(args.out),
        peers=bool(peers),
    )


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .runner import run_bench

    console = Console(stderr=True)
    try:
        options = options_from_args(args)
    except ValueError as e:
        console.print(f"[red]eloquence bench:[/] {e}")
        return 2
    result, paths = asyncio.run(run_bench(options, console))
    from .report import markdown

    print(markdown(result))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    if result["failures"]:
        console.print("[red]failed phases:[/] " + "; ".join(result["failures"]))
        return 1
    return 0
