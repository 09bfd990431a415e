"""The agent worker answers `GET /health` on its health port (eloquence/agent_health.py).

The real `eloquence worker start` process runs against the LiveKit stand-in, which speaks the
worker protocol's registration; the public LiveKit URL is unreachable, so registering proves the
worker dials the internal one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.livekit_server import LiveKitStandin

from eloquence.services import AGENT, ServiceProcess, free_port, running_service

REGISTRATION_TIMEOUT_S = 60.0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _health_when(url: str, ready: Any) -> dict[str, Any]:
    deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, text = _get(url)
        body = {"http_status": status, **json.loads(text)}
        if ready(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"/health never got there: {body}")


def _worker_env(livekit: LiveKitStandin, **extra: str) -> dict[str, str]:
    internal = {"LIVEKIT_INTERNAL_URL": livekit.url, **extra}
    # the public URL: nothing listens there
    return livekit.env(LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}", **internal)


@pytest.fixture(scope="module")
def worker(livekit: LiveKitStandin, service_log_dir: Path) -> Iterator[ServiceProcess]:
    # running_service waits on AGENT.health_path, the path compose's healthcheck probes
    with running_service(AGENT, service_log_dir, env=_worker_env(livekit), timeout=120) as proc:
        yield proc


def test_health_reports_the_registered_worker(worker: ServiceProcess, livekit: LiveKitStandin) -> None:
    assert AGENT.health_path == "/health"
    body = _health_when(worker.health_url, lambda b: b["registered"])
    assert body["http_status"] == 200
    assert body["status"] == "ok"
    assert body["agent_name"] == livekit.agent_name
    registrations = [r for r in livekit.requests() if r["method"] == "RegisterWorker"]
    assert body["worker_id"] in {r["worker_id"] for r in registrations}
    assert {r["agent_name"] for r in registrations} == {livekit.agent_name}
    assert body["active_jobs"] == 0


def test_the_framework_endpoints_pass_through(worker: ServiceProcess, livekit: LiveKitStandin) -> None:
    assert _get(worker.url + "/") == (200, "OK")
    status, text = _get(worker.url + "/worker")
    assert status == 200
    assert json.loads(text)["agent_name"] == livekit.agent_name


def test_health_says_not_registered_while_livekit_is_unreachable(
    livekit: LiveKitStandin, service_log_dir: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = _worker_env(livekit, LIVEKIT_INTERNAL_URL=dead)
    with running_service(AGENT, service_log_dir / "unreachable", env=env, timeout=120) as proc:
        status, text = _get(proc.health_url)
    body = json.loads(text)
    # retrying is not a failure: the worker stays alive (200) but is not registered
    assert status == 200
    assert body["registered"] is False and body["worker_id"] is None


def test_a_taken_health_port_fails_at_once_with_a_clear_message(livekit: LiveKitStandin) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "eloquence",
                "worker",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            env={**_worker_env(livekit), "PATH": "/usr/bin:/bin"},
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
