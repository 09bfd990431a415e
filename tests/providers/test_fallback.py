"""The fallback chains: the framework's FallbackAdapter over our plugins, failing over from a dead
endpoint to a live sidecar (real subprocesses on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fakes.mistral_server import FakeMistralServer, Reply
from livekit import rtc
from livekit.agents import APIConnectOptions, llm, stt, tts

from eloquence.services import AZURE_TTS, LOCAL_LLM, WHISPER_STT, ServiceProcess, free_port, running_service
from eloquence_bench.quality import wer
from eloquence_bench.speech import PIPER_NO_NOISE_ENV, silence, speak, transcribe
from providers.endpoints import MistralEndpoint
from providers.fallback import build_llm, build_stt, build_tts
from providers.llm import MistralLLM
from providers.stt import WhisperSTT
from providers.tts import AzureTTS
from sidecar_common.pcm import float_to_pcm16 as to_pcm16
from sidecar_common.pcm import pcm16_to_float

TEXT = "Thank you, that was a clear answer."
SPOKEN = "Could you repeat the last question please?"


@pytest.fixture(scope="module")
def tts_service(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(
        AZURE_TTS, service_log_dir, env={"TTS_ENGINE": "piper", "PIPER_THREADS": "1", **PIPER_NO_NOISE_ENV}
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def stt_service(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(WHISPER_STT, service_log_dir, env={"WHISPER_CPU_THREADS": "1"}) as proc:
        yield proc


@pytest.fixture(scope="module")
def llm_service(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(LOCAL_LLM, service_log_dir, env={"LLM_THREADS": "1"}) as proc:
        yield proc


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_one_endpoint_gives_the_plain_plugin() -> None:
    assert type(build_stt(["http://127.0.0.1:8001"])) is WhisperSTT
    assert type(build_tts(["http://127.0.0.1:5002"], sample_rate=16000)) is AzureTTS


def test_several_endpoints_give_the_framework_adapter_with_our_capabilities() -> None:
    stt_chain = build_stt(["http://a:8001", "http://b:8001"], language="en")
    assert isinstance(stt_chain, stt.FallbackAdapter)
    assert stt_chain.capabilities.streaming and stt_chain.capabilities.manual_flush
    assert [s.base_url for s in stt_chain._stt_instances] == ["http://a:8001", "http://b:8001"]  # type: ignore[attr-defined]

    tts_chain = build_tts(["http://a:5002", "http://b:5002"], sample_rate=16000)
    assert isinstance(tts_chain, tts.FallbackAdapter)
    assert tts_chain.sample_rate == 16000 and tts_chain.num_channels == 1
    assert not any(s.needs_resampling for s in tts_chain._status)


def test_llm_endpoints_become_mistral_llms_in_order() -> None:
    cloud = MistralEndpoint(
        server_url="https://api.mistral.ai", api_key="k", model="mistral-small-latest", is_local=False
    )
    single = build_llm([cloud])
    assert type(single) is MistralLLM and single.model == "mistral-small-latest"
    chain = build_llm([cloud, {"base_url": "http://127.0.0.1:8004/v1/chat/completions", "model": "local"}])
    assert isinstance(chain, llm.FallbackAdapter)
    assert [m.model for m in chain._llm_instances] == ["mistral-small-latest", "local"]  # type: ignore[attr-defined]


def test_bad_endpoint_lists_are_refused() -> None:
    with pytest.raises(ValueError):
        build_stt([])
    with pytest.raises(TypeError):
        build_tts("http://a:5002")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown endpoint fields"):
        build_llm([{"url": "http://a:8004"}])


@pytest.mark.parametrize("mode", ["synthesize", "stream"])
async def test_tts_chain_fails_over_to_the_live_sidecar(tts_service: ServiceProcess, mode: str) -> None:
    chain = build_tts([dead_url(), tts_service.url])
    changes: list[tts.AvailabilityChangedEvent] = []
    chain.on("tts_availability_changed", changes.append)
    try:
        if mode == "synthesize":
            events = [ev async for ev in chain.synthesize(TEXT)]
        else:
            stream = chain.stream()
            stream.push_text(TEXT)
            stream.end_input()
            events = [ev async for ev in stream]
            await stream.aclose()
    finally:
        await chain.aclose()
        for instance in chain._tts_instances:  # type: ignore[attr-defined]
            await instance.aclose()

    assert events and events[-1].is_final and not any(e.is_final for e in events[:-1])
    assert [(c.tts.base_url, c.available) for c in changes][:1] == [(chain._tts_instances[0].base_url, False)]  # type: ignore[attr-defined]
    frame = rtc.combine_audio_frames([e.frame for e in events])
    heard = await asyncio.to_thread(
        transcribe, pcm16_to_float(frame.data.tobytes()), sample_rate=frame.sample_rate
    )
    assert wer(TEXT, heard) <= 0.2, heard


async def test_stt_chain_fails_over_to_the_live_sidecar(stt_service: ServiceProcess) -> None:
    chain = build_stt([dead_url(), stt_service.url], language="en")
    lead_in = to_pcm16(silence(0.8))
    audio = to_pcm16(np.concatenate([speak(SPOKEN), silence(0.3)]))
    try:
        stream = chain.stream(conn_options=APIConnectOptions(max_retry=0, timeout=10))
        # the adapter forwards only what arrives after it switched: the failover happens during
        # the lead-in silence, paced like a microphone, so no word is pushed to the dead sidecar
        for pcm, paced in ((lead_in, True), (audio, False)):
            for start in range(0, len(pcm), 640):
                chunk = pcm[start : start + 640]
                stream.push_frame(
                    rtc.AudioFrame(
                        data=chunk, sample_rate=16000, num_channels=1, samples_per_channel=len(chunk) // 2
                    )
                )
                await asyncio.sleep(0.02 if paced else 0)
        stream.end_input()
        events = [ev async for ev in stream]
        await stream.aclose()
    finally:
        await chain.aclose()
        for instance in chain._stt_instances:  # type: ignore[attr-defined]
            await instance.aclose()

    finals = [e.alternatives[0].text for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert wer(SPOKEN, " ".join(finals)) <= 0.15, finals


async def test_llm_chain_falls_back_from_the_cloud_to_the_local_llm(llm_service: ServiceProcess) -> None:
    async with FakeMistralServer(token_delay_s=0.0) as cloud:
        cloud.script(Reply(status=503, error_message="Service unavailable"))
        chain = build_llm(
            [
                {"base_url": cloud.url, "api_key": "cloud-key", "model": "mistral-small-latest"},
                {"base_url": llm_service.url, "model": "local"},
            ],
            max_tokens=24,
        )
        changes: list[llm.AvailabilityChangedEvent] = []
        chain.on("llm_availability_changed", changes.append)
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="system", content="You are a friendly English coach. Answer briefly.")
        ctx.add_message(role="user", content="Say hello to me.")
        try:
            response = await chain.chat(chat_ctx=ctx).collect()
        finally:
            await chain.aclose()
        # tried first; any later request is the adapter's background recovery probe
        assert cloud.requests and cloud.requests[0]["model"] == "mistral-small-latest"

    # the local model answered (the stand-in would have echoed "You said: ...")
    assert response.text.strip() and "You said" not in response.text
    assert [c.available for c in changes][:1] == [False]
