"""ChatContext → a message list Mistral's validator accepts, whatever the context's shape.

The users' 400s came from invalid sequences. Here the system prompt comes first, consecutive
user or assistant turns are merged, nothing is empty, each tool call is paired with its result
and has a 9-character id, and the list ends on a user or tool message.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from livekit.agents import llm
from livekit.agents.llm import ChatContext

from .log import logger

CONTINUE_PROMPT = "(continue)"
"""User turn appended when the context would end on the assistant (Mistral needs user or tool last)."""
NO_REPLY = "(no reply)"
"""Assistant turn between a tool result and a user message (after a tool, Mistral wants assistant or tool)."""
INSTRUCTIONS_TEMPLATE = "<instructions>\n{}\n</instructions>"
"""Where a system message after the conversation started goes: a user turn, in its place."""

_MISTRAL_CALL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def to_mistral_messages(chat_ctx: ChatContext) -> list[dict[str, Any]]:
    """A message list Mistral's validator accepts, whatever the ChatContext's shape."""
    items = chat_ctx.items
    calls: dict[str, llm.FunctionCall] = {}
    outputs: dict[str, llm.FunctionCallOutput] = {}
    for item in items:
        if item.type == "function_call":
            calls.setdefault(item.call_id, item)
        elif item.type == "function_call_output":
            outputs.setdefault(item.call_id, item)
    paired = calls.keys() & outputs.keys()
    if orphans := (calls.keys() | outputs.keys()) - paired:
        logger.debug("dropping tool calls or results without their pair", extra={"call_ids": sorted(orphans)})

    system_parts: list[str] = []
    conversation: list[dict[str, Any]] = []
    pending: list[llm.FunctionCall] = []
    emitted: set[str] = set()
    started = False

    def flush_calls() -> None:
        # One assistant message with the calls, then exactly one tool message per call.
        if not pending:
            return
        conversation.append(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": mistral_call_id(c.call_id),
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments or "{}"},
                    }
                    for c in pending
                ],
            }
        )
        for c in pending:
            output = outputs[c.call_id]
            conversation.append(
                {
                    "role": "tool",
                    "tool_call_id": mistral_call_id(c.call_id),
                    "name": c.name,
                    "content": output.output.strip() or ("(error)" if output.is_error else "(no output)"),
                }
            )
        pending.clear()

    for item in items:
        if item.type == "function_call":
            if item.call_id in paired and item.call_id not in emitted:
                emitted.add(item.call_id)
                pending.append(item)
                started = True
            continue
        if item.type == "function_call_output":
            flush_calls()
            continue
        if item.type != "message":
            continue
        text = _message_text(item)
        if item.role in ("system", "developer"):
            if not started:
                if text:
                    system_parts.append(text)
                continue
            flush_calls()
            if text:
                conversation.append({"role": "user", "content": INSTRUCTIONS_TEMPLATE.format(text)})
            continue
        flush_calls()
        started = True
        if text:
            conversation.append({"role": item.role, "content": text})
    flush_calls()

    messages = _merge_and_bridge(conversation)
    if system_parts:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
    if not messages:
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
    return messages


def trim_history(messages: list[dict[str, Any]], max_history: int | None) -> list[dict[str, Any]]:
    """The system prompt and the last `max_history` messages, never splitting a tool call from its results."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system) :]
    if max_history is None or len(rest) <= max_history:
        return messages
    start = len(rest) - max_history
    while start > 0 and rest[start]["role"] == "tool":
        start -= 1  # back to the assistant message that made the call
    return system + rest[start:]


def mistral_call_id(call_id: str) -> str:
    """Mistral wants tool call ids of exactly 9 letters or digits; map any other id stably."""
    if _MISTRAL_CALL_ID.match(call_id):
        return call_id
    number = int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "big")
    chars = []
    for _ in range(9):
        number, rem = divmod(number, 62)
        chars.append(_BASE62[rem])
    return "".join(chars)


def _message_text(message: llm.ChatMessage) -> str:
    parts: list[str] = []
    for c in message.content:
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, llm.AudioContent) and c.transcript:
            parts.append(c.transcript)
    return "\n".join(p for p in parts if p.strip()).strip()


def _merge_and_bridge(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for m in conversation:
        prev = messages[-1] if messages else None
        if (
            prev is not None
            and prev["role"] == m["role"]
            and m["role"] in ("user", "assistant")
            and "tool_calls" not in prev
            and "tool_calls" not in m
        ):
            prev["content"] = f"{prev['content']}\n\n{m['content']}"
            continue
        if prev is not None and prev["role"] == "tool" and m["role"] == "user":
            messages.append({"role": "assistant", "content": NO_REPLY})
        messages.append(dict(m))
    if messages and messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
    return messages
