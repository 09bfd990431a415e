"""`eloquence up / status / down` as a user runs them: real CLI subprocesses, real services on loopback.

Each test gets its own state dir and free ports (`*_PORT`), and runs from a temp directory so no
stray `.env` applies. LIVEKIT_URL points at a closed port, so `up` skips the agent worker (and
still starts the browser playground's session host, which needs no LiveKit).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support.eloquence_cli import run_eloquence, stack_ports

from eloquence.keys import client_api_key
from eloquence.services import check_health, port_in_use
from eloquence.settings import AppSettings
from eloquence.stack import ServiceUnavailableError, ensure_services, group_members

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "question.wav"
SIDECARS = ("whisper-stt", "azure-tts", "local-llm")
UP_TIMEOUT_S = 240

pytestmark = pytest.mark.slow


def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRAL_", "AZURE_SPEECH_"))}
    env.update(
        {
            "ELOQUENCE_STATE_DIR": str(tmp_path / "state"),
            **stack_ports(),
            "COLUMNS": "250",  # rich tables on one line each
            "LLM_THREADS": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def read_state(env: dict[str, str]) -> dict[str, Any]:
    return json.loads((Path(env["ELOQUENCE_STATE_DIR"]) / "stack.json").read_text())


def status_rows(stdout: str) -> dict[str, str]:
    """service → state cell of `eloquence status`'s table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1] in (*SIDECARS, "playground", "api", "agent"):
            rows[cells[1]] = cells[2]
    return rows


