"""16-bit PCM <-> float32 samples, and the level that counts as voice. numpy only.

Imported by the sidecars, the application (`eloquence/wav_io.py`), the tests' fakes and the
bench, including the bench's pacing module inside the peers' own virtual environment, which
has numpy but none of our other dependencies: keep this module on numpy alone.
"""

from __future__ import annotations

import numpy as np

FULL_SCALE = 32768.0
VOICED_DBFS = -40.0
"""A sample louder than this is voice: the harness clocks t0 and t1, and speech trimming."""
VOICED_AMPLITUDE = float(10 ** (VOICED_DBFS / 20))  # 0.01 of full scale


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Little-endian 16-bit PCM of float samples in [-1, 1] (clipped)."""
    return (np.clip(samples, -1.0, 32767 / FULL_SCALE) * FULL_SCALE).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    """float32 samples of little-endian 16-bit PCM (an even number of bytes)."""
    if len(pcm) % 2:
        raise ValueError("odd number of bytes: not 16-bit PCM")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / FULL_SCALE


def first_voiced_sample(samples: np.ndarray) -> int | None:
    """Index of the first sample above VOICED_DBFS, or None when there is none."""
    voiced = np.flatnonzero(np.abs(samples) > VOICED_AMPLITUDE)
    return int(voiced[0]) if voiced.size else None


def last_voiced_sample(samples: np.ndarray) -> int | None:
    """Index of the last sample above VOICED_DBFS, or None when there is none."""
    voiced = np.flatnonzero(np.abs(samples) > VOICED_AMPLITUDE)
    return int(voiced[-1]) if voiced.size else None


def is_voiced_pcm16(pcm: bytes) -> bool:
    """True when a 16-bit PCM chunk holds a sample above VOICED_DBFS (a trailing odd byte is ignored)."""
    if len(pcm) < 2:
        return False
    ints = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.int32)
    return bool(np.any(np.abs(ints) > VOICED_AMPLITUDE * FULL_SCALE))
