"""One spoken turn through the playground page, in headless Chromium (tests and `eloquence bench`).

Chromium's fake microphone plays a WAV file (`--use-file-for-fake-audio-capture`, once); the page
connects as a person's would, and this module reads what the page shows and measured: the final
transcript, the replies, the stage timings and the browser's own end-to-end latency (the last
voiced microphone sample → the first voiced reply sample reaching the page's audio graph).

Needs Playwright for Python and a Chromium on this machine (Debian: `apt-get install chromium`);
no browser is downloaded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf

from ..wav_io import read_wav

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_RATE = 16000


class BrowserUnavailableError(RuntimeError):
    """No Chromium or no Playwright here; the message says what to install."""


class BrowserTurnError(RuntimeError):
    """The page did not complete the turn; the message says what it showed."""


@dataclass
class BrowserTurn:
    transcript: str
    """The final transcript the page shows for the spoken turn."""
    replies: list[str]
    """Every reply text the page shows (the greeting first)."""
    reply: str
    """The reply to the spoken turn."""
    e2e_ms: float | None
    """Browser-measured: end of the user's speech → the reply's first voiced sample at the page."""
    metrics: dict[str, Any]
    """The `metrics` message of the spoken turn, as the page received it."""
    reply_onsets: int
    """How many times agent audio began after silence (the greeting, the reply...)."""
    mode: str
    requested_hosts: list[str] = field(default_factory=list)
    """Every host the page sent a request to (HTTP, WebSocket)."""
    errors: list[str] = field(default_factory=list)
    """What the page's alert showed, if anything."""
    console_errors: list[str] = field(default_factory=list)
    screenshot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_chromium() -> str | None:
    """A Chromium executable on PATH (CHROMIUM_PATH wins), or None."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return None


def fake_microphone_wav(
    audio: str | Path | np.ndarray, path: Path, *, lead_s: float, tail_s: float = 3.0
) -> Path:
    """`audio` (a WAV or 16 kHz float samples) between silences, written as 16-bit PCM for Chromium.

    The fake microphone starts playing when the page opens it; `lead_s` of silence lets the
    greeting end before the user speaks.
    """
    samples = read_wav(audio) if isinstance(audio, str | Path) else np.asarray(audio, dtype=np.float32)
    padded = np.concatenate(
        [np.zeros(int(lead_s * _RATE), np.float32), samples, np.zeros(int(tail_s * _RATE), np.float32)]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), padded, _RATE, subtype="PCM_16", format="WAV")
    return path


def chromium_args(fake_mic: Path) -> list[str]:
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_mic}%noloop",
        "--autoplay-policy=no-user-gesture-required",
        # a host with only `lo` (a CI container) has no other ICE candidate
        "--allow-loopback-in-peer-connection",
        *(["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
    ]


async def run_browser_turn(
    url: str,
    *,
    audio: str | Path | np.ndarray,
    work_dir: Path,
    exercise: str | None = None,
    language: str | None = None,
    lead_s: float = 8.0,
    screenshot: Path | None = None,
    timeout_s: float = 240.0,
    chromium: str | None = None,
) -> BrowserTurn:
    """Open the playground at `url`, press Start, speak `audio` once, and read the turn back."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        raise BrowserUnavailableError("Playwright is not installed: pip install playwright") from None
    executable = chromium or find_chromium()
    if executable is None:
        raise BrowserUnavailableError("no Chromium found: apt-get install chromium (or set CHROMIUM_PATH)")

    fake_mic = fake_microphone_wav(audio, work_dir / "fake-mic.wav", lead_s=lead_s)
    hosts: set[str] = set()
    console_errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=chromium_args(fake_mic)
        )
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 900})
            page = await context.new_page()
            page.on("request", lambda r: hosts.add(urlsplit(r.url).hostname or r.url))
            page.on("websocket", lambda ws: hosts.add(urlsplit(ws.url).hostname or ws.url))
            page.on(
                "console", lambda m: console_errors.append(m.text) if m.type == "error" else None
            )
            await page.goto(url)
            start = page.get_by_role("button", name="Start talking")
            await start.wait_for(state="visible", timeout=30_000)
            await page.wait_for_function(
                "() => window.eloquencePlayground && window.eloquencePlayground.config !== null"
                " || !document.getElementById('alert').hidden",
                timeout=30_000,
            )
            if exercise:
                await page.select_option("#exercise", exercise)
            if language:
                await page.select_option("#language", language)
            await start.click()
            await _wait_for_turn(page, timeout_s)
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(screenshot), full_page=True)
            state = await page.evaluate(_READ_STATE)
            await page.get_by_role("button", name="Stop").click()
            await page.wait_for_function(
                "() => window.eloquencePlayground.phase === 'idle'", timeout=15_000
            )
        finally:
            await browser.close()

    spoken = [t for t in state["turns"] if t["user"]]
    turn = spoken[-1] if spoken else {}
    return BrowserTurn(
        transcript=turn.get("user") or "",
        replies=[t["reply"] for t in state["turns"] if t["reply"]],
        reply=turn.get("reply") or "",
        e2e_ms=turn.get("e2eMs"),
        metrics=turn.get("metrics") or {},
        reply_onsets=state["replyOnsets"],
        mode=state["mode"],
        requested_hosts=sorted(hosts),
        errors=state["errors"],
        console_errors=console_errors,
        screenshot=str(screenshot) if screenshot is not None else None,
    )


_READ_STATE = """() => {
  const s = window.eloquencePlayground;
  return {
    mode: s.mode,
    phase: s.phase,
    errors: s.errors,
    replyOnsets: s.replyOnsets.length,
    turns: s.turns.map((t) => ({user: t.user, reply: t.reply, metrics: t.metrics, e2eMs: t.e2eMs})),
  };
}"""

_TURN_DONE = """() => {
  const s = window.eloquencePlayground;
  if (!s) return false;
  if (s.phase === 'failed') return 'failed';
  return s.turns.some((t) => t.user && t.reply !== null && t.metrics !== null && t.e2eMs !== null);
}"""


async def _wait_for_turn(page: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = await page.evaluate(_TURN_DONE)
        if done == "failed":
            alert = await page.text_content("#alert-text")
            raise BrowserTurnError(f"the page failed: {alert}")
        if done:
            return
        await asyncio.sleep(0.25)
    state = await page.evaluate(_READ_STATE)
    raise BrowserTurnError(f"no complete turn after {timeout_s:.0f} s; the page had {state}")
