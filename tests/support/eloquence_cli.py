"""The `eloquence` CLI as a user runs it from a test: a subprocess, a fresh user's environment, and
free ports for a local stack."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from eloquence.services import free_port

ENGINE_PREFIXES = (
    "ELOQUENCE_",
    "MISTRAL_",
    "WHISPER_",
    "AZURE_",
    "LOCAL_LLM",
    "LLM_",
    "TTS_",
    "PIPER_",
    "ESPEAK_",
)
"""Every setting of Eloquence and its engines: a fresh user has none of them."""


def without_engine_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment (default: this process's) less every ELOQUENCE_* and engine setting."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not k.startswith(ENGINE_PREFIXES)}


def stack_ports() -> dict[str, str]:
    """A free port for each process `eloquence up` starts, and LIVEKIT_URL on a closed port: nothing
    listens there, so `up` starts no agent worker."""
    return {
        "WHISPER_STT_PORT": str(free_port()),
        "AZURE_TTS_PORT": str(free_port()),
        "LOCAL_LLM_PORT": str(free_port()),
        "PLAYGROUND_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "AGENT_HEALTH_PORT": str(free_port()),
        "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
    }


def run_eloquence(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m eloquence ARGS` from `cwd` (a temp dir: no stray `.env` applies), no stdin."""
    return subprocess.run(
        [sys.executable, "-m", "eloquence", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
