"""The local-llm handlers: POST /v1/chat/completions (SSE or JSON) and GET /v1/models, on the skeleton.

Admission control: at most `max_concurrent` requests are admitted (one generates, the others wait
for the model); one more gets 429 with Retry-After, and a request that waits longer than
`queue_timeout_s` gets 503. Nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidecar_common.app import SidecarAPI
from sidecar_common.http import InvalidJSON, SidecarError, parse_json

from . import openapi
from .chat_request import ChatRequest, InvalidRequestError, parse_chat_request
from .model import ContextLengthError, Finished, GGUFChatModel, ModelBusyError, TokenDelta
from .settings import LocalLLMSettings

logger = logging.getLogger("local_llm")

_END = object()


class _ServiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "local_llm_time_to_first_token_seconds",
            "Time from admission to the first generated token",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.prompt_tokens = Counter("local_llm_prompt_tokens", "Prompt tokens evaluated", registry=registry)
        self.completion_tokens = Counter("local_llm_completion_tokens", "Tokens generated", registry=registry)
        self.streamed_tokens = Counter(
            "local_llm_streamed_tokens",
            "Token chunks produced by the model, cancelled requests included",
            registry=registry,
        )
        self.cancelled = Counter(
            "local_llm_cancelled_requests", "Requests whose client went away", registry=registry
        )
        self.rejected = Counter(
            "local_llm_rejected_requests", "Requests refused", ["reason"], registry=registry
        )
        self.active = Gauge(
            "local_llm_active_requests", "Admitted requests (generating or waiting)", registry=registry
        )


class LocalLLMAPI(SidecarAPI):
    """The handlers around one loaded and warmed model."""

    metrics_prefix = "local_llm"
    max_body_bytes = 4 << 20

    def __init__(
        self, *, model: GGUFChatModel, settings: LocalLLMSettings, registry: CollectorRegistry
    ) -> None:
        super().__init__(registry=registry)
        self._model = model
        self._settings = settings
        self._active = 0
        self._metrics = _ServiceMetrics(registry)

    def openapi_paths(self) -> dict[str, Any]:
        return openapi.paths()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat_completions),
            web.get("/v1/models", self.models),
        ]

    def health(self) -> dict[str, Any]:
        return {
            "model": self._model.name,
            "model_path": str(self._model.path),
            "context_size": self._model.context_size,
            "max_concurrent": self._settings.max_concurrent,
            "active_requests": self._active,
            "tools": False,
        }

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self._model.name,
                        "object": "model",
                        "type": "base",
                        "created": 0,
                        "owned_by": "local",
                        "max_context_length": self._model.context_size,
                        "capabilities": {"completion_chat": True, "function_calling": False},
                    }
                ],
            }
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = parse_json(await request.read())  # bytes: a body that is not UTF-8 is invalid JSON too
        except InvalidJSON as e:
            raise _invalid(f"the body is not valid JSON: {e}", code="invalid_json") from None
        try:
            chat = parse_chat_request(body, max_tokens_cap=self._settings.max_tokens)
        except InvalidRequestError as e:
            raise _invalid(str(e), code=e.code, param=e.param) from None

        if self._active >= self._settings.max_concurrent:
            self._metrics.rejected.labels("full").inc()
            raise SidecarError(
                429,
                "overloaded",
                f"the model is serving {self._active} requests "
                f"(max {self._settings.max_concurrent}); retry shortly",
                headers={"Retry-After": "1"},
                type="overloaded",
            )
        self._active += 1
        self._metrics.active.inc()
        try:
            return await self._serve(request, chat, str(body.get("model") or self._model.name))
        finally:
            self._active -= 1
            self._metrics.active.dec()

    async def _serve(self, request: web.Request, chat: ChatRequest, model_name: str) -> web.StreamResponse:
        started = time.perf_counter()
        cancelled = threading.Event()
        events = self._generate(chat, cancelled)
        try:
            # The first event decides the status: an error before any token is a clean HTTP error.
            try:
                first = await anext(events)
            except ModelBusyError as e:
                self._metrics.rejected.labels("queue_timeout").inc()
                raise SidecarError(
                    503, "overloaded", str(e), headers={"Retry-After": "2"}, type="overloaded"
                ) from None
            except ContextLengthError as e:
                raise _invalid(str(e), code="context_length_exceeded") from None
            except ValueError as e:
                raise _invalid(str(e), code="invalid_request") from None
            except Exception as e:
                logger.exception("generation failed")
                raise SidecarError(
                    500, "internal", f"generation failed: {e}", type="internal_error"
                ) from None
            if isinstance(first, TokenDelta):
                self._metrics.ttft.observe(time.perf_counter() - started)

            completion_id = f"cmpl-{uuid.uuid4().hex}"
            created = int(time.time())
            if chat.stream:
                return await self._stream(request, first, events, completion_id, created, model_name)
            return await self._collect(first, events, completion_id, created, model_name)
        except (asyncio.CancelledError, ConnectionResetError):
            self._metrics.cancelled.inc()
            raise
        finally:
            # Also on client disconnect (handler cancellation): the worker stops at its next token.
            cancelled.set()
            await events.aclose()

    async def _stream(
        self,
        request: web.Request,
        first: TokenDelta | Finished,
        events: AsyncIterator[TokenDelta | Finished],
        completion_id: str,
        created: int,
        model_name: str,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)

        def chunk(
            delta: dict[str, Any], finish_reason: str | None = None, usage: dict[str, int] | None = None
        ) -> bytes:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if usage is not None:
                data["usage"] = usage
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        await response.write(chunk({"role": "assistant", "content": ""}))
        event: TokenDelta | Finished | None = first
        while event is not None:
            if isinstance(event, TokenDelta):
                await response.write(chunk({"content": event.text}))
            else:
                self._count_usage(event)
                await response.write(chunk({"content": ""}, event.finish_reason, _usage(event)))
                await response.write(b"data: [DONE]\n\n")
                break
            event = await anext(events, None)
        await response.write_eof()
        return response

    async def _collect(
        self,
        first: TokenDelta | Finished,
        events: AsyncIterator[TokenDelta | Finished],
        completion_id: str,
        created: int,
        model_name: str,
    ) -> web.Response:
        parts: list[str] = []
        finished = Finished("stop", 0, 0)
        event: TokenDelta | Finished | None = first
        while event is not None:
            if isinstance(event, TokenDelta):
                parts.append(event.text)
            else:
                finished = event
                break
            event = await anext(events, None)
        self._count_usage(finished)
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(parts)},
                        "finish_reason": finished.finish_reason,
                    }
                ],
                "usage": _usage(finished),
            }
        )

    def _count_usage(self, finished: Finished) -> None:
        self._metrics.prompt_tokens.inc(finished.prompt_tokens)
        self._metrics.completion_tokens.inc(finished.completion_tokens)

    async def _generate(
        self, chat: ChatRequest, cancelled: threading.Event
    ) -> AsyncGenerator[TokenDelta | Finished, None]:
        """The model's blocking generator, iterated entirely in a worker thread, bridged to the loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed during shutdown
                cancelled.set()

        def produce() -> None:
            try:
                for event in self._model.generate(
                    chat, cancelled=cancelled, wait_s=self._settings.queue_timeout_s
                ):
                    if isinstance(event, TokenDelta):
                        self._metrics.streamed_tokens.inc()
                    put(event)
            except BaseException as e:  # noqa: BLE001 - handed to the request handler
                put(e)
            finally:
                put(_END)

        worker = loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Not awaited: the worker finishes its current token and releases the model by itself.
            cancelled.set()
            del worker


def _usage(finished: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": finished.prompt_tokens,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": finished.prompt_tokens + finished.completion_tokens,
    }


def _invalid(message: str, *, code: str, param: str | None = None) -> SidecarError:
    return SidecarError(400, code, message, type="invalid_request_error", param=param)
