"""`eloquence playground`: the process that hosts local sessions, one per browser peer.

The browser talks to this process directly over WebRTC (aiortc here, `RTCPeerConnection` in the
page); no LiveKit server is involved. Each peer gets the AgentSession `eloquence talk` and the
worker use, with the same providers, wired to the peer's tracks (`audio.TrackAudioInput`,
`audio.PacedAudioOutput`). The client messages go over the peer's data channel (label
`eloquence`), as the same JSON a LiveKit room carries.

    POST   /offer              {sdp, type: "offer", exercise_type?, language?} → {sdp, type, session_id}
    DELETE /sessions/{id}      end a session (the page's Stop button)
    GET    /health             {status, sessions, max_sessions}

The API forwards `/playground/api/offer` here (eloquence/playground/web.py), after authenticating
the caller. This process listens on loopback; `--expose` lets it listen elsewhere, and then it
authenticates every call itself, as the API does (eloquence/auth.py), and refuses to start
without ELOQUENCE_API_KEYS or a JWT verifier.

Besides the three client messages, the data channel carries one playground-only message:
`{"type": "session_error", "message": "..."}` when the session cannot go on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..auth import Authenticator, AuthError
from ..client_messages import TOPIC, ClientMessages
from ..exercises import REGISTRY, Exercise, ExerciseRegistry, UnknownExerciseError
from ..services import is_loopback
from ..settings import AppSettings
from .settings import PlaygroundSettings

logger = logging.getLogger("eloquence.playground")

MAX_SDP_CHARS = 64 * 1024
_CHANNEL_OPEN_TIMEOUT_S = 20.0
_MAX_PENDING_MESSAGES = 256


class OfferError(Exception):
    """A bad offer: becomes a 4xx JSON error."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _include_loopback_when_alone() -> None:
    """On a host whose only interface is `lo` (a CI container), offer a 127.0.0.1 candidate.

    aioice never gathers loopback addresses; with nothing else to offer, no browser on the same
    machine could connect. Chromium then needs `--allow-loopback-in-peer-connection`.
    """
    from aioice import ice

    original = ice.get_host_addresses
    if original(use_ipv4=True, use_ipv6=False) or getattr(original, "_eloquence_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return addresses or (["127.0.0.1"] if use_ipv4 else [])

    with_loopback._eloquence_loopback = True  # type: ignore[attr-defined]
    ice.get_host_addresses = with_loopback
    logger.info("no network interface besides loopback: offering 127.0.0.1 as an ICE candidate")


class DataChannelSink:
    """Sends encoded client messages on the peer's data channel once it is open."""

    def __init__(self) -> None:
        self._channel: Any = None
        self._open = asyncio.Event()
        self.closed = asyncio.Event()

    def attach(self, channel: Any) -> None:
        self._channel = channel
        if channel.readyState == "open":
            self._open.set()
        channel.on("open", self._open.set)
        channel.on("close", self.closed.set)

    async def __call__(self, payload: bytes) -> None:
        if not self._open.is_set():
            await asyncio.wait_for(self._open.wait(), _CHANNEL_OPEN_TIMEOUT_S)
        if self._channel is None or self._channel.readyState != "open":
            raise ConnectionError("the data channel is closed")
        self._channel.send(payload.decode("utf-8"))


@dataclass
class PeerSession:
    """One browser peer: its peer connection, its AgentSession and its data channel."""

    id: str
    exercise: Exercise
    language: str
    pc: Any
    sink: DataChannelSink
    created_at: float = field(default_factory=time.time)
    session: Any = None
    pipeline: Any = None
    messages: ClientMessages | None = None
    output: Any = None
    mic: Any = None
    task: asyncio.Task[None] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: str | None = None
    reporting: bool = False
    background: set[asyncio.Task[Any]] = field(default_factory=set)


class SessionHost:
    """Accepts WebRTC offers and runs one AgentSession per peer, up to `max_sessions` at once."""

    def __init__(
        self,
        *,
        settings: AppSettings,
        max_sessions: int,
        registry: ExerciseRegistry = REGISTRY,
        vad: Any = None,
    ) -> None:
        self.settings = settings
        self.max_sessions = max(1, max_sessions)
        self.registry = registry
        self.sessions: dict[str, PeerSession] = {}
        self._vad = vad
        self._opening = 0

    def load_models(self) -> None:
        """Load the VAD once for every session (it is shared, as the worker shares it per process)."""
        from livekit.agents import inference

        if self._vad is None:
            self._vad = inference.VAD(model="silero")

    # -- offers ---------------------------------------------------------------------------
    def _exercise(self, body: dict[str, Any]) -> tuple[Exercise, str]:
        name = body.get("exercise_type") or "default"
        if not isinstance(name, str):
            raise OfferError(
                400, "invalid_request", "`exercise_type` must be a string", field="exercise_type"
            )
        try:
            exercise = self.registry.get(name)
        except UnknownExerciseError as e:
            raise OfferError(
                400, "unknown_exercise", str(e), field="exercise_type", valid_exercises=e.valid
            ) from None
        language = body.get("language")
        if language is not None and not isinstance(language, str):
            raise OfferError(400, "invalid_request", "`language` must be a string", field="language")
        return exercise, exercise.resolve_language(language or self.settings.language)

    async def open(self, body: dict[str, Any]) -> dict[str, str]:
        """Answer a browser's offer and start its session; returns the answer for the page."""
        from aiortc import RTCPeerConnection, RTCSessionDescription

        sdp, kind = body.get("sdp"), body.get("type")
        if kind != "offer" or not isinstance(sdp, str) or not sdp.strip():
            raise OfferError(400, "invalid_request", 'send {"sdp": "<offer SDP>", "type": "offer"}')
        if len(sdp) > MAX_SDP_CHARS:
            raise OfferError(413, "too_large", f"the offer SDP is over {MAX_SDP_CHARS} characters")
        exercise, language = self._exercise(body)
        if len(self.sessions) + self._opening >= self.max_sessions:
            raise OfferError(
                503,
                "busy",
                f"the coach already has {self.max_sessions} sessions (AGENT_MAX_SESSIONS); try again later",
            )

        self._opening += 1
        pc = RTCPeerConnection()
        peer = PeerSession(
            id=secrets.token_hex(8), exercise=exercise, language=language, pc=pc, sink=DataChannelSink()
        )
        try:
            mic: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

            @pc.on("track")
            def on_track(track: Any) -> None:
                if track.kind == "audio" and not mic.done():
                    mic.set_result(track)

            @pc.on("datachannel")
            def on_datachannel(channel: Any) -> None:
                if channel.label == TOPIC:
                    peer.sink.attach(channel)
                    channel.on("close", lambda: self._end_soon(peer, "the page closed the connection"))

            @pc.on("connectionstatechange")
            async def on_state() -> None:
                logger.info("session %s: connection %s", peer.id, pc.connectionState)
                if pc.connectionState in ("failed", "closed"):
                    self._end_soon(peer, f"the connection {pc.connectionState}")

            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except ValueError as e:
                raise OfferError(400, "invalid_offer", f"the offer SDP was refused: {e}") from None
            if not mic.done():
                raise OfferError(400, "invalid_offer", "the offer has no audio track (the microphone)")
            from .audio import PacedAudioOutput, TrackAudioInput

            peer.output = PacedAudioOutput()
            pc.addTrack(peer.output.track)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            self.sessions[peer.id] = peer
            peer.mic = TrackAudioInput(mic.result())
            peer.task = asyncio.create_task(self._run(peer), name=f"playground-{peer.id}")
        except BaseException:
            await pc.close()
            raise
        finally:
            self._opening -= 1
        logger.info("session %s: %s (%s)", peer.id, exercise.name, language)
        local = pc.localDescription
        return {"sdp": local.sdp, "type": local.type, "session_id": peer.id}

    # -- one session ----------------------------------------------------------------------
    async def _run(self, peer: PeerSession) -> None:
        from ..agent import CoachAgent, build_pipeline, build_session, default_turn_handling
        from ..llm_warmup import warm_llm_prompts

        # the exercise's opening into the local LLM's prompt cache while the greeting plays (near
        # free when it is there already): the first reply pays no full prefill (llm_warmup.py)
        warm = asyncio.create_task(
            warm_llm_prompts(self.settings, exercises=[peer.exercise], languages=[peer.language])
        )
        peer.background.add(warm)
        warm.add_done_callback(peer.background.discard)
        try:
            peer.pipeline = build_pipeline(self.settings, peer.exercise, language=peer.language)
            session = peer.session = build_session(
                settings=self.settings,
                pipeline=peer.pipeline,
                vad_model=self._vad,
                turn_handling=default_turn_handling(self.settings, language=peer.language),
            )
            session.input.audio = peer.mic
            session.output.audio = peer.output
            peer.messages = ClientMessages(sink=peer.sink)
            peer.messages.attach(session)

            def on_error(ev: Any) -> None:
                error = getattr(ev, "error", None)
                if not getattr(error, "recoverable", True):
                    self._session_error(peer, _describe(ev))

            session.on("error", on_error)
            session.on("close", lambda ev: self._end_soon(peer, "the session closed"))
            agent = CoachAgent(
                exercise=peer.exercise, language=peer.language, greeting_tts=peer.pipeline.greeting_tts
            )
            await session.start(agent=agent)
            await peer.ended.wait()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a session that cannot start: tell the page, then end it
            logger.exception("session %s could not start", peer.id)
            self._session_error(peer, f"the session could not start: {type(e).__name__}: {e}")
            await peer.ended.wait()
        finally:
            await self._teardown(peer)

    def _session_error(self, peer: PeerSession, message: str) -> None:
        """Tell the page why its session cannot go on (once the channel is open), then end it."""
        logger.warning("session %s: %s", peer.id, message)
        if peer.ended.is_set() or peer.reporting:
            return
        peer.reporting = True
        payload = json.dumps({"type": "session_error", "message": message}, ensure_ascii=False)

        async def report() -> None:
            try:
                await asyncio.wait_for(peer.sink(payload.encode("utf-8")), 5.0)
            except (TimeoutError, ConnectionError) as e:
                logger.info("session %s: could not tell the page (%s)", peer.id, e or type(e).__name__)
            finally:
                self._end_soon(peer, message)

        peer.background.add(task := asyncio.create_task(report()))
        task.add_done_callback(peer.background.discard)

    def _end_soon(self, peer: PeerSession, reason: str) -> None:
        if not peer.ended.is_set():
            peer.end_reason = reason
            peer.ended.set()

    async def _teardown(self, peer: PeerSession) -> None:
        self.sessions.pop(peer.id, None)
        logger.info("session %s ended: %s", peer.id, peer.end_reason)
        if peer.output is not None:
            peer.output.aclose()
        if peer.mic is not None:
            peer.mic.close()
        if peer.session is not None:
            with contextlib.suppress(Exception):
                await peer.session.aclose()
        if peer.messages is not None:
            await peer.messages.aclose()
        if peer.pipeline is not None:
            with contextlib.suppress(Exception):
                await peer.pipeline.aclose()
        with contextlib.suppress(Exception):
            await peer.pc.close()

    async def close(self, session_id: str, reason: str = "the page stopped it") -> bool:
        peer = self.sessions.get(session_id)
        if peer is None:
            return False
        self._end_soon(peer, reason)
        if peer.task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(peer.task), 10)
        return True

    async def aclose(self) -> None:
        await asyncio.gather(*(self.close(sid, "the host is stopping") for sid in list(self.sessions)))


