"""`eloquence sip setup` as a real command, against the LiveKit stand-in's SIP Twirp service.

The stand-in checks each call's token (signature, issuer, sip.admin grant) as LiveKit does, so a
call signed with the wrong secret or without the grant fails there, not in a mock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from fakes.livekit_server import LiveKitStandin

from eloquence.services import free_port

PROVIDER = "203.0.113.0/24"


def _sip_setup(
    livekit: LiveKitStandin, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, with LiveKit reachable only at the internal URL."""
    environment = {
        **{k: v for k, v in os.environ.items() if k != "SIP_AUTH_PASSWORD"},
        **livekit.env(
            LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}",  # the public URL: not reachable from here
            LIVEKIT_INTERNAL_URL=livekit.url,
        ),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "eloquence", "sip", "setup", "--json", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _named(livekit: LiveKitStandin, kind: str, name: str) -> list[dict[str, Any]]:
    return [item for item in livekit.get("/_fake/sip")[kind] if item.get("name") == name]


def _writes(livekit: LiveKitStandin) -> list[str]:
    return [r["method"] for r in livekit.requests() if not r["method"].startswith("List")]


def test_creates_a_trunk_and_a_rule_that_dispatches_the_coach(livekit: LiveKitStandin) -> None:
    result = _ok(
        _sip_setup(
            livekit,
            "--number", "+33123456789",
            "--number", "+33198765432",
            "--allowed-address", PROVIDER,
            "--exercise", "confidence_boost",
            "--language", "fr",
            "--trunk-name", "t-create",
            "--rule-name", "r-create",
        )
    )  # fmt: skip
    assert result["trunk"] == "created" and result["dispatch_rule"] == "created"

    (trunk,) = _named(livekit, "trunks", "t-create")
    assert trunk["sipTrunkId"] == result["trunk_id"]
    assert trunk["numbers"] == ["+33123456789", "+33198765432"]
    assert trunk["allowedAddresses"] == [PROVIDER]

    (rule,) = _named(livekit, "rules", "r-create")
    assert rule["sipDispatchRuleId"] == result["dispatch_rule_id"]
    assert rule["trunkIds"] == [result["trunk_id"]]
    assert rule["rule"]["dispatchRuleIndividual"]["roomPrefix"] == "call"
    # explicit dispatch: the rule's room configuration names the worker's agent name
    (dispatch,) = rule["roomConfig"]["agents"]
    assert dispatch["agentName"] == livekit.agent_name
    assert json.loads(dispatch["metadata"]) == {
        "exercise_type": "confidence_boost",
        "config": {"language": "fr"},
    }


def test_a_second_run_changes_nothing(livekit: LiveKitStandin) -> None:
    args = (
        "--number",
        "+441234567890",
        "--allowed-address",
        PROVIDER,
        "--trunk-name",
        "t-idem",
        "--rule-name",
        "r-idem",
    )
    first = _ok(_sip_setup(livekit, *args))
    writes_before = _writes(livekit)
    second = _ok(_sip_setup(livekit, *args))
    assert second == {**first, "trunk": "unchanged", "dispatch_rule": "unchanged"}
    assert _writes(livekit) == writes_before  # listed, nothing created or updated
    assert len(_named(livekit, "trunks", "t-idem")) == 1
    assert len(_named(livekit, "rules", "r-idem")) == 1


def test_a_changed_exercise_updates_the_rule_in_place(livekit: LiveKitStandin) -> None:
    args = (
        "--number",
        "+15550100",
        "--allowed-address",
        PROVIDER,
        "--trunk-name",
        "t-upd",
        "--rule-name",
        "r-upd",
    )
    first = _ok(_sip_setup(livekit, *args))
    changed = _ok(_sip_setup(livekit, *args, "--exercise", "confidence_boost"))
    assert changed["trunk"] == "unchanged" and changed["dispatch_rule"] == "updated"
    assert changed["dispatch_rule_id"] == first["dispatch_rule_id"]
    (rule,) = _named(livekit, "rules", "r-upd")
    (dispatch,) = rule["roomConfig"]["agents"]
    assert json.loads(dispatch["metadata"])["exercise_type"] == "confidence_boost"


def test_credentials_come_from_the_environment_and_are_never_printed(livekit: LiveKitStandin) -> None:
    password = "pw-3c1f9b-never-printed"
    result = _sip_setup(
        livekit,
        "--number", "+15550111",
        "--auth-username", "provider-user",
        "--trunk-name", "t-auth",
        "--rule-name", "r-auth",
        env={"SIP_AUTH_PASSWORD": password},
    )  # fmt: skip
    _ok(result)
    assert password not in result.stdout + result.stderr
    (trunk,) = _named(livekit, "trunks", "t-auth")
    assert trunk["authUsername"] == "provider-user" and trunk["authPassword"] == password


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--number", "+15550122"), "anyone could call in"),
        (("--number", "not-a-number", "--allowed-address", PROVIDER), "is not a phone number"),
        (("--number", "+15550122", "--allowed-address", "300.1.2.3"), "is not an IP address"),
        (("--number", "+15550122", "--allowed-address", PROVIDER, "--exercise", "nope"), "unknown exercise"),
        (("--number", "+15550122", "--auth-username", "u"), "SIP_AUTH_PASSWORD"),
    ],
)
def test_a_bad_setup_is_refused_before_calling_livekit(
    livekit: LiveKitStandin, args: tuple[str, ...], message: str
) -> None:
    before = len(livekit.requests())
    result = _sip_setup(livekit, *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(livekit.requests()) == before


def test_a_wrong_secret_is_refused_by_livekit_with_a_clear_message(livekit: LiveKitStandin) -> None:
    result = _sip_setup(
        livekit, "--number", "+15550133", "--allowed-address", PROVIDER, env={"LIVEKIT_API_SECRET": "wrong"}
    )
    assert result.returncode == 1
    assert "LiveKit refused to list the inbound trunks: unauthenticated" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_livekit_names_the_url(livekit: LiveKitStandin) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = _sip_setup(
        livekit, "--number", "+15550144", "--allowed-address", PROVIDER, env={"LIVEKIT_INTERNAL_URL": dead}
    )
    assert result.returncode == 1
    assert f"could not reach LiveKit at {dead}" in result.stderr
    assert "Traceback" not in result.stderr
