"""The whole-loop peer from our side: the job for `pipecat_pipeline.py`, and running it in the
peers' venv (`python -P -m eloquence_bench.peers.pipecat_pipeline JOB.json`, with only
`peer_import_path` of ours on its PYTHONPATH)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from ..baselines import EngineConfig
from ..corpus import SAMPLE_RATE, Utterance
from .venv import PeersVenv, PeerUnavailable, peer_import_path


def pipecat_job(
    *, config: EngineConfig, llm_url: str, warmup: Utterance, questions: list[Utterance], wav_dir: Path
) -> dict[str, Any]:
    """The pipeline's settings and inputs: our LLM server, the same STT model and voice, the same WAVs."""
    from eloquence.exercises import get_exercise

    ex = get_exercise("default")
    voice_path = Path(config.tts_voice_path)
    wav_dir.mkdir(parents=True, exist_ok=True)
    return {
        "stt_model": config.stt_model_path,
        "stt_compute_type": config.stt_compute_type,
        "llm_base_url": llm_url.rstrip("/") + "/v1",
        "llm_model": config.llm_model,
        "max_tokens": config.llm_max_tokens,
        "voice": voice_path.stem,
        "voice_dir": str(voice_path.parent),
        "system_prompt": ex.instructions("en"),
        "greeting": ex.greeting("en"),
        "warmup": {"id": warmup.id, "wav": _write_wav(wav_dir, warmup)},
        "utterances": [{"id": u.id, "wav": _write_wav(wav_dir, u)} for u in questions],
    }


def _write_wav(directory: Path, utterance: Utterance) -> str:
    import soundfile as sf

    path = (directory / f"{utterance.id}.wav").resolve()
    sf.write(path, utterance.samples, SAMPLE_RATE, subtype="FLOAT")  # the exact samples, no requantizing
    return str(path)


async def run_pipecat_loop(
    venv: PeersVenv, job: dict[str, Any], work_dir: Path, *, log_dir: Path, timeout_s: float
) -> list[dict[str, Any]]:
    """Run pipecat_pipeline.py in the peers' venv; one result per utterance."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    job_path = (work_dir / "pipecat-job.json").resolve()
    job_path.write_text(json.dumps(job))
    log_path = log_dir / "pipecat.log"
    # -P: not the working directory either; ours is only what peer_import_path links
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LOGURU_LEVEL": "INFO",
        "PYTHONPATH": str(peer_import_path(work_dir / "peer-path")),
    }
    with log_path.open("wb") as log:  # opening a local file does not block the loop for long
        proc = await asyncio.create_subprocess_exec(
            str(venv.python),
            "-P",
            "-m",
            "eloquence_bench.peers.pipecat_pipeline",
            str(job_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            env=env,
        )
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise PeerUnavailable(
                f"the pipecat pipeline did not finish in {timeout_s:.0f} s; see {log_path}"
            ) from None
    turns = [json.loads(line[5:]) for line in stdout.decode().splitlines() if line.startswith("TURN ")]
    if proc.returncode != 0 and not turns:
        tail = " | ".join(log_path.read_text(errors="replace").splitlines()[-6:])
        raise PeerUnavailable(f"the pipecat pipeline failed (exit {proc.returncode}): {tail}")
    return turns
