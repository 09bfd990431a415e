"""bench.json (for machines) and bench.md (a table); bench.png is eloquence_bench/chart.py.

bench.json keys (all times in milliseconds):
- `stages.<stage>.{n,p50_ms,p95_ms,max_ms,mean_ms}`: the stack turns (real AgentSession),
  stage names in `STACK_STAGES` (the keys of eloquence/stages.py);
- `timeline.<mark>`: each instant of the stack turns (eloquence/stages.py `TIMELINE`), ms after
  t0 (the last voiced input sample): the waterfall of where each millisecond goes;
- `turns[]`: every stack turn with `stages.<stage>` (ms from its start event), `timeline`,
  transcript, `wer`, reply and `false_endpoint` for paused utterances;
- `quality`: mean WER, false-endpoint count and rate (next to `stages.e2e`);
- `browser`: one turn through the playground page in headless Chromium (`status`, `e2e_ms`,
  transcript, reply, screenshot), its e2e also as `stages.browser_e2e`; `skipped` with no Chromium;
- `french`: the same for French turns (`stages`, `turns`, `quality`, `utterances`): e2e beside English;
- `sidecar_loop`: the same turn straight through the sidecars' protocols (`stages`, `turns`);
- `baselines.raw.<stage>`: the engines called directly, with `samples_ms` (every measurement);
  `baselines.overhead.<stage>`: ours vs raw p50, the difference in ms and the ratio;
- `peers.<peer>`: version, `status` (`ok` | `unavailable` with `reason`), `stages`, `samples_ms`,
  and `comparison` (ours vs theirs p50 and the ratio);
- `concurrency.<sessions>`: `stages`, `errors`, `resources` (CPU %, RSS per service);
  `soak`: RSS per turn per service and `memory_growth`;
- `machine`, `models`, `settings`, `corpus`, `pacing`.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from eloquence.stages import CLIENT_STAGES, STAGE_KEYS, STAGES, TIMELINE, TIMELINE_KEYS

STACK_STAGES = STAGE_KEYS
"""The stages of a stack turn (the keys of `stages` and `turns[].stages`), as `eloquence talk` names them."""
STAGE_LABELS = {
    **{stage.key: stage.label for stage in STAGES},
    **{stage.key: stage.label for stage in CLIENT_STAGES},
    # measured by the bench alone (sidecar loop, raw engines)
    "stt_flush_to_final": "STT: flush → final",
    "stt_transcribe": "STT: transcribe (raw)",
}


def summarize(values: list[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None, "mean_ms": None}
    arr = np.asarray(vals)
    return {
        "n": len(vals),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "max_ms": round(float(arr.max()), 2),
        "mean_ms": round(float(arr.mean()), 2),
    }


def timeline_stats(turns: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """bench.json `timeline.<mark>`: each instant of the stack turns' timelines, ms after t0."""
    return {
        key: summarize([t["timeline"][key] for t in turns if (t.get("timeline") or {}).get(key) is not None])
        for key in TIMELINE_KEYS
    }


