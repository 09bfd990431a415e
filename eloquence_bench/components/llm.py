"""MistralLLM's overhead: time to first token against the raw `mistralai` SDK on the same endpoint.

By default it starts the local GGUF service (SmolLM2-135M) on a free port; `--url` measures any
Mistral-compatible server instead (`--api-key` for the cloud). Each repeat asks each path its own new
question, in alternating order so that neither always runs on a warmer server, and reports
medians side by side, plus MistralLLM's time on a response-cache hit.

    python -m eloquence_bench.components.llm --repeats 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from livekit.agents import APIConnectOptions, llm
from rich.console import Console
from rich.table import Table

from eloquence.services import LOCAL_LLM, running_service
from providers.llm import MistralLLM

from ..baselines import RawMistral

SYSTEM = "You are a friendly English coach. Answer in one or two short sentences."
QUESTIONS = [
    "How do I order a coffee politely?",
    "What is the difference between make and do?",
    "How can I introduce myself at a meeting?",
    "What does 'break the ice' mean?",
    "How do I ask for directions to the station?",
    "When do I use 'since' and 'for'?",
    "How can I say no to an invitation nicely?",
    "What should I say when I answer the phone at work?",
    "How do I describe my weekend in the past tense?",
    "What is a polite way to interrupt someone?",
]
NO_RETRY = APIConnectOptions(max_retry=0, timeout=30.0)


def question(i: int) -> str:
    return f"{QUESTIONS[i % len(QUESTIONS)]} (#{i})"


async def raw_sdk_ttft(raw: RawMistral, text: str) -> float:
    timing = await raw.stream([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}])
    return timing.ttft_ms / 1000


async def provider_ttft(model: MistralLLM, text: str) -> float:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content=SYSTEM)
    ctx.add_message(role="user", content=text)
    start = time.perf_counter()
    ttft = None
    async with model.chat(chat_ctx=ctx, conn_options=NO_RETRY) as stream:
        async for chunk in stream:
            if ttft is None and chunk.delta and chunk.delta.content:
                ttft = time.perf_counter() - start
    if ttft is None:
        raise RuntimeError("MistralLLM produced no text")
    return ttft


async def run(url: str, api_key: str | None, model_name: str | None, repeats: int, max_tokens: int) -> None:
    ours = MistralLLM(
        base_url=url, api_key=api_key, model=model_name, temperature=0.2, max_tokens=max_tokens, cache_size=0
    )
    cached = MistralLLM(
        base_url=url, api_key=api_key, model=model_name, temperature=0.2, max_tokens=max_tokens
    )
    model = ours.model
    # The raw baseline gets its own SDK client, configured as the SDK documents it.
    raw = RawMistral(
        server_url=ours.endpoint.server_url,
        model=model,
        max_tokens=max_tokens,
        api_key=api_key,
        temperature=0.2,
    )

    # warm both paths (connections, the server's first-call setup)
    await raw_sdk_ttft(raw, "Hello!")
    await provider_ttft(ours, "Hello!")

    raw_times: list[float] = []
    our_times: list[float] = []
    for i in range(repeats):
        # A new question for each (the shared system prompt is the only prefix llama.cpp reuses),
        # and alternate who goes first, so neither always meets the warmer server.
        for path in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
            if path == "raw":
                raw_times.append(await raw_sdk_ttft(raw, question(2 * i)))
            else:
                our_times.append(await provider_ttft(ours, question(2 * i + 1)))

    await provider_ttft(cached, question(0))  # fills the cache
    hit_times = [await provider_ttft(cached, question(0)) for _ in range(repeats)]

    await ours.aclose()
    await cached.aclose()

    table = Table(
        title=f"LLM time to first token, median of {repeats} ({ours.endpoint.server_url}, model {model})"
    )
    table.add_column("path")
    table.add_column("p50 ms", justify="right")
    table.add_column("min ms", justify="right")
    table.add_column("max ms", justify="right")
    table.add_column("vs raw SDK", justify="right")
    base = _median_ms(raw_times)
    for name, values in (
        ("raw mistralai SDK", raw_times),
        ("MistralLLM", our_times),
        ("MistralLLM cache hit", hit_times),
    ):
        p50 = _median_ms(values)
        table.add_row(
            name,
            f"{p50:.1f}",
            f"{min(values) * 1000:.1f}",
            f"{max(values) * 1000:.1f}",
            f"{p50 - base:+.1f} ms ({p50 / base:.2f}x)",
        )
    Console().print(table)


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", help="a running Mistral-compatible server (default: start the local LLM service)"
    )
    parser.add_argument("--api-key")
    parser.add_argument("--model")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()

    if args.url:
        asyncio.run(run(args.url, args.api_key, args.model, args.repeats, args.max_tokens))
        return
    log_dir = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    with running_service(LOCAL_LLM, log_dir) as service:  # the service's default threads
        # the local service answers with whatever GGUF it loaded; the name is only a label
        asyncio.run(run(service.url, None, args.model or "local", args.repeats, args.max_tokens))


if __name__ == "__main__":
    main()
