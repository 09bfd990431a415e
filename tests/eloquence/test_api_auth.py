"""Who may get a token: API keys, user JWTs (HS256 and JWKS), CORS, no-auth mode, per-caller limits,
Redis-shared limits and the API's /metrics. Every case runs the real `eloquence api` process."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from livekit import api as lkapi
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from support.redis_server import RedisServer, running_redis

from eloquence.api import create_app
from eloquence.services import API, ServiceProcess, free_port, running_service
from eloquence.settings import AppSettings

LIVEKIT_KEY = "auth-test-livekit-key"
LIVEKIT_SECRET = "auth-test-livekit-secret-0123456789abcdef"
KEY_OLD = "app-key-old-0123456789abcdef"
KEY_NEW = "app-key-new-fedcba9876543210"
JWT_SECRET = "user-jwt-hs256-secret-0123456789abcdef-0123456789"
BODY = {"exercise_type": "default", "user_id": "alice"}


def _env(**extra: str) -> dict[str, str]:
    dead = free_port()  # no LiveKit nor sidecar: the token endpoint needs none of them
    return {
        "LIVEKIT_URL": f"ws://127.0.0.1:{dead}",
        "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
        "WHISPER_STT_URL": f"http://127.0.0.1:{dead}",
        "AZURE_TTS_URL": f"http://127.0.0.1:{dead}",
        "LOCAL_LLM_URL": f"http://127.0.0.1:{dead}",
        "MISTRAL_API_KEY": "",
        "MISTRAL_BASE_URL": "",
        "ELOQUENCE_API_KEYS": "",
        "ELOQUENCE_JWT_SECRET": "",
        "ELOQUENCE_JWT_JWKS_URL": "",
        "ELOQUENCE_CORS_ORIGINS": "",
        "REDIS_URL": "",
        **extra,
    }


@contextlib.contextmanager
def _api(log_dir: Path, name: str, **env: str) -> Iterator[ServiceProcess]:
    with running_service(API, log_dir / name, env=_env(**env), timeout=60) as proc:
        yield proc


async def _post(
    url: str, *, bearer: str | None = None, body: Any = BODY, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
    all_headers = dict(headers or {})
    if bearer is not None:
        all_headers["Authorization"] = f"Bearer {bearer}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/livekit/token",
            json=body,
            headers=all_headers,
            timeout=aiohttp.ClientTimeout(total=20),
        ) as resp,
    ):
        return resp.status, json.loads(await resp.text()), CIMultiDict(resp.headers)


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, CIMultiDict[str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=20)) as resp,
    ):
        return resp.status, await resp.text(), CIMultiDict(resp.headers)


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _user_jwt(sub: str, *, secret: str = JWT_SECRET, ttl_s: int = 300, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + ttl_s, **claims}, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def keyed_api(service_log_dir: Path) -> Iterator[str]:
    with _api(
        service_log_dir,
        "api-keys",
        ELOQUENCE_API_KEYS=f"{KEY_OLD}, {KEY_NEW}",
        ELOQUENCE_JWT_SECRET=JWT_SECRET,
        API_KEY_RATE_LIMIT_PER_MINUTE="1000",
        API_RATE_LIMIT_PER_MINUTE="3",
        ELOQUENCE_CORS_ORIGINS="https://app.example.com",
    ) as proc:
        yield proc.url


async def test_no_or_a_wrong_key_gets_401_and_probes_stay_open(keyed_api: str) -> None:
    for bearer, headers in [
        (None, None),
        ("not-a-key-0123456789", None),
        (None, {"Authorization": f"Basic {KEY_OLD}"}),
        (None, {"Authorization": "Bearer "}),
        (KEY_OLD + "x", None),
    ]:
        status, body, resp_headers = await _post(keyed_api, bearer=bearer, headers=headers)
        assert status == 401, body
        assert body["error"]["code"] == "unauthorized" and "Bearer" in body["error"]["message"] + str(
            resp_headers
        )
        assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/api/livekit/health", "/api/openapi.json", "/metrics"):
        status, _, _ = await _get(keyed_api + path)
        assert status == 200, path


async def test_every_listed_key_is_valid_at_once_for_rotation(keyed_api: str) -> None:
    for key in (KEY_OLD, KEY_NEW):
        status, body, headers = await _post(keyed_api, bearer=key)
        assert status == 200, body
        claims = lkapi.TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(body["token"])
        assert claims.identity == "alice"  # an app backend names its user in the body
        raw = jwt.decode(body["token"], options={"verify_signature": False})
        assert raw["exp"] - raw["nbf"] <= 3600
        assert headers["X-Request-Id"]


async def test_a_user_jwt_sets_the_user_id_and_the_body_cannot_override_it(keyed_api: str) -> None:
    status, body, _ = await _post(keyed_api, bearer=_user_jwt("carol"), body={"exercise_type": "default"})
    assert status == 200, body
    assert lkapi.TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(body["token"]).identity == "carol"

    status, body, _ = await _post(
        keyed_api, bearer=_user_jwt("carol"), body={"exercise_type": "default", "user_id": "mallory"}
    )
    assert status == 403 and body["error"]["code"] == "user_mismatch"


@pytest.mark.parametrize(
    ("token", "code", "words"),
    [
        (_user_jwt("dave", ttl_s=-120), "token_expired", "expired"),
        (_user_jwt("dave", secret="another-secret-0123456789abcdef-0123456789"), "unauthorized", "signature"),
        (jwt.encode({"sub": "dave"}, JWT_SECRET, algorithm="HS256"), "unauthorized", "`exp`"),
        (jwt.encode({"sub": "dave", "exp": 2**40}, None, algorithm="none"), "unauthorized", "algorithm"),
        (_user_jwt("dave has spaces"), "unauthorized", "`sub`"),
        ("a.b.c", "unauthorized", "malformed"),
    ],
)
async def test_a_bad_user_jwt_gets_401_with_the_reason(
    keyed_api: str, token: str, code: str, words: str
) -> None:
    status, body, _ = await _post(keyed_api, bearer=token, body={"exercise_type": "default"})
    assert status == 401, body
    assert body["error"]["code"] == code
    assert words in body["error"]["message"]
    assert token not in json.dumps(body)


async def test_the_limit_counts_the_verified_user_not_the_body(keyed_api: str) -> None:
    token = _user_jwt("eager")
    statuses = [
        (await _post(keyed_api, bearer=token, body={"exercise_type": "default"}))[0] for _ in range(3)
    ]
    assert statuses == [200, 200, 200]
    status, body, headers = await _post(keyed_api, bearer=token, body={"exercise_type": "default"})
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    # another user has a budget of their own
    status, _, _ = await _post(keyed_api, bearer=_user_jwt("patient"), body={"exercise_type": "default"})
    assert status == 200


async def test_cors_answers_only_the_listed_origin(keyed_api: str) -> None:
    allowed, other = "https://app.example.com", "https://evil.example.net"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    async with aiohttp.ClientSession() as session:
        url = f"{keyed_api}/api/livekit/token"
        async with session.options(url, headers={"Origin": allowed, **preflight}) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == allowed
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        async with session.options(url, headers={"Origin": other, **preflight}) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers
    status, _, headers = await _post(keyed_api, bearer=KEY_NEW, headers={"Origin": allowed})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == allowed
    status, _, headers = await _post(keyed_api, bearer=KEY_NEW, headers={"Origin": other})
    assert "Access-Control-Allow-Origin" not in headers
    # a refusal carries the CORS headers too, so the page can read why
    status, _, headers = await _post(keyed_api, headers={"Origin": allowed})
    assert status == 401 and headers["Access-Control-Allow-Origin"] == allowed


async def test_metrics_count_requests_refusals_and_tokens(keyed_api: str, service_log_dir: Path) -> None:
    # runs after the cases above in this module
    await _post(keyed_api)  # one more 401
    status, text, headers = await _get(f"{keyed_api}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = _metrics(text)

    def value(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))

    assert value("eloquence_api_unauthorized_total", code="unauthorized") >= 6
    assert value("eloquence_api_unauthorized_total", code="token_expired") >= 1
    assert value("eloquence_api_rate_limited_total", kind="user") >= 1
    assert value("eloquence_api_tokens_issued_total", endpoint="token", caller="api_key") >= 2
    assert value("eloquence_api_tokens_issued_total", endpoint="token", caller="user") >= 4
    assert value("eloquence_api_requests_total", route="/api/livekit/token", status="401") >= 6
    assert value("eloquence_api_requests_total", route="/api/livekit/token", status="429") >= 1
    assert value("eloquence_api_request_seconds_count", route="/api/livekit/token") >= 15
    log = (service_log_dir / "api-keys" / "api.log").read_text()
    assert "auth: 2 API key(s), user JWTs (HS256)" in log
    for secret in (KEY_OLD, KEY_NEW, JWT_SECRET, LIVEKIT_SECRET):
        assert secret not in log and secret not in text


# --- JWKS (OIDC) -----------------------------------------------------------------------------


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, rsa.RSAPrivateKey]]:
    """An identity provider's JWKS endpoint on loopback, with one RSA key (kid `k1`)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    async def handler(_: web.Request) -> web.Response:
        return web.json_response(jwks)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/.well-known/jwks.json", key
    await runner.cleanup()


