"""The browser playground in a real browser: headless Chromium (Debian's, driven by Playwright).

The full turn runs the real services as processes on free loopback ports: the sidecars, the
session host (`eloquence playground`) and the API serving the page. Chromium's fake microphone
speaks `samples/question.wav` once; the page's own DOM and measurements are checked. A screenshot
and the measured latencies are written to `test-artifacts/playground/` (ELOQUENCE_TEST_ARTIFACTS).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from livekit import api as lkapi

from eloquence.exercises import REGISTRY
from eloquence.playground.browser import (
    BrowserTurn,
    chromium_args,
    fake_microphone_wav,
    find_chromium,
    open_playground,
    run_browser_turn,
)
from eloquence.playground.web import STATIC_DIR, playground_url
from eloquence.services import (
    API,
    AZURE_TTS,
    LOCAL_LLM,
    PLAYGROUND,
    WHISPER_STT,
    ServiceDefinition,
    ServiceProcess,
    free_port,
    running_service,
)
from eloquence.settings import AppSettings
from eloquence.talk import run_talk_turn
from eloquence_bench.quality import wer
from eloquence_bench.speech import speak

REPO = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO / "tests"
QUESTION_WAV = REPO / "samples" / "question.wav"
QUESTION_TEXT = "How can I calm my nerves before a big presentation?"  # samples/README.md
APP_KEY = "playground-key-" + secrets.token_hex(12)
LOCAL_HOSTS: set[str | None] = {"127.0.0.1", "localhost", None}
"""None: a data: URL, which goes nowhere."""

LIVEKIT_KEY, LIVEKIT_SECRET = "pg-livekit-key", "pg-livekit-s3cr3t-0123456789abcdef"
FAKE_LIVEKIT = ServiceDefinition(
    name="fake-livekit-playground",
    console_script="",
    module_argv=("fakes.livekit_server", "--api-key", LIVEKIT_KEY, "--api-secret", LIVEKIT_SECRET),
    default_port=0,
    health_path="/",
)


def _artifacts() -> Path:
    path = Path(os.environ.get("ELOQUENCE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "playground"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.async_api", reason="pip install playwright")
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium here: apt-get install chromium")
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRAL_", "PLAYGROUND_", "ELOQUENCE_"))}
    return {**env, "MISTRAL_API_KEY": "", "MISTRAL_BASE_URL": "", "ELOQUENCE_API_KEYS": APP_KEY, **extra}


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {APP_KEY}"}


# --- the page, its signalling and its security (no sidecars) ---------------------------------


@pytest.fixture(scope="module")
def lone_api(service_log_dir: Path) -> Iterator[ServiceProcess]:
    """The API alone: the session host and every sidecar are down."""
    env = _clean_env(
        PLAYGROUND_URL=_dead_url(),
        PLAYGROUND_MODE="local",
        WHISPER_STT_URL=_dead_url(),
        AZURE_TTS_URL=_dead_url(),
        LOCAL_LLM_URL=_dead_url(),
    )
    with running_service(API, service_log_dir / "lone-api", env=env, timeout=60) as proc:
        yield proc


async def test_the_page_and_its_assets_are_served_from_the_api(lone_api: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lone_api.url}/playground") as resp:
            assert resp.status == 200  # the page holds no secret: it loads without the key
            page = await resp.text()
        assert re.search(r"<button[^>]*>\s*Start", page)
        for asset in ("playground.js", "playground.css", "level-worklet.js", "vendor/livekit-client.umd.js"):
            async with http.get(f"{lone_api.url}/playground/static/{asset}") as resp:
                assert resp.status == 200, asset
    # nothing of ours loads from elsewhere (the vendored library is checked against its record)
    for path in STATIC_DIR.glob("*.*"):
        assert not re.search(r"(src|href)\s*=\s*[\"']?https?://", path.read_text()), path.name
        assert "//cdn" not in path.read_text(), path.name


def test_the_vendored_livekit_client_matches_its_record() -> None:
    vendor = STATIC_DIR / "vendor"
    record = (vendor / "VENDOR.md").read_text()
    digest = hashlib.sha256((vendor / "livekit-client.umd.js").read_bytes()).hexdigest()
    assert f"`{digest}`" in record
    assert "| 2.23.0 |" in record and "Apache-2.0" in record
    assert "Apache License" in (vendor / "LICENSE-livekit-client").read_text()


async def test_signalling_needs_the_api_key(lone_api: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lone_api.url}/playground/api/config") as resp:
            assert resp.status == 401
            assert "?token=" in (await resp.json())["error"]["message"]
        async with http.post(
            f"{lone_api.url}/playground/api/offer", json={"sdp": "v=0", "type": "offer"}
        ) as resp:
            assert resp.status == 401
        async with http.get(f"{lone_api.url}/playground/api/config", headers=_headers()) as resp:
            assert resp.status == 200
            config = await resp.json()
    assert config["mode"] == "local"
    assert {e["name"] for e in config["exercises"]} == set(REGISTRY.names())
    assert {"field": "llm_ttft_ms", "label": "LLM: time to first token"} in config["stages"]
    assert playground_url(lone_api.url, APP_KEY) == f"{lone_api.url}/playground?token={APP_KEY}"
    assert playground_url(lone_api.url, None) == f"{lone_api.url}/playground"


async def test_an_offer_to_a_host_that_is_down_is_a_clear_error(lone_api: ServiceProcess) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{lone_api.url}/playground/api/offer", json={"sdp": "v=0", "type": "offer"}, headers=_headers()
        ) as resp,
    ):
        assert resp.status == 503
        error = (await resp.json())["error"]
    assert error["code"] == "agent_unreachable" and "eloquence up" in error["message"]


def _host(url: str) -> str | None:
    parts = urlsplit(url)
    return parts.hostname if parts.scheme in ("http", "https", "ws", "wss") else None


@contextlib.asynccontextmanager
async def _page(
    chromium: str, url: str, tmp_path: Path, *, fake_ui: bool = True
) -> AsyncIterator[tuple[Any, set[str | None]]]:
    """The page at `url` in headless Chromium, and the set of hosts it sends requests to."""
    from playwright.async_api import async_playwright

    args = chromium_args(fake_microphone_wav(QUESTION_WAV, tmp_path / "mic.wav", lead_s=1.0))
    if not fake_ui:  # no automatic "allow": headless Chromium refuses the microphone
        args = [a for a in args if a != "--use-fake-ui-for-media-stream"]
    hosts: set[str | None] = set()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            page = await browser.new_page()
            page.on("request", lambda r: hosts.add(_host(r.url)))
            page.on("websocket", lambda ws: hosts.add(_host(ws.url)))
            await page.goto(url)
            yield page, hosts
        finally:
            await browser.close()


async def test_the_page_says_when_the_coach_is_unreachable(
    chromium: str, lone_api: ServiceProcess, tmp_path: Path
) -> None:
    async with _page(chromium, f"{lone_api.url}/playground?token={APP_KEY}", tmp_path) as (page, hosts):
        services = page.locator("#services li.down")
        await services.first.wait_for(timeout=30_000)  # the status row shows what is down
        assert "whisper-stt: down" in await page.text_content("#services")
        await page.get_by_role("button", name="Start talking").click()
        alert = page.locator("#alert-text")
        await page.wait_for_function("() => window.eloquencePlayground.phase === 'failed'", timeout=30_000)
        assert "not running" in (await alert.text_content() or "")
        assert await page.get_by_role("button", name="Reconnect").is_visible()
        assert "token" not in page.url  # the key left the address bar
    assert hosts <= LOCAL_HOSTS, hosts


async def test_the_page_says_when_the_microphone_is_refused(
    chromium: str, lone_api: ServiceProcess, tmp_path: Path
) -> None:
    url = f"{lone_api.url}/playground?token={APP_KEY}"
    async with _page(chromium, url, tmp_path, fake_ui=False) as (page, _):
        await page.wait_for_function("() => window.eloquencePlayground.config !== null", timeout=30_000)
        await page.get_by_role("button", name="Start talking").click()
        await page.wait_for_function("() => window.eloquencePlayground.phase === 'failed'", timeout=30_000)
        assert "microphone was refused" in (await page.text_content("#alert-text") or "")


async def test_a_session_whose_services_are_down_tells_the_page_why(
    chromium: str, service_log_dir: Path, tmp_path: Path
) -> None:
    dead = {"WHISPER_STT_URL": _dead_url(), "AZURE_TTS_URL": _dead_url(), "LOCAL_LLM_URL": _dead_url()}
    with running_service(
        PLAYGROUND, service_log_dir / "dead-host", env=_clean_env(**dead), timeout=120
    ) as host:
        api_env = _clean_env(**dead, PLAYGROUND_URL=host.url)
        with running_service(API, service_log_dir / "dead-host-api", env=api_env, timeout=60) as api:
            async with open_playground(
                playground_url(api.url, APP_KEY), audio=QUESTION_WAV, work_dir=tmp_path, chromium=chromium
            ) as page:
                await page.start()
                # the greeting cannot be synthesized: the host says so on the data channel, then ends
                await page.page.get_by_role("button", name="Reconnect").wait_for(
                    state="visible", timeout=120_000
                )
                alert = await page.page.text_content("#alert-text") or ""
                chips = await page.page.text_content("#services") or ""
    # whichever fails first: the greeting's synthesis, or the microphone's recognition stream
    assert re.match(r"The coach stopped: speech \w+ \((azure-tts|whisper-stt)\) failed: ", alert), alert
    assert "azure-tts: down" in chips and "whisper-stt: down" in chips


def test_the_session_host_listens_on_loopback_unless_exposed() -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eloquence", "playground", "--port", str(free_port()), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**_clean_env(), "ELOQUENCE_API_KEYS": "", **env},
        )

    result = run("--host", "0.0.0.0")
    assert result.returncode == 2 and "--expose" in result.stderr
    result = run("--host", "0.0.0.0", "--expose")
    assert result.returncode == 2 and "ELOQUENCE_API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


# --- LiveKit mode, up to the server ------------------------------------------------------------


@pytest.fixture(scope="module")
def livekit_api(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(
        FAKE_LIVEKIT, service_log_dir, env={"PYTHONPATH": str(TESTS_DIR)}, timeout=60
    ) as livekit:
        env = _clean_env(
            LIVEKIT_URL=f"ws://127.0.0.1:{livekit.port}",
            LIVEKIT_INTERNAL_URL="",
            LIVEKIT_API_KEY=LIVEKIT_KEY,
            LIVEKIT_API_SECRET=LIVEKIT_SECRET,
            PLAYGROUND_URL=_dead_url(),  # auto mode: no session host, so the page uses LiveKit
        )
        with running_service(API, service_log_dir / "livekit-api", env=env, timeout=60) as api:
            yield api


async def test_livekit_mode_asks_the_api_for_a_room_and_joins_it(
    chromium: str, livekit_api: ServiceProcess, tmp_path: Path
) -> None:
    sockets: list[str] = []
    async with _page(chromium, f"{livekit_api.url}/playground?token={APP_KEY}", tmp_path) as (page, hosts):
        page.on("websocket", lambda ws: sockets.append(ws.url))
        await page.wait_for_function("() => window.eloquencePlayground.config !== null", timeout=30_000)
        assert await page.text_content("#mode") == "LiveKit room"
        await page.select_option("#exercise", "interview_prep")
        await page.select_option("#language", "fr")
        async with page.expect_response("**/api/livekit/token") as token_response:
            await page.get_by_role("button", name="Start talking").click()
        response = await token_response.value
        request_body = json.loads(response.request.post_data or "{}")
        grant = await response.json()
        assert response.request.headers["authorization"] == f"Bearer {APP_KEY}"
        # the fake server speaks no signalling: the page says it could not join, naming the URL
        await page.wait_for_function("() => window.eloquencePlayground.phase === 'failed'", timeout=60_000)
        alert = await page.text_content("#alert-text") or ""

    assert request_body["exercise_type"] == "interview_prep"
    assert request_body["config"] == {"language": "fr"}
    assert re.fullmatch(r"playground-[a-z0-9]+", request_body["user_id"])
    assert grant["room_name"].startswith("eloquence_interview_prep_")
    claims = lkapi.TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(grant["token"])
    assert claims.video is not None and claims.video.room == grant["room_name"]
    metadata = json.loads(claims.metadata)
    assert metadata["exercise_type"] == "interview_prep" and metadata["config"] == {"language": "fr"}
    # it went to the room's server with that token
    assert any(url.startswith(grant["livekit_url"]) and grant["token"] in url for url in sockets), sockets
    assert "Could not join the LiveKit room" in alert and grant["livekit_url"] in alert
    assert hosts <= LOCAL_HOSTS, hosts


# --- one spoken turn through the real stack ----------------------------------------------------


@pytest.fixture(scope="module")
def coach(service_log_dir: Path) -> Iterator[dict[str, str]]:
    """The sidecars, the session host and the API, as `eloquence up` runs them (2 shared cores)."""
    with (
        running_service(WHISPER_STT, service_log_dir, env={"WHISPER_CPU_THREADS": "2"}) as stt,
        running_service(AZURE_TTS, service_log_dir) as tts,
        running_service(LOCAL_LLM, service_log_dir) as llm,
    ):
        urls = {
            "WHISPER_STT_URL": stt.url,
            "AZURE_TTS_URL": tts.url,
            "LOCAL_LLM_URL": llm.url,
            "ELOQUENCE_LLM_MAX_TOKENS": "40",  # a short reply keeps the test quick
        }
        with running_service(PLAYGROUND, service_log_dir, env=_clean_env(**urls), timeout=120) as host:
            api_env = _clean_env(**urls, PLAYGROUND_URL=host.url)
            with running_service(API, service_log_dir / "coach-api", env=api_env, timeout=60) as api:
                yield {**urls, "api": api.url, "host": host.url, "host_log": str(host.log_path)}


@pytest.mark.slow
async def test_a_spoken_turn_in_the_browser(chromium: str, coach: dict[str, str], tmp_path: Path) -> None:
    artifacts = _artifacts()
    fields: dict[str, Any] = {k: v for k, v in coach.items() if k.isupper()}
    settings = AppSettings(**fields, MISTRAL_API_KEY=None, MISTRAL_BASE_URL=None)
    # `eloquence talk`'s harness on the same services, for comparison: once before (it also warms
    # the LLM server's prompt cache, which a first request pays for) and once after
    talk_before = await run_talk_turn(audio=QUESTION_WAV, settings=settings)
    turn: BrowserTurn = await run_browser_turn(
        playground_url(coach["api"], APP_KEY),
        audio=QUESTION_WAV,
        work_dir=tmp_path,
        screenshot=artifacts / "turn.png",
        chromium=chromium,
    )
    talk = await run_talk_turn(audio=QUESTION_WAV, settings=settings)
    report = {
        "browser": turn.to_dict(),
        "talk_before": talk_before.to_dict(),
        "talk_after": talk.to_dict(),
    }
    (artifacts / "turn.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(
        f"\nbrowser e2e {turn.e2e_ms} ms (server: {turn.metrics.get('e2e_ms')} ms); talk e2e "
        f"{talk_before.timings.e2e_ms} ms before, {talk.timings.e2e_ms} ms after; "
        f"screenshot {turn.screenshot}"
    )

    assert turn.mode == "local"
    assert wer(QUESTION_TEXT, turn.transcript) <= 0.2, turn.transcript
    assert turn.reply.strip() and len(turn.replies) >= 2  # the greeting, then the reply
    assert turn.e2e_ms is not None and turn.e2e_ms > 0  # the reply's audio reached the page
    assert {"stt_final_ms", "llm_ttft_ms", "tts_first_audio_ms"} <= set(turn.metrics)
    assert turn.errors == [] and turn.console_errors == [], (turn.errors, turn.console_errors)
    assert set(turn.requested_hosts) <= LOCAL_HOSTS, turn.requested_hosts
    assert Path(turn.screenshot or "").stat().st_size > 10_000
    # the session put its exercise's opening into the LLM's prompt cache while the greeting played
    assert "LLM prompt cache warmed: 1 openings" in Path(coach["host_log"]).read_text()


@pytest.mark.slow
async def test_speaking_over_the_coach_stops_it(chromium: str, coach: dict[str, str], tmp_path: Path) -> None:
    # the microphone speaks on cue: the second utterance must land while the reply is playing
    async with open_playground(
        playground_url(coach["api"], APP_KEY),
        audio=QUESTION_WAV,
        work_dir=tmp_path,
        chromium=chromium,
        scripted_mic=True,
    ) as page:
        await page.start()
        await page.wait_until("(s) => s.turns.some((t) => t.reply !== null)", timeout_s=120, what="greeting")
        await page.speak(QUESTION_WAV)
        heard = (await page.state())["replyOnsets"]
        await page.wait_until(f"(s) => s.replyOnsets.length > {heard}", timeout_s=240, what="reply audio")
        await page.speak(speak("Wait, stop, let me try again."))
        await page.wait_until(
            "(s) => s.turns.some((t) => t.metrics && t.metrics.interrupted)"
            " && s.turns.filter((t) => t.user).length >= 2",
            timeout_s=240,
            what="an interrupted reply and a second user turn",
        )
        await page.screenshot(_artifacts() / "barge-in.png")
        state = await page.state()
        assert await page.page.locator(".interrupted").count() >= 1  # the page says so

    interrupted = [t for t in state["turns"] if t["metrics"] and t["metrics"]["interrupted"]]
    assert interrupted and interrupted[0]["reply"], state["turns"]
    users = [t["user"] for t in state["turns"] if t["user"]]
    assert wer(QUESTION_TEXT, users[0]) <= 0.2, users
    # the words said over the coach are a new user turn (Whisper may end it at the comma after "Wait")
    later = " ".join(users[1:]).lower()
    assert any(word in later for word in ("wait", "stop", "try again")), users


@pytest.mark.slow
async def test_a_dropped_connection_offers_to_reconnect(
    chromium: str, coach: dict[str, str], service_log_dir: Path, tmp_path: Path
) -> None:
    urls = {k: v for k, v in coach.items() if k.endswith("_URL")}
    # a session host of its own: it is killed mid-session
    with running_service(
        PLAYGROUND, service_log_dir / "dropped", env=_clean_env(**urls), timeout=120
    ) as host:
        api_env = _clean_env(**urls, PLAYGROUND_URL=host.url)
        with running_service(API, service_log_dir / "dropped-api", env=api_env, timeout=60) as api:
            async with open_playground(
                playground_url(api.url, APP_KEY),
                audio=QUESTION_WAV,
                work_dir=tmp_path,
                chromium=chromium,
                scripted_mic=True,
            ) as page:
                await page.start()
                await page.wait_until("(s) => s.phase === 'live'", timeout_s=60, what="a connection")
                host.kill()
                await page.page.get_by_role("button", name="Reconnect").wait_for(
                    state="visible", timeout=90_000
                )
                alert = await page.page.text_content("#alert-text") or ""
                phase = (await page.state())["phase"]
    assert phase == "failed"
    assert "connection to the coach was lost" in alert or "ended the session" in alert, alert
