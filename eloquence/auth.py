"""Who is calling the API: an app backend with an API key, or a user with a verified JWT.

    Authorization: Bearer <key>        a key from ELOQUENCE_API_KEYS (several valid at once, for rotation);
                                       the body's `user_id` names the user the backend asks for
    Authorization: Bearer <user JWT>   HS256 (ELOQUENCE_JWT_SECRET) or a JWKS URL (ELOQUENCE_JWT_JWKS_URL):
                                       the user_id is the token's verified `sub`, never the body's

ELOQUENCE_API_AUTH=none turns authentication off; it is never the default and it warns. With
neither keys nor a JWT verifier configured, every protected request gets 401 (fail closed).
Credentials are compared in constant time, and never logged or echoed: a key shows up in logs only
as `key#<8 hex of its SHA-256>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from aiohttp import web

from .settings import AppSettings

logger = logging.getLogger("eloquence.auth")

USER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@|:-]{0,127}$")
"""A verified `sub`: OIDC subjects such as `auth0|5f3c...` or a UUID."""
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
JWKS_CACHE_S = 300
JWKS_TIMEOUT_S = 5
LEEWAY_S = 30
MIN_KEY_CHARS = 16


class AuthError(Exception):
    """401 (no or bad credentials), 403 (credentials that do not allow this) or 503 (JWKS down)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Caller:
    kind: Literal["api_key", "user", "anonymous"]
    limit_key: str
    """What rate limits count against: `key#<fp>`, `user:<sub>` or `ip:<address>`."""
    user_id: str | None = None
    """The verified user (JWT callers only)."""

    @property
    def label(self) -> str:
        """Safe to log."""
        return self.limit_key


def key_fingerprint(key: str) -> str:
    return "key#" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_keys(raw: str | None) -> list[str]:
    return [k.strip() for k in (raw or "").split(",") if k.strip()]


class Authenticator:
    def __init__(
        self,
        *,
        api_keys: list[str],
        jwt_secret: str | None = None,
        jwks_url: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        disabled: bool = False,
    ) -> None:
        short = [k for k in api_keys if len(k) < MIN_KEY_CHARS]
        if short:
            raise ValueError(f"ELOQUENCE_API_KEYS: every key needs {MIN_KEY_CHARS} characters or more")
        self._keys = [k.encode() for k in api_keys]
        self._jwt_secret = jwt_secret or None
        self._audience, self._issuer = audience or None, issuer or None
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=JWKS_CACHE_S, timeout=JWKS_TIMEOUT_S)
            if jwks_url
            else None
        )
        self.disabled = disabled

    @classmethod
    def from_settings(cls, settings: AppSettings) -> Authenticator:
        mode = settings.api_auth.strip().lower()
        if mode not in ("keys", "none"):
            raise ValueError(f"ELOQUENCE_API_AUTH must be 'keys' or 'none', not {settings.api_auth!r}")
        return cls(
            api_keys=parse_keys(settings.api_keys),
            jwt_secret=settings.jwt_secret,
            jwks_url=settings.jwt_jwks_url,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            disabled=mode == "none",
        )

    @property
    def configured(self) -> bool:
        return bool(self._keys or self._jwt_secret or self._jwks)

    def describe(self) -> str:
        """One line for the start-up log (counts and kinds only, no secret)."""
        if self.disabled:
            return "NO AUTHENTICATION (ELOQUENCE_API_AUTH=none): anyone who reaches this port gets tokens"
        parts = [f"{len(self._keys)} API key(s)"] if self._keys else []
        if self._jwt_secret:
            parts.append("user JWTs (HS256)")
        if self._jwks:
            parts.append("user JWTs (JWKS)")
        if not parts:
            return "no ELOQUENCE_API_KEYS nor JWT verifier set: every token request is refused (401)"
        return "auth: " + ", ".join(parts)

    async def authenticate(self, request: web.Request) -> Caller:
        if self.disabled:
            return Caller("anonymous", f"ip:{request.remote or 'unknown'}")
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthError(
                401,
                "unauthorized",
                "missing credentials: send `Authorization: Bearer <API key or user token>`",
            )
        presented = credential.encode()
        # compare against every key (no early exit), so timing says nothing about which matched
        matches = [hmac.compare_digest(presented, key) for key in self._keys]
        if any(matches):
            return Caller("api_key", key_fingerprint(credential))
        if credential.count(".") == 2 and (self._jwt_secret or self._jwks):
            sub = await self._verify_jwt(credential)
            return Caller("user", f"user:{sub}", user_id=sub)
        raise AuthError(401, "unauthorized", "invalid credentials: unknown API key or unverifiable token")

    async def _verify_jwt(self, token: str) -> str:
        options: dict[str, Any] = {"require": ["exp", "sub"], "verify_aud": self._audience is not None}
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") == "HS256" and self._jwt_secret:
                claims = jwt.decode(
                    token,
                    self._jwt_secret,
                    algorithms=["HS256"],
                    audience=self._audience,
                    issuer=self._issuer,
                    options=options,
                    leeway=LEEWAY_S,
                )
            elif self._jwks is not None and header.get("alg") in ASYMMETRIC_ALGORITHMS:
                signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                claims = jwt.decode(
                    token,
                    signing_key,
                    algorithms=list(ASYMMETRIC_ALGORITHMS),
                    audience=self._audience,
                    issuer=self._issuer,
                    options=options,
                    leeway=LEEWAY_S,
                )
            else:
                raise AuthError(401, "unauthorized", "invalid credentials: token algorithm not accepted")
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token_expired", "the user token has expired") from None
        except jwt.PyJWKClientConnectionError:
            logger.warning("could not fetch the JWKS signing keys")
            raise AuthError(
                503, "jwks_unreachable", "could not fetch the signing keys to verify the token"
            ) from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as e:
            raise AuthError(401, "unauthorized", f"invalid user token: {_jwt_problem(e)}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not USER_ID_RE.match(sub):
            raise AuthError(401, "unauthorized", "invalid user token: `sub` must be 1-128 plain characters")
        return sub


def _jwt_problem(e: Exception) -> str:
    """What is wrong with a token, in words (never the token itself)."""
    if isinstance(e, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(e, jwt.InvalidAudienceError):
        return "wrong audience (`aud`)"
    if isinstance(e, jwt.InvalidIssuerError):
        return "wrong issuer (`iss`)"
    if isinstance(e, jwt.ImmatureSignatureError):
        return "not valid yet (`nbf`/`iat`)"
    if isinstance(e, jwt.MissingRequiredClaimError):
        return f"the `{e.claim}` claim is missing"
    if isinstance(e, jwt.PyJWKClientError):
        return "no matching signing key (`kid`)"
    return "malformed token"
