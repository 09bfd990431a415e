"""bench.png: the waterfall of one turn on one clock, the distributions, and concurrency (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .report import STACK_STAGES

_COLORS = {"stt": "#4c72b0", "llm": "#dd8452", "tts": "#55a868", "e2e": "#c44e52"}


# the waterfall's bars for a stack turn: (from mark, to mark, label, color)
_MARK_SPANS = (
    ("last_voiced_input", "vad_end_of_speech", "VAD silence", "#8c8c8c"),
    ("vad_end_of_speech", "stt_final", "STT final", "#4c72b0"),
    ("llm_request", "llm_first_token", "LLM first token", "#dd8452"),
    ("llm_first_token", "tts_text", "LLM first clause", "#f2b880"),
    ("tts_text", "tts_first_audio", "TTS first audio", "#55a868"),
    ("tts_first_audio", "output_first_frame", "to the output", "#8172b3"),
)


def _mark_waterfall(ax: Any, rows: list[dict[str, Any]], title: str) -> None:
    """One row per turn, bars between the instants of eloquence/stages.py TIMELINE."""
    from matplotlib.patches import Patch

    for i, turn in enumerate(rows):
        tl = turn["timeline"]
        for start_key, end_key, _, color in _MARK_SPANS:
            start, end = tl.get(start_key), tl.get(end_key)
            if start is not None and end is not None:
                ax.barh(i, max(end - start, 1.0), left=start, color=color, height=0.6)
        if tl.get("turn_committed") is not None:
            ax.plot([tl["turn_committed"]] * 2, [i - 0.35, i + 0.35], color="black", lw=1)
        if tl.get("output_first_frame") is not None:
            ax.plot(tl["output_first_frame"], i, marker="|", color=_COLORS["e2e"], markersize=14, mew=2)
    ax.set_yticks(range(len(rows)), [t["utterance_id"] for t in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms after the last voiced input sample (t0); black tick: turn committed")
    ax.set_title(title)
    ax.legend(
        handles=[Patch(color=color, label=label) for _, _, label, color in _MARK_SPANS]
        + [Patch(color=_COLORS["e2e"], label="first audio frame")],
        fontsize=7,
        loc="lower right",
    )


def _waterfall(ax: Any, turns: list[dict[str, Any]], title: str) -> None:
    """One row per turn: STT (t0 → final), LLM (→ first sentence, tick at first token), TTS (→ audio)."""
    rows = [t for t in turns if t.get("timeline")]
    if rows and "output_first_frame" in rows[0]["timeline"]:
        _mark_waterfall(ax, rows, title)
        return
    for i, turn in enumerate(rows):
        tl = turn["timeline"]
        for key, color in (("stt", _COLORS["stt"]), ("llm", _COLORS["llm"]), ("tts", _COLORS["tts"])):
            if key in tl and tl[key][1] is not None and tl[key][0] is not None:
                start, end = tl[key]
                ax.barh(i, max(end - start, 1.0), left=start, color=color, height=0.6)
        if tl.get("llm_ttft") is not None:
            ax.plot([tl["llm_ttft"]] * 2, [i - 0.3, i + 0.3], color="black", lw=1)
        if turn["stages"].get("e2e") is not None:
            ax.plot(turn["stages"]["e2e"], i, marker="|", color=_COLORS["e2e"], markersize=14, mew=2)
    ax.set_yticks(range(len(rows)), [t["utterance_id"] for t in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms after the end of speech (t0)")
    ax.set_title(title)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(color=_COLORS[k], label=k.upper()) for k in ("stt", "llm", "tts")]
        + [Patch(color=_COLORS["e2e"], label="first audio")],
        fontsize=7,
        loc="lower right",
    )


def _distributions(ax: Any, series: list[tuple[str, list[float]]]) -> None:
    series = [(label, vals) for label, vals in series if vals]
    if not series:
        ax.set_axis_off()
        return
    ax.boxplot([vals for _, vals in series], vert=False, showfliers=True)
    for i, (_, vals) in enumerate(series, start=1):
        jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
        ax.scatter(vals, i + jitter, s=6, alpha=0.5, color="black")
    ax.set_yticks(range(1, len(series) + 1), [label for label, _ in series], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_title("Latency distributions: ours, raw engines, peers")


def _concurrency(ax: Any, conc: dict[str, Any]) -> None:
    levels = sorted(conc, key=int)
    for stage, color in (
        ("stt_final", _COLORS["stt"]),
        ("llm_first_sentence", _COLORS["llm"]),
        ("tts_first_audio", _COLORS["tts"]),
        ("e2e", _COLORS["e2e"]),
    ):
        p50 = [conc[n]["stages"][stage]["p50_ms"] for n in levels]
        p95 = [conc[n]["stages"][stage]["p95_ms"] for n in levels]
        x = [int(n) for n in levels]
        ax.plot(x, p50, marker="o", color=color, label=f"{stage} p50")
        ax.plot(x, p95, marker="^", ls="--", color=color, label=f"{stage} p95")
    ax.set_xlabel("simultaneous sessions")
    ax.set_ylabel("ms")
    ax.set_title("Under concurrency (sidecar loop)")
    ax.legend(fontsize=6)


def distribution_series(result: dict[str, Any]) -> list[tuple[str, list[float]]]:
    out: list[tuple[str, list[float]]] = []
    for stage in STACK_STAGES:
        vals = [t["stages"][stage] for t in result.get("turns", []) if t["stages"].get(stage) is not None]
        out.append((f"stack {stage}", vals))
    for stage in ("stt_final", "stt_flush_to_final", "tts_first_audio", "e2e"):
        vals = [
            t["stages"][stage]
            for t in result.get("sidecar_loop", {}).get("turns", [])
            if t.get("stages", {}).get(stage) is not None
        ]
        out.append((f"sidecars {stage}", vals))
    for stage, raw in result.get("baselines", {}).get("raw", {}).items():
        out.append((f"raw {stage}", raw.get("samples_ms", [])))
    for name, peer in result.get("peers", {}).items():
        for measure, vals in (peer.get("samples_ms") or {}).items():
            out.append((f"{name} {measure}", vals))
    return out


def write_chart(result: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = result.get("concurrency") or {}
    panels = 3 if conc else 2
    fig, axes = plt.subplots(panels, 1, figsize=(11, 5 + 4 * panels))
    turns = result.get("turns") or result.get("sidecar_loop", {}).get("turns", [])
    title = "Stages per turn (stack)" if result.get("turns") else "Stages per turn (sidecar loop)"
    _waterfall(axes[0], turns, title)
    _distributions(axes[1], distribution_series(result))
    if conc:
        _concurrency(axes[2], conc)
    m = result["machine"]
    fig.suptitle(f"eloquence bench · {m['cpu_model']} · {m['cores_logical']} cores", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = out_dir / "bench.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
