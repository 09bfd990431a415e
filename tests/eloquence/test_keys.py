"""The local stack's keys: the environment's when set, else generated once by `eloquence up`, stored
0600, shown once on the terminal, never logged, and found by local clients without typing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from eloquence.keys import KEY_PREFIX, client_api_key, ensure_stack_keys, keys_path, sidecar_key
from eloquence.services import free_port
from eloquence.settings import AppSettings

ROOT = Path(__file__).resolve().parents[2]


def _settings(state: Path, **env: str) -> AppSettings:
    return AppSettings(ELOQUENCE_STATE_DIR=str(state), **env)


def test_keys_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    first = ensure_stack_keys(settings, environ={})
    assert first.generated and first.api_key.startswith(KEY_PREFIX) and len(first.api_key) >= 40
    assert first.sidecar_key.startswith(KEY_PREFIX) and first.sidecar_key != first.api_key
    path = keys_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = ensure_stack_keys(settings, environ={})
    assert not again.generated and again.environment() == first.environment()
    # local clients find them without typing
    assert client_api_key(settings, environ={}) == first.api_key
    assert sidecar_key(settings) == first.sidecar_key


def test_the_environment_wins_and_a_loose_file_is_tightened(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    env = {
        "ELOQUENCE_API_KEYS": "from-env-key-0123456789abcdef,second-key-0123456789",
        "SIDECAR_API_KEY": "sk-env",
    }
    keys = ensure_stack_keys(settings, environ=env)
    assert not keys.generated
    assert keys.environment() == {
        "ELOQUENCE_API_KEYS": env["ELOQUENCE_API_KEYS"],
        "SIDECAR_API_KEY": "sk-env",
    }
    assert client_api_key(settings, environ=env) == "from-env-key-0123456789abcdef"
    assert not keys_path(settings).exists()  # nothing generated, nothing stored

    ensure_stack_keys(settings, environ={})
    os.chmod(keys_path(settings), 0o644)
    assert client_api_key(settings, environ={})
    assert stat.S_IMODE(keys_path(settings).stat().st_mode) == 0o600


def _eloquence(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eloquence", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _token_status(port: int, key: str | None) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/livekit/token",
        data=json.dumps({"exercise_type": "default", "user_id": "alice"}).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_up_generates_the_key_shows_it_once_and_the_api_requires_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    api_port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ELOQUENCE_API_KEYS", "SIDECAR_API_KEY", "MISTRAL_API_KEY")
    }
    env.update(
        {
            "ELOQUENCE_STATE_DIR": str(state),
            "API_PORT": str(api_port),
            "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
            "COLUMNS": "250",
        }
    )
    try:
        up = _eloquence("up", "--detach", "--only", "api", env=env, cwd=tmp_path)
        assert up.returncode == 0, up.stdout + up.stderr
        key = client_api_key(_settings(state), environ={})
        assert key and key in up.stdout  # shown on the terminal, the one time it was made
        assert _token_status(api_port, None) == 401
        assert _token_status(api_port, key) == 200
        _eloquence("down", env=env, cwd=tmp_path)

        again = _eloquence("up", "--detach", "--only", "api", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert key not in again.stdout + again.stderr  # not shown twice
        assert _token_status(api_port, key) == 200  # the same key still works
        logs = "".join(p.read_text(errors="replace") for p in (state / "logs").glob("*.log"))
        assert "token issued" in logs and key not in logs
    finally:
        _eloquence("down", env=env, cwd=tmp_path)
