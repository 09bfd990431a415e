"""The peers' phase of a bench run: each peer on the bench's inputs, with its reason when it cannot run."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from .. import report as rep
from ..baselines import EngineConfig
from ..corpus import Utterance
from ..quality import wer

PEERS = ("wyoming-faster-whisper", "wyoming-piper", "pipecat-ai")


async def run_peers(
    *,
    questions: list[Utterance],
    texts: list[str],
    warmup: Utterance,
    config: EngineConfig,
    urls: dict[str, str],
    work_dir: Path,
    log_dir: Path,
    endpoint_silence_ms: int,
    progress: Progress,
    console: Console,
) -> dict[str, Any]:
    """bench.json `peers`: one entry per peer, `status` ok, or unavailable with the `reason`."""
    from .venv import PeerUnavailable, ensure_peers_venv

    peers: dict[str, Any] = {}
    try:
        venv = await asyncio.to_thread(ensure_peers_venv, work_dir / "peers-venv", log=console.print)
    except PeerUnavailable as e:
        return {name: {"status": "unavailable", "reason": str(e)} for name in PEERS}
    data_dir = Path(tempfile.mkdtemp(prefix="peers-", dir=work_dir))
    run = _PeerRun(
        venv=venv,
        data_dir=data_dir,
        config=config,
        log_dir=log_dir,
        endpoint_silence_ms=endpoint_silence_ms,
        progress=progress,
        console=console,
    )
    try:
        peers["wyoming-faster-whisper"] = await run.wyoming_whisper(questions, warmup)
        peers["wyoming-piper"] = await run.wyoming_piper(texts)
        peers["pipecat-ai"] = await run.pipecat(questions, warmup, urls["llm"])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return peers


class _PeerRun:
    def __init__(
        self,
        *,
        venv: Any,
        data_dir: Path,
        config: EngineConfig,
        log_dir: Path,
        endpoint_silence_ms: int,
        progress: Progress,
        console: Console,
    ) -> None:
        self.venv, self.data_dir, self.config, self.log_dir = venv, data_dir, config, log_dir
        self.endpoint_silence_ms = endpoint_silence_ms
        self.progress, self.console = progress, console

    async def wyoming_whisper(self, questions: list[Utterance], warmup: Utterance) -> dict[str, Any]:
        """Same model, compute type, beam size and threads as our sidecar."""
        from eloquence.services import free_port

        from .wyoming import wyoming_stt_turn, wyoming_whisper_server

        config = self.config
        server = wyoming_whisper_server(
            self.venv,
            port=free_port(),
            model_dir=config.stt_model_path,
            compute_type=config.stt_compute_type,
            beam_size=config.stt_beam_size,
            threads=config.stt_threads,
            data_dir=self.data_dir,
            log_dir=self.log_dir,
        )
        info: dict[str, Any] = {
            "version": self.venv.versions.get("wyoming-faster-whisper"),
            "settings": {
                "compute_type": config.stt_compute_type,
                "beam_size": config.stt_beam_size,
                "cpu_threads": config.stt_threads,
                "endpoint": "audio-stop at the bench endpoint",
            },
        }
        try:
            server.start()
            await server.wait_ready()
            task = self.progress.add_task("peer: wyoming-faster-whisper", total=len(questions))
            await wyoming_stt_turn(server.port, warmup, endpoint_silence_ms=self.endpoint_silence_ms)
            turns = []
            for u in questions:
                try:
                    turn = await wyoming_stt_turn(
                        server.port, u, endpoint_silence_ms=self.endpoint_silence_ms
                    )
                    turn["wer"] = wer(u.text, turn["transcript"])
                except Exception as e:  # noqa: BLE001 - a failed turn is counted, as ours are
                    turn = {"utterance_id": u.id, "error": f"{type(e).__name__}: {e}"[:300], "stages": {}}
                turns.append(turn)
                self.progress.advance(task)
            ok = [t for t in turns if not t.get("error")]
            info.update(
                status="ok" if ok else "failed",
                turns=turns,
                errors=len(turns) - len(ok),
                **peer_stats(ok, ("stt_final", "stt_flush_to_final")),
            )
        except Exception as e:  # noqa: BLE001 - the reason goes into bench.json; the other peers still run
            info.update(status="unavailable", reason=f"{type(e).__name__}: {e}")
        finally:
            server.stop()
        return info

    async def wyoming_piper(self, texts: list[str]) -> dict[str, Any]:
        """The same voice file and texts; it sets its own onnxruntime threads."""
        from eloquence.services import free_port

        from .wyoming import wyoming_piper_server, wyoming_tts_first_audio

        voice_path = Path(self.config.tts_voice_path)
        server = wyoming_piper_server(
            self.venv,
            port=free_port(),
            voice_dir=str(voice_path.parent),
            voice=voice_path.stem,
            data_dir=self.data_dir,
            log_dir=self.log_dir,
        )
        info: dict[str, Any] = {
            "version": self.venv.versions.get("wyoming-piper"),
            "settings": {"voice": voice_path.stem, "threads": "onnxruntime default (not settable)"},
        }
        try:
            server.start()
            await server.wait_ready()
            task = self.progress.add_task("peer: wyoming-piper", total=len(texts))
            await wyoming_tts_first_audio(server.port, "Warming up.", voice_path.stem)
            samples = []
            for text in texts:
                samples.append(await wyoming_tts_first_audio(server.port, text, voice_path.stem))
                self.progress.advance(task)
            info.update(
                status="ok",
                stages={"tts_first_audio": rep.summarize(samples)},
                samples_ms={"tts_first_audio": rep.rounded(samples)},
            )
        except Exception as e:  # noqa: BLE001 - the reason goes into bench.json; the other peers still run
            info.update(status="unavailable", reason=f"{type(e).__name__}: {e}")
        finally:
            server.stop()
        return info

    async def pipecat(self, questions: list[Utterance], warmup: Utterance, llm_url: str) -> dict[str, Any]:
        """The whole loop, headless, on our LLM server, the same STT model and voice."""
        from .pipecat_peer import pipecat_job, run_pipecat_loop

        config = self.config
        info: dict[str, Any] = {
            "version": self.venv.versions.get("pipecat-ai"),
            "settings": {
                "vad": "Silero (pipecat default params)",
                "turn": "Smart Turn v3 (pipecat default)",
                "stt": f"WhisperSTTService, compute {config.stt_compute_type}, beam and threads default",
                "llm": "OpenAILLMService → our local LLM server",
                "tts": "PiperTTSService, same voice",
            },
        }
        try:
            job = pipecat_job(
                config=config,
                llm_url=llm_url,
                warmup=warmup,
                questions=questions,
                wav_dir=self.data_dir / "wavs",
            )
            with self.console.status(f"peer: pipecat-ai pipeline, {len(questions)} turns"):
                turns = await run_pipecat_loop(
                    self.venv,
                    job,
                    self.data_dir / "pipecat",
                    log_dir=self.log_dir,
                    timeout_s=120 + 60 * (len(questions) + 1),
                )
            for t in turns:
                t["wer"] = wer(
                    next(u.text for u in questions if u.id == t["utterance_id"]), t.get("transcript", "")
                )
            ok = [t for t in turns if not t.get("error")]
            info.update(
                status="ok" if ok else "unavailable",
                turns=turns,
                errors=len(turns) - len(ok),
                **peer_stats(ok, ("stt_final", "llm_ttft", "e2e")),
            )
            if not ok:
                info["reason"] = (
                    "no turn completed: " + "; ".join(sorted({str(t.get("error")) for t in turns}))[:300]
                )
        except Exception as e:  # noqa: BLE001 - the reason goes into bench.json
            info.update(status="unavailable", reason=f"{type(e).__name__}: {e}")
        return info


def peer_stats(turns: list[dict[str, Any]], stages: tuple[str, ...]) -> dict[str, Any]:
    return {
        "stages": rep.stage_stats(turns, stages),
        "samples_ms": {
            s: rep.rounded([t["stages"][s] for t in turns if s in t.get("stages", {})]) for s in stages
        },
        "wer_mean": rep.mean(t["wer"] for t in turns if "wer" in t),
    }
