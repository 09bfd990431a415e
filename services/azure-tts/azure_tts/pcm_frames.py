"""Cut a PCM stream into fixed 200 ms frames for the wire."""

from __future__ import annotations

FRAME_MS = 200
BYTES_PER_SAMPLE = 2


def frame_bytes(sample_rate: int, frame_ms: int = FRAME_MS) -> int:
    return sample_rate * frame_ms // 1000 * BYTES_PER_SAMPLE


class PCMFramer:
    """Collects 16-bit PCM pieces of any size and hands out whole frames; `flush` the remainder."""

    def __init__(self, *, sample_rate: int, frame_ms: int = FRAME_MS) -> None:
        self._size = frame_bytes(sample_rate, frame_ms)
        self._pending = bytearray()

    def push(self, pcm: bytes) -> list[bytes]:
        self._pending += pcm
        whole = len(self._pending) // self._size * self._size
        if whole == 0:
            return []
        frames = [bytes(self._pending[i : i + self._size]) for i in range(0, whole, self._size)]
        del self._pending[:whole]
        return frames

    def flush(self) -> bytes:
        rest, self._pending = bytes(self._pending), bytearray()
        return rest
