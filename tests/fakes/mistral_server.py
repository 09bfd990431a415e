"""A stand-in for Mistral's chat-completions API, speaking its real wire protocol on loopback.

Mistral's cloud cannot be reached from here, so MistralLLM (and the agent) are tested against this:
- `POST /v1/chat/completions` validates the request the way Mistral does (mistral-common's serving
  rules: role order, user or tool last, assistant with content or tool calls but not both, tool
  calls answered by as many tool results, 9-character tool call ids) and answers 400 with
  Mistral's error body (`{"object": "error", "message", "type", "param", "code"}`) otherwise;
  a body that is not a request at all gets 422 with `detail`, as Mistral's API does.
- A valid request streams SSE `data:` chunks paced like a model (`token_delay_s` per token, 100 ms
  by default), then `data: [DONE]`; `stream: false` gets one JSON completion.
- What it answers is scripted: `script(...)` queues `Reply` objects (text, tool calls, an error
  status with Retry-After, a disconnect after N tokens); with none queued, `reply_for(request)`
  decides (by default an echo of the last user message, so every reply is deterministic).
- `requests` records every request body, in order; `GET /v1/models` lists one model.

In-process: `async with FakeMistralServer() as server: ... server.url ...`.
As a process: `python -m fakes.mistral_server --port N` (tests/ on PYTHONPATH); then
`POST /_fake/replies` with a JSON list of replies queues them and `GET /_fake/requests` lists requests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import secrets
import string
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

_CALL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ALNUM = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


@dataclass
class ToolCallReply:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = field(default_factory=new_call_id)


@dataclass
class Reply:
    """One scripted answer. Defaults: a normal streamed reply paced by the server's token delay."""

    text: str = ""
    tool_calls: list[ToolCallReply] = field(default_factory=list)
    status: int = 200
    """Non-200: answer with Mistral's error body and this status instead of streaming."""
    error_message: str = "Service unavailable"
    retry_after: float | None = None
    """Sent as the Retry-After header of an error answer."""
    disconnect_after_tokens: int | None = None
    """Drop the connection after this many content tokens (no [DONE], no finish reason)."""
    first_token_delay_s: float | None = None
    """Before the first content token (the model 'thinking'); None: the server's setting."""
    token_delay_s: float | None = None


def echo_reply(request: dict[str, Any]) -> Reply:
    """The default: a deterministic reply derived from the last user message."""
    last_user = next((m for m in reversed(request["messages"]) if m.get("role") == "user"), None)
    said = _text(last_user.get("content")) if last_user else ""
    return Reply(
        text=f"You said: {said.strip()}. Tell me more." if said.strip() else "Hello! How can I help?"
    )


def tokens_of(text: str) -> list[str]:
    """Word-sized tokens with their leading space, like a BPE model streams them."""
    return re.findall(r"\s*\S+", text)


class MistralRequestError(ValueError):
    def __init__(self, message: str, *, type_: str, code: str) -> None:
        super().__init__(message)
        self.type = type_
        self.code = code


