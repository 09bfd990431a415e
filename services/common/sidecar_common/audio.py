"""Audio conversions shared by the sidecars (numpy + soundfile + soxr, no livekit)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

from . import pcm as pcm16

WHISPER_SAMPLE_RATE = 16000


class AudioFormatError(ValueError):
    """The bytes are not audio we can decode; the message says why."""


def decode_audio(data: bytes, *, target_rate: int = WHISPER_SAMPLE_RATE) -> np.ndarray:
    """Decode WAV/FLAC/OGG bytes (any rate, any channel count) to float32 mono at `target_rate`."""
    if not data:
        raise AudioFormatError("empty audio")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames <= 0:
                raise AudioFormatError("audio has no frames")
            samples = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except AudioFormatError:
        raise
    except sf.LibsndfileError as e:
        # str(e) names the in-memory buffer ("Error opening <_io.BytesIO object at 0x...>"): keep the reason
        reason = e.error_string.strip().rstrip(".").lower()
        raise AudioFormatError(f"not a readable WAV/FLAC/OGG file ({reason})") from None
    except (RuntimeError, TypeError):
        raise AudioFormatError("not a readable WAV/FLAC/OGG file") from None
    if samples.size == 0:
        raise AudioFormatError("audio has no samples (truncated file?)")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return resample(mono, rate, target_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return soxr.resample(samples.astype(np.float32, copy=False), from_rate, to_rate, quality="HQ").astype(
        np.float32, copy=False
    )


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    if len(pcm) % 2:
        raise AudioFormatError("odd number of bytes: not 16-bit PCM")
    return pcm16.pcm16_to_float(pcm)


def peak_normalize(samples: np.ndarray, *, peak: float = 0.8) -> np.ndarray:
    """Scale so that the absolute peak is exactly `peak` of full scale (silence stays silence)."""
    current = float(np.max(np.abs(samples))) if samples.size else 0.0
    if current <= 1e-9:
        return samples.astype(np.float32, copy=False)
    return (samples * (peak / current)).astype(np.float32)


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (-inf for silence)."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def wav_bytes(pcm16: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap 16-bit PCM in a WAV container."""
    buf = io.BytesIO()
    samples = np.frombuffer(pcm16, dtype="<i2").reshape(-1, channels)
    sf.write(buf, samples, sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()
