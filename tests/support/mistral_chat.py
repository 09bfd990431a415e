"""Driving MistralLLM in tests: chat contexts, tool items, and collecting a stream's chunks."""

from __future__ import annotations

from typing import Any

from livekit.agents import APIConnectOptions, llm

FAST_RETRY = APIConnectOptions(max_retry=2, retry_interval=0.0, timeout=5.0)
NO_RETRY = APIConnectOptions(max_retry=0, retry_interval=0.0, timeout=5.0)
LONG_REPLY = "Good morning! Today we will practise ordering food in a restaurant together, step by step."


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


def tool_call(
    call_id: str, name: str = "lookup_word", args: str = '{"word": "serendipity"}'
) -> llm.FunctionCall:
    return llm.FunctionCall(call_id=call_id, name=name, arguments=args)


def tool_output(
    call_id: str, output: str = "a happy accident", name: str = "lookup_word"
) -> llm.FunctionCallOutput:
    return llm.FunctionCallOutput(call_id=call_id, name=name, output=output, is_error=False)


def context_of(*items: Any) -> llm.ChatContext:
    """A context from (role, text) tuples and function call items, in order."""
    ctx = llm.ChatContext.empty()
    for item in items:
        if isinstance(item, tuple):
            ctx.add_message(role=item[0], content=item[1])
        else:
            ctx.items.append(item)
    return ctx


@llm.function_tool
async def lookup_word(word: str) -> str:
    """Look up the definition of an English word."""
    return f"definition of {word}"
