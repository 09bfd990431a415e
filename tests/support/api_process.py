"""`eloquence api` as a real process in front of the LiveKit stand-in, with every sidecar down:
the deployment tests check what the API says about LiveKit, not a voice turn."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fakes.livekit_server import LiveKitStandin

from eloquence.services import API, free_port, running_service

API_KEY = "deploy-app-backend-key-0123456789"
"""The app backend's key (ELOQUENCE_API_KEYS)."""


@contextmanager
def running_api(livekit: LiveKitStandin, log_dir: Path, **settings: str) -> Iterator[str]:
    """The API's URL; `settings` add to (or override) the stand-in's LIVEKIT_* environment."""
    dead = f"http://127.0.0.1:{free_port()}"
    env = livekit.env(
        WHISPER_STT_URL=dead,
        AZURE_TTS_URL=dead,
        LOCAL_LLM_URL=dead,
        MISTRAL_API_KEY="",
        MISTRAL_BASE_URL="",
        ELOQUENCE_API_KEYS=API_KEY,
        **settings,
    )
    with running_service(API, log_dir, env=env, timeout=60) as proc:
        yield proc.url
