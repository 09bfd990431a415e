"""The playground's settings: where the session host is, the API keys, the transport."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOST_PORT = 8005


class PlaygroundSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    session_host_url: str = Field(f"http://127.0.0.1:{DEFAULT_HOST_PORT}", validation_alias="PLAYGROUND_URL")
    """Where the API finds the session host (`eloquence playground`) to forward an offer to."""
    host_port: int = Field(DEFAULT_HOST_PORT, validation_alias="PLAYGROUND_PORT")
    """Where `eloquence playground` listens when no --port is given."""
    mode: Literal["auto", "local", "livekit"] = Field("auto", validation_alias="PLAYGROUND_MODE")
    """`local`: peer-to-peer WebRTC with the session host; `livekit`: a LiveKit room with a token
    from the API; `auto`: local when the session host answers, else LiveKit."""
    api_keys_csv: str | None = Field(None, validation_alias="ELOQUENCE_API_KEYS", repr=False)
    """Comma-separated keys; when set, signalling needs `Authorization: Bearer <key>`."""
    offer_timeout_s: float = Field(15.0, validation_alias="PLAYGROUND_OFFER_TIMEOUT_S")

    @property
    def api_keys(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in (self.api_keys_csv or "").split(",") if k.strip())

    def authorized(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header carries one of the keys (always, when none is set)."""
        keys = self.api_keys
        if not keys:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return any(secrets.compare_digest(token.strip().encode(), key.encode()) for key in keys)
