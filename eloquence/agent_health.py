"""The agent worker's health endpoint: `GET /health` on AGENT_HEALTH_PORT (8080).

livekit-agents builds its own health server inside `AgentServer.run()` and serves `/` and `/worker`
only. Its aiohttp app cannot take routes once running, and nothing runs between its creation and
its start, so this module does not patch it: it adds a server of its own. The framework's server
moves to an ephemeral loopback port; this one listens on the public port and serves

- `/health`: the framework's own verdict (its `/` answers 503 once the LiveKit connection has
  failed for good or the inference process died), with the worker's state as JSON. A draining
  worker stays 200 (`"status": "draining"`), so that a liveness probe lets running sessions finish;
- `/` and `/worker`: the framework's answers, passed through unchanged;
- `/metrics`: Prometheus, every job process's samples added up (eloquence/agent_metrics.py).

The port is bound before the worker starts, so a port already in use fails at once; requests are
answered once the framework's server is up (the `worker_started` event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .agent_metrics import metrics_handler

if TYPE_CHECKING:
    from livekit.agents import AgentServer

logger = logging.getLogger("eloquence.agent_health")

PROBE_TIMEOUT_S = 2.0
UNREGISTERED = "unregistered"


class AgentHealthError(RuntimeError):
    """The health endpoint could not start (e.g. its port is taken)."""


class AgentHealthServer:
    """`/health`, `/` and `/worker` for one `AgentServer`, on a socket bound at construction."""

    def __init__(self, agent_server: AgentServer, *, host: str, port: int, agent_name: str) -> None:
        self._agent_server = agent_server
        self._agent_name = agent_name
        try:
            self._sock = socket.create_server((host, port), reuse_port=False)
        except OSError as e:
            raise AgentHealthError(
                f"agent health endpoint: cannot listen on {host}:{port} ({e.strerror or e}); "
                "is another worker running? set AGENT_HEALTH_PORT or --port"
            ) from None
        self.host, self.port = self._sock.getsockname()[:2]
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._start_task: asyncio.Task[None] | None = None
        agent_server.on("worker_started", self._on_worker_started)

    # --- lifecycle ------------------------------------------------------------------------

    def _on_worker_started(self, *_: Any) -> None:
        self._start_task = asyncio.get_running_loop().create_task(self.start(), name="agent_health_start")
        self._start_task.add_done_callback(_log_failure)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/", self._passthrough)
        app.router.add_get("/worker", self._passthrough)
        app.router.add_get("/metrics", metrics_handler)  # open, like /health (agent_metrics.py)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        logger.info("agent health on http://%s:%d/health", self.host, self.port)

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        with contextlib.suppress(OSError):
            self._sock.close()

    # --- handlers ---------------------------------------------------------------------------

    def _framework_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._agent_server.worker_info.http_port}{path}"

    async def _fetch(self, path: str) -> tuple[int, str, str]:
        """(status, body, content type) from the framework's server; 503 when it does not answer."""
        assert self._http is not None
        try:
            async with self._http.get(self._framework_url(path)) as resp:
                return resp.status, await resp.text(), resp.content_type
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return 503, f"the worker's own health server did not answer ({type(e).__name__})", "text/plain"

    async def _passthrough(self, request: web.Request) -> web.Response:
        status, body, content_type = await self._fetch(request.path)
        return web.Response(status=status, text=body, content_type=content_type)

    async def _health(self, _request: web.Request) -> web.Response:
        verdict, worker_info = await asyncio.gather(self._fetch("/"), self._fetch("/worker"))
        status, detail, worker_body = verdict[0], verdict[1], worker_info[1]
        worker: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            parsed = json.loads(worker_body)
            worker = parsed if isinstance(parsed, dict) else {}
        server = self._agent_server
        worker_id = server.id if server.id != UNREGISTERED else None
        healthy = status == 200
        body = {
            "status": ("draining" if server.draining else "ok") if healthy else "unavailable",
            "agent_name": self._agent_name,
            "registered": worker_id is not None,
            "worker_id": worker_id,
            "active_jobs": len(server.active_jobs),
            "load": float(worker.get("worker_load", 0.0)),
        }
        if not healthy:
            body["detail"] = detail[:300]
        return web.json_response(body, status=200 if healthy else 503)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("agent health endpoint failed to start: %s", exc)
