"""One voice turn through the three plugins and the real local services: a Piper-spoken question
goes through WhisperSTT, its transcript through MistralLLM (the local GGUF server), the reply
streams token by token into AzureTTS, and the reply audio transcribes back into the reply's words."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import llm, stt
from livekit.agents.metrics import LLMMetrics, STTMetrics, TTSMetrics

from eloquence.services import AZURE_TTS, LOCAL_LLM, WHISPER_STT, ServiceProcess, running_service
from eloquence_bench.quality import wer
from eloquence_bench.speech import PIPER_NO_NOISE_ENV, silence, speak
from providers import AzureTTS, MistralLLM, WhisperSTT
from sidecar_common.pcm import float_to_pcm16 as to_pcm16

QUESTION = "Can you give me one tip for a job interview?"


@pytest.fixture(scope="module")
def services(service_log_dir: Path) -> Iterator[dict[str, ServiceProcess]]:
    with (
        running_service(WHISPER_STT, service_log_dir, env={"WHISPER_CPU_THREADS": "1"}) as stt_proc,
        running_service(
            AZURE_TTS,
            service_log_dir,
            env={"TTS_ENGINE": "piper", "PIPER_THREADS": "1", **PIPER_NO_NOISE_ENV},
        ) as tts_proc,
        running_service(LOCAL_LLM, service_log_dir, env={"LLM_THREADS": "1"}) as llm_proc,
    ):
        yield {"stt": stt_proc, "tts": tts_proc, "llm": llm_proc}


def frames_of(pcm: bytes, sample_rate: int = 16000) -> list[rtc.AudioFrame]:
    step = sample_rate // 50 * 2  # 20 ms
    return [
        rtc.AudioFrame(
            data=pcm[i : i + step],
            sample_rate=sample_rate,
            num_channels=1,
            samples_per_channel=len(pcm[i : i + step]) // 2,
        )
        for i in range(0, len(pcm), step)
    ]


async def test_spoken_question_to_spoken_reply(services: dict[str, ServiceProcess]) -> None:
    whisper = WhisperSTT(base_url=services["stt"].url, language="en")
    mistral = MistralLLM(base_url=services["llm"].url, model="local", max_tokens=48, temperature=0.2)
    azure = AzureTTS(base_url=services["tts"].url, sample_rate=16000)
    metrics: list[object] = []
    for plugin in (whisper, mistral, azure):
        plugin.on("metrics_collected", metrics.append)
    try:
        # 1. the user's question, as the agent's microphone and VAD deliver it
        stream = whisper.stream()
        for frame in frames_of(to_pcm16(np.concatenate([speak(QUESTION), silence(0.2)]))):
            stream.push_frame(frame)
        stream.flush()  # the agent's VAD end of speech
        stream.end_input()
        events = [ev async for ev in stream]
        await stream.aclose()
        heard = " ".join(
            e.alternatives[0].text for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT
        ).strip()
        assert wer(QUESTION, heard) <= 0.15, heard

        # 2. the reply, streamed into the TTS as the tokens come
        ctx = llm.ChatContext.empty()
        ctx.add_message(
            role="system", content="You are a friendly English coach. Answer in one or two short sentences."
        )
        ctx.add_message(role="user", content=heard)
        tts_stream = azure.stream()
        reply = ""

        async def speak_reply() -> None:
            nonlocal reply
            async with mistral.chat(chat_ctx=ctx) as chat:
                async for chunk in chat:
                    if chunk.delta and chunk.delta.content:
                        reply += chunk.delta.content
                        tts_stream.push_text(chunk.delta.content)
            tts_stream.end_input()

        feeder = asyncio.create_task(speak_reply())
        audio = [ev async for ev in tts_stream]
        await feeder
        await tts_stream.aclose()
        assert reply.strip() and audio and audio[-1].is_final

        # 3. the reply audio is speech: it transcribes back into the reply's words
        answer = await whisper.recognize([ev.frame for ev in audio])
        said = answer.alternatives[0].text
        assert said.strip(), "the reply audio has no words"
        assert wer(reply, said) <= 0.4, f"replied {reply!r}, heard {said!r}"
    finally:
        await whisper.aclose()
        await mistral.aclose()
        await azure.aclose()

    # every stage reported its own timing through livekit-agents metrics
    assert any(isinstance(m, STTMetrics) and m.streamed and m.audio_duration > 1.0 for m in metrics)
    assert any(isinstance(m, LLMMetrics) and m.ttft > 0 for m in metrics)
    assert any(isinstance(m, TTSMetrics) and m.streamed and m.ttfb > 0 for m in metrics)