def assert_playground_url(stdout: str, env: dict[str, str]) -> None:
    """`up` printed the page's URL on a line of its own, with the API key; it serves the page,
    the key it carries opens the page's API, and no log holds the key."""
    urls = re.findall(r"^(http://\S+/playground\S*)$", stdout, flags=re.MULTILINE)
    assert len(urls) == 1, stdout
    url = urls[0]
    assert url.startswith(f"http://127.0.0.1:{env['API_PORT']}/playground?token="), url
    key = url.partition("?token=")[2]
    assert key == client_api_key(AppSettings(ELOQUENCE_STATE_DIR=env["ELOQUENCE_STATE_DIR"]), environ=env)
    with urllib.request.urlopen(url, timeout=10) as resp:
        page = resp.read().decode()
    assert resp.status == 200
    assert re.search(r"<button\b[^>]*>[^<]*Start", page), page[:500]
    config = urllib.request.Request(
        f"http://127.0.0.1:{env['API_PORT']}/playground/api/config",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(config, timeout=10) as resp:
        assert json.loads(resp.read())["mode"] == "local"  # the session host answers
    logs = Path(env["ELOQUENCE_STATE_DIR"]) / "logs"
    api_log = (logs / "api.log").read_text(errors="replace")
    assert "GET /playground?token=<redacted>" in api_log  # the access log saw the request...
    assert not [p.name for p in logs.glob("*.log") if key in p.read_text(errors="replace")]  # ...not the key


def recorded_groups(env: dict[str, str]) -> list[int]:
    state_file = Path(env["ELOQUENCE_STATE_DIR"]) / "stack.json"
    if not state_file.exists():
        return []
    return [
        int(rec["pid"]) for rec in json.loads(state_file.read_text())["services"].values() if rec.get("pid")
    ]


def assert_no_process_left(groups: list[int], ports: list[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
        any(group_members(g) for g in groups) or any(port_in_use(p) for p in ports)
    ):
        time.sleep(0.2)
    assert {g: group_members(g) for g in groups if group_members(g)} == {}
    assert [p for p in ports if port_in_use(p)] == []


def hard_stop(groups: list[int]) -> None:
    """Test clean-up when an assertion failed before `down`."""
    for group in groups:
        if group_members(group):
            os.killpg(group, signal.SIGKILL)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = stack_env(tmp_path)
    try:
        yield env
    finally:
        groups = recorded_groups(env)
        run_eloquence("down", env=env, cwd=tmp_path)
        hard_stop(groups)


def test_up_detach_status_kill_and_down(stack: dict[str, str], tmp_path: Path) -> None:
    env = stack
    port_vars = ("WHISPER_STT_PORT", "AZURE_TTS_PORT", "LOCAL_LLM_PORT", "PLAYGROUND_PORT", "API_PORT")
    ports = [int(env[k]) for k in port_vars]

    up = run_eloquence("up", "--detach", env=env, cwd=tmp_path, timeout=UP_TIMEOUT_S)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "agent: skipped" in up.stdout and "LiveKit is not reachable" in up.stdout

    state = read_state(env)
    # without LiveKit the agent is skipped, but the browser playground's session host runs
    assert list(state["services"]) == [*SIDECARS, "playground", "api"]
    log_dir = Path(env["ELOQUENCE_STATE_DIR"]) / "logs"
    for name, rec in state["services"].items():
        assert rec["url"] == f"http://127.0.0.1:{rec['port']}"
        assert rec["port"] in ports
        assert check_health(rec["health_url"])[0], name
        assert Path(rec["log"]) == log_dir / f"{name}.log" and Path(rec["log"]).stat().st_size > 0

    assert_playground_url(up.stdout, env)

    # A second `up` refuses rather than fighting over the ports.
    again = run_eloquence("up", "--detach", env=env, cwd=tmp_path)
    assert again.returncode == 1 and "still running" in again.stdout

    status = run_eloquence("status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stdout
    assert status_rows(status.stdout) == {n: "healthy" for n in (*SIDECARS, "playground", "api")}

    # `talk` finds the running stack through the same settings and starts nothing.
    talk = run_eloquence(
        "talk",
        str(SAMPLE),
        "-o",
        str(tmp_path / "reply.wav"),
        "--json",
        "--no-start",
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert talk.returncode == 0, talk.stdout + talk.stderr
    report = json.loads(talk.stdout)
    assert report["transcript"] and report["reply"]
    assert (tmp_path / "reply.wav").stat().st_size > 0

    # Kill whisper-stt: `status` and the API's health both say so; the others stay healthy.
    whisper_pid = state["services"]["whisper-stt"]["pid"]
    os.killpg(whisper_pid, signal.SIGKILL)
    assert_no_process_left([whisper_pid], [int(env["WHISPER_STT_PORT"])])
    status = run_eloquence("status", env=env, cwd=tmp_path)
    assert status.returncode == 1
    rows = status_rows(status.stdout)
    assert rows["whisper-stt"].startswith("down")
    assert all(rows[n] == "healthy" for n in ("azure-tts", "local-llm", "playground", "api"))
    api_health = json.loads(check_health(state["services"]["api"]["health_url"])[1])
    assert api_health["status"] == "degraded"
    assert "whisper-stt" in json.dumps(api_health)

    groups = recorded_groups(env)
    down = run_eloquence("down", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stdout
    assert "whisper-stt: was not running" in down.stdout
    assert f"playground: stopped (pid {state['services']['playground']['pid']})" in down.stdout
    assert_no_process_left(groups, ports)
    assert not (Path(env["ELOQUENCE_STATE_DIR"]) / "stack.json").exists()
    status = run_eloquence("status", env=env, cwd=tmp_path)
    assert "No stack recorded" in status.stdout and status.returncode == 1


def test_port_in_use_names_the_service_and_its_log(stack: dict[str, str], tmp_path: Path) -> None:
    env = stack
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env["WHISPER_STT_PORT"] = str(squatter.getsockname()[1])
        up = run_eloquence("up", "--detach", "--only", "whisper-stt", "azure-tts", env=env, cwd=tmp_path)
    assert up.returncode == 1
    assert f"whisper-stt: port {env['WHISPER_STT_PORT']} is already in use" in up.stdout
    assert (
        "WHISPER_STT_PORT" in up.stdout
        and str(Path(env["ELOQUENCE_STATE_DIR"]) / "logs" / "whisper-stt.log") in up.stdout
    )
    # Nothing was started for the others either.
    assert not (Path(env["ELOQUENCE_STATE_DIR"]) / "stack.json").exists()
    assert not port_in_use(int(env["AZURE_TTS_PORT"]))


def test_a_service_that_fails_to_start_is_named_with_its_log(stack: dict[str, str], tmp_path: Path) -> None:
    env = {**stack, "LLM_MODEL_PATH": str(tmp_path / "missing.gguf")}
    up = run_eloquence(
        "up", "--detach", "--only", "local-llm", "api", env=env, cwd=tmp_path, timeout=UP_TIMEOUT_S
    )
    assert up.returncode == 1
    log = Path(env["ELOQUENCE_STATE_DIR"]) / "logs" / "local-llm.log"
    assert "local-llm exited with code" in up.stdout and str(log) in up.stdout
    assert "missing.gguf" in log.read_text()
    # The API was never started (second wave), and nothing is left behind.
    assert not (Path(env["ELOQUENCE_STATE_DIR"]) / "logs" / "api.log").exists()
    assert not (Path(env["ELOQUENCE_STATE_DIR"]) / "stack.json").exists()
    assert not port_in_use(int(env["LOCAL_LLM_PORT"]))


@pytest.mark.parametrize("stop_with", ["ctrl-c", "down"])
def test_foreground_up_stops_everything(stack: dict[str, str], tmp_path: Path, stop_with: str) -> None:
    env = stack
    state_file = Path(env["ELOQUENCE_STATE_DIR"]) / "stack.json"
    up = subprocess.Popen(
        [sys.executable, "-m", "eloquence", "up", "--only", "api"],  # no model: quick to start
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        api_health = f"http://127.0.0.1:{env['API_PORT']}/api/livekit/health"
        while time.monotonic() < deadline and up.poll() is None and not check_health(api_health)[0]:
            time.sleep(0.2)
        assert up.poll() is None, up.stdout.read() if up.stdout else ""
        state = read_state(env)
        assert state["supervisor_pid"] == up.pid and state["services"]["api"]["health_url"] == api_health
        groups = recorded_groups(env)
        if stop_with == "ctrl-c":
            up.send_signal(signal.SIGINT)
        else:
            assert run_eloquence("down", env=env, cwd=tmp_path).returncode == 0
        assert up.wait(30) == 0
        assert_no_process_left(groups, [int(env["API_PORT"])])
        assert not state_file.exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_ensure_services_reuses_what_runs_and_stops_only_what_it_started(
    stack: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = stack
    up = run_eloquence("up", "--detach", "--only", "local-llm", env=env, cwd=tmp_path, timeout=UP_TIMEOUT_S)
    assert up.returncode == 0, up.stdout + up.stderr
    llm_pid = read_state(env)["services"]["local-llm"]["pid"]
    for key in ("ELOQUENCE_STATE_DIR", "AZURE_TTS_PORT", "LOCAL_LLM_PORT"):
        monkeypatch.setenv(key, env[key])
    for key in ("MISTRAL_API_KEY", "MISTRAL_BASE_URL", "AZURE_SPEECH_KEY", "AZURE_TTS_URL", "PIPER_TTS_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    log_dir = tmp_path / "ensure-logs"
    quiet = Console(file=io.StringIO())

    with ensure_services(["azure-tts", "local-llm"], AppSettings(), log_dir, console=quiet) as urls:
        assert urls == {
            "azure-tts": f"http://127.0.0.1:{env['AZURE_TTS_PORT']}",
            "local-llm": f"http://127.0.0.1:{env['LOCAL_LLM_PORT']}",
        }
        assert check_health(urls["azure-tts"] + "/health")[0]
        assert (log_dir / "azure-tts.log").exists() and not (log_dir / "local-llm.log").exists()
    assert not port_in_use(int(env["AZURE_TTS_PORT"]))  # started here, stopped here
    # found running, left running
    assert check_health(urls["local-llm"] + "/health")[0] and group_members(llm_pid)

    # A service that is down and not on this machine cannot be started: the error names it.
    monkeypatch.setenv("WHISPER_STT_URL", "http://192.0.2.1:8001")  # TEST-NET-1: never routed
    with (
        pytest.raises(ServiceUnavailableError, match="whisper-stt .* not on this machine"),
        ensure_services(["whisper-stt"], AppSettings(), log_dir, console=quiet),
    ):
        pass
