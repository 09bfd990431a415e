"""Synthesized chunks kept in memory: an LRU bounded in bytes, so a repeated phrase starts at once."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple


class CacheKey(NamedTuple):
    engine: str
    voice: str
    """The voice plus anything else that changes the sound (style, pitch)."""
    rate: float | None
    sample_rate: int
    text: str


class AudioCache:
    def __init__(self, *, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._size = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: CacheKey) -> bytes | None:
        pcm = self._items.get(key)
        if pcm is not None:
            self._items.move_to_end(key)
        return pcm

    def put(self, key: CacheKey, pcm: bytes) -> None:
        if len(pcm) > self._max_bytes:
            return  # larger than the whole cache: keeping it would evict everything else
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= len(old)
        self._items[key] = pcm
        self._size += len(pcm)
        while self._size > self._max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._size -= len(evicted)