async def test_user_jwts_verify_against_a_jwks_url(
    jwks_server: tuple[str, rsa.RSAPrivateKey], service_log_dir: Path
) -> None:
    url, key = jwks_server
    issuer, audience = "https://id.example.com/", "eloquence"
    now = int(time.time())
    claims = {"sub": "auth0|frank", "iss": issuer, "aud": audience, "iat": now, "exp": now + 300}

    def rs256(payload: dict[str, Any], signer: rsa.RSAPrivateKey = key, kid: str = "k1") -> str:
        return jwt.encode(payload, signer, algorithm="RS256", headers={"kid": kid})

    with _api(
        service_log_dir,
        "api-jwks",
        ELOQUENCE_JWT_JWKS_URL=url,
        ELOQUENCE_JWT_ISSUER=issuer,
        ELOQUENCE_JWT_AUDIENCE=audience,
    ) as proc:
        body = {"exercise_type": "default"}
        status, answer, _ = await _post(proc.url, bearer=rs256(claims), body=body)
        assert status == 200, answer
        assert (
            lkapi.TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(answer["token"]).identity == "auth0|frank"
        )

        impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for token, words in [
            (rs256(claims, impostor), "signature"),
            (rs256(claims, kid="k2"), "signing key"),
            (rs256({**claims, "aud": "another-app"}), "audience"),
            (rs256({**claims, "iss": "https://evil.example.com/"}), "issuer"),
            # an HS256 token "signed" with the public key must not pass (algorithm confusion)
            (
                _user_jwt("frank", secret=json.dumps(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))),
                "algorithm",
            ),
        ]:
            status, answer, _ = await _post(proc.url, bearer=token, body=body)
            assert status == 401 and words in answer["error"]["message"], answer