class FakeMistralServer:
    def __init__(
        self,
        *,
        token_delay_s: float = 0.1,
        first_token_delay_s: float = 0.0,
        reply_for: Callable[[dict[str, Any]], Reply] = echo_reply,
        model: str = "mistral-small-latest",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token_delay_s = token_delay_s
        self.first_token_delay_s = first_token_delay_s
        self.reply_for = reply_for
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        """Monotonic arrival time of each chat request (same clock as the test's)."""
        self.model_list_requests = 0
        self.token_sent_at: list[list[float]] = []
        """Per streamed reply, the monotonic time each content token was written (the test's clock)."""
        self._replies: deque[Reply] = deque()
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    # --- scripting ---------------------------------------------------------------------------

    def script(self, *replies: Reply | str) -> None:
        """Queue replies, answered one per request in order (a str is a plain text reply)."""
        self._replies.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    @property
    def pending_replies(self) -> int:
        return len(self._replies)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/_fake/replies", self._add_replies)
        app.router.add_get("/_fake/requests", self._list_requests)
        return app

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.build_app(), handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # --- handlers ----------------------------------------------------------------------------

    async def _models(self, _: web.Request) -> web.Response:
        self.model_list_requests += 1
        card = {
            "id": self.model,
            "object": "model",
            "type": "base",
            "created": 0,
            "owned_by": "mistralai",
            "capabilities": {"completion_chat": True, "function_calling": True},
        }
        return web.json_response({"object": "list", "data": [card]})

    async def _add_replies(self, request: web.Request) -> web.Response:
        for raw in await request.json():
            raw = dict(raw)
            raw["tool_calls"] = [ToolCallReply(**c) for c in raw.get("tool_calls", [])]
            self.script(Reply(**raw))
        return web.json_response({"queued": len(self._replies)})

    async def _list_requests(self, _: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _validation_error(["body"], "Input should be a valid JSON object", "json_invalid")
        if not isinstance(body, dict):
            return _validation_error(["body"], "Input should be a valid dictionary", "dict_type")
        for name in ("model", "messages"):
            if name not in body:
                return _validation_error(["body", name], "Field required", "missing")
        self.requests.append(body)
        self.received_at.append(time.monotonic())
        try:
            validate_messages(body["messages"])
            validate_tools(body.get("tools") or [])
        except MistralRequestError as e:
            return web.json_response(
                {"object": "error", "message": str(e), "type": e.type, "param": None, "code": e.code},
                status=400,
            )

        reply = self._replies.popleft() if self._replies else self.reply_for(body)
        if reply.status != 200:
            headers = {"Retry-After": f"{reply.retry_after:g}"} if reply.retry_after is not None else None
            return web.json_response(
                {
                    "object": "error",
                    "message": reply.error_message,
                    "type": "service_error",
                    "param": None,
                    "code": None,
                },
                status=reply.status,
                headers=headers,
            )
        if body.get("stream"):
            return await self._stream(request, body, reply)
        return await self._complete(body, reply)

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        completion_id = secrets.token_hex(16)
        created = int(time.time())
        token_delay = self.token_delay_s if reply.token_delay_s is None else reply.token_delay_s
        first_delay = (
            self.first_token_delay_s if reply.first_token_delay_s is None else reply.first_token_delay_s
        )
        sent_at: list[float] = []
        self.token_sent_at.append(sent_at)

        def event(
            delta: dict[str, Any], finish_reason: str | None = None, usage: dict[str, int] | None = None
        ) -> bytes:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if usage is not None:
                data["usage"] = usage
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        await response.write(event({"role": "assistant", "content": ""}))
        await asyncio.sleep(first_delay)

        tokens = tokens_of(reply.text)
        for i, token in enumerate(tokens):
            if reply.disconnect_after_tokens is not None and i >= reply.disconnect_after_tokens:
                return _drop_connection(request, response)
            await asyncio.sleep(token_delay)
            await response.write(event({"content": token}))
            sent_at.append(time.monotonic())
        if reply.disconnect_after_tokens is not None and len(tokens) <= reply.disconnect_after_tokens:
            return _drop_connection(request, response)

        usage = _usage(body, tokens, reply)
        if reply.tool_calls:
            await asyncio.sleep(token_delay)
            calls = [_tool_call_json(c, i) for i, c in enumerate(reply.tool_calls)]
            await response.write(event({"tool_calls": calls}, "tool_calls", usage))
        else:
            await response.write(event({"content": ""}, "stop", usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _complete(self, body: dict[str, Any], reply: Reply) -> web.Response:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if reply.tool_calls:
            message["tool_calls"] = [_tool_call_json(c, i) for i, c in enumerate(reply.tool_calls)]
        return web.json_response(
            {
                "id": secrets.token_hex(16),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                    }
                ],
                "usage": _usage(body, tokens_of(reply.text), reply),
            }
        )


# --- Mistral's validation (mistral-common, serving mode) -------------------------------------


def validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise MistralRequestError(
            "Conversation must have at least one message", type_="invalid_request_message_order", code="3230"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise MistralRequestError(
                f"Invalid message at index {i}", type_="invalid_request_error", code="3051"
            )
        _validate_content(m, i)

    roles = [m["role"] for m in messages]
    if len(messages) == 1:
        if roles[0] not in ("user", "system"):
            raise MistralRequestError(
                "Conversation must start with a user message or system message",
                type_="invalid_request_message_order",
                code="3230",
            )
    else:
        last = messages[-1]
        if last["role"] not in ("user", "tool") and not (last["role"] == "assistant" and last.get("prefix")):
            raise MistralRequestError(
                "Expected last role User or Tool (or Assistant with prefix True) for serving"
                f" but got {last['role']}",
                type_="invalid_request_message_order",
                code="3230",
            )

    allowed_after = {
        "system": {"user", "assistant", "system"},
        "user": {"assistant", "system", "user"},
        "assistant": {"assistant", "user", "tool"},
        "tool": {"assistant", "tool"},
    }
    for prev, current in itertools.pairwise(roles):
        if current not in allowed_after[prev]:
            raise MistralRequestError(
                f"Unexpected role '{current}' after role '{prev}'",
                type_="invalid_request_message_order",
                code="3230",
            )

    expected_ids: list[str] = []
    for m in messages:
        if m["role"] == "tool":
            if m["tool_call_id"] not in expected_ids:
                raise MistralRequestError(
                    f"Unexpected tool call id {m['tool_call_id']} in tool results",
                    type_="invalid_request_message_order",
                    code="3230",
                )
            expected_ids.remove(m["tool_call_id"])
        elif m["role"] == "assistant":
            if expected_ids:
                raise MistralRequestError(
                    "Not the same number of function calls and responses",
                    type_="invalid_request_message_order",
                    code="3230",
                )
            expected_ids = [c["id"] for c in m.get("tool_calls") or []]
    if expected_ids:
        raise MistralRequestError(
            "Not the same number of function calls and responses",
            type_="invalid_request_message_order",
            code="3230",
        )


def _validate_content(m: dict[str, Any], i: int) -> None:
    role = m["role"]
    text = _text(m.get("content"))
    if role in ("system", "user") and not text.strip():
        raise MistralRequestError(
            f"{role.capitalize()} message at index {i} must have content",
            type_="invalid_request_error",
            code="3051",
        )
    if role == "assistant":
        tool_calls = m.get("tool_calls") or []
        if bool(text) == bool(tool_calls):
            raise MistralRequestError(
                "Assistant message must have either content or tool_calls, but not both.",
                type_="invalid_request_error",
                code="3051",
            )
        for call in tool_calls:
            call_id = call.get("id")
            if not isinstance(call_id, str) or not _CALL_ID.match(call_id):
                raise MistralRequestError(
                    f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, with a length of 9.",
                    type_="invalid_function_call",
                    code="3280",
                )
            name = (call.get("function") or {}).get("name")
            if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
                raise MistralRequestError(
                    f"Function name was {name} but must be a-z, A-Z, 0-9...",
                    type_="invalid_function_call",
                    code="3280",
                )
    if role == "tool":
        call_id = m.get("tool_call_id")
        if call_id is None:
            raise MistralRequestError(
                "Tool call id has to be defined.", type_="invalid_request_error", code="3051"
            )
        if not isinstance(call_id, str) or not _CALL_ID.match(call_id):
            raise MistralRequestError(
                f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, with a length of 9.",
                type_="invalid_function_call",
                code="3280",
            )


def validate_tools(tools: list[Any]) -> None:
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not _FUNCTION_NAME.match(str(fn.get("name", ""))):
            raise MistralRequestError("Invalid tool definition", type_="invalid_tool", code="3051")
        if not isinstance(fn.get("parameters", {}), dict):
            raise MistralRequestError("Invalid tool schema", type_="invalid_tool_schema", code="3051")


# --- helpers ---------------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return ""


def _tool_call_json(call: ToolCallReply, index: int) -> dict[str, Any]:
    arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
        "index": index,
    }


def _usage(body: dict[str, Any], tokens: list[str], reply: Reply) -> dict[str, int]:
    prompt = sum(len(tokens_of(_text(m.get("content")))) for m in body["messages"])
    completion = len(tokens) + len(reply.tool_calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _validation_error(loc: list[str], msg: str, type_: str) -> web.Response:
    return web.json_response({"detail": [{"loc": loc, "msg": msg, "type": type_}]}, status=422)


def _drop_connection(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Cut the TCP connection mid-body, as a crashed upstream or a proxy timeout does."""
    if request.transport is not None:
        request.transport.abort()
    return response


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Fake Mistral chat-completions server (echo replies by default)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay-s", type=float, default=0.1)
    args = parser.parse_args()
    server = FakeMistralServer(token_delay_s=args.token_delay_s, host=args.host, port=args.port)
    web.run_app(server.build_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()

__all__ = ["FakeMistralServer", "Reply", "ToolCallReply", "echo_reply", "tokens_of", "validate_messages"]
