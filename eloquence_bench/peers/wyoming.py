"""The wyoming peers: `wyoming-faster-whisper` and `wyoming-piper`, as servers of the peers' venv,
and the bench's clients for them (the same pacing and endpoint as our sidecar loop)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar_common.pcm import is_voiced_pcm16

from ..corpus import Utterance
from ..pacing import PacedStream
from .venv import PeersVenv, PeerUnavailable

START_TIMEOUT_S = 120.0


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
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

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


def wyoming_whisper_server(
    venv: PeersVenv,
    *,
    port: int,
    model_dir: str,
    compute_type: str,
    beam_size: int,
    threads: int,
    data_dir: Path,
    log_dir: Path,
) -> PeerServer:
    argv = [
        str(venv.python),
        "-m",
        "wyoming_faster_whisper",
        "--uri",
        f"tcp://127.0.0.1:{port}",
        "--model",
        model_dir,
        "--stt-library",
        "faster-whisper",
        "--data-dir",
        str(data_dir),
        "--language",
        "en",
        "--compute-type",
        compute_type,
        "--beam-size",
        str(beam_size),
        "--cpu-threads",
        str(threads),
        "--local-files-only",
    ]
    return PeerServer("wyoming-faster-whisper", argv, port, log_dir / "wyoming-faster-whisper.log")


def wyoming_piper_server(
    venv: PeersVenv, *, port: int, voice_dir: str, voice: str, data_dir: Path, log_dir: Path
) -> PeerServer:
    argv = [
        str(venv.python),
        "-m",
        "wyoming_piper",
        "--uri",
        f"tcp://127.0.0.1:{port}",
        "--voice",
        voice,
        "--data-dir",
        voice_dir,
        "--download-dir",
        str(data_dir),
    ]
    return PeerServer("wyoming-piper", argv, port, log_dir / "wyoming-piper.log")


# --------------------------------------------------------------------------- wyoming clients


async def wyoming_stt_turn(port: int, utterance: Utterance, *, endpoint_silence_ms: int) -> dict[str, Any]:
    """The same paced stream and endpoint as `runner.sidecar_loop.stream_stt`, over the wyoming protocol."""
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
    return {
        "utterance_id": utterance.id,
        "transcript": text.strip(),
        "stages": {
            "stt_final": (t_final - stream.t0) * 1000,
            "stt_flush_to_final": (t_final - t_stop) * 1000,
        },
        "pacing_lead_ms": stream.lead_ms(),
    }


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
            if (
                AudioChunk.is_type(event.type)
                and first is None
                and is_voiced_pcm16(AudioChunk.from_event(event).audio)
            ):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("wyoming-piper sent no audible audio")
    return (first - start) * 1000