def _describe(ev: Any) -> str:
    """An unrecoverable session error, named by the service behind it."""
    from livekit.agents import llm, stt, tts

    source = getattr(ev, "source", None)
    error = getattr(ev, "error", None)
    inner = getattr(error, "error", error)
    for kind, service in (
        (tts.TTS, "speech synthesis (azure-tts)"),
        (stt.STT, "speech recognition (whisper-stt)"),
        (llm.LLM, "the language model"),
    ):
        if isinstance(source, kind):
            return f"{service} failed: {inner}"
    label = getattr(source, "label", None) or type(source).__name__
    return f"{label} failed: {inner}"


# --- HTTP ---------------------------------------------------------------------------------

HOST_KEY = web.AppKey("host", SessionHost)
AUTH_KEY = web.AppKey("auth", Authenticator)


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


async def _authenticate(request: web.Request) -> web.Response | None:
    """Only an exposed host checks credentials; on loopback the API in front of it did."""
    auth = request.app.get(AUTH_KEY)
    if auth is None:
        return None
    try:
        await auth.authenticate(request)
    except AuthError as e:
        return _error(e.status, e.code, e.message)
    return None


async def _offer_handler(request: web.Request) -> web.Response:
    if (denied := await _authenticate(request)) is not None:
        return denied
    try:
        body = json.loads(await request.text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _error(400, "invalid_json", "the request body must be a JSON object")
    if not isinstance(body, dict):
        return _error(400, "invalid_json", "the request body must be a JSON object")
    try:
        return web.json_response(await request.app[HOST_KEY].open(body))
    except OfferError as e:
        return _error(e.status, e.code, e.message, **e.extra)


async def _close_handler(request: web.Request) -> web.Response:
    if (denied := await _authenticate(request)) is not None:
        return denied
    closed = await request.app[HOST_KEY].close(request.match_info["session_id"])
    if not closed:
        return _error(404, "not_found", "no such session (it may have ended already)")
    return web.json_response({"closed": True})


async def _health_handler(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    return web.json_response(
        {"status": "ok", "sessions": len(host.sessions), "max_sessions": host.max_sessions}
    )


def create_host_app(host: SessionHost, *, auth: Authenticator | None = None) -> web.Application:
    """`auth`: check every call's credentials (an exposed host); None on loopback."""
    app = web.Application(client_max_size=MAX_SDP_CHARS + 4096)
    app[HOST_KEY] = host
    if auth is not None:
        app[AUTH_KEY] = auth

    async def lifecycle(app: web.Application) -> Any:
        yield
        await host.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/offer", _offer_handler)
    app.router.add_delete("/sessions/{session_id}", _close_handler)
    app.router.add_get("/health", _health_handler)
    return app


def main(args: argparse.Namespace) -> int:
    """`eloquence playground [--host H] [--port P] [--expose]`."""
    import sys

    from sidecar_common.logs import configure_logging

    settings = AppSettings()
    playground = PlaygroundSettings()
    auth: Authenticator | None = None
    if not is_loopback(args.host):
        if not args.expose:
            print(
                f"eloquence playground: {args.host} is not a loopback address; pass --expose to listen "
                "there (it then needs ELOQUENCE_API_KEYS)",
                file=sys.stderr,
            )
            return 2
        try:
            auth = Authenticator.from_settings(settings)
        except ValueError as e:
            print(f"eloquence playground: {e}", file=sys.stderr)
            return 2
        if auth.disabled or not auth.configured:
            print(
                "eloquence playground: --expose needs the API's authentication (ELOQUENCE_API_KEYS or a "
                "JWT verifier): its sessions spend compute",
                file=sys.stderr,
            )
            return 2
    configure_logging("info")
    _include_loopback_when_alone()
    host = SessionHost(settings=settings, max_sessions=settings.agent_max_sessions)
    host.load_models()
    port = args.port or playground.host_port
    logger.info("eloquence playground session host on http://%s:%d: ready", args.host, port)
    web.run_app(create_host_app(host, auth=auth), host=args.host, port=port, print=None)
    return 0
