"""`eloquence-llm` / `python -m local_llm --host H --port P`: load and warm the model, then serve."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web
from sidecar_common.http import configure_logging

from .settings import LocalLLMSettings, default_model_path

logger = logging.getLogger("local_llm")


def main(argv: list[str] | None = None) -> None:
    settings = LocalLLMSettings()
    parser = argparse.ArgumentParser(prog="eloquence-llm", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--model", default=settings.model_path, help="GGUF file (env LLM_MODEL_PATH)")
    parser.add_argument(
        "--threads", type=int, default=settings.threads, help="generation threads (env LLM_THREADS)"
    )
    parser.add_argument("--log-level", default=settings.log_level)
    args = parser.parse_args(argv)
    settings = settings.model_copy(
        update={"host": args.host, "port": args.port, "model_path": args.model, "threads": args.threads}
    )
    configure_logging(args.log_level)

    from .model import GGUFChatModel
    from .server import LocalLLMServer

    try:
        path = Path(settings.model_path) if settings.model_path else default_model_path()
        model = GGUFChatModel(
            model_path=path,
            name=settings.model_name or path.name.removesuffix(".gguf"),
            chat_format=settings.chat_format,
            threads=settings.threads,
            batch_threads=settings.batch_threads,
            context_size=settings.context_size,
            prompt_cache_mb=settings.prompt_cache_mb,
        )
    except (OSError, ValueError) as e:
        logger.error("cannot load the model: %s", e)
        sys.exit(2)
    logger.info("loaded %s (%d threads, context %d)", path, settings.threads, settings.context_size)
    if settings.warmup:
        logger.info("warmed up in %.2f s", model.warm_up())

    app = LocalLLMServer(model=model, settings=settings).build_app()
    logger.info(
        "Ready on http://%s:%d (max %d concurrent)", settings.host, settings.port, settings.max_concurrent
    )
    # handler_cancellation: a client that disconnects cancels its handler, which stops generation.
    web.run_app(app, host=settings.host, port=settings.port, print=None, handler_cancellation=True)


if __name__ == "__main__":
    main()
