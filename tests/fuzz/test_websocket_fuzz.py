"""Hypothesis against both websocket protocols (API.md), on the real whisper-stt and azure-tts processes.

Each example opens a socket and sends a generated mix of odd-sized binary frames, text where binary
is expected, wrong, huge or deeply nested JSON, and valid messages, then reads what comes back: every
answer is a JSON event of the protocol, never an `internal` error nor a 1011 close. Then slow
readers, and many sockets opened and dropped without a goodbye. Afterwards each service is healthy
and its open files and threads are back to where they started.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.hypothesis_runs import run_given

from eloquence.services import AZURE_TTS, WHISPER_STT, ServiceProcess, running_service
from eloquence_bench.speech import PIPER_NO_NOISE_ENV

EXAMPLES = 15
QUIET_S = 0.1
MAX_READ_S = 4.0
FLUSH = json.dumps({"type": "flush"})
STT_EVENTS = {"start_of_speech", "interim", "final", "end_of_speech", "error"}
TTS_EVENTS = {"sentence_end", "segment_end", "error"}
SAFE_CLOSE_CODES = {None, 1000, 1001, 1006, 1008, 1009, 1013}
"""1006: we dropped it; 1008: a refused request; 1009: a frame over the size limit; 1013: overloaded."""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
deeply_nested = st.integers(min_value=50, max_value=20_000).map(lambda n: "[" * n + "]" * n)
huge_json = st.integers(min_value=70_000, max_value=300_000).map(
    lambda n: json.dumps({"type": "text", "text": "a" * n})
)
odd_text = st.text(max_size=200) | json_values.map(json.dumps) | deeply_nested | huge_json
binary = st.binary(max_size=2049)  # odd and even lengths, empty included


def _stt_messages() -> st.SearchStrategy[list[str | bytes]]:
    flush = st.just(FLUSH)
    return st.lists(st.one_of(binary, odd_text, flush), min_size=1, max_size=8)


def _tts_messages() -> st.SearchStrategy[list[str | bytes]]:
    config = st.fixed_dictionaries(
        {"type": st.just("config")},
        optional={
            "voice": st.text(max_size=12),
            "context": st.sampled_from(["greeting", "coaching", "x", ""]),
            "language": st.sampled_from(["en", "fr", "zz", ""]),
            "sample_rate": st.sampled_from([16000, 24000, 8000, 0, -1, "fast"]),
            "rate": json_values,
        },
    ).map(json.dumps)
    text = st.text(max_size=30).map(lambda t: json.dumps({"type": "text", "text": t}))
    flush = st.just(FLUSH)
    anything = st.one_of(config, text, flush, odd_text, binary)
    valid_config = st.sampled_from([16000, 24000]).map(
        lambda r: json.dumps({"type": "config", "sample_rate": r})
    )
    # half the sessions start right (a config), so that the generated text is spoken, odd messages and all
    session = st.tuples(valid_config, st.lists(st.one_of(text, odd_text, binary), max_size=4), flush).map(
        lambda t: [t[0], *t[1], t[2]]
    )
    return st.one_of(st.lists(anything, min_size=1, max_size=6), session)


def _resources(proc: ServiceProcess) -> tuple[int, int]:
    assert proc.process is not None
    process = psutil.Process(proc.process.pid)
    return process.num_fds(), process.num_threads()


async def _exchange(url: str, messages: list[str | bytes], events: set[str], seen: Counter[str]) -> None:
    """Send `messages`, read until every flush is answered (or the service closes), then say goodbye."""
    terminal = {"final", "segment_end"}
    answered = 0

    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:

        async def read() -> None:
            nonlocal answered
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(msg.data)
                    assert isinstance(event, dict) and event.get("type") in events, event
                    seen[event["type"]] += 1
                    answered += event["type"] in terminal
                    if event["type"] == "error":
                        assert event.get("code") != "internal", event
                        assert "object at 0x" not in str(event.get("message")), event
                        seen[f"error:{event.get('code')}"] += 1
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    seen["audio"] += 1

        reader = asyncio.create_task(read())
        flushes = 0
        for message in messages:
            if ws.closed:
                break
            try:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message)
                    flushes += message == FLUSH
            except ConnectionResetError:  # the service closed it (a frame over its size limit): read why
                break
        deadline = time.monotonic() + MAX_READ_S
        while not ws.closed and answered < flushes and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(QUIET_S)  # anything unasked-for would show up now
        closed_by_service = ws.closed
        await ws.close()
        await reader
        assert ws.close_code in SAFE_CLOSE_CODES, ws.close_code
        seen[f"close:{ws.close_code}" if closed_by_service else "close:by-client"] += 1


async def _open_and_drop(url: str, count: int) -> None:
    """`count` sockets at once, each sends a little and vanishes without a close frame."""
    sessions = [aiohttp.ClientSession() for _ in range(count)]
    sockets = await asyncio.gather(*(s.ws_connect(url) for s in sessions), return_exceptions=True)
    for ws in sockets:
        if isinstance(ws, aiohttp.ClientWebSocketResponse):
            await ws.send_bytes(b"\x00\x01" * 160)
            transport = ws._response.connection.transport if ws._response.connection else None  # noqa: SLF001
            if transport is not None:
                transport.abort()  # no close handshake: the client just disappears
    for session in sessions:
        await session.close()


def _fuzz(url: str, strategy: st.SearchStrategy[list[str | bytes]], events: set[str]) -> Counter[str]:
    seen: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(messages=strategy)
    def run(messages: list[str | bytes]) -> None:
        asyncio.run(_exchange(url, messages, events, seen))

    run_given(run)
    return seen


def _healthy_and_back(
    proc: ServiceProcess, before: tuple[int, int], *, settle_s: float = 5.0
) -> dict[str, Any]:
    deadline = time.monotonic() + settle_s
    while True:
        with aiohttp_get(f"{proc.url}/health") as (status, body):
            assert status == 200, body
        fds, threads = _resources(proc)
        if (fds <= before[0] + 3 and threads <= before[1] + 2) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert fds <= before[0] + 3, (before, fds)
    assert threads <= before[1] + 2, (before, threads)
    return {"fds": (before[0], fds), "threads": (before[1], threads), **body}


class aiohttp_get:  # noqa: N801 - reads like the call it wraps
    """A blocking GET for the sync parts of the tests: (status, JSON body)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> tuple[int, dict[str, Any]]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def __exit__(self, *_: object) -> None:
        return None


