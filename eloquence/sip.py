"""`eloquence sip setup`: phone calls to the coach through LiveKit SIP.

The `sip` compose profile runs livekit/sip, which answers calls but only for trunks and dispatch
rules LiveKit knows. This command creates them through livekit-api's SIP service, at the internal
LiveKit URL (LIVEKIT_INTERNAL_URL, else LIVEKIT_URL):

- an inbound trunk (`eloquence-inbound`) for the numbers the user's SIP provider routes to this
  server, accepted only from the provider's addresses and/or with digest credentials;
- a dispatch rule (`eloquence-coach`) that puts each caller in a room of their own
  (`<prefix>_<caller>_<random>`) and dispatches the coach there explicitly (LIVEKIT_AGENT_NAME),
  with the chosen exercise in the job metadata, as `eloquence api` does.

It is idempotent: both are found by name. One that already says what was asked is left alone; one
that differs is replaced in place (same id); a missing one is created. The trunk password comes
from SIP_AUTH_PASSWORD (kept out of the shell history) and is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .settings import AppSettings

if TYPE_CHECKING:
    from livekit import api as lkapi

NUMBER_RE = re.compile(r"^\+?[0-9]{3,15}$")
ROOM_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
DEFAULT_TRUNK_NAME = "eloquence-inbound"
DEFAULT_RULE_NAME = "eloquence-coach"
PASSWORD_ENV = "SIP_AUTH_PASSWORD"
TIMEOUT_S = 10.0

Action = Literal["created", "updated", "unchanged"]


class SipSetupError(Exception):
    """A setup that cannot be done: the message says what to change."""


@dataclass(frozen=True)
class SipSetup:
    """What to provision: the trunk's numbers and who may use it, and what callers get."""

    numbers: tuple[str, ...]
    allowed_addresses: tuple[str, ...] = ()
    auth_username: str = ""
    auth_password: str = field(default="", repr=False)
    exercise: str = "default"
    language: str | None = None
    trunk_name: str = DEFAULT_TRUNK_NAME
    rule_name: str = DEFAULT_RULE_NAME
    room_prefix: str = "call"

    def validate(self) -> None:
        from .exercises import REGISTRY

        if not self.numbers:
            raise SipSetupError("give at least one phone number (--number +33123456789)")
        for number in self.numbers:
            if not NUMBER_RE.match(number):
                raise SipSetupError(f"{number!r} is not a phone number: digits, optionally after a `+`")
        for address in self.allowed_addresses:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise SipSetupError(
                    f"{address!r} is not an IP address or CIDR range (e.g. 203.0.113.10 or 203.0.113.0/24)"
                ) from None
        if bool(self.auth_username) != bool(self.auth_password):
            raise SipSetupError(
                f"digest credentials need both --auth-username and the password in {PASSWORD_ENV}"
            )
        if not self.allowed_addresses and not self.auth_username:
            raise SipSetupError(
                "anyone could call in through this trunk: restrict it to your provider's addresses "
                f"(--allowed-address) and/or set credentials (--auth-username, {PASSWORD_ENV})"
            )
        if self.exercise not in REGISTRY:
            raise SipSetupError(f"unknown exercise {self.exercise!r}; known: {', '.join(REGISTRY.names())}")
        if not ROOM_PREFIX_RE.match(self.room_prefix):
            raise SipSetupError("--room-prefix: 1-32 letters, digits, `_ . -`")

    def job_metadata(self) -> str:
        from .metadata import build_metadata

        config = {"language": self.language} if self.language else None
        return build_metadata(exercise_type=self.exercise, config=config)


@dataclass(frozen=True)
class SipSetupResult:
    trunk_id: str
    trunk_action: Action
    rule_id: str
    rule_action: Action

    def as_dict(self) -> dict[str, str]:
        return {
            "trunk_id": self.trunk_id,
            "trunk": self.trunk_action,
            "dispatch_rule_id": self.rule_id,
            "dispatch_rule": self.rule_action,
        }


# --------------------------------------------------------------------------- desired objects

# The fields this command sets; anything else on the server (timestamps, defaults) is left alone.
TRUNK_FIELDS = ("name", "numbers", "allowed_addresses", "auth_username", "auth_password", "metadata")
RULE_FIELDS = ("name", "trunk_ids", "rule", "room_config", "metadata")


def desired_trunk(setup: SipSetup) -> Any:
    from livekit import api as lkapi

    return lkapi.SIPInboundTrunkInfo(
        name=setup.trunk_name,
        numbers=list(setup.numbers),
        allowed_addresses=list(setup.allowed_addresses),
        auth_username=setup.auth_username,
        auth_password=setup.auth_password,
        metadata=json.dumps({"managed_by": "eloquence sip setup"}),
    )


def desired_rule(setup: SipSetup, *, trunk_id: str, agent_name: str) -> Any:
    from livekit import api as lkapi

    metadata = setup.job_metadata()
    return lkapi.SIPDispatchRuleInfo(
        name=setup.rule_name,
        trunk_ids=[trunk_id],
        rule=lkapi.SIPDispatchRule(
            dispatch_rule_individual=lkapi.SIPDispatchRuleIndividual(room_prefix=setup.room_prefix)
        ),
        # explicit dispatch: the worker registers under this name and gets no job otherwise
        room_config=lkapi.RoomConfiguration(
            agents=[lkapi.RoomAgentDispatch(agent_name=agent_name, metadata=metadata)]
        ),
        metadata=metadata,
    )


def _differs(existing: Any, desired: Any, fields: Sequence[str]) -> bool:
    """Whether `existing` says something else than `desired` in any of `fields`."""
    for name in fields:
        mine, theirs = getattr(desired, name), getattr(existing, name)
        if hasattr(mine, "SerializeToString"):  # a message: compare its wire form
            mine = mine.SerializeToString(deterministic=True)
            theirs = theirs.SerializeToString(deterministic=True)
        elif not isinstance(mine, str):  # a repeated field
            mine, theirs = list(mine), list(theirs)
        if mine != theirs:
            return True
    return False


