"""`eloquence-whisper-stt --host H --port P` (also `python -m whisper_stt`): load the model, then serve."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar_common.app import create_app
from sidecar_common.cli import run_sidecar
from whisper_stt.model import WhisperTranscriber
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
    transcriber = WhisperTranscriber(
        model_path=settings.whisper_model,
        device=settings.whisper_device,
        compute_type=settings.whisper_compute_type,
        cpu_threads=settings.whisper_cpu_threads,
        workers=settings.whisper_workers,
        beam_size=settings.whisper_beam_size,
        default_language=settings.whisper_language,
        encoder_window=settings.whisper_encoder_window,
        min_window_s=settings.whisper_encoder_min_window_s,
        margin_s=settings.whisper_encoder_margin_s,
    )
    transcriber.warm_up()
    logger.info(
        "Loaded %s (%s, %d threads, encoder window %s) in %.1f s",
        settings.whisper_model,
        settings.whisper_compute_type,
        settings.whisper_cpu_threads,
        settings.whisper_encoder_window,
        time.perf_counter() - started,
    )
    api = WhisperSTTAPI(settings=settings, transcriber=transcriber, registry=CollectorRegistry())
    return create_app(api, settings=settings)


if __name__ == "__main__":
    main()
