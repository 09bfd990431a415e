"""CPU use and resident memory of each service process (and its children), sampled with psutil."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Self

import psutil

SAMPLE_INTERVAL_S = 0.5


def _family(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return []


@dataclass
class ServiceUsage:
    """Samples of one service: CPU in percent of one core, RSS in MiB."""

    name: str
    pid: int
    cpu_percent: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        cpu = rss = 0.0
        for proc in _family(root):
            known = self._procs.setdefault(proc.pid, proc)  # cpu_percent needs the same object each time
            with contextlib.suppress(psutil.Error):
                cpu += known.cpu_percent(None)
                rss += known.memory_info().rss / 2**20
        self.cpu_percent.append(cpu)
        self.rss_mb.append(rss)

    def summary(self) -> dict[str, Any]:
        if not self.rss_mb:
            return {"pid": self.pid, "samples": 0}
        cpu = self.cpu_percent[1:] or self.cpu_percent  # the first reading has no interval behind it
        return {
            "pid": self.pid,
            "samples": len(self.rss_mb),
            "cpu_percent_mean": round(statistics.fmean(cpu), 1),
            "cpu_percent_max": round(max(cpu), 1),
            "rss_mb_start": round(self.rss_mb[0], 1),
            "rss_mb_end": round(self.rss_mb[-1], 1),
            "rss_mb_max": round(max(self.rss_mb), 1),
        }


class ResourceMonitor:
    """Samples every service every SAMPLE_INTERVAL_S while a block runs (`async with`)."""

    def __init__(self, *, pids: dict[str, int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.usage = {name: ServiceUsage(name=name, pid=pid) for name, pid in pids.items()}
        self.usage["bench (this process)"] = ServiceUsage(name="bench", pid=psutil.Process().pid)
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None
        self.system_cpu: list[float] = []
        self.started = 0.0

    async def _run(self) -> None:
        psutil.cpu_percent(None)
        while True:
            for usage in self.usage.values():
                usage.sample()
            self.system_cpu.append(psutil.cpu_percent(None))
            await asyncio.sleep(self._interval)

    def rss_now(self) -> dict[str, float]:
        """One immediate RSS reading per service (the soak's per-turn series)."""
        out = {}
        for name, usage in self.usage.items():
            with contextlib.suppress(psutil.Error):
                out[name] = sum(p.memory_info().rss for p in _family(psutil.Process(usage.pid))) / 2**20
        return out

    async def __aenter__(self) -> Self:
        self.started = time.perf_counter()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for usage in self.usage.values():
            usage.sample()

    def summary(self) -> dict[str, Any]:
        cpu = self.system_cpu[1:] or self.system_cpu
        return {
            "duration_s": round(time.perf_counter() - self.started, 1),
            "system_cpu_percent_mean": round(statistics.fmean(cpu), 1) if cpu else None,
            "services": {name: usage.summary() for name, usage in self.usage.items()},
        }


def memory_growth(series: list[float], *, warmup_fraction: float = 0.1) -> dict[str, Any]:
    """Whether RSS grows over a soak: a least-squares slope over the turns after warm-up.

    `grows` is true when the fitted line rises by more than 5 % of the starting RSS and more
    than 20 MiB over the run; allocator noise stays well below either.
    """
    start = int(len(series) * warmup_fraction)
    tail = series[start:]
    if len(tail) < 3:
        return {"turns": len(series), "grows": None, "reason": "too few turns to fit"}
    n = len(tail)
    xs = list(range(n))
    slope = statistics.linear_regression(xs, tail).slope
    rise = slope * (n - 1)
    return {
        "turns": len(series),
        "rss_mb_after_warmup": round(tail[0], 1),
        "rss_mb_end": round(tail[-1], 1),
        "slope_mb_per_100_turns": round(slope * 100, 2),
        "fitted_rise_mb": round(rise, 1),
        "grows": bool(rise > 20 and rise > 0.05 * tail[0]),
    }