# --- no keys, no auth ---------------------------------------------------------------------------


async def test_without_keys_every_token_request_is_refused(service_log_dir: Path) -> None:
    with _api(service_log_dir, "api-unconfigured") as proc:
        status, body, _ = await _post(proc.url, bearer="anything-at-all-0123456789")
        assert status == 401
        status, body, _ = await _post(proc.url)
        assert status == 401
        log = (service_log_dir / "api-unconfigured" / "api.log").read_text()
        assert "WARNING" in log and "every token request is refused" in log


async def test_no_auth_mode_must_be_asked_for_and_warns(service_log_dir: Path) -> None:
    with _api(service_log_dir, "api-open", ELOQUENCE_API_AUTH="none", API_RATE_LIMIT_PER_MINUTE="2") as proc:
        assert (await _post(proc.url))[0] == 200
        assert (await _post(proc.url, body={**BODY, "user_id": "bob"}))[0] == 200
        # anonymous callers are counted by address: a new user_id does not buy a new budget
        status, _, _ = await _post(proc.url, body={**BODY, "user_id": "carol"})
        assert status == 429
        log = (service_log_dir / "api-open" / "api.log").read_text()
        assert "WARNING" in log and "NO AUTHENTICATION" in log


def test_bad_security_settings_refuse_to_build_the_app() -> None:
    with pytest.raises(ValueError, match="explicit list"):
        create_app(AppSettings(ELOQUENCE_CORS_ORIGINS="*"))
    with pytest.raises(ValueError, match="16 characters"):
        create_app(AppSettings(ELOQUENCE_API_KEYS="short"))
    with pytest.raises(ValueError, match="'keys' or 'none'"):
        create_app(AppSettings(ELOQUENCE_API_AUTH="off"))
    with pytest.raises(ValidationError):
        AppSettings(API_TOKEN_TTL_S="7200")  # LiveKit tokens live one hour at most


# --- Redis-shared limits -----------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


async def test_two_replicas_share_the_limit_through_redis(redis: RedisServer, service_log_dir: Path) -> None:
    env = {"ELOQUENCE_API_KEYS": KEY_OLD, "API_KEY_RATE_LIMIT_PER_MINUTE": "3", "REDIS_URL": redis.url}
    with (
        _api(service_log_dir, "api-replica-a", **env) as a,
        _api(service_log_dir, "api-replica-b", **env) as b,
    ):
        assert [(await _post(u, bearer=KEY_OLD))[0] for u in (a.url, b.url, a.url)] == [200, 200, 200]
        status, _, headers = await _post(b.url, bearer=KEY_OLD)
        assert status == 429 and int(headers["Retry-After"]) >= 1
        # Redis gone: the limits fail open (authentication still holds) and the log says so
        redis.stop()
        assert (await _post(a.url, bearer=KEY_OLD))[0] == 200
        assert (await _post(a.url, bearer="wrong-key-0123456789"))[0] == 401
        log = (service_log_dir / "api-replica-a" / "api.log").read_text()
        assert "rate-limit storage (redis) unavailable" in log
