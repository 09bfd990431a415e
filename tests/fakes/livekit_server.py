"""A stand-in for the LiveKit server's HTTP side, speaking its real wire protocol.

No LiveKit server can run here (no Docker, no binary), so `eloquence api` is tested against this:
- `GET /` answers "OK" like livekit-server's health check;
- Twirp `POST /twirp/livekit.RoomService/CreateRoom` and
  `POST /twirp/livekit.AgentDispatchService/CreateDispatch` take and return protobuf, check the
  bearer JWT with livekit-api's own TokenVerifier (signature, issuer and grants), and answer
  errors as Twirp JSON (`{"code", "msg"}`) like the server does;
- `GET /_fake/requests` lists what was asked (for assertions).

Run: `python -m fakes.livekit_server --port N --api-key K --api-secret S` (with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import secrets
from typing import Any

from aiohttp import web
from livekit import api
from livekit.protocol.agent_dispatch import AgentDispatch, CreateAgentDispatchRequest
from livekit.protocol.models import Room
from livekit.protocol.room import CreateRoomRequest

KEY_CREDENTIALS = web.AppKey("credentials", tuple)
KEY_ROOMS = web.AppKey("rooms", dict)
KEY_LOG = web.AppKey("log", list)


def _twirp_error(status: int, code: str, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _claims(request: web.Request) -> api.Claims | web.Response:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return _twirp_error(401, "unauthenticated", "no bearer token")
    key, secret = request.app[KEY_CREDENTIALS]
    try:
        return api.TokenVerifier(key, secret).verify(auth.removeprefix("Bearer "))
    except Exception as e:
        return _twirp_error(401, "unauthenticated", f"invalid token: {e}")


async def create_room(request: web.Request) -> web.Response:
    claims = _claims(request)
    if isinstance(claims, web.Response):
        return claims
    if not (claims.video and claims.video.room_create):
        return _twirp_error(403, "permission_denied", "roomCreate grant required")
    req = CreateRoomRequest.FromString(await request.read())
    if not req.name:
        return _twirp_error(400, "invalid_argument", "room name required")
    room = Room(
        sid=f"RM_{secrets.token_hex(6)}",
        name=req.name,
        metadata=req.metadata,
        empty_timeout=req.empty_timeout,
    )
    request.app[KEY_ROOMS][req.name] = room
    request.app[KEY_LOG].append(
        {
            "method": "CreateRoom",
            "room": req.name,
            "metadata": req.metadata,
            "agents": [{"agent_name": a.agent_name, "metadata": a.metadata} for a in req.agents],
        }
    )
    return web.Response(body=room.SerializeToString(), content_type="application/protobuf")


async def create_dispatch(request: web.Request) -> web.Response:
    claims = _claims(request)
    if isinstance(claims, web.Response):
        return claims
    req = CreateAgentDispatchRequest.FromString(await request.read())
    if not (claims.video and claims.video.room_admin and claims.video.room == req.room):
        return _twirp_error(403, "permission_denied", "roomAdmin grant for this room required")
    if req.room not in request.app[KEY_ROOMS]:
        return _twirp_error(404, "not_found", f"room {req.room} does not exist")
    dispatch = AgentDispatch(
        id=f"AD_{secrets.token_hex(6)}", agent_name=req.agent_name, room=req.room, metadata=req.metadata
    )
    request.app[KEY_LOG].append(
        {"method": "CreateDispatch", "room": req.room, "agent_name": req.agent_name, "metadata": req.metadata}
    )
    return web.Response(body=dispatch.SerializeToString(), content_type="application/protobuf")


async def health(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def requests_log(request: web.Request) -> web.Response:
    return web.json_response(request.app[KEY_LOG])


def create_app(*, api_key: str, api_secret: str, rooms: dict[str, Any] | None = None) -> web.Application:
    app = web.Application()
    app[KEY_CREDENTIALS] = (api_key, api_secret)
    app[KEY_ROOMS] = rooms if rooms is not None else {}
    app[KEY_LOG] = []
    app.router.add_get("/", health)
    app.router.add_get("/_fake/requests", requests_log)
    app.router.add_post("/twirp/livekit.RoomService/CreateRoom", create_room)
    app.router.add_post("/twirp/livekit.AgentDispatchService/CreateDispatch", create_dispatch)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="devkey")
    parser.add_argument("--api-secret", default="secret")
    parser.add_argument("--room", action="append", default=[], help="a room that already exists")
    args = parser.parse_args()
    rooms: dict[str, Any] = {name: Room(name=name) for name in args.room}
    web.run_app(
        create_app(api_key=args.api_key, api_secret=args.api_secret, rooms=rooms),
        host=args.host,
        port=args.port,
        print=None,
    )


if __name__ == "__main__":
    main()
