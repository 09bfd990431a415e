"""The sidecars' shared key (SIDECAR_API_KEY), X-Request-Id, JSON logs and TLS, on real processes.

With a key set, whisper-stt and azure-tts refuse every request (websocket handshakes included)
without `Authorization: Bearer <key>`; /health and /metrics stay open. The providers send the key.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from livekit.agents import APIStatusError

from eloquence.services import AZURE_TTS, WHISPER_STT, ServiceProcess, running_service
from eloquence_bench.speech import PIPER_NO_NOISE_ENV, silence, speak, to_wav
from providers import AzureTTS, WhisperSTT

KEY = "sidecar-key-for-tests-0123456789"
TTS_ENV = {"TTS_ENGINE": "piper", "PIPER_THREADS": "1", "SIDECAR_API_KEY": KEY, **PIPER_NO_NOISE_ENV}


@pytest.fixture(scope="module")
def tts(service_log_dir: Path) -> Iterator[ServiceProcess]:
    env = {**TTS_ENV, "LOG_FORMAT": "json"}
    with running_service(AZURE_TTS, service_log_dir / "tts-keyed", env=env, timeout=120) as proc:
        yield proc


@pytest.fixture(scope="module")
def stt(service_log_dir: Path) -> Iterator[ServiceProcess]:
    env = {"WHISPER_CPU_THREADS": "1", "SIDECAR_API_KEY": KEY}
    with running_service(WHISPER_STT, service_log_dir / "stt-keyed", env=env, timeout=180) as proc:
        yield proc


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def _bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _wav_form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    audio = np.concatenate([speak("Good morning everyone."), silence(0.3)])
    form.add_field("file", to_wav(audio), filename="q.wav", content_type="audio/wav")
    return form


async def test_without_the_key_every_route_but_health_and_metrics_is_401(
    tts: ServiceProcess, stt: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    body = {"text": "Hello.", "format": "pcm", "sample_rate": 16000}
    for headers in ({}, _bearer("wrong-key-0123456789"), {"Authorization": f"Basic {KEY}"}):
        async with http.post(f"{tts.url}/v1/synthesize", json=body, headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.post(f"{stt.url}/v1/audio/transcriptions", data=_wav_form(), headers=headers) as resp:
            assert resp.status == 401
        for url in (f"{tts.url}/v1/stream", f"{stt.url}/v1/stream"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url.replace("http", "ws"), headers=headers)
            assert refused.value.status == 401
    for proc in (tts, stt):
        for path in ("/health", "/metrics"):
            async with http.get(proc.url + path) as resp:
                assert resp.status == 200, path
    # with the key: served
    async with http.post(f"{tts.url}/v1/synthesize", json=body, headers=_bearer()) as resp:
        assert resp.status == 200 and len(await resp.read()) > 3200
    async with http.post(f"{stt.url}/v1/audio/transcriptions", data=_wav_form(), headers=_bearer()) as resp:
        assert resp.status == 200
        assert "morning" in (await resp.json())["text"].lower()
    async with http.get(f"{tts.url}/metrics") as resp:
        assert 'azure_tts_http_requests_total{method="POST",route="/v1/synthesize",status="401"}' in (
            await resp.text()
        )


async def test_the_providers_send_the_key(tts: ServiceProcess, stt: ServiceProcess) -> None:
    async with AzureTTS(base_url=tts.url, sample_rate=16000, api_key=KEY) as voice:
        stream = voice.stream()
        stream.push_text("The key travels with every request.")
        stream.end_input()
        frames = [ev.frame async for ev in stream]
        await stream.aclose()
    assert sum(f.samples_per_channel for f in frames) > 16000 * 0.5

    whisper = WhisperSTT(base_url=stt.url, language="en", api_key=KEY)
    try:
        from livekit import rtc

        pcm = (np.concatenate([speak("Thank you very much."), silence(0.3)]) * 32767).astype("<i2").tobytes()
        result = await whisper.recognize(
            rtc.AudioFrame(data=pcm, sample_rate=16000, num_channels=1, samples_per_channel=len(pcm) // 2)
        )
        assert "thank" in result.alternatives[0].text.lower()
    finally:
        await whisper.aclose()

    async with AzureTTS(base_url=tts.url, sample_rate=16000, api_key="not-the-key-0123456789") as wrong:
        with pytest.raises(APIStatusError) as refused:
            async for _ in wrong.synthesize("Hello."):
                pass
        assert refused.value.status_code == 401 and not refused.value.retryable


async def test_the_request_id_is_taken_or_minted_echoed_and_logged(
    tts: ServiceProcess, http: aiohttp.ClientSession, service_log_dir: Path
) -> None:
    body = {"text": "Trace me.", "format": "pcm", "sample_rate": 16000}
    async with http.post(
        f"{tts.url}/v1/synthesize", json=body, headers={**_bearer(), "X-Request-Id": "trace-abc.123"}
    ) as resp:
        assert resp.status == 200 and resp.headers["X-Request-Id"] == "trace-abc.123"
        await resp.read()
    async with http.post(f"{tts.url}/v1/synthesize", json=body) as resp:  # refused: still has an id
        minted = resp.headers["X-Request-Id"]
        assert resp.status == 401 and len(minted) == 32
    async with http.post(
        f"{tts.url}/v1/synthesize",
        json=body,
        headers={**_bearer(), "X-Request-Id": "not a token; has spaces"},
    ) as resp:
        assert resp.headers["X-Request-Id"] != "not a token; has spaces"
        await resp.read()
    lines = [
        json.loads(line)
        for line in (service_log_dir / "tts-keyed" / "azure-tts.log").read_text().splitlines()
    ]
    traced = [line for line in lines if line.get("request_id") == "trace-abc.123"]
    assert any("POST /v1/synthesize 200" in line["message"] for line in traced), traced
    assert any(line.get("request_id") == minted and " 401 " in line["message"] for line in lines)
    assert not any(KEY in json.dumps(line) for line in lines)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_a_sidecar_serves_tls_and_the_provider_speaks_it(service_log_dir: Path, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    env = {**TTS_ENV, "SIDECAR_TLS_CERT": str(cert), "SIDECAR_TLS_KEY": str(key)}
    proc = ServiceProcess(
        definition=AZURE_TTS,
        port=_free_port(),
        log_path=service_log_dir / "tts-tls" / "azure-tts.log",
        env=env,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    proc.start()
    try:
        https = f"https://127.0.0.1:{proc.port}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
            await _wait_https(session, https + "/health")
            async with AzureTTS(
                base_url=https, sample_rate=16000, api_key=KEY, http_session=session
            ) as voice:
                frames = [ev.frame async for ev in voice.synthesize("Encrypted on the wire.")]
            assert sum(f.samples_per_channel for f in frames) > 8000
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served on a TLS port
                async with session.get(f"http://127.0.0.1:{proc.port}/health") as resp:
                    await resp.read()
        assert "Ready on https://" in proc.log_tail(40)
    finally:
        proc.stop()


def _free_port() -> int:
    from eloquence.services import free_port

    return free_port()


async def _wait_https(session: aiohttp.ClientSession, url: str, timeout_s: float = 120.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)
