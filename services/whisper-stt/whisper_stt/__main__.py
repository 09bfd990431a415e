"""`eloquence-whisper-stt --host H --port P` (also `python -m whisper_stt`): load the model, then serve."""

from __future__ import annotations

import argparse
import logging
import time
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from sidecar_common.http import configure_logging

from whisper_stt.model import WhisperTranscriber
from whisper_stt.server import create_app
from whisper_stt.settings import WhisperSTTSettings

logger = logging.getLogger("whisper_stt")


def _version() -> str:
    try:
        return version("eloquence")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    settings = WhisperSTTSettings()
    parser = argparse.ArgumentParser(prog="eloquence-whisper-stt", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=_version())
    args = parser.parse_args(argv)
    configure_logging("debug" if args.debug else settings.log_level)
    if not args.debug:
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
    app = create_app(settings, transcriber)
    logger.info("Ready on http://%s:%d", args.host, args.port)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
