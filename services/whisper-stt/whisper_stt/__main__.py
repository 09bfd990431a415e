"""`eloquence-whisper-stt --host H --port P` (also `python -m whisper_stt`): load the model, then serve."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar_common.app import create_app
from sidecar_common.cli import run_sidecar
from whisper_stt.language_models import load_language_models
from whisper_stt.server import WhisperSTTAPI
from whisper_stt.settings import WhisperSTTSettings

logger = logging.getLogger("whisper_stt")


def main(argv: Sequence[str] | None = None) -> None:
    run_sidecar(
        prog="eloquence-whisper-stt",
        description=__doc__,
        settings_type=WhisperSTTSettings,
        load=load,
        argv=argv,
    )


def load(settings: WhisperSTTSettings) -> web.Application:
    """Load and warm up the model, then build the app around it."""
    if settings.log_level.lower() != "debug":
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per pass otherwise
    started = time.perf_counter()
    # Each language's model (English: tiny.en; French: base, joined from its PyPI parts on first use).
    transcriber = load_language_models(settings)
    logger.info(
        "Loaded %s (%s, %d threads, encoder window %s) in %.1f s",
        " ".join(f"{language}={path}" for language, path in transcriber.models.items()),
        settings.whisper_compute_type,
        settings.whisper_cpu_threads,
        settings.whisper_encoder_window,
        time.perf_counter() - started,
    )
    api = WhisperSTTAPI(settings=settings, transcriber=transcriber, registry=CollectorRegistry())
    return create_app(api, settings=settings)


if __name__ == "__main__":
    main()
