"""docker/caddy/Caddyfile, run by a real Caddy in front of the real API and the LiveKit stand-in.

Compose's `tls` profile runs this file unchanged; here the upstreams and ports come from the same
environment variables, pointed at local processes. Each certificate source is checked: Caddy's
internal CA (served and verified end to end), a certificate the user brings (the one served), and
ACME (the adapted configuration only: no ACME server is reachable from here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from fakes.livekit_server import LiveKitStandin
from livekit import api as lkapi
from livekit.protocol import agent as agent_proto
from support.api_process import API_KEY, running_api

from eloquence.services import free_port

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "docker" / "caddy" / "Caddyfile"


def _caddy() -> str:
    path = shutil.which("caddy")
    if path is None:
        pytest.fail("caddy is not installed: apt-get install caddy (scripts/install.sh does)")
    return path


class Caddy:
    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.https_port, self.http_port, self.admin_port = free_port(), free_port(), free_port()
        self.env = {
            "PATH": os.environ["PATH"],
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "CADDY_HTTPS_PORT": str(self.https_port),
            "CADDY_HTTP_PORT": str(self.http_port),
            "CADDY_ADMIN": f"localhost:{self.admin_port}",
            "ELOQUENCE_DOMAIN": "localhost",
            **env,
        }

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def internal_root(self) -> Path:
        return self.home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    @contextlib.contextmanager
    def running(self) -> Iterator[Caddy]:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "caddy.log").open("wb")
        proc = subprocess.Popen(
            [_caddy(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (self.home / "caddy.log").read_text()
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/config/", timeout=1)
                    break
                assert time.monotonic() < deadline, (self.home / "caddy.log").read_text()
                time.sleep(0.1)
            yield self
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def _adapt(tls: str) -> dict:
    result = subprocess.run(
        [_caddy(), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={"PATH": os.environ["PATH"], "ELOQUENCE_DOMAIN": "coach.example.com", "ELOQUENCE_TLS": tls},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def _get_text(url: str, context: ssl.SSLContext) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # the certificate is issued just after start-up
            try:
                async with session.get(url, ssl=context) as resp:
                    return resp.status, await resp.text()
            except aiohttp.ClientConnectorCertificateError:
                raise
            except aiohttp.ClientConnectorError:
                await _sleep()
    raise AssertionError(f"{url} never answered")


async def _sleep() -> None:
    await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def api_url(livekit: LiveKitStandin, service_log_dir: Path) -> Iterator[str]:
    with running_api(livekit, service_log_dir / "tls", LIVEKIT_INTERNAL_URL=livekit.url) as url:
        yield url


@pytest.fixture(scope="module")
def internal_ca_proxy(
    livekit: LiveKitStandin, api_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Caddy]:
    caddy = Caddy(
        tmp_path_factory.mktemp("caddy-internal"),
        {
            "ELOQUENCE_TLS": "internal",
            "ELOQUENCE_API_UPSTREAM": api_url.removeprefix("http://"),
            "ELOQUENCE_LIVEKIT_UPSTREAM": livekit.url.removeprefix("http://"),
        },
    )
    with caddy.running():
        yield caddy


def _trusting(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root))


async def test_https_reaches_livekit_with_the_internal_ca(internal_ca_proxy: Caddy) -> None:
    context = _trusting(internal_ca_proxy.internal_root())
    assert await _get_text(internal_ca_proxy.url + "/", context) == (200, "OK")


async def test_the_token_api_is_served_under_api(internal_ca_proxy: Caddy, livekit: LiveKitStandin) -> None:
    context = _trusting(internal_ca_proxy.internal_root())
    async with aiohttp.ClientSession() as session:
        async with session.post(
            internal_ca_proxy.url + "/api/livekit/create-room",
            json={"agent_id": "proxy-1"},
            headers={"Authorization": f"Bearer {API_KEY}"},
            ssl=context,
        ) as resp:
            body = await resp.json()
    assert resp.status == 200, body
    assert body["room_name"] in {r.get("room") for r in livekit.requests()}


async def test_livekit_websocket_signalling_passes_through(
    internal_ca_proxy: Caddy, livekit: LiveKitStandin
) -> None:
    token = (
        lkapi.AccessToken(livekit.api_key, livekit.api_secret)
        .with_grants(lkapi.VideoGrants(agent=True))
        .to_jwt()
    )
    wss = internal_ca_proxy.url.replace("https://", "wss://") + "/agent"
    context = _trusting(internal_ca_proxy.internal_root())
    register = agent_proto.WorkerMessage(register=agent_proto.RegisterWorkerRequest(agent_name="via-proxy"))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(wss, headers={"Authorization": f"Bearer {token}"}, ssl=context) as ws:
            await ws.send_bytes(register.SerializeToString())
            reply = agent_proto.ServerMessage.FromString(await ws.receive_bytes(timeout=10))
    assert reply.register.worker_id.startswith("AW_")


async def test_an_untrusted_client_is_refused(internal_ca_proxy: Caddy) -> None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _get_text(internal_ca_proxy.url + "/", ssl.create_default_context())


def test_plain_http_redirects_to_https(internal_ca_proxy: Caddy) -> None:
    request = urllib.request.Request(f"http://localhost:{internal_ca_proxy.http_port}/api/livekit/health")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.build_opener(NoRedirect).open(request, timeout=5)
    assert caught.value.code == 308
    assert caught.value.headers["Location"].startswith("https://localhost")


async def test_a_certificate_the_user_brings_is_the_one_served(
    livekit: LiveKitStandin, tmp_path: Path
) -> None:
    cert, key = tmp_path / "fullchain.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-days", "2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    caddy = Caddy(
        tmp_path / "caddy",
        {"ELOQUENCE_TLS": f"{cert} {key}", "ELOQUENCE_LIVEKIT_UPSTREAM": livekit.url.removeprefix("http://")},
    )
    with caddy.running():
        # verifies only if the served certificate is exactly the one given
        assert await _get_text(caddy.url + "/", _trusting(cert)) == (200, "OK")


def test_acme_mode_asks_the_acme_issuers_for_the_domain() -> None:
    policies = _adapt("admin@example.com")["apps"]["tls"]["automation"]["policies"]
    (policy,) = policies
    assert policy["subjects"] == ["coach.example.com"]
    assert {i["module"] for i in policy["issuers"]} == {"acme", "zerossl"}
    assert all(i["email"] == "admin@example.com" for i in policy["issuers"])


def test_compose_default_is_the_internal_ca() -> None:
    (policy,) = _adapt("internal")["apps"]["tls"]["automation"]["policies"]
    assert policy["issuers"] == [{"module": "internal"}]
