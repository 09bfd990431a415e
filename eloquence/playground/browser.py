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
import base64
import contextlib
import io
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf

from ..wav_io import read_wav

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_RATE = 16000
_MIC_PEAK_DBFS = -6.0


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
    turns: list[dict[str, Any]] = field(default_factory=list)
    """Every turn the page shows: {user, reply, metrics, e2eMs}."""
    receive_stats: dict[str, Any] | None = None
    """The browser's view of the coach's audio (local mode): jitterBufferMs, packetsLost, jitterMs."""
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
    audio: str | Path | np.ndarray,
    path: Path,
    *,
    lead_s: float,
    tail_s: float = 3.0,
    peak_dbfs: float = _MIC_PEAK_DBFS,
) -> Path:
    """`audio` (a WAV or 16 kHz float samples) between silences, written as 16-bit PCM for Chromium.

    The fake microphone starts playing when the page opens it; `lead_s` of silence lets the
    greeting end before the user speaks. The speech is brought to `peak_dbfs`, a level a real
    microphone gives: a file peaking at full scale is clipped by the browser's gain control.
    """
    samples = read_wav(audio) if isinstance(audio, str | Path) else np.asarray(audio, dtype=np.float32)
    samples = _at_level(samples, peak_dbfs)
    padded = np.concatenate(
        [np.zeros(int(lead_s * _RATE), np.float32), samples, np.zeros(int(tail_s * _RATE), np.float32)]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), padded, _RATE, subtype="PCM_16", format="WAV")
    return path


def _at_level(samples: np.ndarray, peak_dbfs: float) -> np.ndarray:
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return samples * (10 ** (peak_dbfs / 20) / peak) if peak > 0 else samples


_SCRIPTED_MIC = """(() => {
  // The page's microphone, played on cue by the test (PlaygroundPage.speak) instead of a file
  // that starts with the capture: a barge-in must land while the coach is speaking.
  navigator.mediaDevices.getUserMedia = async () => {
    const ctx = new AudioContext({ sampleRate: 48000 });
    const dest = ctx.createMediaStreamDestination();
    window.__eloquenceScriptedMic = {
      async speak(b64) {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const buffer = await ctx.decodeAudioData(bytes.buffer);
        const source = ctx.createBufferSource();
        source.buffer = buffer;
        source.connect(dest);
        source.start();
        return buffer.duration;
      },
    };
    return dest.stream;
  };
})();"""


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


class PlaygroundPage:
    """The playground open in headless Chromium, its fake microphone loaded with one WAV."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.hosts: set[str] = set()
        """Every host the page sent a request to (HTTP, WebSocket)."""
        self.console_errors: list[str] = []
        page.on("request", lambda r: _note_host(self.hosts, r.url))
        page.on("websocket", lambda ws: _note_host(self.hosts, ws.url))
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)

    async def start(self, *, exercise: str | None = None, language: str | None = None) -> None:
        """Wait for the page to be ready, pick the exercise and language, press Start."""
        start = self.page.get_by_role("button", name="Start talking")
        await start.wait_for(state="visible", timeout=30_000)
        await self.page.wait_for_function(
            "() => window.eloquencePlayground && window.eloquencePlayground.config !== null"
            " || !document.getElementById('alert').hidden",
            timeout=30_000,
        )
        if exercise:
            await self.page.select_option("#exercise", exercise)
        if language:
            await self.page.select_option("#language", language)
        await start.click()

    async def speak(self, audio: str | Path | np.ndarray) -> float:
        """Play `audio` into the scripted microphone now (see `open_playground(scripted_mic=True)`);
        returns its duration in seconds."""
        samples = read_wav(audio) if isinstance(audio, str | Path) else np.asarray(audio, dtype=np.float32)
        buf = io.BytesIO()
        sf.write(buf, _at_level(samples, _MIC_PEAK_DBFS), _RATE, subtype="PCM_16", format="WAV")
        encoded = base64.b64encode(buf.getvalue()).decode("ascii")
        return float(await self.page.evaluate("(b64) => window.__eloquenceScriptedMic.speak(b64)", encoded))

    async def state(self) -> dict[str, Any]:
        return dict(await self.page.evaluate(_READ_STATE))

    async def wait_until(self, predicate: str, *, timeout_s: float, what: str) -> None:
        """Poll `predicate` (a JS function of the page state `s`) until true; fail when the page does."""
        check = f"() => {{ const s = window.eloquencePlayground; return !!s && !!({predicate})(s); }}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.page.evaluate(check):
                return
            if await self.page.evaluate("() => window.eloquencePlayground.phase === 'failed'"):
                alert = await self.page.text_content("#alert-text")
                raise BrowserTurnError(f"the page failed while waiting for {what}: {alert}")
            await asyncio.sleep(0.25)
        raise BrowserTurnError(f"no {what} after {timeout_s:.0f} s; the page had {await self.state()}")

    async def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def stop(self) -> None:
        await self.page.get_by_role("button", name="Stop").click()
        await self.page.wait_for_function("() => window.eloquencePlayground.phase === 'idle'", timeout=15_000)

    async def report(self, *, screenshot: Path | None = None) -> BrowserTurn:
        """The last spoken turn as the page shows it."""
        state = await self.state()
        receive_stats = await self.page.evaluate(
            "async () => { const s = window.eloquencePlayground;"
            " return s.rtcStats ? await s.rtcStats() : null; }"
        )
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
            turns=state["turns"],
            receive_stats=receive_stats,
            requested_hosts=sorted(self.hosts),
            errors=state["errors"],
            console_errors=list(self.console_errors),
            screenshot=str(screenshot) if screenshot is not None else None,
        )


@contextlib.asynccontextmanager
async def open_playground(
    url: str,
    *,
    audio: str | Path | np.ndarray,
    work_dir: Path,
    lead_s: float = 8.0,
    chromium: str | None = None,
    scripted_mic: bool = False,
) -> AsyncIterator[PlaygroundPage]:
    """The page at `url` in headless Chromium, whose microphone speaks `audio` once, after
    `lead_s` of silence counted from when the page opens the microphone.

    With `scripted_mic`, the microphone is silent until `PlaygroundPage.speak()` plays into it
    (`audio` is then unused): for exchanges whose timing depends on the coach's."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        raise BrowserUnavailableError("Playwright is not installed: pip install playwright") from None
    executable = chromium or find_chromium()
    if executable is None:
        raise BrowserUnavailableError("no Chromium found: apt-get install chromium (or set CHROMIUM_PATH)")
    fake_mic = fake_microphone_wav(audio, work_dir / "fake-mic.wav", lead_s=lead_s)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=chromium_args(fake_mic)
        )
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 900})
            if scripted_mic:
                await context.add_init_script(_SCRIPTED_MIC)
            page = PlaygroundPage(await context.new_page())
            await page.page.goto(url)
            yield page
        finally:
            await browser.close()


TURN_DONE = "(s) => s.turns.some((t) => t.user && t.reply !== null && t.metrics !== null && t.e2eMs !== null)"
"""A spoken turn, its reply, its metrics and the browser's own latency are all on the page."""


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
    async with open_playground(url, audio=audio, work_dir=work_dir, lead_s=lead_s, chromium=chromium) as page:
        await page.start(exercise=exercise, language=language)
        await page.wait_until(TURN_DONE, timeout_s=timeout_s, what="complete turn")
        if screenshot is not None:
            await page.screenshot(screenshot)
        report = await page.report(screenshot=screenshot)
        await page.stop()
    return report


def _note_host(hosts: set[str], url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ws", "wss"):  # data: and blob: URLs go nowhere
        hosts.add(parts.hostname or url)


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
