"""The Mistral-protocol test server, and a MistralLLM on it, for the MistralLLM tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes.mistral_server import FakeMistralServer

from providers.llm import MistralLLM


@pytest.fixture
async def server() -> AsyncIterator[FakeMistralServer]:
    # Fast pacing keeps the module quick; the streaming test paces its reply like a model (100 ms/token).
    async with FakeMistralServer(token_delay_s=0.02) as fake:
        yield fake


@pytest.fixture
async def mistral(server: FakeMistralServer) -> AsyncIterator[MistralLLM]:
    model = MistralLLM(base_url=server.url, api_key="test-key", model="mistral-small-latest", cache_size=0)
    yield model
    await model.aclose()
