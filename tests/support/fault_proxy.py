"""A loopback proxy in front of a real sidecar that injects the failures a network or an overloaded
sidecar produces: HTTP 503 before the first byte, a websocket `overloaded` error with close 1013,
a rewritten header, added latency, and connections cut at random. Everything else is forwarded to
the real service unchanged. Callbacks see what the service sends, so that a test can act at a
precise moment (kill the service once the speech has started, once the audio flows, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from eloquence.services import free_port

_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


@dataclass
class Faults:
    http_503: int = 0
    """Answer this many HTTP requests with 503 + the sidecars' error body before proxying."""
    ws_overloaded: int = 0
    """Answer this many websocket sessions with an `overloaded` error and close 1013."""
    ws_cut_after_client_text: str | None = None
    """Once: forward the client's websocket text message containing this, then drop the client's
    connection before anything more comes back (a network cut right after a request)."""
    ws_close_after_server_text: str | None = None
    """Once: after passing on the service's websocket text message containing this, close the
    client's socket from the server side (what a sidecar's heartbeat does to a socket idle too long)."""
    response_headers: dict[str, str] = field(default_factory=dict)
    """Headers to overwrite on proxied HTTP responses."""
    latency_s: float = 0.0
    """Added one-way delay on every message and body chunk, both ways (pipelined, like a slow link:
    the order and the throughput are kept)."""
    cut_probability: float = 0.0
    """Chance, per forwarded websocket message or HTTP request, that the client's connection is
    cut there (at most `max_cuts` times)."""
    max_cuts: int = 0
    seed: int = 0
    on_upstream_text: Callable[[str], None] | None = None
    """Called with every websocket text message the service sends, before it is passed on."""
    on_upstream_bytes: Callable[[int], None] | None = None
    """Called with the size of every binary message or HTTP body chunk the service sends."""
    random_cuts: int = 0
    http_requests: int = 0
    ws_sessions: int = 0
    ws_cuts: int = 0
    ws_server_closes: int = 0
    client_messages: list[str | dict[str, object]] = field(default_factory=list)
    """Every websocket text message and HTTP JSON body the client sent (decoded), in order."""


@dataclass
class FaultProxy:
    upstream: str
    faults: Faults
    url: str


@contextlib.asynccontextmanager
async def fault_proxy(upstream: str, faults: Faults | None = None) -> AsyncIterator[FaultProxy]:
    faults = faults or Faults()
    upstream = upstream.rstrip("/")
    session = aiohttp.ClientSession()
    rng = random.Random(faults.seed)

    def cut_now() -> bool:
        if faults.random_cuts < faults.max_cuts and rng.random() < faults.cut_probability:
            faults.random_cuts += 1
            return True
        return False

    async def delayed(source: AsyncIterator[aiohttp.WSMessage]) -> AsyncIterator[aiohttp.WSMessage]:
        """`source` with each message held `latency_s` after it arrived, without holding the next."""
        if faults.latency_s <= 0:
            async for msg in source:
                yield msg
            return
        queue: asyncio.Queue[tuple[float, aiohttp.WSMessage | None]] = asyncio.Queue()

        async def fill() -> None:
            try:
                async for msg in source:
                    queue.put_nowait((time.monotonic() + faults.latency_s, msg))
            finally:
                queue.put_nowait((time.monotonic() + faults.latency_s, None))

        filler = asyncio.create_task(fill())
        try:
            while True:
                due, msg = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if msg is None:
                    return
                yield msg
        finally:
            filler.cancel()
            await asyncio.gather(filler, return_exceptions=True)

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _proxy_ws(request)
        faults.http_requests += 1
        if faults.http_503 > 0:
            faults.http_503 -= 1
            return web.json_response(
                {"error": {"code": "unavailable", "message": "injected by fault_proxy"}}, status=503
            )
        body = await request.read()
        with contextlib.suppress(ValueError):
            faults.client_messages.append(json.loads(body))
        if cut_now() and request.transport is not None:
            request.transport.abort()
            raise ConnectionResetError("cut by fault_proxy")
        await asyncio.sleep(faults.latency_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS | {"host"}}
        try:
            up = await session.request(request.method, upstream + request.path_qs, data=body, headers=headers)
        except aiohttp.ClientError:  # the service is down: what a load balancer answers
            return web.json_response(
                {"error": {"code": "unavailable", "message": "upstream down"}}, status=502
            )
        try:
            resp = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in _HOP_HEADERS:
                    resp.headers[k] = v
            resp.headers.update(faults.response_headers)
            await asyncio.sleep(faults.latency_s)
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                if faults.on_upstream_bytes is not None:
                    faults.on_upstream_bytes(len(chunk))
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            up.release()

    async def _proxy_ws(request: web.Request) -> web.WebSocketResponse:
        faults.ws_sessions += 1
        client = web.WebSocketResponse()
        await client.prepare(request)
        if faults.ws_overloaded > 0:
            faults.ws_overloaded -= 1
            await client.send_json(
                {"type": "error", "code": "overloaded", "message": "injected by fault_proxy"}
            )
            await client.close(code=1013)
            return client
        ws_url = "ws" + upstream[len("http") :] + request.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        try:
            up = await session.ws_connect(ws_url, headers=headers)
        except aiohttp.ClientError:  # the service is down: the client sees its socket close at once
            await client.close(code=1011, message=b"upstream down")
            return client
        async with up:

            def maybe_cut() -> bool:
                if cut_now() and request.transport is not None:
                    request.transport.abort()
                    return True
                return False

            async def client_to_up() -> None:
                async for msg in delayed(client):
                    if maybe_cut():
                        return
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        faults.client_messages.append(json.loads(msg.data))
                        await up.send_str(msg.data)
                        cut = faults.ws_cut_after_client_text
                        if cut is not None and cut in msg.data:
                            faults.ws_cut_after_client_text = None
                            faults.ws_cuts += 1
                            if request.transport is not None:
                                request.transport.abort()
                            return
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        await up.send_bytes(msg.data)
                await up.close()

            async def up_to_client() -> None:
                async for msg in delayed(up):
                    if maybe_cut():
                        return
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        if faults.on_upstream_text is not None:
                            faults.on_upstream_text(msg.data)
                        await client.send_str(msg.data)
                        close = faults.ws_close_after_server_text
                        if close is not None and close in msg.data:
                            faults.ws_close_after_server_text = None
                            faults.ws_server_closes += 1
                            await asyncio.sleep(0.1)  # the client has finished with the message
                            await client.close(code=1001, message=b"idle")
                            return
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        if faults.on_upstream_bytes is not None:
                            faults.on_upstream_bytes(len(msg.data))
                        await client.send_bytes(msg.data)
                await client.close(code=up.close_code or 1000)

            tasks = [asyncio.create_task(client_to_up()), asyncio.create_task(up_to_client())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return client

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield FaultProxy(upstream=upstream, faults=faults, url=f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
        await session.close()
