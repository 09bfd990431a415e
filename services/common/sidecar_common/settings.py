"""The settings base of every sidecar: one object per process, from environment variables and `.env`."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["text", "json"]


class SidecarSettings(BaseSettings):
    """What the skeleton itself reads; each sidecar subclasses it with its own fields.

    Request-wide settings (the optional shared key of the sidecars) belong here, so that every
    sidecar reads them the same way.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_format: LogFormat = "text"
    """`json`: one JSON object per log line, for a log collector."""

    # The same variables for every sidecar, whatever its prefix (request_policy.py, cli.py).
    sidecar_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("SIDECAR_API_KEY"), repr=False
    )
    """When set, every route but /health and /metrics needs `Authorization: Bearer <key>`."""
    tls_cert_file: str | None = Field(default=None, validation_alias=AliasChoices("SIDECAR_TLS_CERT"))
    tls_key_file: str | None = Field(default=None, validation_alias=AliasChoices("SIDECAR_TLS_KEY"))
    """Both set: serve HTTPS/WSS with this certificate and key (a sidecar on another host)."""
