"""The whole-loop peer: a headless pipecat-ai pipeline on the same models and inputs.

Runs inside the peers' virtual environment (see venv.py), not ours, so it imports only pipecat,
numpy, soundfile and, of ours, `eloquence_bench.pacing` and `sidecar_common.pcm` (the same t0/t1
code as our harness; `peer_import_path` puts them on its PYTHONPATH).

    paced InputAudioRawFrames ─▶ WhisperSTTService ─▶ user aggregator (Silero VAD, Smart Turn v3)
      ─▶ OpenAILLMService (our local LLM server) ─▶ PiperTTSService (the same voice) ─▶ probe (t1)

Pipecat's defaults are kept where its public API sets them (VAD, turn detection, Whisper beam
size and threads). Usage: python -m eloquence_bench.peers.pipecat_pipeline JOB.json; one JSON
line per turn on stdout, each prefixed with "TURN ".
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from eloquence_bench.pacing import PacedStream
from sidecar_common.pcm import is_voiced_pcm16

TURN_TIMEOUT_S = 60.0
REPLY_QUIET_S = 1.0


def _build(job: dict[str, Any], marks: dict[str, Any]) -> Any:
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import (
        LLMContextFrame,
        LLMFullResponseEndFrame,
        LLMTextFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.piper.tts import PiperTTSService
    from pipecat.services.whisper.stt import WhisperSTTService

    class Probe(FrameProcessor):
        """Stamps the first frame of each kind that matters, and passes everything on."""

        def __init__(self, where: str) -> None:
            super().__init__(name=f"probe-{where}")
            self._where = where

        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            now = time.perf_counter()
            if direction == FrameDirection.DOWNSTREAM:
                if (
                    self._where == "stt"
                    and isinstance(frame, TranscriptionFrame)
                    and marks["transcript"] is None
                ):
                    marks["transcript"] = now
                    marks["transcript_text"] = frame.text  # type: ignore[assignment]
                elif (
                    self._where == "context"
                    and isinstance(frame, LLMContextFrame)
                    and marks["llm_start"] is None
                ):
                    marks["llm_start"] = now
                elif (
                    self._where == "llm"
                    and isinstance(frame, LLMTextFrame)
                    and marks["llm_first_token"] is None
                ):
                    marks["llm_first_token"] = now
                elif self._where == "tts":
                    if isinstance(frame, TTSAudioRawFrame):
                        marks["last_audio"] = now
                        if marks["first_audio"] is None and is_voiced_pcm16(frame.audio):
                            marks["first_audio"] = now
                    elif isinstance(frame, LLMFullResponseEndFrame):
                        marks["llm_end"] = now
            await self.push_frame(frame, direction)

    stt = WhisperSTTService(
        settings=WhisperSTTService.Settings(model=job["stt_model"]),
        device="cpu",
        compute_type=job.get("stt_compute_type", "default"),
    )
    llm = OpenAILLMService(
        api_key="local",
        base_url=job["llm_base_url"],
        settings=OpenAILLMService.Settings(
            model=job["llm_model"],
            system_instruction=job["system_prompt"],
            temperature=0.0,
            max_tokens=job["max_tokens"],
        ),
    )
    tts = PiperTTSService(
        settings=PiperTTSService.Settings(voice=job["voice"]), download_dir=Path(job["voice_dir"])
    )
    context = LLMContext()
    marks["context"] = context
    pair = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    return Pipeline(
        [
            stt,
            Probe("stt"),
            pair.user(),
            Probe("context"),
            llm,
            Probe("llm"),
            tts,
            Probe("tts"),
            pair.assistant(),
        ]
    )


def _reply_finished(marks: dict[str, Any]) -> bool:
    """The reply has been generated and no audio came for a while: the turn is over."""
    if marks["llm_end"] is None or marks["first_audio"] is None:
        return False
    return time.perf_counter() - max(marks["llm_end"], marks["last_audio"] or 0.0) > REPLY_QUIET_S


async def run(job: dict[str, Any]) -> None:
    from pipecat.frames.frames import EndFrame, InputAudioRawFrame
    from pipecat.pipeline.runner import WorkerRunner
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker

    marks: dict[str, Any] = {}
    pipeline = _build(job, marks)
    context = marks.pop("context")
    task = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=24000),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)
    runner_task = asyncio.create_task(runner.run())
    await asyncio.sleep(1.0)  # let StartFrame reach every processor

    silence = np.zeros(16000 // 2, np.float32)
    for item in [job["warmup"], *job["utterances"]]:
        samples, rate = sf.read(item["wav"], dtype="float32")
        assert rate == 16000, rate
        # every turn starts a fresh conversation after the greeting, as in our harness
        context.set_messages([{"role": "assistant", "content": job["greeting"]}])
        marks.clear()
        marks.update(
            transcript=None,
            transcript_text="",
            llm_start=None,
            llm_first_token=None,
            first_audio=None,
            last_audio=None,
            llm_end=None,
        )
        stream = PacedStream(np.concatenate([samples, silence]), trailing_silence_s=TURN_TIMEOUT_S)
        error = None
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S + 10):
                async for frame in stream.frames():
                    await task.queue_frame(InputAudioRawFrame(audio=frame, sample_rate=16000, num_channels=1))
                    if _reply_finished(marks):
                        stream.stop()
        except TimeoutError:
            error = "no reply within the turn timeout"
        stream.assert_real_time()
        if marks["first_audio"] is None and error is None:
            error = "the pipeline produced no audible reply"
        t0 = stream.t0
        stages: dict[str, float] = {}

        def ms(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round((b - a) * 1000, 2)

        if t0 is not None:
            stages = {
                k: v
                for k, v in {
                    "stt_final": ms(t0, marks["transcript"]),
                    "llm_ttft": ms(marks["llm_start"], marks["llm_first_token"]),
                    "e2e": ms(t0, marks["first_audio"]),
                }.items()
                if v is not None
            }
        if item is not job["warmup"]:
            line = {
                "utterance_id": item["id"],
                "stages": stages,
                "transcript": marks["transcript_text"],
                "error": error,
                "pacing_lead_ms": round(stream.lead_ms(), 2),
            }
            print("TURN " + json.dumps(line), flush=True)
        await asyncio.sleep(0.5)

    await task.queue_frame(EndFrame())
    await asyncio.wait_for(runner_task, 30)


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(run(job))


if __name__ == "__main__":
    main()
