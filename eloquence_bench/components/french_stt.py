"""French STT figures: WER and latency per utterance, through the whisper-stt sidecar and raw.

    python -m eloquence_bench.components.french_stt            # 72 utterances (12 sentences x 6 voices)
    python -m eloquence_bench.components.french_stt --quick    # 12 (each sentence once, voices in turn)
    python -m eloquence_bench.components.french_stt --english-ab

On the same espeak-ng audio (`eloquence_bench.french`):
1. the sidecar, the audio streamed at once then a flush, clocked from the flush to the final
   (interims off, so the final pass is what is measured), for each decoding: the default French
   decoding (beam 5, no temperature fallback) and the service-wide one (beam 1 with fallback);
2. raw faster-whisper on the same model: the stock call (30 s window, beam 1, its fallback) and beam 5.

`--english-ab` answers "did English get slower?": a sidecar serving only tiny.en (before) and one
serving en:tiny.en,fr:base (after), the same English utterances sent to each in turn, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import numpy as np

from eloquence.services import WHISPER_STT, ServiceProcess, running_service
from sidecar_common.pcm import float_to_pcm16

from ..french import FrenchUtterance, corpus, speak_french
from ..quality import french_wer
from .whisper_stt import events_until_flush_final

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

LEAD_S = 0.3
CHUNK_S = 0.1
# The final pass alone: no interim competes with it.
BASE_ENV = {"WHISPER_INTERIM_INTERVAL_MS": "600000", "WHISPER_CPU_THREADS": "2"}
SERVICE_WIDE_DECODING = {"WHISPER_DECODING": "{}"}


def clip(utterance: FrenchUtterance) -> np.ndarray:
    lead = np.zeros(int(LEAD_S * 16000), dtype=np.float32)
    return np.concatenate([lead, speak_french(utterance.text, utterance.recipe)])


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://").rstrip("/") + path


async def flush_final(
    session: aiohttp.ClientSession, url: str, audio: np.ndarray, language: str
) -> tuple[float, str, str]:
    """Stream `audio` at once on a fresh socket, flush: (flush → final in seconds, text, language)."""
    async with session.ws_connect(ws_url(url, f"/v1/stream?sample_rate=16000&language={language}")) as ws:
        pcm = float_to_pcm16(audio)
        step = int(CHUNK_S * 16000) * 2
        for at in range(0, len(pcm), step):
            await ws.send_bytes(pcm[at : at + step])
        await ws.send_str(json.dumps({"type": "flush"}))
        sent = time.perf_counter()
        events = await events_until_flush_final(ws)
        seconds = time.perf_counter() - sent
        # a final the service's own VAD made before the flush (a long pause) is part of the answer
        texts = [event["text"] for event in events if event["type"] == "final" and event["text"]]
        return seconds, " ".join(texts), events[-1]["language"]


async def through_sidecar(url: str, clips: list[np.ndarray], language: str) -> list[tuple[float, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        finals = [await flush_final(session, url, audio, language) for audio in clips]
    return [(seconds, text) for seconds, text, _ in finals]


@contextlib.contextmanager
def sidecar(env: Mapping[str, str], log_dir: Path, name: str) -> Iterator[ServiceProcess]:
    with running_service(WHISPER_STT, log_dir / name, env={**BASE_ENV, **env}) as service:
        yield service


def raw_passes(clips: list[np.ndarray], *, beam_size: int) -> list[tuple[float, str]]:
    """Stock faster-whisper on the joined base model: 30 s window, its own temperature fallback."""
    from whisper_stt.packaged_models import resolve_model

    model = _raw_model(str(resolve_model("base")))
    results = []
    for audio in clips:
        started = time.perf_counter()
        segments, _ = model.transcribe(
            audio, language="fr", beam_size=beam_size, vad_filter=False, condition_on_previous_text=False
        )
        text = " ".join(s.text.strip() for s in segments)
        results.append((time.perf_counter() - started, text))
    return results


_models: dict[str, WhisperModel] = {}


def _raw_model(path: str) -> WhisperModel:
    from faster_whisper import WhisperModel

    if path not in _models:
        _models[path] = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)
    return _models[path]


def summary(label: str, references: list[str], results: list[tuple[float, str]]) -> dict[str, object]:
    times = [t for t, _ in results]
    texts = [text for _, text in results]
    row = {
        "label": label,
        "wer": round(french_wer(references, texts), 3),
        "empty": sum(not t.strip() for t in texts),
        "n": len(texts),
        "median_ms": round(statistics.median(times) * 1000),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000),
        "max_ms": round(max(times) * 1000),
        "texts": texts,
    }
    print(
        f"{label:48s} WER {row['wer']:.3f}  empty {row['empty']}/{row['n']}  "
        f"median {row['median_ms']} ms  p95 {row['p95_ms']} ms  max {row['max_ms']} ms",
        flush=True,
    )
    return row


def french_figures(*, quick: bool, log_dir: Path) -> list[dict[str, object]]:
    utterances = corpus(every_recipe=not quick)
    clips = [clip(u) for u in utterances]
    references = [u.text for u in utterances]
    rows = []
    for label, env in (
        ("sidecar, flush->final, fr decoding (beam 5)", {}),
        ("sidecar, flush->final, service-wide (beam 1+fallback)", SERVICE_WIDE_DECODING),
    ):
        with sidecar(env, log_dir, label.split(",")[-1].strip().replace(" ", "-")) as service:
            rows.append(summary(label, references, asyncio.run(through_sidecar(service.url, clips, "fr"))))
    # The stock call takes seconds per utterance: the 12 of --quick (each sentence, voices in turn) only.
    raw_utterances = corpus()
    raw_refs, raw_clips = [u.text for u in raw_utterances], [clip(u) for u in raw_utterances]
    rows.append(
        summary("raw faster-whisper, 30 s window, beam 1", raw_refs, raw_passes(raw_clips, beam_size=1))
    )
    rows.append(
        summary("raw faster-whisper, 30 s window, beam 5", raw_refs, raw_passes(raw_clips, beam_size=5))
    )
    if quick:
        return rows
    # The voice's share: the same model and decoding, one espeak-ng recipe at a time.
    first = rows[0]["texts"]
    assert isinstance(first, list)
    for recipe in dict.fromkeys(u.recipe for u in utterances):
        picked = [i for i, u in enumerate(utterances) if u.recipe == recipe]
        voice_wer = french_wer([references[i] for i in picked], [first[i] for i in picked])
        print(
            f"  sidecar, fr decoding, voice {recipe.label:18s} WER {voice_wer:.3f} ({len(picked)} utterances)"
        )
    return rows


def english_ab(*, log_dir: Path, repeats: int) -> None:
    from ..corpus import QUESTIONS
    from ..speech import speak

    lead = np.zeros(int(LEAD_S * 16000), dtype=np.float32)
    clips = [np.concatenate([lead, speak(q)]) for q in QUESTIONS[:12]]
    before: list[float] = []
    after: list[float] = []
    with (
        sidecar({"WHISPER_MODELS": "en:tiny.en"}, log_dir, "en-only") as old,
        sidecar({}, log_dir, "en-fr") as new,
    ):
        for i, audio in enumerate(clips * repeats):
            # alternate which goes first (ABBA), so drifting load on the box hits both alike
            order = [(old, before), (new, after)] if i % 2 == 0 else [(new, after), (old, before)]
            for service, times in order:
                times.append(asyncio.run(through_sidecar(service.url, [audio], "en"))[0][0])
    b, a = statistics.median(before), statistics.median(after)
    print(
        f"English flush->final, {len(before)} passes each: before (tiny.en only) median {b * 1000:.0f} ms, "
        f"after (en:tiny.en,fr:base) median {a * 1000:.0f} ms, ratio {a / b:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m eloquence_bench.components.french_stt", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="12 utterances instead of 72")
    parser.add_argument("--english-ab", action="store_true", help="only the English before/after latency")
    parser.add_argument("--repeats", type=int, default=3, help="English A/B rounds over 12 utterances")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="french-stt-") as tmp:
        if args.english_ab:
            english_ab(log_dir=Path(tmp), repeats=args.repeats)
        else:
            french_figures(quick=args.quick, log_dir=Path(tmp))


if __name__ == "__main__":
    main()
