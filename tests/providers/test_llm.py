"""MistralLLM against a local server speaking Mistral's protocol, and once against the real local GGUF service."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fakes.mistral_server import FakeMistralServer, Reply, ToolCallReply, tokens_of
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError, APITimeoutError, llm
from livekit.agents.metrics import LLMMetrics
from support.services import running_service

from eloquence.services import LOCAL_LLM
from providers.endpoints import resolve_mistral_endpoint
from providers.llm import CONTINUE_PROMPT, NO_REPLY, MistralLLM

FAST_RETRY = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=5.0)
NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.0, timeout=5.0)
LONG_REPLY = "Good morning! Today we will practise ordering food in a restaurant together, step by step."


@pytest.fixture
async def server() -> AsyncIterator[FakeMistralServer]:
    # Fast pacing keeps the module quick; the streaming test paces its reply like a model (100 ms/token).
    async with FakeMistralServer(token_delay_s=0.02) as fake:
        yield fake


@pytest.fixture
async def mistral(server: FakeMistralServer) -> AsyncIterator[MistralLLM]:
    model = MistralLLM(base_url=server.url, api_key="test-key", model="mistral-small-latest", cache_size=0)
    yield model
    await model.aclose()


def user_ctx(*texts: str, system: str | None = "You are an English coach.") -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    if system:
        ctx.add_message(role="system", content=system)
    for text in texts:
        ctx.add_message(role="user", content=text)
    return ctx


async def collect_chunks(stream: llm.LLMStream) -> tuple[list[llm.ChatChunk], BaseException | None]:
    chunks: list[llm.ChatChunk] = []
    try:
        async with stream:
            async for chunk in stream:
                chunks.append(chunk)
    except Exception as e:  # noqa: BLE001 - returned for the test to inspect
        return chunks, e
    return chunks, None


def text_of(chunks: list[llm.ChatChunk]) -> str:
    return "".join(c.delta.content for c in chunks if c.delta and c.delta.content)


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


# --- message conversion ----------------------------------------------------------------------


def _call(call_id: str, name: str = "lookup_word", args: str = '{"word": "serendipity"}') -> llm.FunctionCall:
    return llm.FunctionCall(call_id=call_id, name=name, arguments=args)


def _output(
    call_id: str, output: str = "a happy accident", name: str = "lookup_word"
) -> llm.FunctionCallOutput:
    return llm.FunctionCallOutput(call_id=call_id, name=name, output=output, is_error=False)


def _ctx(*items: Any) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    for item in items:
        if isinstance(item, tuple):
            ctx.add_message(role=item[0], content=item[1])
        else:
            ctx.items.append(item)
    return ctx


SHAPES: dict[str, tuple[llm.ChatContext, list[tuple[str, str | None]]]] = {
    # name: (context, expected [(role, content or None for tool-call messages)])
    "assistant last": (
        _ctx(("system", "Coach."), ("user", "Hi"), ("assistant", "Hello!")),
        [("system", "Coach."), ("user", "Hi"), ("assistant", "Hello!"), ("user", CONTINUE_PROMPT)],
    ),
    "consecutive users merged": (
        _ctx(("user", "Hi"), ("user", "are you there?")),
        [("user", "Hi\n\nare you there?")],
    ),
    "empty and whitespace messages dropped": (
        _ctx(("system", "Coach."), ("user", "  "), ("assistant", ""), ("user", "Hi")),
        [("system", "Coach."), ("user", "Hi")],
    ),
    "system only": (_ctx(("system", "Greet the learner.")), [("system", "Greet the learner.")]),
    "nothing at all": (_ctx(), [("user", CONTINUE_PROMPT)]),
    "two system messages first are one": (
        _ctx(("system", "Coach."), ("system", "Today: restaurants."), ("user", "Hi")),
        [("system", "Coach.\n\nToday: restaurants."), ("user", "Hi")],
    ),
    "late system message becomes instructions": (
        _ctx(("system", "Coach."), ("user", "Hi"), ("assistant", "Hello!"), ("system", "Ask about food.")),
        [
            ("system", "Coach."),
            ("user", "Hi"),
            ("assistant", "Hello!"),
            ("user", "<instructions>\nAsk about food.\n</instructions>"),
        ],
    ),
    "tool result without call dropped": (
        _ctx(("user", "Hi"), _output("orphan123")),
        [("user", "Hi")],
    ),
    "tool call without result dropped": (
        _ctx(("user", "Define serendipity"), _call("lonely1234")),
        [("user", "Define serendipity")],
    ),
    "tool result then user is bridged": (
        _ctx(("user", "Define serendipity"), _call("abcDEF123"), _output("abcDEF123"), ("user", "Thanks")),
        [
            ("user", "Define serendipity"),
            ("assistant", None),
            ("tool", "a happy accident"),
            ("assistant", NO_REPLY),
            ("user", "Thanks"),
        ],
    ),
    "text and tool call in one turn are split": (
        _ctx(
            ("user", "Define serendipity"),
            ("assistant", "Let me look."),
            _call("call_livekit_1"),
            _output("call_livekit_1"),
        ),
        [
            ("user", "Define serendipity"),
            ("assistant", "Let me look."),
            ("assistant", None),
            ("tool", "a happy accident"),
        ],
    ),
    "output before its call is paired after it": (
        _ctx(("user", "Define it"), _output("xyz987654"), _call("xyz987654")),
        [("user", "Define it"), ("assistant", None), ("tool", "a happy accident")],
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_invalid_context_shapes_become_valid_requests(
    server: FakeMistralServer, mistral: MistralLLM, shape: str
) -> None:
    ctx, expected = SHAPES[shape]
    response = await mistral.chat(chat_ctx=ctx, conn_options=NO_RETRY).collect()
    assert response.text  # the fake validates like Mistral: an invalid list would be a 400
    sent = server.requests[-1]["messages"]
    assert [(m["role"], m.get("content")) for m in sent] == expected
    for m in sent:
        for call in m.get("tool_calls") or []:
            assert len(call["id"]) == 9 and call["id"].isalnum()
        if m["role"] == "tool":
            assert len(m["tool_call_id"]) == 9 and m["tool_call_id"].isalnum()


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        (
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            "Expected last role User or Tool",
        ),
        ([{"role": "user", "content": ""}], "must have content"),
        (
            [
                {"role": "user", "content": "Hi"},
                {"role": "tool", "content": "x", "tool_call_id": "abcDEF123"},
            ],
            "Unexpected role 'tool' after role 'user'",
        ),
        (
            [
                {"role": "user", "content": "Hi"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "content": "x", "tool_call_id": "call_1"},
            ],
            "Tool call id was call_1",
        ),
        (
            [
                {"role": "user", "content": "Hi"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "abcDEF123", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "tool", "content": "x", "tool_call_id": "abcDEF123"},
                {"role": "user", "content": "ok"},
            ],
            "Unexpected role 'user' after role 'tool'",
        ),
    ],
)
async def test_the_fake_rejects_what_mistral_rejects(
    server: FakeMistralServer, messages: list[dict[str, Any]], fragment: str
) -> None:
    # What a naive conversion sends; MistralLLM's conversion must never produce these.
    async with aiohttp.ClientSession() as http:
        body = {"model": "m", "messages": messages, "stream": True}
        async with http.post(server.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 400
            error = await resp.json()
    assert error["object"] == "error" and fragment in error["message"]


async def test_a_400_is_raised_as_a_status_error_and_not_retried(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    server.script(Reply(status=400, error_message="Invalid model: nope"))
    chunks, error = await collect_chunks(mistral.chat(chat_ctx=user_ctx("Hi"), conn_options=FAST_RETRY))
    assert isinstance(error, APIStatusError) and error.status_code == 400 and not error.retryable
    assert "Invalid model: nope" in error.message
    assert len(server.requests) == 1 and not chunks


# --- history trimming ------------------------------------------------------------------------


async def test_history_keeps_the_system_prompt_and_the_last_messages(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", max_history=4, cache_size=0)
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="Coach.")
    for i in range(10):
        ctx.add_message(role="user", content=f"question {i}")
        ctx.add_message(role="assistant", content=f"answer {i}")
    ctx.add_message(role="user", content="last question")
    await model.chat(chat_ctx=ctx, conn_options=NO_RETRY).collect()
    sent = [m["content"] for m in server.requests[-1]["messages"]]
    assert sent == ["Coach.", "answer 8", "question 9", "answer 9", "last question"]
    await model.aclose()


async def test_trimming_never_splits_a_tool_call_from_its_result(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", max_history=2, cache_size=0)
    ctx = _ctx(
        ("system", "Coach."),
        ("user", "old question"),
        ("assistant", "old answer"),
        ("user", "Define serendipity and grit"),
        _call("aaaaaaaa1", args='{"word": "serendipity"}'),
        _call("aaaaaaaa2", args='{"word": "grit"}'),
        _output("aaaaaaaa1"),
        _output("aaaaaaaa2", output="courage"),
    )
    await model.chat(chat_ctx=ctx, conn_options=NO_RETRY).collect()
    sent = server.requests[-1]["messages"]
    # the last 2 messages are the two results: their call comes along, the old turns do not
    assert [m["role"] for m in sent] == ["system", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["aaaaaaaa1", "aaaaaaaa2"]
    await model.aclose()


# --- tools -----------------------------------------------------------------------------------


@llm.function_tool
async def lookup_word(word: str) -> str:
    """Look up the definition of an English word."""
    return f"definition of {word}"


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
    ctx.items.append(_output("Gr1tCa11x", output="courage and resolve"))
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


# --- response cache and quick replies --------------------------------------------------------


async def test_a_cache_hit_replays_the_reply_without_asking_the_server(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", cache_size=8, cache_ttl_s=60)
    server.script(LONG_REPLY)
    first, _ = await collect_chunks(model.chat(chat_ctx=user_ctx("How are you?"), conn_options=NO_RETRY))
    # same conversation up to case and spacing
    second, _ = await collect_chunks(model.chat(chat_ctx=user_ctx("how  are you?"), conn_options=NO_RETRY))
    assert text_of(second) == text_of(first) == LONG_REPLY
    assert len(server.requests) == 1
    assert len([c for c in second if c.delta and c.delta.content]) == len(tokens_of(LONG_REPLY))

    # other parameters are another entry
    model.update_options(temperature=0.1)
    await model.chat(chat_ctx=user_ctx("How are you?"), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 2
    await model.aclose()


async def test_cache_entries_expire_and_tool_calls_are_never_cached(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", cache_size=8, cache_ttl_s=0.2)
    await model.chat(chat_ctx=user_ctx("Hello"), conn_options=NO_RETRY).collect()
    await asyncio.sleep(0.3)
    await model.chat(chat_ctx=user_ctx("Hello"), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 2, "an expired entry is not replayed"

    call = Reply(tool_calls=[ToolCallReply(name="lookup_word", arguments={"word": "grit"})])
    server.script(call, call)
    for _ in range(2):
        r = await model.chat(
            chat_ctx=user_ctx("Define grit"), tools=[lookup_word], conn_options=NO_RETRY
        ).collect()
        assert r.tool_calls
    assert len(server.requests) == 4
    await model.aclose()


async def test_the_cache_is_bounded(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", cache_size=2, cache_ttl_s=60)
    for text in ("one", "two", "three", "one"):
        await model.chat(chat_ctx=user_ctx(text), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 4, "'one' was evicted by the third entry"
    await model.aclose()


async def test_quick_replies_are_off_by_default_and_answer_small_talk_when_on(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    await mistral.chat(chat_ctx=user_ctx("Merci !"), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 1

    model = MistralLLM(
        base_url=server.url, api_key="k", cache_size=0, quick_replies={"merci": "Avec plaisir !"}
    )
    response = await model.chat(chat_ctx=user_ctx("Merci beaucoup !"), conn_options=NO_RETRY).collect()
    assert response.text == "Avec plaisir !"
    assert len(server.requests) == 1
    response = await model.chat(
        chat_ctx=user_ctx("Merci, mais j'ai encore une question sur le passé composé"), conn_options=NO_RETRY
    ).collect()
    assert response.text.startswith("You said:")
    assert len(server.requests) == 2
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


def test_endpoint_strips_the_api_path_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        endpoint = resolve_mistral_endpoint(
            api_key="scw-key",
            base_url="https://api.scaleway.ai/abc-123/v1/chat/completions",
            model=None,
            environ={},
        )
    assert endpoint.server_url == "https://api.scaleway.ai/abc-123"
    assert not endpoint.is_local and endpoint.api_key == "scw-key"
    assert "includes the API path" in caplog.text
    assert (
        resolve_mistral_endpoint(base_url="http://10.0.0.5:8000/v1/", environ={}).server_url
        == "http://10.0.0.5:8000"
    )


def test_endpoint_defaults_cloud_with_a_key_else_the_local_service() -> None:
    cloud = resolve_mistral_endpoint(environ={"MISTRAL_API_KEY": "sk"})
    assert (cloud.server_url, cloud.api_key, cloud.model, cloud.is_local) == (
        "https://api.mistral.ai",
        "sk",
        "mistral-small-latest",
        False,
    )
    local = resolve_mistral_endpoint(environ={})
    assert (local.server_url, local.api_key, local.is_local) == ("http://127.0.0.1:8004", None, True)
    moved = resolve_mistral_endpoint(environ={"LOCAL_LLM_URL": "http://127.0.0.1:9999/"})
    assert (moved.server_url, moved.is_local) == ("http://127.0.0.1:9999", True)
    explicit = resolve_mistral_endpoint(
        api_key="a", base_url="https://x.example", model="m", environ={"MISTRAL_MODEL": "env-model"}
    )
    assert (explicit.server_url, explicit.model) == ("https://x.example", "m")
    assert resolve_mistral_endpoint(environ={"MISTRAL_MODEL": "env-model"}).model == "env-model"


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
