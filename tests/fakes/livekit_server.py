"""A stand-in for the LiveKit server's HTTP side, speaking its real wire protocol.

No LiveKit server can run here (no Docker, no binary), so `eloquence api`, `eloquence sip setup` and
the agent worker are tested against this:
- `GET /` answers "OK" like livekit-server's health check;
- Twirp `POST /twirp/livekit.RoomService/CreateRoom` and
  `POST /twirp/livekit.AgentDispatchService/CreateDispatch`;
- Twirp `POST /twirp/livekit.SIP/{Create,List,Update}SIPInboundTrunk` and
  `.../{Create,List,Update}SIPDispatchRule`, with LiveKit's own validation of the essentials
  (an inbound trunk needs numbers, allowed addresses or credentials; a rule needs a rule type).
  Every Twirp call takes and returns protobuf, checks the bearer JWT with livekit-api's own
  TokenVerifier (signature, issuer and the grant the real server asks for: roomCreate, roomAdmin
  for the room, or sip.admin), and answers errors as Twirp JSON (`{"code", "msg"}`);
- the agent worker's websocket `GET /agent`: checks the `agent` grant, answers the worker's
  registration with a worker id, and its pings with pongs;
- `GET /_fake/requests` lists what was asked (for assertions), `GET /_fake/sip` the SIP objects.

Run: `python -m fakes.livekit_server --port N --api-key K --api-secret S` (with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message
from livekit import api
from livekit.protocol import agent as agent_proto
from livekit.protocol import sip as sip_proto
from livekit.protocol.agent_dispatch import AgentDispatch, CreateAgentDispatchRequest
from livekit.protocol.models import Room
from livekit.protocol.room import CreateRoomRequest

if TYPE_CHECKING:
    from eloquence.services import ServiceProcess

KEY_CREDENTIALS = web.AppKey("credentials", tuple)
KEY_ROOMS = web.AppKey("rooms", dict)
KEY_LOG = web.AppKey("log", list)
KEY_TRUNKS = web.AppKey("trunks", dict)
KEY_RULES = web.AppKey("rules", dict)


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


# --------------------------------------------------------------------------- SIP (livekit.SIP)

SipHandler = Callable[[web.Request, Any], Awaitable[Message | web.Response]]


def _sip_method(request_type: type[Message], handler: SipHandler) -> Callable[[web.Request], Awaitable[Any]]:
    """A Twirp SIP method: sip.admin grant, protobuf in and out, logged."""

    async def method(request: web.Request) -> web.Response:
        claims = _claims(request)
        if isinstance(claims, web.Response):
            return claims
        if not (claims.sip and claims.sip.admin):
            return _twirp_error(403, "permission_denied", "sip.admin grant required")
        try:
            req = request_type.FromString(await request.read())
        except DecodeError:
            return _twirp_error(400, "malformed", "the body is not a protobuf of the expected type")
        name = request.match_info["method"]
        request.app[KEY_LOG].append({"method": name, "request": MessageToDict(req)})
        result = await handler(request, req)
        if isinstance(result, web.Response):
            return result
        return web.Response(body=result.SerializeToString(), content_type="application/protobuf")

    return method


def _trunk_error(trunk: sip_proto.SIPInboundTrunkInfo) -> web.Response | None:
    if not (trunk.numbers or trunk.allowed_addresses or trunk.auth_username):
        return _twirp_error(
            400, "invalid_argument", "an inbound trunk needs numbers, allowed addresses or credentials"
        )
    return None


async def create_inbound_trunk(request: web.Request, req: sip_proto.CreateSIPInboundTrunkRequest) -> Any:
    trunk = sip_proto.SIPInboundTrunkInfo()
    trunk.CopyFrom(req.trunk)
    if error := _trunk_error(trunk):
        return error
    trunk.sip_trunk_id = f"ST_{secrets.token_hex(6)}"
    request.app[KEY_TRUNKS][trunk.sip_trunk_id] = trunk
    return trunk


async def list_inbound_trunks(request: web.Request, req: sip_proto.ListSIPInboundTrunkRequest) -> Any:
    trunks = list(request.app[KEY_TRUNKS].values())
    if req.trunk_ids:
        trunks = [t for t in trunks if t.sip_trunk_id in req.trunk_ids]
    return sip_proto.ListSIPInboundTrunkResponse(items=trunks)


async def update_inbound_trunk(request: web.Request, req: sip_proto.UpdateSIPInboundTrunkRequest) -> Any:
    trunks = request.app[KEY_TRUNKS]
    if req.sip_trunk_id not in trunks:
        return _twirp_error(404, "not_found", f"trunk {req.sip_trunk_id} does not exist")
    if req.WhichOneof("action") != "replace":
        return _twirp_error(400, "invalid_argument", "this stand-in only supports `replace` updates")
    trunk = sip_proto.SIPInboundTrunkInfo()
    trunk.CopyFrom(req.replace)
    if error := _trunk_error(trunk):
        return error
    trunk.sip_trunk_id = req.sip_trunk_id
    trunks[req.sip_trunk_id] = trunk
    return trunk


def _rule_error(request: web.Request, rule: sip_proto.SIPDispatchRuleInfo) -> web.Response | None:
    if rule.rule.WhichOneof("rule") is None:
        return _twirp_error(400, "invalid_argument", "a dispatch rule needs a rule type")
    unknown = [t for t in rule.trunk_ids if t not in request.app[KEY_TRUNKS]]
    if unknown:
        return _twirp_error(400, "invalid_argument", f"unknown trunk ids {unknown}")
    return None


async def create_dispatch_rule(request: web.Request, req: sip_proto.CreateSIPDispatchRuleRequest) -> Any:
    rule = sip_proto.SIPDispatchRuleInfo()
    if req.HasField("dispatch_rule"):
        rule.CopyFrom(req.dispatch_rule)
    else:  # the older flat form of the request
        rule.rule.CopyFrom(req.rule)
        rule.trunk_ids.extend(req.trunk_ids)
        rule.name, rule.metadata = req.name, req.metadata
        if req.HasField("room_config"):
            rule.room_config.CopyFrom(req.room_config)
    if error := _rule_error(request, rule):
        return error
    rule.sip_dispatch_rule_id = f"SDR_{secrets.token_hex(6)}"
    request.app[KEY_RULES][rule.sip_dispatch_rule_id] = rule
    return rule


async def list_dispatch_rules(request: web.Request, req: sip_proto.ListSIPDispatchRuleRequest) -> Any:
    rules = list(request.app[KEY_RULES].values())
    if req.dispatch_rule_ids:
        rules = [r for r in rules if r.sip_dispatch_rule_id in req.dispatch_rule_ids]
    return sip_proto.ListSIPDispatchRuleResponse(items=rules)


async def update_dispatch_rule(request: web.Request, req: sip_proto.UpdateSIPDispatchRuleRequest) -> Any:
    rules = request.app[KEY_RULES]
    if req.sip_dispatch_rule_id not in rules:
        return _twirp_error(404, "not_found", f"dispatch rule {req.sip_dispatch_rule_id} does not exist")
    if req.WhichOneof("action") != "replace":
        return _twirp_error(400, "invalid_argument", "this stand-in only supports `replace` updates")
    rule = sip_proto.SIPDispatchRuleInfo()
    rule.CopyFrom(req.replace)
    if error := _rule_error(request, rule):
        return error
    rule.sip_dispatch_rule_id = req.sip_dispatch_rule_id
    rules[req.sip_dispatch_rule_id] = rule
    return rule


SIP_METHODS: dict[str, tuple[type[Message], SipHandler]] = {
    "CreateSIPInboundTrunk": (sip_proto.CreateSIPInboundTrunkRequest, create_inbound_trunk),
    "ListSIPInboundTrunk": (sip_proto.ListSIPInboundTrunkRequest, list_inbound_trunks),
    "UpdateSIPInboundTrunk": (sip_proto.UpdateSIPInboundTrunkRequest, update_inbound_trunk),
    "CreateSIPDispatchRule": (sip_proto.CreateSIPDispatchRuleRequest, create_dispatch_rule),
    "ListSIPDispatchRule": (sip_proto.ListSIPDispatchRuleRequest, list_dispatch_rules),
    "UpdateSIPDispatchRule": (sip_proto.UpdateSIPDispatchRuleRequest, update_dispatch_rule),
}


async def sip_twirp(request: web.Request) -> web.Response:
    entry = SIP_METHODS.get(request.match_info["method"])
    if entry is None:
        return _twirp_error(404, "bad_route", f"no handler for {request.path}")
    return await _sip_method(*entry)(request)


async def sip_state(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "trunks": [MessageToDict(t) for t in request.app[KEY_TRUNKS].values()],
            "rules": [MessageToDict(r) for r in request.app[KEY_RULES].values()],
        }
    )


# --------------------------------------------------------------------------- agent worker websocket


async def agent_socket(request: web.Request) -> web.StreamResponse:
    """The worker protocol's first steps: registration, then status updates and pings."""
    claims = _claims(request)
    if isinstance(claims, web.Response):
        return claims
    if not (claims.video and claims.video.agent):
        return _twirp_error(403, "permission_denied", "agent grant required")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for frame in ws:
        if frame.type != WSMsgType.BINARY:
            continue
        msg = agent_proto.WorkerMessage.FromString(frame.data)
        kind = msg.WhichOneof("message")
        if kind == "register":
            worker_id = f"AW_{secrets.token_hex(6)}"
            request.app[KEY_LOG].append(
                {"method": "RegisterWorker", "agent_name": msg.register.agent_name, "worker_id": worker_id}
            )
            reply = agent_proto.ServerMessage(
                register=agent_proto.RegisterWorkerResponse(
                    worker_id=worker_id, server_info=api.ServerInfo(version="fake", protocol=16)
                )
            )
            await ws.send_bytes(reply.SerializeToString())
        elif kind == "ping":
            pong = agent_proto.WorkerPong(
                last_timestamp=msg.ping.timestamp, timestamp=int(time.time() * 1000)
            )
            await ws.send_bytes(agent_proto.ServerMessage(pong=pong).SerializeToString())
    return ws


