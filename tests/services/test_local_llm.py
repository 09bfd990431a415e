"""The local LLM service as a real subprocess: streaming through the mistralai SDK, admission, errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from mistralai.client import Mistral
from prometheus_client.parser import text_string_to_metric_families

from eloquence.services import LOCAL_LLM, ServiceProcess, ServiceStartError, check_health, running_service

LONG_PROMPT = "Write a long story about a dragon who learns to speak English."


@pytest.fixture(scope="module")
def llm_service(service_log_dir: Path) -> Iterator[ServiceProcess]:
    # One request at a time makes the admission limit observable with two requests.
    env = {"LLM_MAX_CONCURRENT": "1", "LLM_THREADS": "1", "LLM_LOG_FORMAT": "json"}
    with running_service(LOCAL_LLM, service_log_dir / "json-logs", env=env) as proc:
        yield proc


async def _wait_idle(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(url + "/health") as resp:
                if (await resp.json())["active_requests"] == 0:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError("the service never went idle")


async def test_health_declares_model_and_concurrency(llm_service: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as http, http.get(llm_service.url + "/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["ready"] is True
    assert body["model"].startswith("SmolLM2-135M-Instruct")
    assert body["max_concurrent"] == 1


def test_logs_are_json_lines_and_ready_comes_after_the_warm_up(llm_service: ServiceProcess) -> None:
    records = [json.loads(line) for line in llm_service.log_path.read_text().splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    messages = [record["message"] for record in records]
    ready = next(i for i, message in enumerate(messages) if message.startswith("Ready on http://127.0.0.1:"))
    assert any(message.startswith("warmed up in") for message in messages[:ready]), messages


def test_command_line_version_and_bad_settings(tmp_path: Path) -> None:
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "local_llm", *args],
            env={**os.environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("eloquence-local-llm ")
    bad = run("--port", "1", LLM_MAX_CONCURRENT="0")  # refused before the model loads
    assert bad.returncode == 2 and "cannot start" in bad.stderr and "max_concurrent" in bad.stderr


async def test_streams_a_chat_completion_through_the_mistral_sdk(llm_service: ServiceProcess) -> None:
    client = Mistral(server_url=llm_service.url)
    arrivals: list[tuple[float, str]] = []
    usage = None
    finish_reason = None
    stream = await client.chat.stream_async(
        model="local",
        messages=[
            {"role": "system", "content": "You are a friendly English coach."},
            {"role": "user", "content": "Tell me about the weather in London."},
        ],
        max_tokens=40,
        temperature=0.2,
        random_seed=7,
        safe_prompt=True,
        tool_choice="auto",
        prompt_mode=None,
    )
    async with stream:
        async for event in stream:
            chunk = event.data
            choice = chunk.choices[0]
            if isinstance(choice.delta.content, str) and choice.delta.content:
                arrivals.append((time.perf_counter(), choice.delta.content))
            if choice.finish_reason:
                finish_reason = choice.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage

    text = "".join(t for _, t in arrivals)
    assert len(arrivals) >= 5, text
    assert arrivals[0][0] < arrivals[-1][0], "tokens must arrive one by one, not as one block"
    assert len(text.split()) >= 3
    assert finish_reason in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= len(arrivals) and usage.prompt_tokens > 10


async def test_non_streaming_completion(llm_service: ServiceProcess) -> None:
    client = Mistral(server_url=llm_service.url)
    response = await client.chat.complete_async(
        model="local", messages=[{"role": "user", "content": "Say hello."}], max_tokens=10, temperature=0
    )
    assert response.choices[0].message.content
    assert response.usage.completion_tokens >= 1


async def test_full_server_answers_429_with_retry_after(llm_service: ServiceProcess) -> None:
    await _wait_idle(llm_service.url)
    url = llm_service.url + "/v1/chat/completions"
    long_request = {
        "model": "local",
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        "max_tokens": 100,
        "temperature": 0,
        "stream": True,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=long_request) as first:
            assert first.status == 200
            await first.content.readline()  # admitted and generating
            async with http.post(url, json={**long_request, "max_tokens": 5}) as second:
                assert second.status == 429
                assert int(second.headers["Retry-After"]) >= 1
                assert (await second.json())["error"]["code"] == "overloaded"
            body = await first.read()
        assert b"data: [DONE]" in body, "the admitted request still completes"

    # and once the model is free again, the next request is served
    await _wait_idle(llm_service.url)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json={**long_request, "max_tokens": 3}) as resp,
    ):
        assert resp.status == 200


async def test_a_request_that_waits_too_long_for_the_model_gets_503(service_log_dir: Path) -> None:
    env = {"LLM_MAX_CONCURRENT": "2", "LLM_QUEUE_TIMEOUT_S": "0.5", "LLM_THREADS": "1"}
    with running_service(LOCAL_LLM, service_log_dir / "queue-timeout", env=env) as service:
        url = service.url + "/v1/chat/completions"
        long_request = {
            "messages": [{"role": "user", "content": LONG_PROMPT}],
            "max_tokens": 200,
            "stream": True,
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json={**long_request, "temperature": 0}) as first,
        ):
            await first.content.readline()  # generating: the model is busy for ~200 tokens
            async with http.post(url, json={**long_request, "max_tokens": 3}) as second:
                assert second.status == 503
                assert second.headers["Retry-After"]
                assert (await second.json())["error"]["code"] == "overloaded"


async def _metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


async def test_client_disconnect_stops_the_generation(llm_service: ServiceProcess) -> None:
    await _wait_idle(llm_service.url)
    url = llm_service.url + "/v1/chat/completions"
    tokens_before = await _metric(llm_service.url, "local_llm_streamed_tokens_total")
    cancelled_before = await _metric(llm_service.url, "local_llm_cancelled_requests_total")
    request = {
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
    }
    async with aiohttp.ClientSession() as http, http.post(url, json=request) as resp:
        for _ in range(3):
            await resp.content.readline()
    # leaving the block closed the connection mid-stream
    await _wait_idle(llm_service.url)
    # this one runs only once the model is free, so the first generation has ended by now
    async with aiohttp.ClientSession() as http, http.post(url, json={**request, "max_tokens": 2}) as resp:
        assert resp.status == 200
        await resp.read()
    generated = await _metric(llm_service.url, "local_llm_streamed_tokens_total") - tokens_before
    assert await _metric(llm_service.url, "local_llm_cancelled_requests_total") == cancelled_before + 1
    assert generated < 100, f"{generated} tokens: the cancelled generation ran on (it asked for 200)"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"messages": []}', "invalid_request"),
        (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "invalid_request"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', "invalid_request"),
        (
            b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/y.png"}]}]}',
            "unsupported_content",
        ),
    ],
)
async def test_bad_requests_get_400_and_the_service_stays_healthy(
    llm_service: ServiceProcess, body: bytes, code: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            llm_service.url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as resp,
    ):
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["code"] == code and error["message"]
    assert check_health(llm_service.health_url)[0]


async def test_prompt_longer_than_the_context_is_a_400(llm_service: ServiceProcess) -> None:
    huge = "word " * 5000
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            llm_service.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": huge}]}
        ) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "context_length_exceeded"
    assert check_health(llm_service.health_url)[0]


def test_missing_model_file_fails_start_up_with_a_clear_message(tmp_path: Path) -> None:
    env = {"LLM_MODEL_PATH": str(tmp_path / "nope.gguf")}
    with (
        pytest.raises(ServiceStartError, match="model file not found"),
        running_service(LOCAL_LLM, tmp_path, env=env, timeout=60),
    ):
        pass


def test_a_generation_lowers_its_own_thread_priority_after_its_first_clause() -> None:
    """The rest of a reply is bulk work: its thread yields the CPU; the caller's thread does not."""
    import threading

    from local_llm.chat_request import ChatRequest
    from local_llm.model import GGUFChatModel, TokenDelta
    from local_llm.settings import default_model_path

    model = GGUFChatModel(
        model_path=default_model_path(),
        name="test",
        chat_format="chatml",
        threads=1,
        batch_threads=1,
        context_size=512,
        prompt_cache_mb=0,
        decode_nice=5,
        urgent_tokens=2,
    )
    request = ChatRequest(
        messages=[{"role": "user", "content": LONG_PROMPT}],
        stream=True,
        max_tokens=8,
        sampling={"temperature": 0.0},
    )
    caller_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []
    for event in model.generate(request, cancelled=threading.Event(), wait_s=None):
        workers = [t for t in threading.enumerate() if t.name == "llm-generation" and t.native_id]
        if isinstance(event, TokenDelta) and workers:
            seen.append(os.getpriority(os.PRIO_PROCESS, workers[0].native_id))
    assert len(seen) >= 4, seen
    assert seen[-1] == caller_before + 5, seen  # lowered once the urgent tokens were out
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller_before
