"""MistralLLM against a local server speaking Mistral's protocol, and once against the real local
GGUF service. The message normaliser, the response cache and the endpoint resolver have their own
test modules."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fakes.mistral_server import FakeMistralServer, Reply, ToolCallReply, tokens_of
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, APITimeoutError, llm
from livekit.agents.metrics import LLMMetrics
from support.mistral_chat import (
    FAST_RETRY,
    LONG_REPLY,
    NO_RETRY,
    collect_chunks,
    lookup_word,
    text_of,
    tool_output,
    user_ctx,
)

from eloquence.services import LOCAL_LLM, running_service
from providers.llm import MistralLLM

# --- streaming and metrics -------------------------------------------------------------------


async def test_first_chunk_reaches_the_caller_before_the_server_sends_the_last_token(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(text=LONG_REPLY, token_delay_s=0.1))
    first_arrival: float | None = None
    texts: list[str] = []
    async with mistral.chat(chat_ctx=user_ctx("Hello"), conn_options=NO_RETRY) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                first_arrival = first_arrival or time.monotonic()
                texts.append(chunk.delta.content)
    assert "".join(texts) == LONG_REPLY
    assert len(texts) == len(tokens_of(LONG_REPLY)), "one chunk per token: nothing re-chunked"
    assert first_arrival is not None and first_arrival < server.token_sent_at[-1][-1], (
        "the first token must reach the caller while the server is still generating"
    )


async def test_metrics_report_time_to_first_token_and_usage(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script("One two three four.")
    collected: list[LLMMetrics] = []
    mistral.on("metrics_collected", collected.append)
    response = await mistral.chat(chat_ctx=user_ctx("Count please"), conn_options=NO_RETRY).collect()
    await asyncio.sleep(0)
    assert response.text == "One two three four."
    assert len(collected) == 1
    metrics = collected[0]
    assert 0 < metrics.ttft < metrics.duration
    assert metrics.completion_tokens == 4 and metrics.prompt_tokens > 0
    assert metrics.metadata is not None and metrics.metadata.model_name == "mistral-small-latest"


async def test_a_400_is_raised_as_a_status_error_and_not_retried(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(status=400, error_message="Invalid model: nope"))
    chunks, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY))
    assert isinstance(error, APIStatusError) and error.status_code == 400 and not error.retryable
    assert "Invalid model: nope" in error.message
    assert len(server.requests) == 1 and not chunks


# --- tools -----------------------------------------------------------------------------------


async def test_tool_calls_stream_as_function_tool_calls(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(
        Reply(tool_calls=[ToolCallReply(name="lookup_word", arguments={"word": "grit"}, id="Gr1tCa11x")])
    )
    response = await mistral.chat(
        chat_ctx=user_ctx("What does grit mean?"),
        tools=[lookup_word],
        tool_choice="auto",
        conn_options=NO_RETRY,
    ).collect()
    assert [(c.name, c.call_id) for c in response.tool_calls] == [("lookup_word", "Gr1tCa11x")]
    assert llm.utils.parse_function_arguments(response.tool_calls[0].arguments) == {"word": "grit"}
    request = server.requests[-1]
    assert request["tool_choice"] == "auto"
    assert request["tools"][0]["function"]["name"] == "lookup_word"
    assert "word" in request["tools"][0]["function"]["parameters"]["properties"]

    # the round trip: the call and its result go back as a valid conversation
    ctx = user_ctx("What does grit mean?")
    ctx.items.append(
        llm.FunctionCall(call_id="Gr1tCa11x", name="lookup_word", arguments=response.tool_calls[0].arguments)
    )
    ctx.items.append(tool_output("Gr1tCa11x", output="courage and resolve"))
    follow_up = await mistral.chat(chat_ctx=ctx, tools=[lookup_word], conn_options=NO_RETRY).collect()
    assert follow_up.text
    assert [m["role"] for m in server.requests[-1]["messages"]] == ["system", "user", "assistant", "tool"]


# --- retries, errors, timeouts ---------------------------------------------------------------


async def test_an_error_before_the_first_chunk_is_retried(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(status=503), "Second time lucky.")
    errors: list[llm.LLMError] = []
    mistral.on("error", errors.append)
    chunks, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY))
    assert error is None
    assert text_of(chunks) == "Second time lucky."
    assert len(server.requests) == 2
    assert [e.recoverable for e in errors] == [True]


async def test_a_disconnect_after_the_first_chunk_fails_without_retry_or_duplicate(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(text=LONG_REPLY, disconnect_after_tokens=3), "This must never be sent.")
    chunks, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY))
    assert isinstance(error, APIConnectionError) and not error.retryable
    assert text_of(chunks) == "".join(tokens_of(LONG_REPLY)[:3]), "partial text once, nothing repeated"
    assert len(server.requests) == 1
    assert server.pending_replies == 1


async def test_a_disconnect_before_any_token_is_retried(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(text=LONG_REPLY, disconnect_after_tokens=0), "Recovered.")
    chunks, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY))
    assert error is None and text_of(chunks) == "Recovered."
    assert len(server.requests) == 2


async def test_429_waits_for_retry_after_before_retrying(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(status=429, retry_after=0.8, error_message="Rate limit exceeded"), "Now it works.")
    response = await mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY).collect()
    assert response.text == "Now it works."
    assert len(server.requests) == 2
    # a lower bound only (load can only make it later): the retry came after the requested wait
    assert server.received_at[1] - server.received_at[0] >= 0.8


async def test_429_with_a_retry_after_too_long_for_a_conversation_fails_at_once(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(status=429, retry_after=120), "Too late.")
    chunks, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY))
    assert isinstance(error, APIStatusError) and error.status_code == 429 and not error.retryable
    assert len(server.requests) == 1 and not chunks


async def test_persistent_server_errors_fail_after_the_configured_attempts(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(*(Reply(status=500) for _ in range(3)))
    _, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY))
    assert isinstance(error, APIConnectionError)
    assert isinstance(error.__cause__, APIStatusError) and error.__cause__.status_code == 500
    assert len(server.requests) == 3


async def test_time_to_first_token_is_bounded_by_the_connect_timeout(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(text="Too slow.", first_token_delay_s=30), "Quick answer.")
    options = APIConnectOptions(max_retry=1, retry_interval=0.0, timeout=0.5)
    chunks, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=options))
    assert error is None and text_of(chunks) == "Quick answer."
    assert len(server.requests) == 2

    server.script(Reply(text="Too slow.", first_token_delay_s=30))
    _, error = await collect_chunks(
        mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=APIConnectOptions(max_retry=0, timeout=0.5))
    )
    assert isinstance(error, APITimeoutError)


async def test_a_silent_stream_hits_the_read_timeout(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", timeout=0.5, cache_size=0)
    server.script(
        Reply(text="one two three", token_delay_s=0.05), Reply(text="stalls here now", token_delay_s=30)
    )
    assert (
        await model.chat(chat_ctx=user_ctx("Hi"), conn_options=NO_RETRY).collect()
    ).text == "one two three"
    _, error = await collect_chunks(model.chat(chat_ctx=user_ctx("Again"), conn_options=NO_RETRY))
    assert isinstance(error, APITimeoutError)
    await model.aclose()


async def test_unreachable_server_is_a_connection_error() -> None:
    from eloquence.services import free_port

    model = MistralLLM(base_url=f"http://127.0.0.1:{free_port()}", api_key="k", cache_size=0)
    _, error = await collect_chunks(model.chat(chat_ctx=user_ctx("Hi"), conn_options=NO_RETRY))
    assert isinstance(error, APIConnectionError) and not isinstance(error, APITimeoutError)
    await model.aclose()


# --- options, prewarm, endpoint ---------------------------------------------------------------


async def test_update_options_applies_to_the_next_stream_only(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(text=LONG_REPLY, token_delay_s=0.02))
    stream = mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=NO_RETRY)
    mistral.update_options(temperature=0.2, max_tokens=50, model="mistral-large-latest")
    await collect_chunks(stream)
    await mistral.chat(chat_ctx=user_ctx("Hi again"), conn_options=NO_RETRY).collect()
    first, second = server.requests
    assert (first["temperature"], first.get("max_tokens"), first["model"]) == (
        0.7,
        None,
        "mistral-small-latest",
    )
    assert (second["temperature"], second["max_tokens"], second["model"]) == (0.2, 50, "mistral-large-latest")


async def test_prewarm_opens_the_connection(server: FakeMistralServer, mistral: MistralLLM) -> None:
    mistral.prewarm()
    assert mistral._prewarm_task is not None
    await mistral._prewarm_task
    assert server.model_list_requests == 1


def test_constructor_reads_only_os_environ_for_missing_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    monkeypatch.setenv("MISTRAL_BASE_URL", "https://api.scaleway.ai/p/v1")
    monkeypatch.setenv("MISTRAL_MODEL", "mistral-small-3.1-24b-instruct-2503")
    model = MistralLLM()
    assert model.endpoint.server_url == "https://api.scaleway.ai/p"
    assert model.model == "mistral-small-3.1-24b-instruct-2503"
    assert model.provider == "api.scaleway.ai"
    with pytest.raises(ValueError):
        MistralLLM(max_history=0)


# --- the real local GGUF service ---------------------------------------------------------------


async def test_streams_from_the_real_local_llm_service(service_log_dir: Path) -> None:
    with running_service(LOCAL_LLM, service_log_dir, env={"LLM_THREADS": "1"}) as service:
        model = MistralLLM(base_url=service.url, temperature=0.2, max_tokens=40, cache_size=0)
        collected: list[LLMMetrics] = []
        model.on("metrics_collected", collected.append)
        ctx = user_ctx(
            "What is a good way to start a conversation in English?", system="You are a friendly coach."
        )
        chunks, error = await collect_chunks(model.chat(chat_ctx=ctx, conn_options=NO_RETRY))
        await asyncio.sleep(0)
        await model.aclose()
    assert error is None
    assert len([c for c in chunks if c.delta and c.delta.content]) >= 5
    assert len(text_of(chunks).split()) >= 3
    assert len(collected) == 1 and collected[0].ttft > 0 and collected[0].completion_tokens > 0
