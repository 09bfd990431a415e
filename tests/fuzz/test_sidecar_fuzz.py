"""Schemathesis against each sidecar's own OpenAPI document (`GET /openapi.json`), on real processes
with the shared key set: valid and invalid requests, every answer checked against the document,
auth enforced. Afterwards: no 500, /health 200, open files and threads back where they started.

A schema cannot say that whisper-stt's `file` must hold audio, nor how many tokens fit local-llm's
context: a valid-looking request can be a legitimate 400 there (`invalid_audio`,
`context_length_exceeded`), so the "valid data must be accepted" check is off for those two.
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance
from support.hypothesis_runs import run_given

from eloquence.services import (
    AZURE_TTS,
    LOCAL_LLM,
    WHISPER_STT,
    ServiceDefinition,
    ServiceProcess,
    running_service,
)
from eloquence_bench.speech import PIPER_NO_NOISE_ENV

KEY = "sidecar-fuzz-key-0123456789"
EXAMPLES = 12
CONFIG = schemathesis.Config.from_dict(
    # invalid data may also be refused as too large (a text or an upload over the documented limit)
    {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "413", "422", "429"]}}}
)
SIDECARS: dict[str, tuple[ServiceDefinition, dict[str, str], int]] = {
    "azure-tts": (
        AZURE_TTS,
        {"TTS_ENGINE": "piper", "PIPER_THREADS": "1", "TTS_MAX_TEXT_CHARS": "120", **PIPER_NO_NOISE_ENV},
        3,
    ),
    "whisper-stt": (WHISPER_STT, {"WHISPER_CPU_THREADS": "1", "WHISPER_MAX_UPLOAD_BYTES": "65536"}, 1),
    "local-llm": (LOCAL_LLM, {"LLM_THREADS": "1", "LLM_MAX_TOKENS": "4"}, 2),
}


@pytest.fixture(scope="module", params=list(SIDECARS))
def sidecar(request: pytest.FixtureRequest, service_log_dir: Path) -> Iterator[tuple[str, ServiceProcess]]:
    definition, env, _ = SIDECARS[request.param]
    logs = service_log_dir / f"fuzz-{request.param}"
    with running_service(definition, logs, env={**env, "SIDECAR_API_KEY": KEY}, timeout=180) as proc:
        yield request.param, proc


def _resources(proc: ServiceProcess) -> tuple[int, int]:
    assert proc.process is not None
    process = psutil.Process(proc.process.pid)
    return process.num_fds(), process.num_threads()


def test_each_sidecar_answers_generated_requests_as_documented(sidecar: tuple[str, ServiceProcess]) -> None:
    name, proc = sidecar
    _, _, own_operations = SIDECARS[name]
    excluded = [not_a_server_error] + ([positive_data_acceptance] if name != "azure-tts" else [])
    statuses: Counter[int] = Counter()
    with requests.Session() as http:
        document = http.get(f"{proc.url}/openapi.json", timeout=10).json()
        assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        fds_before, threads_before = _resources(proc)
        schema = schemathesis.openapi.from_dict(document, config=CONFIG)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 2 + own_operations  # /health, /metrics and the sidecar's own

        for operation in operations:
            strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
            if operation.method.upper() == "POST":
                strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))

            @settings(
                max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
            )
            @given(case=st.one_of(strategies))
            def exercise(case: schemathesis.Case) -> None:
                response = case.call_and_validate(
                    base_url=proc.url,
                    session=http,
                    headers={"Authorization": f"Bearer {KEY}"},
                    excluded_checks=excluded,
                    timeout=60,
                )
                statuses[response.status_code] += 1
                assert response.status_code != 500, response.text[:300]

            run_given(exercise)
        assert http.get(f"{proc.url}/health", timeout=10).status_code == 200
    time.sleep(0.5)
    fds_after, threads_after = _resources(proc)
    assert fds_after <= fds_before + 4, (fds_before, fds_after)
    assert threads_after <= threads_before + 2, (threads_before, threads_after)
    before, after = f"fds {fds_before} threads {threads_before}", f"fds {fds_after} threads {threads_after}"
    print(f"\n{name} fuzz: {dict(statuses)}; {before} -> {after}")
