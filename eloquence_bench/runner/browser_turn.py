"""One turn through the browser playground, when a Chromium is installed: bench.json `browser`, and
its e2e as the stage `browser_e2e` (eloquence/stages.py `BROWSER_E2E`) beside the stack turns'.

The playground's session host and the API run as `eloquence up` runs them, on free loopback ports,
against the bench's own sidecars. Headless Chromium speaks one corpus question through its fake
microphone (eloquence/playground/browser.py); the e2e is the page's own clock, from the last voiced
microphone sample to the reply's first voiced sample at the page: what a person there waits.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
from pathlib import Path
from typing import Any

from ..corpus import Utterance
from ..quality import wer

TURN_TIMEOUT_S = 120.0
START_TIMEOUT_S = 120.0


def _environment(urls: dict[str, str], api_key: str) -> dict[str, str]:
    """The bench's sidecars and local LLM (no cloud, no fallback), and one API key for the page."""
    return {
        "WHISPER_STT_URL": urls["whisper-stt"],
        "AZURE_TTS_URL": urls["azure-tts"],
        "LOCAL_LLM_URL": urls["llm"],
        "MISTRAL_API_KEY": "",
        "MISTRAL_BASE_URL": "",
        "WHISPER_STT_FALLBACK_URL": "",
        "AZURE_TTS_FALLBACK_URL": "",
        "ELOQUENCE_API_AUTH": "keys",
        "ELOQUENCE_API_KEYS": api_key,
        "PLAYGROUND_MODE": "local",
    }


async def browser_turn(
    utterance: Utterance, *, urls: dict[str, str], out_dir: Path, work_dir: Path, log_dir: Path
) -> dict[str, Any]:
    """bench.json `browser`: `status` ok (with `e2e_ms`, the transcript, the reply and a screenshot)
    or skipped (with `reason`) when this machine has no Chromium or no Playwright."""
    from eloquence.playground.browser import find_chromium, run_browser_turn
    from eloquence.playground.web import playground_url
    from eloquence.services import API, PLAYGROUND, ServiceProcess, free_port, start_services

    chromium = find_chromium()
    if chromium is None:
        return {"status": "skipped", "reason": "no Chromium: apt-get install chromium (or set CHROMIUM_PATH)"}
    if importlib.util.find_spec("playwright") is None:
        return {"status": "skipped", "reason": "Playwright is not installed: pip install playwright"}
    api_key = "elq_bench_" + secrets.token_urlsafe(16)
    env = _environment(urls, api_key)
    host = ServiceProcess(
        definition=PLAYGROUND, port=free_port(), log_path=log_dir / "playground.log", env=env
    )
    api = ServiceProcess(
        definition=API,
        port=free_port(),
        log_path=log_dir / "playground-api.log",
        env={**env, "PLAYGROUND_URL": host.url},
    )
    await asyncio.to_thread(start_services, [host, api], timeout=START_TIMEOUT_S)
    try:
        turn = await run_browser_turn(
            playground_url(api.url, api_key),
            audio=utterance.samples,
            work_dir=work_dir / "browser",
            screenshot=out_dir / "browser-turn.png",
            timeout_s=TURN_TIMEOUT_S,
            chromium=chromium,
        )
    finally:
        for proc in (api, host):
            await asyncio.to_thread(proc.stop)
    return {
        "status": "ok",
        "utterance": utterance.id,
        "e2e_ms": round(turn.e2e_ms, 2) if turn.e2e_ms is not None else None,
        "transcript": turn.transcript,
        "wer": wer(utterance.text, turn.transcript),
        "reply": turn.reply,
        "metrics": turn.metrics,
        "mode": turn.mode,
        "screenshot": turn.screenshot,
        "errors": turn.errors,
        "what": "headless Chromium through the playground page (local WebRTC): last voiced microphone "
        "sample → the reply's first voiced sample at the page; `metrics` is the session's own message",
    }