@pytest.fixture(scope="module")
def whisper(service_log_dir: Path) -> Iterator[ServiceProcess]:
    env = {"WHISPER_CPU_THREADS": "1"}
    with running_service(WHISPER_STT, service_log_dir / "fuzz-whisper", env=env, timeout=180) as proc:
        yield proc


@pytest.fixture(scope="module")
def tts(service_log_dir: Path) -> Iterator[ServiceProcess]:
    env = {"TTS_ENGINE": "piper", "PIPER_THREADS": "1", "TTS_CACHE_BYTES": "0", **PIPER_NO_NOISE_ENV}
    with running_service(AZURE_TTS, service_log_dir / "fuzz-tts", env=env, timeout=180) as proc:
        yield proc


def test_whisper_stt_stream_survives_generated_frames(whisper: ServiceProcess) -> None:
    url = whisper.url.replace("http", "ws") + "/v1/stream?sample_rate=16000&language=en"
    asyncio.run(_exchange(url, [json.dumps({"type": "flush"})], STT_EVENTS, Counter()))  # warm
    before = _resources(whisper)
    seen = _fuzz(url, _stt_messages(), STT_EVENTS)
    asyncio.run(_open_and_drop(url, 40))
    after = _healthy_and_back(whisper, before)
    assert seen["final"] > 0 and seen["error:invalid_message"] > 0, seen
    print(f"\nwhisper-stt ws fuzz: {dict(seen)}; {after['fds']=} {after['threads']=}")


def test_azure_tts_stream_survives_generated_messages(tts: ServiceProcess) -> None:
    url = tts.url.replace("http", "ws") + "/v1/stream"
    before = _resources(tts)
    seen = _fuzz(url, _tts_messages(), TTS_EVENTS)
    asyncio.run(_open_and_drop(url, 40))
    after = _healthy_and_back(tts, before)
    assert seen["segment_end"] > 0 and seen["error:invalid_message"] > 0, seen
    print(f"\nazure-tts ws fuzz: {dict(seen)}; {after['fds']=} {after['threads']=}")


async def _slow_reader(url: str, first: list[str], hold_s: float) -> None:
    """Asks for work, then does not read for `hold_s`, then leaves."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        for message in first:
            await ws.send_str(message)
        await asyncio.sleep(hold_s)
        await ws.close()


def test_slow_readers_do_not_hold_the_services(whisper: ServiceProcess, tts: ServiceProcess) -> None:
    tts_url = tts.url.replace("http", "ws") + "/v1/stream"
    stt_url = whisper.url.replace("http", "ws") + "/v1/stream?sample_rate=16000"
    long_text = "This sentence is spoken to a client that does not listen. " * 20
    before = {"tts": _resources(tts), "stt": _resources(whisper)}

    async def run() -> None:
        await asyncio.gather(
            *(
                _slow_reader(
                    tts_url,
                    [
                        json.dumps({"type": "config", "sample_rate": 24000}),
                        json.dumps({"type": "text", "text": long_text}),
                        json.dumps({"type": "flush"}),
                    ],
                    hold_s=1.0,
                )
                for _ in range(3)
            ),
            *(_slow_reader(stt_url, [json.dumps({"type": "flush"})] * 20, hold_s=1.0) for _ in range(3)),
        )
        # a fresh client is served as usual meanwhile and afterwards
        seen: Counter[str] = Counter()
        await _exchange(
            tts_url,
            [
                json.dumps({"type": "config", "sample_rate": 16000}),
                json.dumps({"type": "text", "text": "Still here."}),
                FLUSH,
            ],
            TTS_EVENTS,
            seen,
        )
        assert seen["segment_end"] == 1 and seen["audio"] > 0, seen

    asyncio.run(run())
    _healthy_and_back(tts, before["tts"], settle_s=15.0)
    _healthy_and_back(whisper, before["stt"], settle_s=15.0)
