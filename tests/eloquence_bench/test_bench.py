"""`eloquence bench`: the quick run end to end (real services, real AgentSession), plus the
pieces whose mistakes would silently skew every figure: pacing, t0, endpointing, statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eloquence_bench.pacing import PacedStream, PacingError
from eloquence_bench.report import STACK_STAGES, summarize
from eloquence_bench.runner.resources import memory_growth
from eloquence_bench.runner.sidecar_loop import LOOP_STAGES
from sidecar_common.pcm import last_voiced_sample

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_bench(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict, Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("bench-out")
    env = {**os.environ, "ELOQUENCE_BENCH_PEERS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "eloquence", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, (
        f"bench failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return json.loads((out / "bench.json").read_text()), out, proc


def test_quick_bench_has_every_stage_for_every_turn(quick_bench) -> None:
    result, _, _ = quick_bench
    assert result["quick"] is True and result["failures"] == []
    turns = result["turns"]
    assert [t["kind"] for t in turns] == ["question", "question"]
    for turn in turns:
        assert turn["error"] is None, turn
        assert set(turn["stages"]) == set(STACK_STAGES), turn
        assert all(v >= 0 for v in turn["stages"].values()), turn
        assert turn["transcript"] and turn["reply"]
        # the reply audio cannot come before the final transcript it answers
        assert turn["stages"]["e2e"] > turn["stages"]["stt_final"]
    for stage in STACK_STAGES:
        stats = result["stages"][stage]
        assert stats["n"] == 2 and stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
    # the waterfall: every turn's instants on one clock, and their statistics
    for turn in turns:
        tl = turn["timeline"]
        assert tl["output_first_frame"] == turn["stages"]["e2e"], tl
        assert 0 < tl["vad_end_of_speech"] <= tl["stt_final"] < tl["output_first_frame"], tl
    assert result["timeline"]["tts_first_audio"]["n"] == 2


def test_quick_bench_sidecar_loop_and_raw_baselines(quick_bench) -> None:
    result, _, _ = quick_bench
    loop_turns = result["sidecar_loop"]["turns"]
    assert len(loop_turns) == 2
    for turn in loop_turns:
        assert turn["error"] is None and set(turn["stages"]) == set(LOOP_STAGES), turn
        assert turn["pacing_lead_ms"] <= 1.0  # never ahead of real time
        assert turn["stages"]["stt_flush_to_final"] < turn["stages"]["stt_final"] < turn["stages"]["e2e"]
    level = result["concurrency"]["1"]
    assert level["errors"] == 0 and level["turns"] == 2
    services = level["resources"]["services"]
    for name in ("whisper-stt", "azure-tts", "llm"):
        assert services[name]["samples"] > 0 and services[name]["rss_mb_max"] > 10
    raw = result["baselines"]["raw"]
    for stage in ("stt_transcribe", "llm_ttft", "llm_first_sentence", "tts_first_audio"):
        assert len(raw[stage]["samples_ms"]) == 2 and raw[stage]["p50_ms"] > 0
    assert raw["llm_ttft"]["p50_ms"] <= raw["llm_first_sentence"]["p50_ms"]
    overhead = result["baselines"]["overhead"]
    assert overhead and all(c["ratio"] is not None for c in overhead.values())
    # peers are left out of quick runs, and the JSON says so instead of leaving a gap
    for peer in result["peers"].values():
        assert peer["status"] == "skipped" and "quick" in peer["reason"]
    assert result["machine"]["cores_logical"] >= 1 and result["machine"]["cpu_model"]
    assert {"stt", "llm", "tts"} <= set(result["models"])
    assert len(result["corpus"]["utterances"]) == 2


def test_quick_bench_writes_markdown_and_a_valid_png(quick_bench) -> None:
    import matplotlib.image

    _, out, proc = quick_bench
    md = (out / "bench.md").read_text()
    assert "end of speech → first audio" in md and "| stage |" in md
    assert "Waterfall" in md and "first frame captured by the output" in md
    assert "end of speech → first audio" in proc.stdout  # the table is printed too
    png = (out / "bench.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(out / "bench.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert float(image[..., :3].std()) > 0.01  # not a blank canvas


async def test_paced_stream_is_real_time_and_t0_is_the_last_loud_frame() -> None:
    rate, frame = 16000, 320
    samples = np.concatenate([np.zeros(1600), 0.5 * np.ones(4000), 0.001 * np.ones(2000)]).astype(np.float32)
    stream = PacedStream(samples, trailing_silence_s=0.1)
    start = time.perf_counter()
    count = 0
    async for _ in stream.frames():
        count += 1
    elapsed = time.perf_counter() - start
    audio_s = count * frame / rate
    assert elapsed >= audio_s - 0.002
    stream.assert_real_time()
    last_loud = last_voiced_sample(samples)
    assert last_loud is not None
    last_loud_frame = last_loud // frame
    assert stream.t0 == stream.released[last_loud_frame]
    assert stream.t0 - stream.t_start >= (last_loud_frame + 1) * frame / rate - 0.001


async def test_paced_stream_assertion_catches_audio_sent_early() -> None:
    stream = PacedStream(np.ones(3200, np.float32) * 0.5, trailing_silence_s=0.0)
    async for _ in stream.frames():
        pass
    stream.released[3] -= 0.01  # a frame that left 10 ms before its audio existed
    with pytest.raises(PacingError):
        stream.assert_real_time()


async def test_endpoint_comes_a_fixed_silence_after_t0_not_at_a_mid_sentence_pause() -> None:
    speech, pause = 0.5 * np.ones(3200, np.float32), np.zeros(8000, np.float32)  # 200 ms, then 500 ms
    stream = PacedStream(np.concatenate([speech, pause, speech]), trailing_silence_s=0.5)
    due_at = None
    async for _ in stream.frames():
        if due_at is None and stream.endpoint_due(100):
            due_at = len(stream.released) - 1
    assert stream.speech_end_frame == (3200 + 8000 + 3200 - 1) // 320
    assert due_at == stream.speech_end_frame + 5  # 5 frames of 20 ms after the frame holding t0


def test_statistics_and_memory_growth() -> None:
    stats = summarize([float(v) for v in range(1, 101)])
    assert stats["n"] == 100 and stats["p50_ms"] == pytest.approx(50.5) and stats["max_ms"] == 100
    assert stats["p95_ms"] == pytest.approx(95.05)
    assert summarize([])["p50_ms"] is None
    flat = [300.0 + (i % 3) for i in range(200)]
    rising = [300.0 + 0.5 * i for i in range(200)]
    assert memory_growth(flat)["grows"] is False
    assert memory_growth(rising)["grows"] is True


def test_bench_rejects_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "eloquence", "bench", "--sessions", "0", "--out", "/nonexistent/x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "--sessions" in proc.stderr


def test_the_pipecat_peer_imports_nothing_of_ours_but_the_clock(tmp_path: Path) -> None:
    """The peers' venv has numpy and soundfile but none of our dependencies: through its import
    path (`peer_import_path`, links to two packages) the pipeline must load nothing else."""
    from eloquence_bench.peers.venv import peer_import_path

    path = peer_import_path(tmp_path / "peer-path")
    assert sorted(p.name for p in path.iterdir()) == ["eloquence_bench", "sidecar_common"]
    assert peer_import_path(tmp_path / "peer-path") == path  # idempotent

    def top_level_modules(code: str) -> set[str]:
        proc = subprocess.run(
            [sys.executable, "-P", "-c", f"{code}; import sys; print('\\n'.join(sys.modules))"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return {name.split(".")[0] for name in proc.stdout.split()}

    loaded = top_level_modules("import eloquence_bench.peers.pipecat_pipeline as m; assert m.PacedStream")
    ours_and_peers = {
        "eloquence_bench",
        "sidecar_common",
        "numpy",
        "soundfile",
        "_soundfile",
        "_soundfile_data",
        "cffi",
        "_cffi_backend",
        "typing_extensions",
    }
    extra = loaded - top_level_modules("pass") - set(sys.stdlib_module_names) - ours_and_peers
    assert not extra, f"the pipecat pipeline needs more than the peers' venv has: {sorted(extra)}"
