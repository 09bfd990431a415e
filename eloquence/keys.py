"""The keys of a local stack, in one place: the API key (`ELOQUENCE_API_KEYS`) and the sidecars'
shared key (`SIDECAR_API_KEY`).

The environment wins. Otherwise `eloquence up` generates both once and keeps them in
`<state dir>/keys.json` (mode 0600, its folder 0700); `up` shows them on the terminal the time it
creates them, and never writes them to a log. `talk`, the bench and the playground find them
here (`client_api_key`, `sidecar_key`), so nobody types a key on the machine that runs the stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .auth import parse_keys
from .settings import AppSettings

KEYS_FILE = "keys.json"
KEY_PREFIX = "elq_"


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def keys_path(settings: AppSettings) -> Path:
    return Path(settings.state_dir).expanduser().resolve() / KEYS_FILE


@dataclass(frozen=True)
class StackKeys:
    api_keys: str
    """Comma-separated, as ELOQUENCE_API_KEYS."""
    sidecar_key: str
    generated: bool
    """True when this call created them: the one time to show them."""
    path: Path

    @property
    def api_key(self) -> str:
        return parse_keys(self.api_keys)[0]

    def environment(self) -> dict[str, str]:
        """What the stack's processes get."""
        return {"ELOQUENCE_API_KEYS": self.api_keys, "SIDECAR_API_KEY": self.sidecar_key}


def read_stored_keys(path: Path) -> dict[str, str]:
    """The stored keys ({} when there is no file or it is not ours); tightens a loose file mode."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            os.chmod(path, 0o600)
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and v}


def _write_keys(path: Path, keys: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
    )  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as f:
        json.dump(dict(keys), f)
    os.replace(tmp, path)


def ensure_stack_keys(settings: AppSettings, environ: Mapping[str, str] | None = None) -> StackKeys:
    """The keys `eloquence up` passes to its processes: the environment's, else the stored ones,
    else new ones (stored at once)."""
    env = os.environ if environ is None else environ
    path = keys_path(settings)
    stored = read_stored_keys(path)
    api_keys = env.get("ELOQUENCE_API_KEYS") or stored.get("api_key") or ""
    sidecar = env.get("SIDECAR_API_KEY") or stored.get("sidecar_key") or ""
    missing = {}
    if not parse_keys(api_keys):
        api_keys = missing["api_key"] = _new_key()
    if not sidecar:
        sidecar = missing["sidecar_key"] = _new_key()
    if missing:
        _write_keys(path, {**stored, **missing})
    return StackKeys(api_keys=api_keys, sidecar_key=sidecar, generated="api_key" in missing, path=path)


def client_api_key(
    settings: AppSettings | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The key a local client sends to the API: the first of ELOQUENCE_API_KEYS, else the stored one."""
    env = os.environ if environ is None else environ
    keys = parse_keys(env.get("ELOQUENCE_API_KEYS"))
    if keys:
        return keys[0]
    return read_stored_keys(keys_path(settings or AppSettings())).get("api_key")


def sidecar_key(settings: AppSettings | None = None) -> str | None:
    """The key the providers send to the sidecars: SIDECAR_API_KEY, else the stored one, else None."""
    settings = settings or AppSettings()
    return settings.sidecar_api_key or read_stored_keys(keys_path(settings)).get("sidecar_key")
