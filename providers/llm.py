"""MistralLLM: the livekit-agents LLM plugin for any Mistral chat-completions server.

Mistral's cloud, Scaleway, or the local GGUF service (`providers/endpoints.py` picks which), always
through the `mistralai` SDK's `chat.stream_async`, with the SDK's own retries off so that only the
framework retries, and only before the first chunk reached the caller.

The ChatContext becomes a message list Mistral accepts in `mistral_messages.py`; replies that skip
the model (the response cache, keyword quick replies) are in `response_cache.py`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx2  # mistralai's HTTP transport
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    llm,
)
from livekit.agents.llm import (
    ChatChunk,
    ChatContext,
    ChoiceDelta,
    CompletionUsage,
    FunctionToolCall,
    ToolChoice,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import is_given, shortuuid
from mistralai.client import Mistral
from mistralai.client.errors import MistralError
from mistralai.client.models import TextChunk

from .endpoints import MISTRAL_CLOUD_URL, MistralEndpoint, resolve_mistral_endpoint
from .log import logger
from .mistral_messages import mistral_call_id, to_mistral_messages, trim_history
from .response_cache import ResponseCache, cache_key, match_quick_reply, normalize_quick_replies

DEFAULT_TIMEOUT_S = 10.0
"""HTTP timeout: connecting, and the longest silence between two chunks of a stream."""
MAX_RETRY_AFTER_S = 10.0
"""A 429 asking to wait longer than this fails at once: a conversation cannot wait, a fallback can."""
MAX_CONNECTIONS = 16
KEEPALIVE_EXPIRY_S = 120.0


@dataclass
class _LLMOptions:
    model: str
    temperature: float | None
    max_tokens: int | None
    max_history: int | None
    tool_choice: ToolChoice | None
    parallel_tool_calls: bool | None
    quick_replies: dict[str, str]
    """Normalized keyword → reply."""


class MistralLLM(llm.LLM):
    def __init__(
        self,
        *,
        model: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        temperature: float | None = 0.7,
        max_tokens: int | None = None,
        max_history: int | None = 8,
        timeout: float = DEFAULT_TIMEOUT_S,
        cache_size: int = 128,
        cache_ttl_s: float = 300.0,
        quick_replies: Mapping[str, str] | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        """A Mistral chat-completions LLM.

        Args:
            model, api_key, base_url: None falls back to MISTRAL_MODEL, MISTRAL_API_KEY and
                MISTRAL_BASE_URL; with no base URL, the cloud when a key is set, else the local
                LLM service (LOCAL_LLM_URL, default http://127.0.0.1:8004).
            max_history: conversation messages sent (the system prompt is always kept); None for all.
            timeout: seconds to connect, and the longest silence between two chunks. The time to the
                first token is bounded by the framework's `APIConnectOptions.timeout`.
            cache_size, cache_ttl_s: response cache (0 entries disables it).
            quick_replies: keyword → canned reply for small talk ("merci" → "Avec plaisir !"); off by default.
            http_client: an `httpx2.AsyncClient` to share (the SDK's transport); closed by its owner.
        """
        super().__init__()
        _check_max_history(max_history)
        self._endpoint = resolve_mistral_endpoint(api_key=api_key, base_url=base_url, model=model)
        self._opts = _LLMOptions(
            model=self._endpoint.model,
            temperature=temperature,
            max_tokens=max_tokens,
            max_history=max_history,
            tool_choice=None,
            parallel_tool_calls=None,
            quick_replies=normalize_quick_replies(quick_replies),
        )
        self._owned_http: httpx2.AsyncClient | None = None
        if http_client is None:
            http_client = httpx2.AsyncClient(
                follow_redirects=True,
                limits=httpx2.Limits(
                    max_connections=MAX_CONNECTIONS,
                    max_keepalive_connections=MAX_CONNECTIONS,
                    keepalive_expiry=KEEPALIVE_EXPIRY_S,
                ),
            )
            self._owned_http = http_client
        self._client = Mistral(
            api_key=self._endpoint.api_key,
            server_url=self._endpoint.server_url,
            async_client=http_client,
            retry_config=None,  # the framework retries (before the first chunk only); never both
            timeout_ms=int(timeout * 1000),
        )
        self._cache = ResponseCache(max_entries=cache_size, ttl_s=cache_ttl_s)

    @property
    def model(self) -> str:
        return self._opts.model

    @property
    def provider(self) -> str:
        if self._endpoint.server_url == MISTRAL_CLOUD_URL:
            return "mistralai"
        return urlsplit(self._endpoint.server_url).netloc

    @property
    def endpoint(self) -> MistralEndpoint:
        return self._endpoint

    def update_options(
        self,
        *,
        model: NotGivenOr[str] = NOT_GIVEN,
        temperature: NotGivenOr[float | None] = NOT_GIVEN,
        max_tokens: NotGivenOr[int | None] = NOT_GIVEN,
        max_history: NotGivenOr[int | None] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice | None] = NOT_GIVEN,
        quick_replies: NotGivenOr[Mapping[str, str] | None] = NOT_GIVEN,
    ) -> None:
        """Applies to streams started afterwards; a running stream keeps its snapshot."""
        if is_given(model):
            self._opts.model = model
        if is_given(temperature):
            self._opts.temperature = temperature
        if is_given(max_tokens):
            self._opts.max_tokens = max_tokens
        if is_given(max_history):
            _check_max_history(max_history)
            self._opts.max_history = max_history
        if is_given(tool_choice):
            self._opts.tool_choice = tool_choice
        if is_given(quick_replies):
            self._opts.quick_replies = normalize_quick_replies(quick_replies)

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> MistralLLMStream:
        opts = replace(self._opts, quick_replies=dict(self._opts.quick_replies))
        if is_given(tool_choice):
            opts.tool_choice = tool_choice
        if is_given(parallel_tool_calls):
            opts.parallel_tool_calls = parallel_tool_calls
        return MistralLLMStream(
            self,
            opts=opts,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            extra_kwargs=dict(extra_kwargs) if is_given(extra_kwargs) else {},
        )

    async def _prewarm_impl(self) -> None:
        # Opens the keep-alive connection (DNS, TLS) so the first turn does not pay for it.
        await self._client.models.list_async()

    async def aclose(self) -> None:
        await super().aclose()
        if self._owned_http is not None:
            await self._owned_http.aclose()
            self._owned_http = None


@dataclass
class _Request:
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    """Everything but the messages, as `chat.stream_async` keyword arguments."""
    cache_key: str


@dataclass
class _PendingToolCall:
    index: int | None
    call_id: str
    name: str
    arguments: str


class MistralLLMStream(llm.LLMStream):
    def __init__(
        self,
        llm_: MistralLLM,
        *,
        opts: _LLMOptions,
        chat_ctx: ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
        extra_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(llm_, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        # Text that reached the caller is spoken: a retry after it would say it twice.
        self._retry_on_chunk_sent = False
        self._mistral = llm_
        self._opts = opts
        self._extra_kwargs = extra_kwargs
        self._request: _Request | None = None
        self._attempts = 0

    def _build_request(self) -> _Request:
        messages = trim_history(to_mistral_messages(self._chat_ctx), self._opts.max_history)
        params: dict[str, Any] = {"model": self._opts.model}
        if self._opts.temperature is not None:
            params["temperature"] = self._opts.temperature
        if self._opts.max_tokens is not None:
            params["max_tokens"] = self._opts.max_tokens
        tool_schemas = llm.ToolContext(self._tools).parse_function_tools("openai", strict=False)
        if tool_schemas:
            params["tools"] = tool_schemas
            if self._opts.tool_choice is not None:
                params["tool_choice"] = self._opts.tool_choice
            if self._opts.parallel_tool_calls is not None:
                params["parallel_tool_calls"] = self._opts.parallel_tool_calls
        params.update(self._extra_kwargs)
        return _Request(messages=messages, params=params, cache_key=cache_key(params, messages))

    async def _run(self) -> None:
        self._attempts += 1
        if self._request is None:
            self._request = self._build_request()
        request = self._request

        if (reply := match_quick_reply(request.messages, self._opts.quick_replies)) is not None:
            self._replay([reply], source="quick")
            return
        if (cached := self._mistral._cache.get(request.cache_key)) is not None:
            self._replay(cached, source="cache")
            return

        text_parts: list[str] = []
        pending_calls: list[_PendingToolCall] = []
        emitted_tool_calls = False
        finish_reason: str | None = None
        try:
            async with asyncio.timeout(self._conn_options.timeout) as until_first_chunk:
                stream = await self._mistral._client.chat.stream_async(
                    messages=request.messages,  # type: ignore[arg-type]  # plain dicts; the SDK validates them
                    **request.params,
                )
                async with stream:
                    async for event in stream:
                        chunk = event.data
                        for choice in chunk.choices:
                            if text := _delta_text(choice.delta.content):
                                text_parts.append(text)
                                self._event_ch.send_nowait(
                                    ChatChunk(id=chunk.id, delta=ChoiceDelta(role="assistant", content=text))
                                )
                            _collect_tool_calls(choice.delta.tool_calls, pending_calls)
                            if choice.finish_reason:
                                finish_reason = str(choice.finish_reason)
                        if text_parts or pending_calls or finish_reason:
                            # The first token came: from here on, the HTTP read timeout bounds each gap.
                            until_first_chunk.reschedule(None)
                        if finish_reason is not None and pending_calls:
                            emitted_tool_calls = True
                            self._send_tool_calls(chunk.id, pending_calls)
                        if chunk.usage is not None:
                            self._event_ch.send_nowait(ChatChunk(id=chunk.id, usage=_usage(chunk.usage)))
            if pending_calls:
                emitted_tool_calls = True
                self._send_tool_calls(shortuuid("call_"), pending_calls)
            if finish_reason is None:
                # A connection closed cleanly without [DONE] or a finish reason: the reply is cut.
                raise APIConnectionError(
                    "the stream ended before the model finished", retryable=not self._event_ch.output_sent
                )
        except APIError:
            raise
        except (TimeoutError, httpx2.TimeoutException) as e:
            raise APITimeoutError(retryable=not self._event_ch.output_sent) from e
        except MistralError as e:
            error = _status_error(e, retryable=not self._event_ch.output_sent)
            if e.status_code == 429 and error.retryable:
                await self._honour_retry_after(e, error)
            raise error from None
        except Exception as e:
            raise APIConnectionError(retryable=not self._event_ch.output_sent) from e

        # Only whole replies (a max_tokens cut is whole for these parameters), never tool calls: a
        # replayed call would run the tool again under a duplicate call id.
        if finish_reason in ("stop", "length") and text_parts and not emitted_tool_calls:
            self._mistral._cache.put(request.cache_key, text_parts)

    def _replay(self, parts: Sequence[str], *, source: str) -> None:
        request_id = shortuuid(f"{source}_")
        for text in parts:
            self._event_ch.send_nowait(
                ChatChunk(id=request_id, delta=ChoiceDelta(role="assistant", content=text))
            )

    def _send_tool_calls(self, chunk_id: str, pending: list[_PendingToolCall]) -> None:
        calls = [
            FunctionToolCall(name=p.name, arguments=p.arguments or "{}", call_id=p.call_id) for p in pending
        ]
        pending.clear()
        self._event_ch.send_nowait(
            ChatChunk(id=chunk_id, delta=ChoiceDelta(role="assistant", tool_calls=calls))
        )

    async def _honour_retry_after(self, e: MistralError, error: APIStatusError) -> None:
        retry_after = retry_after_seconds(e.headers.get("retry-after"))
        if retry_after is None or self._attempts > self._conn_options.max_retry:
            return  # no hint, or no attempt left: the framework fails now
        if retry_after > MAX_RETRY_AFTER_S:
            error.retryable = False
            return
        # The framework sleeps its own interval before the next attempt: together, what the server asked.
        framework_wait = self._conn_options._interval_for_retry(self._attempts - 1)
        if retry_after > framework_wait:
            logger.info("rate limited: waiting %.1f s (Retry-After) before retrying", retry_after)
            await asyncio.sleep(retry_after - framework_wait)


# --- Streamed chunks ------------------------------------------------------------------------


def _delta_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content chunks; reasoning ("thinking") chunks are not spoken
        return "".join(c.text for c in content if isinstance(c, TextChunk))
    return ""


def _collect_tool_calls(tool_calls: Any, pending: list[_PendingToolCall]) -> None:
    """Mistral sends whole calls; OpenAI-style servers send pieces of one index. Both accumulate here."""
    if not isinstance(tool_calls, list):
        return
    for tc in tool_calls:
        call_id = tc.id if isinstance(tc.id, str) and tc.id not in ("", "null") else None
        index = tc.index if isinstance(tc.index, int) else None
        arguments = tc.function.arguments
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        current = pending[-1] if pending else None
        if current is None or (call_id and call_id != current.call_id) or index != current.index:
            pending.append(
                _PendingToolCall(
                    index=index, call_id=call_id or _new_call_id(), name=tc.function.name, arguments=arguments
                )
            )
        else:
            current.arguments += arguments
            current.name = current.name or tc.function.name


def _new_call_id() -> str:
    return mistral_call_id(shortuuid())


def _usage(usage: Any) -> CompletionUsage:
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=usage.total_tokens or prompt + completion,
    )


# --- Errors ---------------------------------------------------------------------------------


def _status_error(e: MistralError, *, retryable: bool) -> APIStatusError:
    body: Any = e.body
    try:
        body = json.loads(e.body) if e.body else None
    except ValueError:
        pass
    return APIStatusError(
        _error_message(body) or f"HTTP {e.status_code}",
        status_code=e.status_code,
        request_id=e.headers.get("x-request-id") or e.headers.get("mistral-correlation-id"),
        body=body,
        retryable=retryable,
    )


def _error_message(body: Any) -> str:
    """Mistral's `{"message", "type", "code"}`, the sidecars' `{"error": {...}}`, or 422's `detail`."""
    if isinstance(body, dict):
        inner: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body
        message = inner.get("message") or inner.get("detail")
        if message is not None:
            text = message if isinstance(message, str) else json.dumps(message)
            code = inner.get("code") or inner.get("type")
            return f"{code}: {text}" if code else text
    if isinstance(body, str):
        return body.strip()[:300]
    return ""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _check_max_history(max_history: int | None) -> None:
    if max_history is not None and max_history < 1:
        raise ValueError("max_history must be at least 1 (None keeps the whole conversation)")
