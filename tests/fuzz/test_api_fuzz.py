"""Schemathesis against the API's own OpenAPI document, on the real `eloquence api` process.

Every operation gets generated valid and invalid requests (bodies, types, missing fields, no or a
wrong key); every answer is checked against the document (status codes, content types, schemas,
auth enforced). Afterwards: no 500, the health check is 200, and the process's open files and
threads are back where they started.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
import schemathesis

# schemathesis is a pytest plugin, so pytest rewrites its modules on import. Imported lazily from deep
# inside a running test, CPython 3.11's compiler can fail on one ("AST constructor recursion depth
# mismatch"): the OpenAPI loader is imported here, at collection.
import schemathesis.specs.openapi.schemas  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from support.hypothesis_runs import run_given

from eloquence.services import API, ServiceDefinition, ServiceProcess, free_port, running_service

TESTS_DIR = Path(__file__).resolve().parents[1]
LIVEKIT_KEY, LIVEKIT_SECRET = "fuzz-livekit", "fuzz-livekit-secret-0123456789abcdef"
API_KEY = "fuzz-api-key-0123456789abcdef"
EXAMPLES_PER_OPERATION = 30
FAKE_LIVEKIT = ServiceDefinition(
    name="fake-livekit",
    console_script="",
    module_argv=("fakes.livekit_server", "--api-key", LIVEKIT_KEY, "--api-secret", LIVEKIT_SECRET),
    default_port=0,
    health_path="/",
)


@pytest.fixture(scope="module")
def api(service_log_dir: Path) -> Iterator[ServiceProcess]:
    logs = service_log_dir / "fuzz-api"
    with running_service(FAKE_LIVEKIT, logs, env={"PYTHONPATH": str(TESTS_DIR)}, timeout=60) as livekit:
        dead = free_port()
        env = {
            "LIVEKIT_URL": f"ws://127.0.0.1:{livekit.port}",
            "LIVEKIT_API_KEY": LIVEKIT_KEY,
            "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
            "ELOQUENCE_API_KEYS": API_KEY,
            "API_KEY_RATE_LIMIT_PER_MINUTE": "100000",
            "WHISPER_STT_URL": f"http://127.0.0.1:{dead}",
            "AZURE_TTS_URL": f"http://127.0.0.1:{dead}",
            "LOCAL_LLM_URL": f"http://127.0.0.1:{dead}",
            "MISTRAL_API_KEY": "",
            "MISTRAL_BASE_URL": "",
            "REDIS_URL": "",
        }
        with running_service(API, logs, env=env, timeout=60) as proc:
            yield proc


def _valid_and_invalid(operation: schemathesis.APIOperation) -> st.SearchStrategy[schemathesis.Case]:
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if operation.method.upper() == "POST":  # a GET without parameters has no invalid form
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(strategies)


def _resources(proc: ServiceProcess) -> tuple[int, int]:
    assert proc.process is not None
    process = psutil.Process(proc.process.pid)
    return process.num_fds(), process.num_threads()


def test_the_api_answers_every_generated_request_as_documented(api: ServiceProcess) -> None:
    with requests.Session() as http:
        document = http.get(f"{api.url}/api/openapi.json", timeout=10).json()
        assert document["paths"]["/api/livekit/token"]["post"]["security"] == [{"bearerAuth": []}]
        http.get(f"{api.url}/api/livekit/health", timeout=10)  # warm: the first probe opens connections
        fds_before, threads_before = _resources(api)
        schema = schemathesis.openapi.from_dict(document)
        statuses: Counter[int] = Counter()
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 4

        for operation in operations:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=_valid_and_invalid(operation))
            def exercise(case: schemathesis.Case) -> None:
                response = case.call_and_validate(
                    base_url=api.url,
                    session=http,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    # a 502/503 LiveKit refusal is documented; a 500 is counted (and must stay 0)
                    excluded_checks=[not_a_server_error],
                    timeout=10,
                )
                statuses[response.status_code] += 1

            run_given(exercise)

        assert statuses[500] == 0, statuses
        assert sum(statuses.values()) >= len(operations) * 10, statuses
        assert http.get(f"{api.url}/api/livekit/health", timeout=10).status_code == 200
    time.sleep(0.5)  # closed keep-alive sockets leave the process
    fds_after, threads_after = _resources(api)
    assert fds_after <= fds_before + 4, (fds_before, fds_after)
    assert threads_after <= threads_before + 2, (threads_before, threads_after)
    before, after = f"fds {fds_before} threads {threads_before}", f"fds {fds_after} threads {threads_after}"
    print(f"\napi fuzz: {dict(statuses)}; {before} -> {after}")
