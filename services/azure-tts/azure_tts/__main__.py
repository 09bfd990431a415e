"""`eloquence-azure-tts` / `python -m azure_tts --host H --port P`: load and warm the engines, then serve."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar_common.app import create_app
from sidecar_common.cli import SettingFlag, run_sidecar

from .settings import AzureTTSSettings

logger = logging.getLogger("azure_tts")


def main(argv: Sequence[str] | None = None) -> None:
    run_sidecar(
        prog="eloquence-azure-tts",
        description=__doc__,
        settings_type=AzureTTSSettings,
        load=load,
        flags=[SettingFlag("--engine", "tts_engine", choices=("auto", "azure", "piper", "espeak"))],
        # a client that disconnects cancels its handler, which stops the synthesis
        handler_cancellation=True,
        argv=argv,
    )


def load(settings: AzureTTSSettings) -> web.Application:
    """Load the engines (Azure's configuration, Piper's voices) and build the app around them."""
    from .audio_cache import AudioCache
    from .metrics import TTSMetrics
    from .server import AzureTTSAPI
    from .synthesis import SpeechEngine, TextToSpeech
    from .voices import VoiceCatalog

    registry = CollectorRegistry()
    metrics = TTSMetrics(registry)
    primary = settings.primary_engine()
    engines: dict[str, SpeechEngine] = {}
    defaults: dict[str, str] = {}
    if primary == "azure":
        from .azure_engine import AzureSpeechEngine

        azure = AzureSpeechEngine(
            key=settings.azure_speech_key,
            region=settings.azure_speech_region,
            host=settings.azure_speech_host,
            voices=settings.azure_voices,
            default_voice=settings.azure_voice,
            max_attempts=settings.azure_max_attempts,
            retry_initial_s=settings.azure_retry_initial_s,
            retry_max_s=settings.azure_retry_max_s,
            first_byte_timeout_s=settings.azure_first_byte_timeout_s,
            chunk_timeout_s=settings.azure_chunk_timeout_s,
            pool_size=settings.tts_max_concurrent
            if settings.azure_pool_size is None
            else settings.azure_pool_size,
            pool_idle_s=settings.azure_pool_idle_s,
            on_retry=lambda reason: metrics.retries.labels("azure", reason).inc(),
        )
        engines["azure"], defaults["azure"] = azure, azure.default_voice
        logger.info("Azure Speech at %s", azure.endpoint)
    if settings.needs_piper():
        from .piper_engine import PiperEngine, default_voice_path

        start = time.perf_counter()
        paths = [Path(settings.piper_voice) if settings.piper_voice else default_voice_path()]
        piper = PiperEngine(
            voice_paths=[*paths, *(Path(p) for p in settings.piper_extra_voices)],
            threads=settings.piper_threads,
            max_workers=settings.tts_max_concurrent,
            noise_scale=settings.piper_noise_scale,
            noise_w_scale=settings.piper_noise_w_scale,
        )
        engines["piper"], defaults["piper"] = piper, piper.default_voice
        logger.info(
            "loaded Piper %s in %.2f s", ", ".join(v.name for v in piper.voices), time.perf_counter() - start
        )
    if settings.espeak_voices or primary == "espeak":
        from .espeak_engine import load_espeak

        espeak, missing = load_espeak(
            settings.espeak_voices, primary=primary == "espeak", max_workers=settings.tts_max_concurrent
        )
        if espeak is not None:
            engines["espeak"], defaults["espeak"] = espeak, espeak.default_voice
        elif missing:
            logger.warning("%s", missing)

    catalog = VoiceCatalog(
        primary_engine=primary,
        voices=[v for engine in engines.values() for v in engine.voices],
        default_voices=defaults,
        contexts=settings.voice_contexts,
    )
    tts = TextToSpeech(
        engines=engines,
        catalog=catalog,
        cache=AudioCache(max_bytes=settings.tts_cache_bytes),
        metrics=metrics,
        fallback=settings.tts_fallback,
        max_concurrent=settings.tts_max_concurrent,
        chunk_max_chars=settings.tts_chunk_max_chars,
    )
    logger.info(
        "engine %s, fallback %s, max %d concurrent",
        primary, "piper" if tts.fallback else "off", settings.tts_max_concurrent,
    )  # fmt: skip
    api = AzureTTSAPI(
        tts=tts,
        max_text_chars=settings.tts_max_text_chars,
        retry_after_s=settings.tts_retry_after_s,
        registry=registry,
    )
    return create_app(api, settings=settings)


if __name__ == "__main__":
    main()
