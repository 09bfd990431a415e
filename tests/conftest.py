from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fakes.azure_speech_server import AzureSpeechStandIn


@pytest.fixture(scope="session")
def service_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="module")
async def stand_in() -> AsyncIterator[AzureSpeechStandIn]:
    """The Azure Speech USP stand-in (tests/fakes/azure_speech_server.py), one per test module."""
    server = AzureSpeechStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def faults(stand_in: AzureSpeechStandIn) -> Iterator[AzureSpeechStandIn]:
    """The stand-in with a clean record and no faults, cleaned again afterwards."""
    stand_in.reset()
    yield stand_in
    stand_in.reset()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With ELOQUENCE_NO_SKIPS=1 (scripts/test.sh, so CI) a skipped test fails: every engine a test
    needs (espeak-ng, redis-server, chromium...) is installed by scripts/install.sh, so a skip there
    means a missing install step, not an optional feature."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("ELOQUENCE_NO_SKIPS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but ELOQUENCE_NO_SKIPS=1 requires every engine: {reason}"
