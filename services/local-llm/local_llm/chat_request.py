"""Chat-completions request bodies (Mistral or OpenAI shape) to llama-cpp-python arguments.

Fields that only matter to a hosted API (`safe_prompt` aside, which is honoured) are accepted and
ignored, so an SDK that sends `tool_choice`, `prompt_mode` or `parallel_tool_calls` never fails here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Mistral's documented guardrail prompt, prepended when a request sets `safe_prompt`.
SAFE_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. "
    "Avoid harmful, unethical, prejudiced, or negative content. "
    "Ensure replies promote fairness and positivity."
)

_ROLES = {"system", "developer", "user", "assistant", "tool"}


class InvalidRequestError(ValueError):
    """The body is not a chat-completions request we can serve; the message says why."""

    def __init__(self, message: str, *, code: str = "invalid_request", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    """Plain-text messages with roles system, user and assistant (what every chat template takes)."""
    stream: bool
    max_tokens: int
    sampling: dict[str, Any] = field(default_factory=dict)
    """temperature, top_p, stop, seed, penalties and response_format, as llama-cpp-python names them."""


def parse_chat_request(body: Any, *, max_tokens_cap: int) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequestError("`messages` must be a non-empty list", param="messages")
    n = body.get("n")
    if n not in (None, 1):
        raise InvalidRequestError("this server generates one choice per request (`n` must be 1)", param="n")

    messages = [_text_message(m, i) for i, m in enumerate(raw_messages)]
    if body.get("safe_prompt"):
        messages.insert(0, {"role": "system", "content": SAFE_PROMPT})
    messages = _merge_same_role(messages)

    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = max_tokens_cap
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequestError("`max_tokens` must be a positive integer", param="max_tokens")

    sampling: dict[str, Any] = {}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidRequestError(f"`{name}` must be a number", param=name)
        sampling[name] = float(value)
    seed = body.get("random_seed", body.get("seed"))
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InvalidRequestError("`random_seed` must be an integer", param="random_seed")
        sampling["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequestError("`stop` must be a string or a list of strings", param="stop")
        sampling["stop"] = stop
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        sampling["response_format"] = {"type": "json_object"}

    return ChatRequest(
        messages=messages,
        stream=bool(body.get("stream", False)),
        max_tokens=min(max_tokens, max_tokens_cap),
        sampling=sampling,
    )


def _text_message(message: Any, index: int) -> dict[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequestError(f"{where} must be an object", param=where)
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidRequestError(f"{where}.role must be one of {sorted(_ROLES)}, not {role!r}", param=where)
    text = _content_text(message.get("content"), where)

    # Small local models have no tool-calling template: tool traffic becomes readable text.
    if role == "assistant" and message.get("tool_calls"):
        calls = []
        for call in message["tool_calls"]:
            fn = call.get("function", {}) if isinstance(call, dict) else {}
            args = fn.get("arguments", "")
            calls.append(f"{fn.get('name', '?')}({args if isinstance(args, str) else json.dumps(args)})")
        text = "\n".join(filter(None, [text, "Called: " + ", ".join(calls)]))
    if role == "tool":
        name = message.get("name") or "tool"
        return {"role": "user", "content": f"[{name} result] {text}"}
    return {"role": "system" if role == "developer" else role, "content": text}


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for chunk in content:
            if isinstance(chunk, str):
                parts.append(chunk)
            elif (
                isinstance(chunk, dict) and chunk.get("type") == "text" and isinstance(chunk.get("text"), str)
            ):
                parts.append(chunk["text"])
            else:
                kind = chunk.get("type") if isinstance(chunk, dict) else type(chunk).__name__
                raise InvalidRequestError(
                    f"{where}.content: this server accepts text only, not {kind!r} chunks",
                    code="unsupported_content",
                    param=where,
                )
        return "".join(parts)
    raise InvalidRequestError(f"{where}.content must be a string or a list of text chunks", param=where)


def _merge_same_role(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {
                "role": m["role"],
                "content": "\n\n".join(filter(None, [merged[-1]["content"], m["content"]])),
            }
        else:
            merged.append(dict(m))
    return merged
