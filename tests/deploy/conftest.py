"""The LiveKit stand-in (tests/fakes/livekit_server.py) as a real process, for the deployment tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.livekit_server import LiveKitStandin, standin_argv

from eloquence.services import ServiceDefinition, running_service

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def livekit(service_log_dir: Path) -> Iterator[LiveKitStandin]:
    """A fresh stand-in per test module (its rooms, trunks and rules live in memory)."""
    definition = ServiceDefinition(
        name="fake-livekit",
        console_script="",
        module_argv=standin_argv(LiveKitStandin.api_key, LiveKitStandin.api_secret),
        default_port=0,
        health_path="/",
    )
    with running_service(definition, service_log_dir, env={"PYTHONPATH": str(TESTS_DIR)}, timeout=60) as proc:
        yield LiveKitStandin(process=proc)
