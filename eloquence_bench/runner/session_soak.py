"""The session soak (`eloquence bench --soak-minutes M [--soak-sessions N]`): N whole AgentSessions
(agent_sessions.py, one process each, real-time talk turns) taking turns for M minutes, while every
service's resident memory, threads and open files are sampled.

Reported: turns, errors, e2e p50/p95, and per service the RSS slope (MiB per minute, least squares
after the first 10 % of the run) with its first and last value, and threads and file descriptors
first / last / max: a leak shows as a slope, or counts that keep climbing.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from .agent_sessions import run_agent_sessions

SAMPLE_EVERY_S = 5.0
WARMUP_FRACTION = 0.1


def _family(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def sample(pid: int) -> dict[str, float] | None:
    """RSS (MiB), threads and open files of a service and its children; None once it is gone."""
    rss = threads = fds = 0.0
    procs = _family(pid)
    if not procs:
        return None
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss / 2**20
            threads += proc.num_threads()
            fds += proc.num_fds()
    return {"rss_mb": rss, "threads": threads, "fds": fds}


def trend(times_s: list[float], values: list[float]) -> dict[str, Any]:
    """First, last, max and, after the warm-up, the least-squares slope per minute."""
    if not values:
        return {"samples": 0}
    start = int(len(values) * WARMUP_FRACTION)
    xs, ys = times_s[start:], values[start:]
    slope = statistics.linear_regression(xs, ys).slope * 60 if len(xs) >= 3 and len(set(xs)) > 1 else None
    return {
        "samples": len(values),
        "first": round(values[0], 1),
        "last": round(values[-1], 1),
        "max": round(max(values), 1),
        "slope_per_min": round(slope, 3) if slope is not None else None,
    }


async def run_session_soak(
    *,
    sessions: int,
    minutes: float,
    utterance_ids: list[str],
    urls: dict[str, str],
    pids: dict[str, int],
    work_dir: Path,
    log_dir: Path,
) -> dict[str, Any]:
    series: dict[str, dict[str, list[float]]] = {
        name: {"t": [], "rss_mb": [], "threads": [], "fds": []} for name in pids
    }
    started = time.monotonic()

    async def sampler() -> None:
        while True:
            for name, pid in pids.items():
                point = sample(pid)
                if point is not None:
                    series[name]["t"].append(time.monotonic() - started)
                    for key, value in point.items():
                        series[name][key].append(value)
            await asyncio.sleep(SAMPLE_EVERY_S)

    task = asyncio.create_task(sampler())
    try:
        level = await run_agent_sessions(
            sessions=sessions,
            turns_per_session=1,
            utterance_ids=utterance_ids,
            urls=urls,
            work_dir=work_dir,
            log_dir=log_dir,
            until=time.time() + minutes * 60,
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {
        "sessions": sessions,
        "minutes": minutes,
        "turns": level["turns"],
        "errors": level["errors"],
        "error_samples": level["error_samples"],
        "e2e": level["e2e"],
        "wall_s": level["wall_s"],
        "services": {
            name: {key: trend(data["t"], data[key]) for key in ("rss_mb", "threads", "fds")}
            for name, data in series.items()
        },
        "what": "whole AgentSessions taking real-time talk turns for the whole time; per service: "
        "RSS (MiB, slope per minute after the first 10 %), threads and file descriptors (first, last, max)",
    }
