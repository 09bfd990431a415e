"""The whole bench run: services, stack turns, concurrency, raw baselines, peers, report.

Phases run one after another, never overlapping, so that no phase steals CPU from another:
1. start fresh whisper-stt, azure-tts (Piper) and local LLM processes on free loopback ports;
2. stack turns: every utterance through `run_talk_turn` (a real AgentSession), then one turn
   through the browser playground when a Chromium is installed (`browser_turn.py`);
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
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import chart
from .. import report as rep
from ..baselines import EngineConfig, engine_config, models_info
from ..corpus import REPLY_SENTENCES, SAMPLE_RATE, Utterance, build_corpus, select, synthesis_settings
from ..quality import wer

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
    agent_sessions: list[int] | None = None
    """Levels of whole AgentSessions at once (None: 1, 2 and 4; quick: none)."""
    agent_session_turns: int = 4
    soak_minutes: float = 0.0
    """The session soak (session_soak.py): whole AgentSessions taking turns for this long; 0: none."""
    soak_sessions: int | None = None
    """Sessions in the session soak (None: the capacity the agent-sessions phase found, at least 1)."""

    @property
    def agent_levels(self) -> list[int]:
        if self.agent_sessions is not None:
            return sorted(set(self.agent_sessions))
        return [] if self.quick else [1, 2, 4]

    @property
    def levels(self) -> list[int]:
        if self.sessions:
            return sorted(set(self.sessions))
        return [1] if self.quick else [1, 4, 10]


@contextlib.contextmanager
def _services(log_dir: Path, console: Console) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    """Fresh processes of the three services on free ports: {name: url}, {name: pid}, by bench.json name."""
    from eloquence.services import AZURE_TTS, LOCAL_LLM, WHISPER_STT, running_services

    names = {"whisper-stt": WHISPER_STT, "azure-tts": AZURE_TTS, "llm": LOCAL_LLM}
    # Piper, the embedded default (no cloud here). The TTS cache is off: the bench repeats its
    # questions and the LLM then repeats its replies, which would time cache hits, not synthesis.
    env = {"TTS_ENGINE": "piper", "TTS_CACHE_BYTES": "0"}
    with contextlib.ExitStack() as stack:
        with console.status("starting whisper-stt, azure-tts (Piper) and the local LLM..."):
            procs = stack.enter_context(running_services(list(names.values()), log_dir, env=env))
        running = dict(zip(names, procs, strict=True))
        yield (
            {name: p.url for name, p in running.items()},
            {name: p.process.pid for name, p in running.items() if p.process is not None},
        )


class Bench:
    def __init__(self, *, options: BenchOptions, console: Console) -> None:
        self.opts = options
        self.console = console
        self.result: dict[str, Any] = {}
        self.failures: list[str] = []
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )

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
        from .stack_turns import local_stack_settings, quality_summary, run_stack_turns

        settings = local_stack_settings(stt=urls["whisper-stt"], tts=urls["azure-tts"], llm=urls["llm"])
        task = self.progress.add_task("stack turns (AgentSession)", total=len(utterances))
        turns = await run_stack_turns(
            utterances, settings=settings, warmup=warmup, on_turn=lambda _: self.progress.advance(task)
        )
        self.result["turns"] = turns
        self.result["stages"] = rep.stage_stats([t for t in turns if not t.get("error")], rep.STACK_STAGES)
        self.result["timeline"] = rep.timeline_stats([t for t in turns if not t.get("error")])
        self.result["quality"] = quality_summary(turns)

    async def french_phase(self, urls: dict[str, str]) -> None:
        """French turns (Whisper base, espeak-ng, the French persona): bench.json `french`."""
        from ..corpus import build_french_corpus
        from .stack_turns import local_stack_settings, quality_summary, run_stack_turns

        corpus = await asyncio.to_thread(build_french_corpus, self.opts.work_dir)
        if not corpus:
            self.result["french"] = {"status": "skipped", "reason": "espeak-ng is not installed"}
            return
        warmup, utterances = corpus[0], corpus[1:2] if self.opts.quick else corpus[1:]
        settings = local_stack_settings(stt=urls["whisper-stt"], tts=urls["azure-tts"], llm=urls["llm"])
        task = self.progress.add_task("French turns (AgentSession)", total=len(utterances))
        turns = await run_stack_turns(
            utterances,
            settings=settings,
            warmup=warmup,
            language="fr",
            on_turn=lambda _: self.progress.advance(task),
        )
        ok = [t for t in turns if not t.get("error")]
        self.result["french"] = {
            "utterances": [u.describe() for u in utterances],
            "turns": turns,
            "stages": rep.stage_stats(ok, rep.STACK_STAGES),
            "quality": quality_summary(turns),
        }

    async def browser_phase(self, utterance: Utterance, urls: dict[str, str], log_dir: Path) -> None:
        """One turn through the playground page in headless Chromium (`browser_turn.py`), when present."""
        from eloquence.stages import BROWSER_E2E

        from .browser_turn import browser_turn

        self.result["browser"] = {"status": "failed"}  # replaced unless the phase raises
        record = await browser_turn(
            utterance, urls=urls, out_dir=self.opts.out, work_dir=self.opts.work_dir, log_dir=log_dir
        )
        self.result["browser"] = record
        if record.get("e2e_ms") is not None:
            self.result.setdefault("stages", {})[BROWSER_E2E.key] = rep.summarize([record["e2e_ms"]])

    async def concurrency_phase(
        self, questions: list[Utterance], urls: dict[str, str], pids: dict[str, int], llm: Any
    ) -> None:
        from .concurrency import run_level, soak_summary
        from .sidecar_loop import loop_timeline

        out: dict[str, Any] = {}
        for level in self.opts.levels:
            per_session = len(questions) if level == 1 else max(3, len(questions) // level)
            task = self.progress.add_task(f"sidecar loop, {level} session(s)", total=level * per_session)
            result = await run_level(
                sessions=level,
                turns_per_session=per_session,
                utterances=questions,
                urls=urls,
                llm=llm,
                pids=pids,
                endpoint_silence_ms=self.opts.endpoint_silence_ms,
                on_turn=lambda _, t=task: self.progress.advance(t),
            )
            out[str(level)] = result.describe()
        self.result["concurrency"] = {
            k: {kk: vv for kk, vv in v.items() if kk != "turn_samples"} for k, v in out.items()
        }
        if "1" in out:
            one = out["1"]
            self.result["sidecar_loop"] = {
                "stages": one["stages"],
                "turns": [{**t, "timeline": loop_timeline(t["stages"])} for t in one["turn_samples"]],
            }
        for k, v in out.items():
            detail = v["turn_samples"] if k != "1" else "see sidecar_loop.turns"
            self.result["concurrency"][k]["turns_detail"] = detail
        if self.opts.soak:
            level = max(self.opts.levels)
            task = self.progress.add_task(
                f"soak, {level} session(s) × {self.opts.soak} turns", total=level * self.opts.soak
            )
            soak = await run_level(
                sessions=level,
                turns_per_session=self.opts.soak,
                utterances=questions,
                urls=urls,
                llm=llm,
                pids=pids,
                endpoint_silence_ms=self.opts.endpoint_silence_ms,
                on_turn=lambda _: self.progress.advance(task),
                track_rss=True,
            )
            self.result["soak"] = soak_summary(soak, self.opts.soak)

    async def agent_sessions_phase(
        self, utterances: list[Utterance], urls: dict[str, str], log_dir: Path
    ) -> None:
        from .agent_sessions import capacity, run_agent_sessions

        ids = [u.id for u in utterances if u.kind == "question"]
        out: dict[str, Any] = {}
        for level in self.opts.agent_levels:
            task = self.progress.add_task(f"{level} whole AgentSession(s) at once", total=1)
            out[str(level)] = await run_agent_sessions(
                sessions=level,
                turns_per_session=self.opts.agent_session_turns,
                utterance_ids=ids,
                urls=urls,
                work_dir=self.opts.work_dir,
                log_dir=log_dir,
            )
            self.progress.advance(task)
        self.result["agent_sessions"] = {
            "levels": out,
            "capacity_sessions": capacity(out),
            "what": "whole AgentSessions (one process each), talk turns paced in real time; capacity: "
            "the most sessions at once with e2e p95 <= 1500 ms and no error",
        }

    async def session_soak_phase(
        self, utterances: list[Utterance], urls: dict[str, str], pids: dict[str, int], log_dir: Path
    ) -> None:
        from .session_soak import run_session_soak

        found = (self.result.get("agent_sessions") or {}).get("capacity_sessions") or 1
        sessions = self.opts.soak_sessions or found
        label = f"session soak, {sessions} session(s) × {self.opts.soak_minutes:g} min"
        task = self.progress.add_task(label, total=1)
        self.result["session_soak"] = await run_session_soak(
            sessions=sessions,
            minutes=self.opts.soak_minutes,
            utterance_ids=[u.id for u in utterances if u.kind == "question"],
            urls=urls,
            pids=pids,
            work_dir=self.opts.work_dir,
            log_dir=log_dir,
        )
        self.progress.advance(task)

    async def raw_phase(
        self,
        questions: list[Utterance],
        texts: list[str],
        config: EngineConfig,
        llm: Any,
        whole_files: Sequence[Utterance] = (),
    ) -> None:
        import numpy as np

        from ..baselines import RawPiper, RawWhisper
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
            wers.append(wer(u.text, text))
            self.progress.advance(task)
        # one pass over each whole paused file (pause included) and its unpaused twin: the WER the
        # pipeline's paused turns are held to
        one_pass: dict[str, list[tuple[str, str]]] = {"paused": [], "unpaused": []}
        for u in whole_files:
            text, _ = await whisper.transcribe(np.concatenate([u.samples, tail]))
            one_pass[u.kind].append((u.text, text))
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
            "stt_transcribe": {
                **rep.summarize(stt),
                "samples_ms": rep.rounded(stt),
                "wer_mean": rep.mean(wers),
                "what": "faster-whisper transcribe() of the utterance + endpoint silence",
            },
            "llm_ttft": {
                **rep.summarize(ttft),
                "samples_ms": rep.rounded(ttft),
                "what": "mistralai SDK stream, same server",
            },
            "llm_first_sentence": {
                **rep.summarize(sentence),
                "samples_ms": rep.rounded(sentence),
                "what": "mistralai SDK stream, first complete sentence",
            },
            "tts_first_audio": {
                **rep.summarize(tts),
                "samples_ms": rep.rounded(tts),
                "what": "PiperVoice.synthesize() to its first chunk",
            },
        }
        self.result.setdefault("baselines", {})["raw"] = raw
        split = self.result.get("quality", {}).get("paused_vs_unpaused")
        for kind, pairs in one_pass.items():
            if split is not None and pairs:
                refs, hyps = zip(*pairs, strict=True)
                split[kind]["raw_one_pass_wer"] = wer(" ".join(refs), " ".join(hyps))

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
            "tts_first_audio": {
                **rep.summarize(samples),
                "samples_ms": rep.rounded(samples),
                "what": "WS /v1/stream: config + text + flush → first audible PCM frame",
            }
        }

    async def peers_phase(
        self,
        questions: list[Utterance],
        texts: list[str],
        warmup: Utterance,
        config: EngineConfig,
        urls: dict[str, str],
        log_dir: Path,
    ) -> None:
        from ..peers.phase import run_peers

        self.result["peers"] = {}  # present even when the phase fails
        self.result["peers"] = await run_peers(
            questions=questions,
            texts=texts,
            warmup=warmup,
            config=config,
            urls=urls,
            work_dir=self.opts.work_dir,
            log_dir=log_dir,
            endpoint_silence_ms=self.opts.endpoint_silence_ms,
            progress=self.progress,
            console=self.console,
        )

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
        self.result["settings"] = {
            "engines": config.describe(),
            "endpoint_silence_ms": opts.endpoint_silence_ms,
            "levels": opts.levels,
            "soak_turns_per_session": opts.soak,
        }
        self.result["corpus"] = {
            "synthesis": synthesis_settings(),
            "utterances": [u.describe() for u in stack_utts],
            "tts_texts": texts,
        }
        self.result["pacing"] = {
            "real_time": True,
            "how": "frames are released only once their audio has elapsed; every paced stream is asserted "
            "(a frame early by more than 1 ms fails the run); stack turns: the talk harness paces, and "
            "the bench asserts no turn returned before its audio could have been delivered",
        }
        from ..baselines import RawMistral

        with _services(log_dir, self.console) as (urls, pids), self.progress:
            llm = RawMistral(server_url=urls["llm"], model=config.llm_model, max_tokens=config.llm_max_tokens)
            self.result["services"] = {
                name: {"url": url, "pid": pids.get(name)} for name, url in urls.items()
            }
            await self._phase("stack turns", self.stack_phase(stack_utts, warmup, urls))
            await self._phase("French turns", self.french_phase(urls))
            await self._phase("browser turn", self.browser_phase(questions[0], urls, log_dir))
            if opts.agent_levels:
                await self._phase("agent sessions", self.agent_sessions_phase(stack_utts, urls, log_dir))
            if opts.soak_minutes > 0:
                await self._phase("session soak", self.session_soak_phase(stack_utts, urls, pids, log_dir))
            await self._phase("concurrency", self.concurrency_phase(questions, urls, pids, llm))
            whole = [u for u in stack_utts if u.kind in ("paused", "unpaused")]
            await self._phase("raw engines", self.raw_phase(questions, texts, config, llm, whole))
            await self._phase("tts sidecar", self.tts_sidecar_phase(texts, urls))
            if opts.peers:
                await self._phase("peers", self.peers_phase(questions, texts, warmup, config, urls, log_dir))
            else:
                from ..peers.phase import PEERS

                reason = (
                    "not run: --no-peers or ELOQUENCE_BENCH_PEERS=0"
                    if not opts.quick
                    else "skipped in quick mode (run without --quick, or set ELOQUENCE_BENCH_PEERS=1)"
                )
                self.result["peers"] = {name: {"status": "skipped", "reason": reason} for name in PEERS}
        rep.add_comparisons(self.result)
        self.result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        self.result["duration_s"] = round(time.perf_counter() - started, 1)
        self.result["failures"] = self.failures
        return self.result


async def run_bench(
    options: BenchOptions, console: Console | None = None
) -> tuple[dict[str, Any], dict[str, Path]]:
    console = console or Console(stderr=True)
    bench = Bench(options=options, console=console)
    result = await bench.run()
    options.out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": rep.write_json(result, options.out),
        "md": rep.write_markdown(result, options.out),
        "png": chart.write_chart(result, options.out),
    }
    return result, paths