def stage_stats(turns: list[dict[str, Any]], stages: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {
        s: summarize([t["stages"][s] for t in turns if t.get("stages", {}).get(s) is not None])
        for s in stages
    }


def rounded(values: list[float]) -> list[float]:
    """Every measurement, to 0.01 ms (bench.json `samples_ms`)."""
    return [round(v, 2) for v in values]


def mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return round(sum(vals) / len(vals), 4) if vals else None


def comparison(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Ours against a baseline, p50 to p50: the difference in ms and the ratio (ours / theirs)."""
    a, b = ours.get("p50_ms"), theirs.get("p50_ms")
    if a is None or b is None:
        return {"ours_p50_ms": a, "theirs_p50_ms": b, "added_ms": None, "ratio": None}
    return {
        "ours_p50_ms": a,
        "theirs_p50_ms": b,
        "added_ms": round(a - b, 2),
        "ratio": round(a / b, 3) if b > 0 else None,
    }


def add_comparisons(result: dict[str, Any]) -> None:
    """Ours against the raw engines (`baselines.overhead`) and the peers (`peers.<peer>.comparison`), p50s."""
    stages = result.get("stages", {})
    loop = result.get("sidecar_loop", {}).get("stages", {})
    base = result.get("baselines", {})
    raw = base.get("raw", {})
    sidecar_tts = base.get("tts_sidecar", {}).get("tts_first_audio", {})
    overhead = {}
    if raw:
        pairs = {
            "stt: sidecar flush→final vs transcribe()": (
                loop.get("stt_flush_to_final", {}),
                raw["stt_transcribe"],
            ),
            "llm ttft: provider in AgentSession vs SDK": (stages.get("llm_ttft", {}), raw["llm_ttft"]),
            "llm first sentence: provider vs SDK": (
                stages.get("llm_first_sentence", {}),
                raw["llm_first_sentence"],
            ),
            "llm ttft: sidecar loop (SDK) vs SDK alone": (loop.get("llm_ttft", {}), raw["llm_ttft"]),
            "tts first audio: provider in AgentSession vs Piper": (
                stages.get("tts_first_audio", {}),
                raw["tts_first_audio"],
            ),
            "tts first audio: sidecar WS vs Piper": (sidecar_tts, raw["tts_first_audio"]),
        }
        overhead = {k: comparison(a, b) for k, (a, b) in pairs.items() if a and b}
    if overhead:
        base["overhead"] = overhead
    peers = result.get("peers", {})
    whisper = peers.get("wyoming-faster-whisper", {})
    if whisper.get("status") == "ok":
        theirs = whisper["stages"]
        whisper["comparison"] = {
            "stt_final (t0 → final)": comparison(loop.get("stt_final", {}), theirs["stt_final"]),
            "flush → final": comparison(loop.get("stt_flush_to_final", {}), theirs["stt_flush_to_final"]),
        }
    piper = peers.get("wyoming-piper", {})
    if piper.get("status") == "ok":
        piper["comparison"] = {"tts_first_audio": comparison(sidecar_tts, piper["stages"]["tts_first_audio"])}
    pipecat = peers.get("pipecat-ai", {})
    if pipecat.get("status") == "ok":
        theirs = pipecat["stages"]
        pipecat["comparison"] = {
            "e2e: our stack vs pipecat": comparison(stages.get("e2e", {}), theirs["e2e"]),
            "e2e: our sidecar loop vs pipecat": comparison(loop.get("e2e", {}), theirs["e2e"]),
            "stt_final: our stack vs pipecat": comparison(stages.get("stt_final", {}), theirs["stt_final"]),
            "llm_ttft: our stack vs pipecat": comparison(stages.get("llm_ttft", {}), theirs["llm_ttft"]),
        }


def machine_info() -> dict[str, Any]:
    import psutil

    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- files


def write_json(result: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "bench.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.0f}" if isinstance(v, (int, float)) else str(v)


def _row(cells: Iterable[Any]) -> str:
    return "|" + "|".join(f" {c} " if c != "" else " " for c in cells) + "|"


def _table(title: str | None, columns: list[str], rows: Iterable[list[Any]]) -> list[str]:
    """A markdown table (under a `###` title when there is one), then a blank line."""
    head = [f"### {title}", ""] if title else []
    return [*head, _row(columns), "|" + "---|" * len(columns), *(_row(r) for r in rows), ""]


def _ratio(c: dict[str, Any]) -> Any:
    return c["ratio"] if c["ratio"] is not None else "–"


def _stage_table(title: str, stages: dict[str, dict[str, Any]]) -> list[str]:
    rows = [
        [STAGE_LABELS.get(name, name), s["n"], _fmt(s["p50_ms"]), _fmt(s["p95_ms"]), _fmt(s["max_ms"])]
        for name, s in stages.items()
    ]
    return _table(title, ["stage", "n", "p50 ms", "p95 ms", "max ms"], rows)


def _peer_rows(peers: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, p in peers.items():
        comps = p.get("comparison") or {}
        version = p.get("version", "–")
        if p.get("status") != "ok" or not comps:
            rows.append([name, version, f"{p.get('status')}: {p.get('reason', '')}", "", "", "", ""])
        for measure, c in comps.items():
            rows.append(
                [name, version, "ok", measure, _fmt(c["ours_p50_ms"]), _fmt(c["theirs_p50_ms"]), _ratio(c)]
            )
    return rows


def _concurrency_tables(conc: dict[str, Any]) -> list[str]:
    def p50_p95(stage: dict[str, Any]) -> str:
        return f"{_fmt(stage['p50_ms'])} / {_fmt(stage['p95_ms'])}"

    levels = [
        [
            n,
            level["turns"],
            level["errors"],
            f"{level.get('llm_retries', 0)}/{level.get('tts_retries', 0)}",
            p50_p95(level["stages"]["stt_final"]),
            p50_p95(level["stages"]["e2e"]),
            level["resources"].get("system_cpu_percent_mean"),
        ]
        for n, level in conc.items()
    ]
    services = [
        [n, svc, u["cpu_percent_mean"], f"{u['rss_mb_start']} → {u['rss_mb_max']}"]
        for n, level in conc.items()
        for svc, u in level["resources"]["services"].items()
        if u.get("samples")
    ]
    columns = ["sessions", "turns", "errors", "retries LLM/TTS", "STT final p50/p95 ms", "e2e p50/p95 ms"]
    title = "Concurrency (sidecar loop, audio paced in real time)"
    return _table(title, [*columns, "system CPU %"], levels) + _table(
        None, ["sessions", "service", "CPU % mean", "RSS MiB start → max"], services
    )


def _agent_sessions_table(agent: dict[str, Any]) -> list[str]:
    rows = []
    for n, level in sorted(agent["levels"].items(), key=lambda kv: int(kv[0])):
        e2e = level["e2e"]
        rows.append(
            [
                n,
                level["turns"],
                level["errors"],
                level["false_endpoints"],
                f"{_fmt(e2e['p50_ms'])} / {_fmt(e2e['p95_ms'])}",
                "yes" if level["within_capacity"] else "no",
            ]
        )
    columns = ["sessions", "turns", "errors", "false endpoints", "e2e p50 / p95 ms", "p95 <= 1.5 s"]
    title = (
        f"Whole AgentSessions at once (real-time talk turns): capacity {agent['capacity_sessions']} "
        "session(s) per node"
    )
    return _table(title, columns, rows)


def _timeline_table(timeline: dict[str, dict[str, Any]]) -> list[str]:
    """The waterfall as a table: each instant after the end of speech, and the step from the one before."""
    rows, previous = [], 0.0
    for mark in TIMELINE:
        stats = timeline.get(mark.key) or {}
        p50 = stats.get("p50_ms")
        step = None if p50 is None else round(p50 - previous, 1)
        rows.append([mark.label, _fmt(p50), _fmt(step), _fmt(stats.get("p95_ms")), stats.get("n", 0)])
        previous = p50 if p50 is not None else previous
    columns = ["instant", "p50 ms after t0", "step ms", "p95 ms", "n"]
    return _table("Waterfall: one turn on one clock (t0 = last voiced input sample)", columns, rows)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# eloquence bench",
        "",
        (
            f"{result['created']} · {m['cpu_model']} · {m['cores_logical']} cores · load average at start "
            f"{m['load_average']} · {'quick' if result['quick'] else 'full'} run"
        ),
        "",
        "Models: " + ", ".join(f"{k}: {v.get('name')}" for k, v in result["models"].items()),
        "",
    ]
    if result.get("stages"):
        q = result.get("quality", {})
        lines += _stage_table(
            f"Stack turns (AgentSession, {len(result.get('turns', []))} turns)", result["stages"]
        )
        if result.get("timeline"):
            lines += _timeline_table(result["timeline"])
        fe = q.get("false_endpoints", {})
        e2e_p50 = _fmt(result["stages"].get("e2e", {}).get("p50_ms"))
        lines += [
            (
                f"WER mean {q.get('wer_mean')} · false endpoints {fe.get('count')}/{fe.get('n')} "
                f"(rate {fe.get('rate')}) beside e2e p50 {e2e_p50} ms"
            ),
            "",
        ]
        split = q.get("paused_vs_unpaused", {})
        if split.get("paused", {}).get("n"):
            lines += _table(
                "The same sentences with and without a pause inside",
                ["", "n", "WER (pipeline)", "WER (one raw pass)", "e2e p50 ms"],
                [
                    [kind, v.get("n"), v.get("wer"), v.get("raw_one_pass_wer"), v.get("e2e_p50_ms")]
                    for kind, v in split.items()
                ],
            )
    elif result.get("stack_status"):
        lines += [f"Stack turns: {result['stack_status']}", ""]
    french = result.get("french", {})
    if french.get("stages"):
        english_e2e = result.get("stages", {}).get("e2e", {})
        lines += _stage_table(f"French turns (AgentSession, {len(french['turns'])} turns)", french["stages"])
        lines += [
            (
                f"French e2e p50 {_fmt(french['stages'].get('e2e', {}).get('p50_ms'))} ms beside English "
                f"{_fmt(english_e2e.get('p50_ms'))} ms · French WER mean {french['quality'].get('wer_mean')}"
            ),
            "",
        ]
    loop = result.get("sidecar_loop", {})
    if loop.get("stages"):
        lines += _stage_table("Sidecar loop (the wire protocols, no AgentSession)", loop["stages"])
    overhead = result.get("baselines", {}).get("overhead", {})
    if overhead:
        rows = [
            [name, _fmt(c["ours_p50_ms"]), _fmt(c["theirs_p50_ms"]), _fmt(c["added_ms"]), _ratio(c)]
            for name, c in overhead.items()
        ]
        columns = ["hop", "ours ms", "raw ms", "added ms", "ratio"]
        lines += _table("Ours against the raw engines (p50)", columns, rows)
    peers = result.get("peers", {})
    if peers:
        columns = [
            "peer",
            "version",
            "status",
            "measure",
            "ours p50 ms",
            "theirs p50 ms",
            "ratio ours/theirs",
        ]
        lines += _table("Peers (same models, inputs, pacing and clock)", columns, _peer_rows(peers))
    if result.get("agent_sessions", {}).get("levels"):
        lines += _agent_sessions_table(result["agent_sessions"])
    if result.get("concurrency"):
        lines += _concurrency_tables(result["concurrency"])
    soak = result.get("soak")
    if soak:
        rows = [
            [
                svc,
                g.get("rss_mb_after_warmup"),
                g.get("rss_mb_end"),
                g.get("slope_mb_per_100_turns"),
                g.get("grows"),
            ]
            for svc, g in soak["memory_growth"].items()
        ]
        columns = ["service", "RSS after warm-up MiB", "RSS end MiB", "slope MiB/100 turns", "grows"]
        lines += _table(
            f"Soak ({soak['turns_per_session']} turns × {soak['sessions']} sessions)", columns, rows
        )
    session_soak = result.get("session_soak")
    if session_soak:
        rows = [
            [
                svc,
                t["rss_mb"].get("first"),
                t["rss_mb"].get("last"),
                t["rss_mb"].get("slope_per_min"),
                f"{t['threads'].get('first')} → {t['threads'].get('last')} (max {t['threads'].get('max')})",
                f"{t['fds'].get('first')} → {t['fds'].get('last')} (max {t['fds'].get('max')})",
            ]
            for svc, t in session_soak["services"].items()
        ]
        columns = ["service", "RSS first MiB", "RSS last MiB", "RSS MiB/min", "threads", "open files"]
        title = (
            f"Session soak ({session_soak['sessions']} sessions × {session_soak['minutes']:g} min: "
            f"{session_soak['turns']} turns, {session_soak['errors']} errors, "
            f"e2e p95 {session_soak['e2e'].get('p95_ms')} ms)"
        )
        lines += _table(title, columns, rows)
    if result.get("notes"):
        lines += ["### Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def write_markdown(result: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "bench.md"
    path.write_text(markdown(result))
    return path
