"""The agent's Prometheus metrics: per-stage histograms from a real session's metrics events, sums
over job processes (multiprocess mode, a crashed process's live gauge forgotten), and the worker's
open /metrics endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes.mistral_server import FakeMistralServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from eloquence import agent_metrics
from eloquence.agent import CoachAgent, build_session
from eloquence.exercises import get_exercise
from eloquence.services import AGENT, free_port, running_service
from eloquence.settings import AppSettings
from providers.llm import MistralLLM


def _value(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


@pytest.fixture(scope="module")
async def mistral() -> AsyncIterator[FakeMistralServer]:
    async with FakeMistralServer(token_delay_s=0.002) as server:
        yield server


async def test_a_sessions_turns_feed_the_stage_histograms_and_its_errors(mistral: FakeMistralServer) -> None:
    def count(stage: str) -> float:
        return REGISTRY.get_sample_value("eloquence_agent_stage_seconds_count", {"stage": stage}) or 0.0

    before = count("llm_ttft")
    active_before = REGISTRY.get_sample_value("eloquence_agent_active_sessions") or 0.0
    llm = MistralLLM(api_key="test-key", base_url=mistral.url, model="mistral-small-latest", cache_size=0)
    session = build_session(settings=AppSettings(MISTRAL_API_KEY=None, MISTRAL_BASE_URL=None), llm_model=llm)
    ended = agent_metrics.track_session(session)
    try:
        await session.start(agent=CoachAgent(exercise=get_exercise("default")))
        assert REGISTRY.get_sample_value("eloquence_agent_active_sessions") == active_before + 1
        for said in ("Hello coach.", "How do I start?"):
            await session.run(user_input=said)
    finally:
        ended()
        ended()  # idempotent: a shutdown callback and a close handler may both call it
        await session.aclose()
        await llm.aclose()
    assert count("llm_ttft") == before + 2
    assert REGISTRY.get_sample_value("eloquence_agent_active_sessions") == active_before


_JOB = textwrap.dedent(
    """
    import os, sys
    from eloquence import agent_metrics
    agent_metrics.SESSIONS.inc()
    agent_metrics.ACTIVE_SESSIONS.inc()
    agent_metrics.STAGE_SECONDS.labels("e2e").observe(0.9)
    agent_metrics.record_rate_limited("tts")
    mode = sys.argv[1]
    if mode == "clean":
        agent_metrics.ACTIVE_SESSIONS.dec()
    elif mode == "crash":
        os._exit(1)  # no clean-up at all
    else:  # "alive": stays up until its stdin closes
        print("ready", flush=True)
        sys.stdin.read()
    """
)


def test_job_processes_add_up_and_a_crashed_ones_session_is_not_active(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for mode in ("clean", "crash"):
        subprocess.run([sys.executable, "-c", _JOB, mode], env=env, check=False, timeout=60)
    alive = subprocess.Popen(
        [sys.executable, "-c", _JOB, "alive"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == b"ready"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        text = agent_metrics.metrics_text().decode()
        assert _value(text, "eloquence_agent_sessions_total") == 3
        assert _value(text, "eloquence_agent_stage_seconds_count", stage="e2e") == 3
        assert _value(text, "eloquence_agent_rate_limited_total", kind="tts") == 3
        assert _value(text, "eloquence_agent_active_sessions") == 1  # the live one; not the crashed one
    finally:
        assert alive.stdin is not None
        alive.stdin.close()
        alive.wait(30)
    text = agent_metrics.metrics_text().decode()
    assert _value(text, "eloquence_agent_active_sessions") == 0
    assert _value(text, "eloquence_agent_sessions_total") == 3  # counters outlive their processes


def test_the_worker_serves_metrics_openly_on_its_health_port(
    service_log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # unset, not empty: prometheus-client would write its files into the working directory
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    env = {
        "LIVEKIT_AGENT_NAME": "coach-metrics-test",
        # no LiveKit: the worker keeps retrying, its metrics still answer
        "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "a-secret-for-the-metrics-test-0123456789",
    }
    with running_service(AGENT, service_log_dir / "agent-metrics", env=env, timeout=90) as proc:
        with urllib.request.urlopen(f"{proc.url}/metrics", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
    assert "eloquence_agent_active_sessions" in text
    assert proc.process is not None
    assert Path(tempfile.gettempdir(), f"eloquence-agent-metrics-{proc.process.pid}").is_dir()
