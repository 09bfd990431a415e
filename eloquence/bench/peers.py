"""Peers from PyPI, on the same models and inputs, paced the same way, clock started at t0.

- whisper-stt sidecar vs `wyoming-faster-whisper` (same CTranslate2 model directory, compute
  type, beam size and threads; the same bench client streams the audio in real time and ends
  the stream at the same endpoint, 250 ms after t0: our `flush`, their `audio-stop`);
- azure-tts sidecar vs `wyoming-piper` (same voice file, same texts; time to the first audible
  PCM chunk);
- the whole loop vs a headless `pipecat-ai` pipeline (peer_pipecat.py) built from its Whisper,
  Piper and OpenAI-compatible LLM services, pointed at our local LLM server.

The peers pin versions of their own that clash with ours (pipecat wants soundfile 0.13 and
soxr 1.0), so they live in a separate virtual environment, `.eloquence/peers-venv`, created on
demand with `PEER_REQUIREMENTS` plus our exact engine versions (faster-whisper, CTranslate2,
piper-tts, onnxruntime), so both sides run the same engine builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .corpus import Utterance
from .pacing import PacedStream, is_loud_pcm16

PEER_REQUIREMENTS = {
    "wyoming-faster-whisper": "wyoming-faster-whisper==3.8.1",
    "wyoming-piper": "wyoming-piper==2.5.2",
    "pipecat-ai": "pipecat-ai[whisper,piper]==1.14.0",
}
_SAME_ENGINES = ("faster-whisper", "ctranslate2", "piper-tts", "onnxruntime")
INSTALL_TIMEOUT_S = 1200
START_TIMEOUT_S = 120.0


class PeerUnavailable(RuntimeError):
    """A peer cannot run here; the message says why (it goes into bench.json)."""


def _requirements() -> list[str]:
    pins = list(PEER_REQUIREMENTS.values())
    for name in _SAME_ENGINES:
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{name}=={version(name)}")
    return pins


@dataclass
class PeersVenv:
    root: Path
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


def ensure_peers_venv(root: Path, *, log: Any = print) -> PeersVenv:
    """The peers' venv with exactly `_requirements()`; created or refreshed when they change."""
    pins = _requirements()
    marker = root / "eloquence-pins.json"
    venv = PeersVenv(root=root)
    if not (marker.exists() and json.loads(marker.read_text()) == pins and venv.python.exists()):
        log(f"creating the peers' virtual environment in {root} ({', '.join(pins)}); this takes a few minutes")
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", "--clear", str(root)], "create the peers' venv")
        _run([str(venv.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
             "install the peers")
        marker.write_text(json.dumps(pins))
    out = subprocess.run([str(venv.python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(out)}
    wanted = [*PEER_REQUIREMENTS, *_SAME_ENGINES, "wyoming"]
    venv.versions = {name: installed.get(name, "missing") for name in wanted}
    return venv


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"could not {what}: timed out after {INSTALL_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise PeerUnavailable(f"could not {what}: {(proc.stderr or proc.stdout).strip()[-600:]}")


# --------------------------------------------------------------------------- wyoming servers


@dataclass
class PeerServer:
    """A peer's server as a subprocess of the peers' venv, on a free loopback port."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def wait_ready(self) -> None:
        """Until it answers a wyoming `describe` with its `info`."""
        from wyoming.client import AsyncTcpClient
        from wyoming.info import Describe, Info

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PeerUnavailable(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                async with AsyncTcpClient("127.0.0.1", self.port) as client:
                    await client.write_event(Describe().event())
                    event = await asyncio.wait_for(client.read_event(), 5)
                    if event is not None and Info.is_type(event.type):
                        return
            await asyncio.sleep(0.3)
        raise PeerUnavailable(f"{self.name} was not ready after {START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])
        return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def wyoming_whisper_server(venv: PeersVenv, *, port: int, model_dir: str, compute_type: str, beam_size: int,
                           threads: int, data_dir: Path, log_dir: Path) -> PeerServer:
    argv = [str(venv.python), "-m", "wyoming_faster_whisper", "--uri", f"tcp://127.0.0.1:{port}",
            "--model", model_dir, "--stt-library", "faster-whisper", "--data-dir", str(data_dir),
            "--language", "en", "--compute-type", compute_type, "--beam-size", str(beam_size),
            "--cpu-threads", str(threads), "--local-files-only"]
    return PeerServer("wyoming-faster-whisper", argv, port, log_dir / "wyoming-faster-whisper.log")


def wyoming_piper_server(venv: PeersVenv, *, port: int, voice_dir: str, voice: str, data_dir: Path,
                         log_dir: Path) -> PeerServer:
    argv = [str(venv.python), "-m", "wyoming_piper", "--uri", f"tcp://127.0.0.1:{port}", "--voice", voice,
            "--data-dir", voice_dir, "--download-dir", str(data_dir)]
    return PeerServer("wyoming-piper", argv, port, log_dir / "wyoming-piper.log")


# --------------------------------------------------------------------------- wyoming clients


async def wyoming_stt_turn(port: int, utterance: Utterance, *, endpoint_silence_ms: int) -> dict[str, Any]:
    """The same paced stream and endpoint as `sidecar_loop.stream_stt`, over the wyoming protocol."""
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    stream = PacedStream(utterance.samples)
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        t_stop: float | None = None
        async for frame in stream.frames():
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=frame).event())
            if stream.endpoint_due(endpoint_silence_ms):
                await client.write_event(AudioStop().event())
                t_stop = time.perf_counter()
                stream.stop()
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            if event is None:
                raise RuntimeError("wyoming-faster-whisper closed the connection without a transcript")
            if Transcript.is_type(event.type):
                t_final = time.perf_counter()
                text = Transcript.from_event(event).text
                break
    stream.assert_real_time()
    assert stream.t0 is not None and t_stop is not None
    return {"utterance_id": utterance.id, "transcript": text.strip(),
            "stages": {"stt_final": (t_final - stream.t0) * 1000, "stt_flush_to_final": (t_final - t_stop) * 1000},
            "pacing_lead_ms": stream.lead_ms()}


async def wyoming_tts_first_audio(port: int, text: str, voice: str) -> float:
    """Milliseconds from sending `synthesize` to the first audible audio chunk."""
    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeVoice

    async with AsyncTcpClient("127.0.0.1", port) as client:
        start = time.perf_counter()
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event())
        first: float | None = None
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            if event is None or AudioStop.is_type(event.type):
                break
            if AudioChunk.is_type(event.type) and first is None and is_loud_pcm16(AudioChunk.from_event(event).audio):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("wyoming-piper sent no audible audio")
    return (first - start) * 1000


# --------------------------------------------------------------------------- pipecat


async def run_pipecat_loop(
    venv: PeersVenv, job: dict[str, Any], work_dir: Path, *, log_dir: Path, timeout_s: float
) -> list[dict[str, Any]]:
    """Run peer_pipecat.py in the peers' venv; one result per utterance."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    job_path = work_dir / "pipecat-job.json"
    job_path.write_text(json.dumps(job))
    log_path = log_dir / "pipecat.log"
    script = Path(__file__).with_name("peer_pipecat.py")
    with log_path.open("wb") as log:  # opening a local file does not block the loop for long
        proc = await asyncio.create_subprocess_exec(
            str(venv.python), str(script), str(job_path), stdout=asyncio.subprocess.PIPE, stderr=log,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "LOGURU_LEVEL": "INFO"},
        )
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise PeerUnavailable(f"the pipecat pipeline did not finish in {timeout_s:.0f} s; see {log_path}") from None
    turns = [json.loads(line[5:]) for line in stdout.decode().splitlines() if line.startswith("TURN ")]
    if proc.returncode != 0 and not turns:
        tail = " | ".join(log_path.read_text(errors="replace").splitlines()[-6:])
        raise PeerUnavailable(f"the pipecat pipeline failed (exit {proc.returncode}): {tail}")
    return turns
