"""Faults injected into real processes, through a real AgentSession (`eloquence talk`'s turn).

whisper-stt, azure-tts (Piper) and the local LLM run as processes behind fault proxies
(tests/support/fault_proxy.py), which also tell the test the exact moment to strike:
- whisper-stt killed once the user's speech has started, and restarted: the turn completes and the
  transcript is as good as a clean run's (the provider's replay buffer re-sends the audio);
- azure-tts killed while the greeting streams, and restarted: the next reply is spoken;
- the LLM server killed once its reply streams: the user hears the start and a short apology (or, if
  the cut came before the first token, a retried answer);
- 200 ms added each way and connections cut at random on STT and TTS: every turn is answered, and
  the added latency is bounded (the figures are printed).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.fault_proxy import Faults, fault_proxy

from eloquence.services import AZURE_TTS, LOCAL_LLM, WHISPER_STT, ServiceProcess, running_services
from eloquence.settings import AppSettings
from eloquence.talk import TalkReport, run_talk_turn
from eloquence.turn_recovery import APOLOGY
from eloquence_bench.quality import wer
from eloquence_bench.speech import PIPER_NO_NOISE_ENV, silence, speak

pytestmark = pytest.mark.slow

QUESTION = "I want to feel more confident when I speak in public."
RESTART_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def services(service_log_dir: Path) -> Iterator[dict[str, ServiceProcess]]:
    env = {
        "WHISPER_CPU_THREADS": "1",
        "TTS_ENGINE": "piper",
        "PIPER_THREADS": "1",
        "TTS_CACHE_BYTES": "0",
        "LLM_THREADS": "1",
        **PIPER_NO_NOISE_ENV,
    }
    with running_services([WHISPER_STT, AZURE_TTS, LOCAL_LLM], service_log_dir / "faults", env=env) as procs:
        yield dict(zip(("stt", "tts", "llm"), procs, strict=True))


def _settings(stt: str, tts: str, llm: str) -> AppSettings:
    return AppSettings(
        WHISPER_STT_URL=stt,
        AZURE_TTS_URL=tts,
        LOCAL_LLM_URL=llm,
        MISTRAL_API_KEY=None,
        MISTRAL_BASE_URL=None,
        WHISPER_STT_FALLBACK_URL=None,
        AZURE_TTS_FALLBACK_URL=None,
        SIDECAR_API_KEY=None,
    )


def _audio() -> np.ndarray:
    return np.concatenate([speak(QUESTION), silence(0.1)])


class Restart:
    """Kills a service the first time `strike()` is called, and starts it again on its port."""

    def __init__(self, proc: ServiceProcess) -> None:
        self.proc = proc
        self.struck = threading.Event()
        self.back = threading.Event()
        self.error: BaseException | None = None

    def strike(self, *_: object) -> None:
        if self.struck.is_set():
            return
        self.struck.set()
        self.proc.kill()
        threading.Thread(target=self._start_again, daemon=True).start()

    def _start_again(self) -> None:
        try:
            self.proc.start()
            self.proc.wait_healthy(RESTART_TIMEOUT_S)
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e
        finally:
            self.back.set()

    async def wait_back(self) -> None:
        await asyncio.to_thread(self.back.wait, RESTART_TIMEOUT_S + 10)
        assert self.error is None, self.error


async def _turn(services: dict[str, ServiceProcess], **faults: Faults) -> TalkReport:
    async with (
        fault_proxy(services["stt"].url, faults.get("stt")) as stt,
        fault_proxy(services["tts"].url, faults.get("tts")) as tts,
        fault_proxy(services["llm"].url, faults.get("llm")) as llm,
    ):
        return await run_talk_turn(
            audio=_audio(), settings=_settings(stt.url, tts.url, llm.url), timeout_s=150
        )


async def test_whisper_killed_mid_utterance_and_restarted_loses_no_word(
    services: dict[str, ServiceProcess],
) -> None:
    clean = await _turn(services)
    restart = Restart(services["stt"])
    faults = Faults(on_upstream_text=lambda text: restart.strike() if "start_of_speech" in text else None)
    faulty = await _turn(services, stt=faults)
    await restart.wait_back()
    assert restart.struck.is_set(), "the speech never started"
    assert faulty.reply, faulty
    assert wer(QUESTION, faulty.transcript) <= wer(QUESTION, clean.transcript) + 0.1, (
        clean.transcript,
        faulty.transcript,
    )
    print(
        f"\nstt restart: clean {clean.transcript!r} / after the kill {faulty.transcript!r}; e2e "
        f"{clean.timings.e2e_ms} -> {faulty.timings.e2e_ms} ms"
    )


async def test_azure_tts_killed_mid_greeting_the_next_reply_is_spoken(
    services: dict[str, ServiceProcess],
) -> None:
    restart = Restart(services["tts"])
    audio_bytes = 0

    def on_audio(n: int) -> None:
        nonlocal audio_bytes
        audio_bytes += n
        if audio_bytes > 16000:  # half a second of the greeting has gone out
            restart.strike()

    report = await _turn(services, tts=Faults(on_upstream_bytes=on_audio))
    await restart.wait_back()
    assert restart.struck.is_set()
    assert report.reply and report.reply_audio_s > 0.5, report
    audio_s, e2e = report.reply_audio_s, report.timings.e2e_ms
    print(f"\ntts restart: reply {report.reply!r}, {audio_s} s of audio, e2e {e2e} ms")


async def test_llm_killed_mid_stream_the_user_hears_an_apology_or_a_retried_answer(
    services: dict[str, ServiceProcess],
) -> None:
    restart = Restart(services["llm"])
    report = await _turn(services, llm=Faults(on_upstream_bytes=restart.strike))
    await restart.wait_back()
    assert restart.struck.is_set()
    assert report.reply and report.reply_audio_s > 0.5, report
    outcome = "apology" if APOLOGY["en"] in report.reply else "retried answer"
    print(f"\nllm killed mid-stream: {outcome}: {report.reply!r}")


async def test_latency_and_random_cuts_degrade_boundedly(services: dict[str, ServiceProcess]) -> None:
    clean = [await _turn(services) for _ in range(2)]
    faulty = []
    for seed in (1, 2):
        faults = {
            name: Faults(latency_s=0.2, cut_probability=0.02, max_cuts=1, seed=seed + i)
            for i, name in enumerate(("stt", "tts"))
        }
        faulty.append(await _turn(services, **faults))
    assert all(r.reply for r in clean + faulty)
    clean_e2e = [r.timings.e2e_ms for r in clean if r.timings.e2e_ms is not None]
    faulty_e2e = [r.timings.e2e_ms for r in faulty if r.timings.e2e_ms is not None]
    assert len(faulty_e2e) == len(faulty)
    added = max(faulty_e2e) - max(clean_e2e)
    # 200 ms each way costs the final (flush → final) and the first audio (text → audio) about
    # 0.4 s each; a cut costs a reconnect. Bounded means well under the users' own 3 s target.
    assert added < 3000, (clean_e2e, faulty_e2e)
    print(f"\nlatency + cuts: e2e clean {clean_e2e} ms, with 200 ms each way and cuts {faulty_e2e} ms")
