"""The playground's settings: where the session host is, and which transport the page uses.

Authentication is the API's (ELOQUENCE_API_KEYS, user JWTs, ELOQUENCE_API_AUTH: eloquence/auth.py).
"""

from __future__ import annotations

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
    offer_timeout_s: float = Field(15.0, validation_alias="PLAYGROUND_OFFER_TIMEOUT_S")
