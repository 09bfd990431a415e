"""`eloquence-local-llm` / `python -m local_llm --host H --port P`: load and warm the model, then serve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar_common.app import create_app
from sidecar_common.cli import SettingFlag, run_sidecar

from .settings import LocalLLMSettings, default_model_path

logger = logging.getLogger("local_llm")


def main(argv: Sequence[str] | None = None) -> None:
    run_sidecar(
        prog="eloquence-local-llm",
        description=__doc__,
        settings_type=LocalLLMSettings,
        load=load,
        flags=[
            SettingFlag("--model", "model_path", help="a GGUF file"),
            SettingFlag("--threads", "threads", int, help="generation threads"),
        ],
        # a client that disconnects cancels its handler, which stops the generation
        handler_cancellation=True,
        argv=argv,
    )


def load(settings: LocalLLMSettings) -> web.Application:
    """Load and warm up the model, then build the app around it."""
    from .model import GGUFChatModel
    from .server import LocalLLMAPI

    path = Path(settings.model_path) if settings.model_path else default_model_path()
    model = GGUFChatModel(
        model_path=path,
        name=settings.model_name or path.name.removesuffix(".gguf"),
        chat_format=settings.chat_format,
        threads=settings.threads,
        batch_threads=settings.batch_threads,
        context_size=settings.context_size,
        prompt_cache_mb=settings.prompt_cache_mb,
        decode_nice=settings.decode_nice,
        urgent_tokens=settings.urgent_tokens,
        repeat_penalty=settings.repeat_penalty,
    )
    logger.info("loaded %s (%d threads, context %d)", path, settings.threads, settings.context_size)
    if settings.warmup:
        logger.info("warmed up in %.2f s", model.warm_up())
    logger.info("max %d concurrent requests", settings.max_concurrent)
    api = LocalLLMAPI(model=model, settings=settings, registry=CollectorRegistry())
    return create_app(api, settings=settings)


if __name__ == "__main__":
    main()
