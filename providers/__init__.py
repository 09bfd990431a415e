"""livekit-agents plugins for Eloquence's self-hosted stack.

`WhisperSTT` talks to the whisper-stt sidecar, `AzureTTS` to the azure-tts sidecar and
`MistralLLM` to any Mistral-compatible chat-completions server (cloud, Scaleway, local GGUF).
"""

from livekit.agents import Plugin

from .llm import MistralLLM
from .log import logger
from .stt import WhisperSTT
from .tts import AzureTTS
from .version import __version__

__all__ = ["WhisperSTT", "MistralLLM", "AzureTTS", "__version__"]


class EloquencePlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)


Plugin.register_plugin(EloquencePlugin())
