"""The `main()` of every sidecar: flags over settings, logging, the model loaded before listening, "Ready"."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from aiohttp import web

from .logs import configure_logging
from .settings import SidecarSettings

logger = logging.getLogger("sidecar")

SettingsT = TypeVar("SettingsT", bound=SidecarSettings)


@dataclass(frozen=True)
class SettingFlag:
    """A command-line flag that overrides one settings field; the field's env var is its default."""

    flag: str
    field: str
    type: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    help: str | None = None


COMMON_FLAGS = (
    SettingFlag("--host", "host"),
    SettingFlag("--port", "port", int),
    SettingFlag("--log-level", "log_level", help="debug, info, warning or error"),
    SettingFlag(
        "--log-format", "log_format", choices=("text", "json"), help="json: one JSON object per line"
    ),
)


def run_sidecar(
    *,
    prog: str,
    description: str | None,
    settings_type: type[SettingsT],
    load: Callable[[SettingsT], web.Application],
    flags: Sequence[SettingFlag] = (),
    handler_cancellation: bool = False,
    argv: Sequence[str] | None = None,
) -> None:
    """Read the settings (env, `.env`, then flags), load the model with `load`, serve, log "Ready".

    `load` does the blocking loading and returns the app (`create_app`); the app's async start-up
    (warm-up) runs next, and the server listens only after both. A failure to start (bad settings,
    a missing model file, a port in use) is one error line and exit status 2.
    `handler_cancellation`: a client that disconnects cancels its handler (and so its work).
    """
    try:
        settings = settings_type()
    except ValueError as e:  # pydantic's ValidationError: a bad environment variable
        print(f"{prog}: cannot start: {e}", file=sys.stderr)
        sys.exit(2)
    args = _parser(prog, description, settings, [*COMMON_FLAGS, *flags]).parse_args(argv)
    updates = {f.field: getattr(args, f.field) for f in [*COMMON_FLAGS, *flags]}
    if args.debug:
        updates["log_level"] = "debug"
    settings = settings.model_copy(update=updates)
    configure_logging(settings.log_level, settings.log_format)
    debug = settings.log_level.lower() == "debug"

    scheme = "https" if settings.tls_cert_file else "http"

    def ready(_: str) -> None:  # aiohttp calls it once every socket listens
        logger.info("Ready on %s://%s:%d", scheme, settings.host, settings.port)

    try:
        ssl_context = tls_context(settings)
        app = load(settings)
        if settings.sidecar_api_key:
            logger.info("requests need the shared key (SIDECAR_API_KEY); /health and /metrics stay open")
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=ready,
            access_log=logging.getLogger("aiohttp.access") if debug else None,
            handler_cancellation=handler_cancellation,
            ssl_context=ssl_context,
        )
    except (OSError, ValueError) as e:
        logger.error("cannot start %s: %s", prog, e, exc_info=debug)
        sys.exit(2)


def tls_context(settings: SidecarSettings) -> ssl.SSLContext | None:
    """HTTPS/WSS when SIDECAR_TLS_CERT and SIDECAR_TLS_KEY are both set; None (plain HTTP) when neither."""
    if not settings.tls_cert_file and not settings.tls_key_file:
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ValueError("TLS needs both SIDECAR_TLS_CERT and SIDECAR_TLS_KEY")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)  # OSError/SSLError: said at start
    return context


def _parser(
    prog: str, description: str | None, settings: SidecarSettings, flags: Sequence[SettingFlag]
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    prefix = str(settings.model_config.get("env_prefix") or "")
    for flag in flags:
        env = f"env {prefix.upper()}{flag.field.upper()}"
        parser.add_argument(
            flag.flag,
            dest=flag.field,
            type=flag.type,
            choices=flag.choices,
            default=getattr(settings, flag.field),
            help=f"{flag.help} ({env})" if flag.help else f"({env})",
        )
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level, access log included")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def _version() -> str:
    try:
        return version("eloquence")
    except PackageNotFoundError:
        return "unknown"