def _by_name(items: Sequence[Any], name: str) -> Any | None:
    matches = [item for item in items if item.name == name]
    return matches[0] if matches else None


# --------------------------------------------------------------------------- applying


async def _call(what: str, url: str, call: Any) -> Any:
    import aiohttp
    from livekit import api as lkapi

    try:
        return await call
    except lkapi.TwirpError as e:
        raise SipSetupError(f"LiveKit refused to {what}: {e.code}: {e.message}") from None
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        raise SipSetupError(
            f"could not reach LiveKit at {url} to {what} ({type(e).__name__}); "
            "set LIVEKIT_INTERNAL_URL (compose: http://livekit:7880) or LIVEKIT_URL"
        ) from None


async def apply(setup: SipSetup, settings: AppSettings) -> SipSetupResult:
    """Create or update the trunk, then the rule that points at it."""
    import aiohttp
    from livekit import api as lkapi

    setup.validate()
    url = settings.livekit_server_url
    client: lkapi.LiveKitAPI
    async with lkapi.LiveKitAPI(
        url,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
    ) as client:
        sip = client.sip
        trunks = await _call(
            "list the inbound trunks", url, sip.list_inbound_trunk(lkapi.ListSIPInboundTrunkRequest())
        )
        trunk = desired_trunk(setup)
        existing = _by_name(trunks.items, setup.trunk_name)
        trunk_action: Action
        if existing is None:
            created = await _call(
                "create the inbound trunk",
                url,
                sip.create_inbound_trunk(lkapi.CreateSIPInboundTrunkRequest(trunk=trunk)),
            )
            trunk_id, trunk_action = created.sip_trunk_id, "created"
        elif _differs(existing, trunk, TRUNK_FIELDS):
            await _call(
                "update the inbound trunk", url, sip.update_inbound_trunk(existing.sip_trunk_id, trunk)
            )
            trunk_id, trunk_action = existing.sip_trunk_id, "updated"
        else:
            trunk_id, trunk_action = existing.sip_trunk_id, "unchanged"

        rules = await _call(
            "list the dispatch rules", url, sip.list_dispatch_rule(lkapi.ListSIPDispatchRuleRequest())
        )
        rule = desired_rule(setup, trunk_id=trunk_id, agent_name=settings.livekit_agent_name)
        existing_rule = _by_name(rules.items, setup.rule_name)
        rule_action: Action
        if existing_rule is None:
            created_rule = await _call(
                "create the dispatch rule",
                url,
                sip.create_dispatch_rule(lkapi.CreateSIPDispatchRuleRequest(dispatch_rule=rule)),
            )
            rule_id, rule_action = created_rule.sip_dispatch_rule_id, "created"
        elif _differs(existing_rule, rule, RULE_FIELDS):
            await _call(
                "update the dispatch rule",
                url,
                sip.update_dispatch_rule(existing_rule.sip_dispatch_rule_id, rule),
            )
            rule_id, rule_action = existing_rule.sip_dispatch_rule_id, "updated"
        else:
            rule_id, rule_action = existing_rule.sip_dispatch_rule_id, "unchanged"
    return SipSetupResult(
        trunk_id=trunk_id, trunk_action=trunk_action, rule_id=rule_id, rule_action=rule_action
    )


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`eloquence sip setup ...` (cheap: no livekit import)."""
    sub = parser.add_subparsers(dest="sip_command", required=True)
    setup = sub.add_parser(
        "setup",
        help="create or update the inbound trunk and the dispatch rule that sends callers to the coach",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    setup.add_argument(
        "--number",
        action="append",
        default=[],
        required=True,
        help="a phone number (E.164); repeat for several",
    )
    setup.add_argument(
        "--allowed-address",
        action="append",
        default=[],
        help="an IP or CIDR range your SIP provider calls from; repeat for several",
    )
    setup.add_argument("--auth-username", default="", help=f"digest username (password in ${PASSWORD_ENV})")
    setup.add_argument(
        "--exercise", default="default", help="the exercise callers get (see `eloquence exercises`)"
    )
    setup.add_argument(
        "--language", default=None, help="the conversation language, e.g. fr (default: the agent's)"
    )
    setup.add_argument("--trunk-name", default=DEFAULT_TRUNK_NAME)
    setup.add_argument("--rule-name", default=DEFAULT_RULE_NAME)
    setup.add_argument("--room-prefix", default="call", help="rooms are named <prefix>_<caller>_<random>")
    setup.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    setup = SipSetup(
        numbers=tuple(args.number),
        allowed_addresses=tuple(args.allowed_address),
        auth_username=args.auth_username,
        auth_password=os.environ.get(PASSWORD_ENV, "") if args.auth_username else "",
        exercise=args.exercise,
        language=args.language,
        trunk_name=args.trunk_name,
        rule_name=args.rule_name,
        room_prefix=args.room_prefix,
    )
    settings = AppSettings()
    try:
        result = asyncio.run(apply(setup, settings))
    except SipSetupError as e:
        print(f"eloquence sip setup: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"inbound trunk {setup.trunk_name} ({result.trunk_id}): {result.trunk_action}")
        print(
            f"dispatch rule {setup.rule_name} ({result.rule_id}): {result.rule_action}; callers to "
            f"{', '.join(setup.numbers)} get the {setup.exercise} exercise from {settings.livekit_agent_name}"
        )
        print(
            "Point your SIP provider's trunk at sip:<this server's public address>:5060 (see docs/deploy.md)."
        )
    return 0