async def health(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def requests_log(request: web.Request) -> web.Response:
    return web.json_response(request.app[KEY_LOG])


def create_app(*, api_key: str, api_secret: str, rooms: dict[str, Any] | None = None) -> web.Application:
    app = web.Application()
    app[KEY_CREDENTIALS] = (api_key, api_secret)
    app[KEY_ROOMS] = rooms if rooms is not None else {}
    app[KEY_LOG] = []
    app[KEY_TRUNKS] = {}
    app[KEY_RULES] = {}
    app.router.add_get("/", health)
    app.router.add_get("/agent", agent_socket)
    app.router.add_get("/_fake/requests", requests_log)
    app.router.add_get("/_fake/sip", sip_state)
    app.router.add_post("/twirp/livekit.RoomService/CreateRoom", create_room)
    app.router.add_post("/twirp/livekit.AgentDispatchService/CreateDispatch", create_dispatch)
    app.router.add_post("/twirp/livekit.SIP/{method}", sip_twirp)
    return app


# --------------------------------------------------------------------------- the tests' side


def standin_argv(api_key: str, api_secret: str) -> tuple[str, ...]:
    """`python -m` arguments that start the stand-in with these credentials."""
    return ("fakes.livekit_server", "--api-key", api_key, "--api-secret", api_secret)


@dataclass(frozen=True)
class LiveKitStandin:
    """A running stand-in process, with its credentials and what it was asked."""

    process: ServiceProcess
    api_key: str = "standin-key"
    api_secret: str = "standin-s3cr3t-never-shown-0123456789"
    agent_name: str = "eloquence-coach-standin"

    @property
    def url(self) -> str:
        return self.process.url

    def env(self, **extra: str) -> dict[str, str]:
        """What an Eloquence process needs to reach the stand-in at its public URL (LIVEKIT_URL)."""
        return {
            "LIVEKIT_URL": self.url.replace("http://", "ws://"),
            "LIVEKIT_INTERNAL_URL": "",
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
            "LIVEKIT_AGENT_NAME": self.agent_name,
            **extra,
        }

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("/_fake/requests"))


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
