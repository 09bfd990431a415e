"""Replies that skip the model: MistralLLM's response cache and its keyword quick replies."""

from __future__ import annotations

import asyncio

from fakes.mistral_server import FakeMistralServer, Reply, ToolCallReply, tokens_of
from support.mistral_chat import LONG_REPLY, NO_RETRY, collect_chunks, lookup_word, text_of, user_ctx

from providers.llm import MistralLLM


async def test_a_cache_hit_replays_the_reply_without_asking_the_server(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", cache_size=8, cache_ttl_s=60)
    server.script(LONG_REPLY)
    first, _ = await collect_chunks(model.chat(chat_ctx=user_ctx("How are you?"), conn_options=NO_RETRY))
    # same conversation up to case and spacing
    second, _ = await collect_chunks(model.chat(chat_ctx=user_ctx("how  are you?"), conn_options=NO_RETRY))
    assert text_of(second) == text_of(first) == LONG_REPLY
    assert len(server.requests) == 1
    assert len([c for c in second if c.delta and c.delta.content]) == len(tokens_of(LONG_REPLY))

    # other parameters are another entry
    model.update_options(temperature=0.1)
    await model.chat(chat_ctx=user_ctx("How are you?"), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 2
    await model.aclose()


async def test_cache_entries_expire_and_tool_calls_are_never_cached(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", cache_size=8, cache_ttl_s=0.2)
    await model.chat(chat_ctx=user_ctx("Hello"), conn_options=NO_RETRY).collect()
    await asyncio.sleep(0.3)
    await model.chat(chat_ctx=user_ctx("Hello"), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 2, "an expired entry is not replayed"

    call = Reply(tool_calls=[ToolCallReply(name="lookup_word", arguments={"word": "grit"})])
    server.script(call, call)
    for _ in range(2):
        r = await model.chat(
            chat_ctx=user_ctx("Define grit"), tools=[lookup_word], conn_options=NO_RETRY
        ).collect()
        assert r.tool_calls
    assert len(server.requests) == 4
    await model.aclose()


async def test_the_cache_is_bounded(server: FakeMistralServer) -> None:
    model = MistralLLM(base_url=server.url, api_key="k", cache_size=2, cache_ttl_s=60)
    for text in ("one", "two", "three", "one"):
        await model.chat(chat_ctx=user_ctx(text), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 4, "'one' was evicted by the third entry"
    await model.aclose()


async def test_quick_replies_are_off_by_default_and_answer_small_talk_when_on(
    server: FakeMistralServer, mistral: MistralLLM
) -> None:
    await mistral.chat(chat_ctx=user_ctx("Merci !"), conn_options=NO_RETRY).collect()
    assert len(server.requests) == 1

    model = MistralLLM(
        base_url=server.url, api_key="k", cache_size=0, quick_replies={"merci": "Avec plaisir !"}
    )
    response = await model.chat(chat_ctx=user_ctx("Merci beaucoup !"), conn_options=NO_RETRY).collect()
    assert response.text == "Avec plaisir !"
    assert len(server.requests) == 1
    response = await model.chat(
        chat_ctx=user_ctx("Merci, mais j'ai encore une question sur le passé composé"), conn_options=NO_RETRY
    ).collect()
    assert response.text.startswith("You said:")
    assert len(server.requests) == 2
    await model.aclose()
