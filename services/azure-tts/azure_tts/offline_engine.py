"""What the offline engines (Piper, espeak-ng) share: a fixed list of voices, and worker threads
that keep synthesis off the event loop."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor

from .voices import VoiceInfo


class OfflineEngine:
    """Subclasses set `name`, `warm_up_text` and `synthesize`, and call `__init__` with their voices."""

    name: str
    warm_up_text: str

    def __init__(self, *, voices: list[VoiceInfo], max_workers: int) -> None:
        self._infos = voices
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=self.name)

    @property
    def voices(self) -> list[VoiceInfo]:
        return list(self._infos)

    @property
    def default_voice(self) -> str:
        return self._infos[0].name

    def synthesize(
        self, text: str, *, voice: str, sample_rate: int, rate: float | None = None, **_: object
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError

    async def warm_up(self) -> None:
        """Synthesize once with each voice, so the first request pays no loading cost."""
        for info in self._infos:
            async for _ in self.synthesize(self.warm_up_text, voice=info.name, sample_rate=16000):
                pass

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
