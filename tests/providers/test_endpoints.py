"""The one Mistral endpoint resolver: explicit arguments, then the environment, then the defaults."""

from __future__ import annotations

import logging

import pytest

from providers.endpoints import resolve_mistral_endpoint


def test_endpoint_strips_the_api_path_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        endpoint = resolve_mistral_endpoint(
            api_key="scw-key",
            base_url="https://api.scaleway.ai/abc-123/v1/chat/completions",
            model=None,
            environ={},
        )
    assert endpoint.server_url == "https://api.scaleway.ai/abc-123"
    assert not endpoint.is_local and endpoint.api_key == "scw-key"
    assert "includes the API path" in caplog.text
    assert (
        resolve_mistral_endpoint(base_url="http://10.0.0.5:8000/v1/", environ={}).server_url
        == "http://10.0.0.5:8000"
    )


def test_endpoint_defaults_cloud_with_a_key_else_the_local_service() -> None:
    cloud = resolve_mistral_endpoint(environ={"MISTRAL_API_KEY": "sk"})
    assert (cloud.server_url, cloud.api_key, cloud.model, cloud.is_local) == (
        "https://api.mistral.ai",
        "sk",
        "mistral-small-latest",
        False,
    )
    local = resolve_mistral_endpoint(environ={})
    assert (local.server_url, local.api_key, local.is_local) == ("http://127.0.0.1:8004", None, True)
    moved = resolve_mistral_endpoint(environ={"LOCAL_LLM_URL": "http://127.0.0.1:9999/"})
    assert (moved.server_url, moved.is_local) == ("http://127.0.0.1:9999", True)
    explicit = resolve_mistral_endpoint(
        api_key="a", base_url="https://x.example", model="m", environ={"MISTRAL_MODEL": "env-model"}
    )
    assert (explicit.server_url, explicit.model) == ("https://x.example", "m")
    assert resolve_mistral_endpoint(environ={"MISTRAL_MODEL": "env-model"}).model == "env-model"
