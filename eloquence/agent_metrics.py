"""Prometheus metrics of the agent worker, served on its health port (`GET /metrics`, open).

Sessions run in job subprocesses, so the worker runs prometheus-client's multiprocess mode: each
process writes its samples under PROMETHEUS_MULTIPROC_DIR and `/metrics` adds them up. The
framework's own `lk_agents_*` gauges come along.

    eloquence_agent_stage_seconds{stage}        per-stage latency of each turn (eloquence/stages.py keys,
                                                from the framework's per-message metrics events)
    eloquence_agent_active_sessions             sessions running now (live processes only)
    eloquence_agent_sessions_total              sessions started
    eloquence_agent_errors_total{source,recoverable}  errors the session reported (stt, llm, tts, other)
    eloquence_agent_rate_limited_total{kind}    per-user limits reached (stt, tts, llm)
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .stages import STAGES

logger = logging.getLogger("eloquence.agent_metrics")

STAGE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_PID_FILE_RE = re.compile(r"_(\d+)\.db$")

STAGE_SECONDS = Histogram(
    "eloquence_agent_stage_seconds", "Per-stage latency of a turn", ["stage"], buckets=STAGE_BUCKETS
)
ACTIVE_SESSIONS = Gauge(
    "eloquence_agent_active_sessions", "Sessions running now", multiprocess_mode="livesum"
)
SESSIONS = Counter("eloquence_agent_sessions", "Sessions started")
ERRORS = Counter("eloquence_agent_errors", "Errors reported by sessions", ["source", "recoverable"])
RATE_LIMITED = Counter("eloquence_agent_rate_limited", "Per-user limits reached", ["kind"])


def multiprocess_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR, else one directory per worker process (the framework empties it
    at start)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(
        Path(tempfile.gettempdir()) / f"eloquence-agent-metrics-{os.getpid()}"
    )


def record_rate_limited(kind: str) -> None:
    RATE_LIMITED.labels(kind).inc()


def track_session(session: Any) -> Callable[[], None]:
    """Count the session and observe its events; call the returned function when it ends."""
    SESSIONS.inc()
    ACTIVE_SESSIONS.inc()
    last_user: dict[str, Any] = {}

    def on_item(ev: Any) -> None:
        item = ev.item
        metrics = getattr(item, "metrics", None) or {}
        role = getattr(item, "role", None)
        if role == "user":
            last_user.clear()
            last_user.update(metrics)
            return
        if role != "assistant":
            return
        for stage in STAGES:
            source = last_user if stage.message == "user" else metrics
            value = source.get(stage.metric)
            if isinstance(value, int | float) and value >= 0:
                STAGE_SECONDS.labels(stage.key).observe(float(value))
        last_user.clear()

    def on_error(ev: Any) -> None:
        source = type(getattr(ev, "source", None)).__mro__
        names = {cls.__name__ for cls in source}
        kind = next((k for k, n in (("stt", "STT"), ("llm", "LLM"), ("tts", "TTS")) if n in names), "other")
        recoverable = bool(getattr(getattr(ev, "error", None), "recoverable", False))
        ERRORS.labels(kind, str(recoverable).lower()).inc()

    session.on("conversation_item_added", on_item)
    session.on("error", on_error)
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            ACTIVE_SESSIONS.dec()

    return end


def metrics_text() -> bytes:
    """Every process's samples (multiprocess mode), or this process's registry otherwise."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return generate_latest(REGISTRY)
    _forget_dead_processes(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def _forget_dead_processes(directory: str) -> None:
    """Live gauges of a job process that ended without its clean-up (a crash) must not count."""
    pids = {
        int(m.group(1))
        for f in glob.glob(os.path.join(directory, "gauge_live*_*.db"))
        if (m := _PID_FILE_RE.search(f))
    }
    for pid in pids:
        if not psutil.pid_exists(pid):
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


async def metrics_handler(_: web.Request) -> web.Response:
    response = web.Response(body=metrics_text())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
