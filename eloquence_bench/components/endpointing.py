"""Endpointing: latency against false endpoints, for several turn-handling settings in one run.

Each setting hears the same two kinds of turns through `run_talk_turn` (a real AgentSession with
the real sidecars and the local LLM, one warm pipeline shared by all):
- `clean`: a question spoken in one go; the number is e2e (t0 → t1, the talk harness's clock);
- `pause`: one sentence with a 0.4–0.7 s hesitation cut in mid-sentence; a false endpoint is a turn
  that got more than one reply, or a reply whose audio began before the user finished.

Settings run interleaved, round after round, so machine load hits them alike; medians over
--repeats rounds. It starts the three services on free loopback ports unless their URLs are given.

    python -m eloquence_bench.components.endpointing --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from eloquence.agent import build_pipeline
from eloquence.exercises import get_exercise
from eloquence.services import AZURE_TTS, LOCAL_LLM, WHISPER_STT, running_services
from eloquence.settings import AppSettings
from eloquence.talk import TalkError, run_talk_turn

from ..speech import silence, speak, speak_with_pause

SETTINGS = {
    "transcript 0.3 s (default)": {
        "ELOQUENCE_TURN_DETECTOR": "transcript",
        "ELOQUENCE_MIN_ENDPOINTING_DELAY": 0.3,
    },
    "transcript 0.5 s": {"ELOQUENCE_TURN_DETECTOR": "transcript", "ELOQUENCE_MIN_ENDPOINTING_DELAY": 0.5},
    "vad 0.3 s": {"ELOQUENCE_TURN_DETECTOR": "vad", "ELOQUENCE_MIN_ENDPOINTING_DELAY": 0.3},
    "eot 0.3 s": {"ELOQUENCE_TURN_DETECTOR": "eot", "ELOQUENCE_MIN_ENDPOINTING_DELAY": 0.3},
    "eot 0.6 s": {"ELOQUENCE_TURN_DETECTOR": "eot", "ELOQUENCE_MIN_ENDPOINTING_DELAY": 0.6},
    "eot 0.9 s": {"ELOQUENCE_TURN_DETECTOR": "eot", "ELOQUENCE_MIN_ENDPOINTING_DELAY": 0.9},
}
CLEAN = "What is the best way to prepare for a job interview?"
PAUSED = ("I would like some help with", "my job interview tomorrow morning")


@contextlib.contextmanager
def _services(log_dir: Path, urls: dict[str, str]) -> Iterator[dict[str, str]]:
    """`urls` (by URL variable) completed with fresh processes of the services not given."""
    missing = [d for d in (WHISPER_STT, AZURE_TTS, LOCAL_LLM) if d.url_env not in urls]
    with running_services(missing, log_dir) as procs:
        yield {**urls, **{str(p.definition.url_env): p.url for p in procs}}


async def _run(args: argparse.Namespace, urls: dict[str, str]) -> dict[str, dict[str, list[Any]]]:
    base = {**urls, "MISTRAL_API_KEY": None, "MISTRAL_BASE_URL": None, "ELOQUENCE_LLM_MAX_TOKENS": 40}
    configs = {name: AppSettings(**{**base, **extra}) for name, extra in SETTINGS.items()}
    pipeline = build_pipeline(next(iter(configs.values())), get_exercise("default"), language="en")
    clean = np.concatenate([silence(0.3), speak(CLEAN), silence(0.2)])
    results: dict[str, dict[str, list[Any]]] = {
        name: {"e2e": [], "false": [], "paused_turns": []} for name in configs
    }
    try:
        await run_talk_turn(audio=clean, settings=configs["eot 0.9 s"], pipeline=pipeline)  # warm-up
        for round_ in range(args.repeats):
            pause_s = [0.4, 0.55, 0.7][round_ % 3]
            paused = speak_with_pause(*PAUSED, pause_s)
            for name, settings in configs.items():
                try:
                    report = await run_talk_turn(audio=clean, settings=settings, pipeline=pipeline)
                    if report.timings.e2e_ms is not None:
                        results[name]["e2e"].append(report.timings.e2e_ms)
                    report = await run_talk_turn(audio=paused, settings=settings, pipeline=pipeline)
                    false = len(report.replies) != 1 or report.false_endpoints > 0
                    results[name]["false"].append(false)
                    results[name]["paused_turns"].append(pause_s)
                except TalkError as e:
                    print(f"{name}: {e}", file=sys.stderr)
                print(f"round {round_ + 1}/{args.repeats} {name}: done", file=sys.stderr)
    finally:
        await pipeline.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--whisper-stt-url")
    parser.add_argument("--azure-tts-url")
    parser.add_argument("--local-llm-url")
    args = parser.parse_args()
    given = {
        k: v
        for k, v in {
            "WHISPER_STT_URL": args.whisper_stt_url,
            "AZURE_TTS_URL": args.azure_tts_url,
            "LOCAL_LLM_URL": args.local_llm_url,
        }.items()
        if v
    }
    with tempfile.TemporaryDirectory() as tmp, _services(Path(tmp), given) as urls:
        results = asyncio.run(_run(args, urls))

    default = results["transcript 0.3 s (default)"]["e2e"]
    base = statistics.median(default) if default else None
    print(
        f"\n{'setting':<22}{'e2e median ms':>15}{'e2e min–max':>18}{'vs default':>12}{'false endpoints':>18}"
    )
    for name, r in results.items():
        e2e = r["e2e"]
        med = statistics.median(e2e) if e2e else float("nan")
        spread = f"{min(e2e):.0f}–{max(e2e):.0f}" if e2e else "—"
        ratio = f"{med / base:.2f}" if base else "—"
        false = f"{sum(r['false'])}/{len(r['false'])}"
        print(f"{name:<22}{med:>15.0f}{spread:>18}{ratio:>12}{false:>18}")


if __name__ == "__main__":
    main()
