"""Every exercise's opening goes into the local LLM server's prompt cache before the first session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eloquence.exercises import REGISTRY, SUPPORTED_LANGUAGES
from eloquence.llm_warmup import opening_context, warm_llm_prompts
from eloquence.services import LOCAL_LLM, ServiceProcess, running_service
from eloquence.settings import AppSettings
from providers.mistral_messages import to_mistral_messages


@pytest.fixture(scope="module")
def llm(service_log_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(LOCAL_LLM, service_log_dir / "warmup") as proc:
        yield proc


async def _prompt_tokens(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        if family.name == "local_llm_prompt_tokens":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("no prompt token counter")


async def test_every_exercise_opening_is_sent_once_in_each_language(llm: ServiceProcess) -> None:
    before = await _prompt_tokens(llm.url)
    warmed = await warm_llm_prompts(
        AppSettings(LOCAL_LLM_URL=llm.url, MISTRAL_API_KEY=None, MISTRAL_BASE_URL=None)
    )
    expected = sum(1 for e in REGISTRY for lang in SUPPORTED_LANGUAGES if lang in e.text)
    assert warmed == expected
    # each opening's prompt (system prompt + greeting + a user turn) reached the model
    assert await _prompt_tokens(llm.url) - before > 50 * expected


def test_the_opening_is_what_a_session_sends_first() -> None:
    exercise = REGISTRY.get("interview_prep")
    messages = to_mistral_messages(opening_context(exercise, "fr", "Bonjour."))
    assert messages == [
        {"role": "system", "content": exercise.instructions("fr")},
        {"role": "assistant", "content": exercise.greeting("fr")},
        {"role": "user", "content": "Bonjour."},
    ]


async def test_a_remote_llm_is_never_warmed() -> None:
    settings = AppSettings(MISTRAL_API_KEY="test-key", MISTRAL_BASE_URL="http://127.0.0.1:9")
    assert await warm_llm_prompts(settings) == 0
