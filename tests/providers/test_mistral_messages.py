"""The ChatContext → Mistral messages normaliser, through MistralLLM and the Mistral-protocol test
server, which validates a request the way Mistral does."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from fakes.mistral_server import FakeMistralServer
from livekit.agents import llm
from support.mistral_chat import NO_RETRY, context_of, tool_call, tool_output

from providers.llm import MistralLLM
from providers.mistral_messages import CONTINUE_PROMPT, NO_REPLY

SHAPES: dict[str, tuple[llm.ChatContext, list[tuple[str, str | None]]]] = {
    # name: (context, expected [(role, content or None for tool-call messages)])
    "assistant last": (
        context_of(("system", "Coach."), ("user", "Hi"), ("assistant", "Hello!")),
        [("system", "Coach."), ("user", "Hi"), ("assistant", "Hello!"), ("user", CONTINUE_PROMPT)],
    ),
    "consecutive users merged": (
        context_of(("user", "Hi"), ("user", "are you there?")),
        [("user", "Hi\n\nare you there?")],
    ),
    "empty and whitespace messages dropped": (
        context_of(("system", "Coach."), ("user", "  "), ("assistant", ""), ("user", "Hi")),
        [("system", "Coach."), ("user", "Hi")],
    ),
    "system only": (context_of(("system", "Greet the learner.")), [("system", "Greet the learner.")]),
    "nothing at all": (context_of(), [("user", CONTINUE_PROMPT)]),
    "two system messages first are one": (
        context_of(("system", "Coach."), ("system", "Today: restaurants."), ("user", "Hi")),
        [("system", "Coach.\n\nToday: restaurants."), ("user", "Hi")],
    ),
    "late system message becomes instructions": (
        context_of(
            ("system", "Coach."), ("user", "Hi"), ("assistant", "Hello!"), ("system", "Ask about food.")
        ),
        [
            ("system", "Coach."),
            ("user", "Hi"),
            ("assistant", "Hello!"),
            ("user", "<instructions>\nAsk about food.\n</instructions>"),
        ],
    ),
    "tool result without call dropped": (
        context_of(("user", "Hi"), tool_output("orphan123")),
        [("user", "Hi")],
    ),
    "tool call without result dropped": (
        context_of(("user", "Define serendipity"), tool_call("lonely1234")),
        [("user", "Define serendipity")],
    ),
    "tool result then user is bridged": (
        context_of(
            ("user", "Define serendipity"),
            tool_call("abcDEF123"),
            tool_output("abcDEF123"),
            ("user", "Thanks"),
        ),
        [
            ("user", "Define serendipity"),
            ("assistant", None),
            ("tool", "a happy accident"),
            ("assistant", NO_REPLY),
            ("user", "Thanks"),
        ],
    ),
    "text and tool call in one turn are split": (
        context_of(
            ("user", "Define serendipity"),
            ("assistant", "Let me look."),
            tool_call("call_livekit_1"),
            tool_output("call_livekit_1"),
        ),
        [
            ("user", "Define serendipity"),
            ("assistant", "Let me look."),
            ("assistant", None),
            ("tool", "a happy accident"),
        ],
    ),
    "output before its call is paired after it": (
        context_of(("user", "Define it"), tool_output("xyz987654"), tool_call("xyz987654")),
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
    ctx = context_of(
        ("system", "Coach."),
        ("user", "old question"),
        ("assistant", "old answer"),
        ("user", "Define serendipity and grit"),
        tool_call("aaaaaaaa1", args='{"word": "serendipity"}'),
        tool_call("aaaaaaaa2", args='{"word": "grit"}'),
        tool_output("aaaaaaaa1"),
        tool_output("aaaaaaaa2", output="courage"),
    )
    await model.chat(chat_ctx=ctx, conn_options=NO_RETRY).collect()
    sent = server.requests[-1]["messages"]
    # the last 2 messages are the two results: their call comes along, the old turns do not
    assert [m["role"] for m in sent] == ["system", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["aaaaaaaa1", "aaaaaaaa2"]
    await model.aclose()
