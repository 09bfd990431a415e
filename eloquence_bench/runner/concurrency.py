"""Concurrency mode: N sessions at once, each a sequence of sidecar-loop turns paced in real time.

Every session streams its own utterances (rotating through the corpus, offset per session so
the sessions do not speak the same sentence at once) and starts its next turn as soon as the
previous one has its full reply. The services' CPU use and resident memory are sampled while a
level runs. The soak runs N turns per session and records every service's RSS after each turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..corpus import Utterance
from ..report import stage_stats
from .resources import ResourceMonitor, memory_growth
from .sidecar_loop import LOOP_STAGES, LoopTurn, sidecar_turn


@dataclass
class LevelResult:
    sessions: int
    turns: list[LoopTurn] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    rss_series: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def errors(self) -> list[LoopTurn]:
        return [t for t in self.turns if t.error]

    def describe(self) -> dict[str, Any]:
        ok = [t.describe() for t in self.turns if not t.error]
        return {
            "sessions": self.sessions,
            "turns": len(self.turns),
            "errors": len(self.errors),
            "error_samples": sorted({t.error for t in self.errors if t.error})[:5],
            "llm_retries": self.resources.get("llm_retries", 0),
            "tts_retries": sum(t.tts_retries for t in self.turns),
            "wall_s": round(self.wall_s, 1),
            "stages": stage_stats(ok, LOOP_STAGES),
            "resources": {k: v for k, v in self.resources.items() if k != "llm_retries"},
            "turn_samples": [t.describe() for t in self.turns],
        }


async def run_level(
    *,
    sessions: int,
    turns_per_session: int,
    utterances: list[Utterance],
    urls: dict[str, str],
    llm: Any,
    pids: dict[str, int],
    endpoint_silence_ms: int,
    on_turn: Callable[[LoopTurn], None] | None = None,
    track_rss: bool = False,
) -> LevelResult:
    """`sessions` simultaneous sessions of `turns_per_session` turns each."""
    result = LevelResult(sessions=sessions)
    retries_before = getattr(llm, "retries", 0)
    connector = aiohttp.TCPConnector(limit=4 * sessions + 8)
    async with aiohttp.ClientSession(connector=connector) as http, ResourceMonitor(pids=pids) as monitor:
        series: dict[str, list[float]] = {}

        async def session(index: int) -> None:
            for k in range(turns_per_session):
                utterance = utterances[(index * 3 + k) % len(utterances)]
                try:
                    turn = await sidecar_turn(
                        http, utterance, urls=urls, llm=llm, endpoint_silence_ms=endpoint_silence_ms
                    )
                except Exception as e:  # noqa: BLE001 - a failed turn is a counted result, not a crash
                    turn = LoopTurn(utterance_id=utterance.id, error=f"{type(e).__name__}: {e}"[:300])
                result.turns.append(turn)
                if track_rss:
                    for name, rss in monitor.rss_now().items():
                        series.setdefault(name, []).append(rss)
                if on_turn is not None:
                    on_turn(turn)

        start = time.perf_counter()
        await asyncio.gather(*(session(i) for i in range(sessions)))
        result.wall_s = time.perf_counter() - start
    result.resources = monitor.summary()
    result.resources["llm_retries"] = getattr(llm, "retries", 0) - retries_before
    result.rss_series = series
    return result


def soak_summary(level: LevelResult, turns_per_session: int) -> dict[str, Any]:
    return {
        "sessions": level.sessions,
        "turns_per_session": turns_per_session,
        "turns": len(level.turns),
        "errors": len(level.errors),
        "rss_mb_per_turn": {name: [round(v, 1) for v in values] for name, values in level.rss_series.items()},
        "memory_growth": {name: memory_growth(values) for name, values in level.rss_series.items()},
        "stages": stage_stats([t.describe() for t in level.turns if not t.error], LOOP_STAGES),
    }
