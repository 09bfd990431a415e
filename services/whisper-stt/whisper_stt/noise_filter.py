"""Drops what Whisper makes up from noise and silence, on acoustic evidence, never on the text alone.

A segment goes when the model itself says it heard no speech (high `no_speech_prob`) or has no
confidence in it (low `avg_logprob`), when it is a repetition loop, or when it is one of Whisper's
well-known silence hallucinations *and* webrtcvad found little speech under it: a real
"Thank you." or "Merci." has voiced frames, and passes.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from whisper_stt.model import Transcript, TranscriptSegment, longest_repeat
from whisper_stt.vad import voiced_frames, voiced_seconds

# What Whisper writes on silence or music, from subtitles it was trained on (normalized text).
SILENCE_HALLUCINATIONS = frozenset(
    {
        "you",
        "thank you",
        "thanks",
        "thank you for watching",
        "thanks for watching",
        "thank you so much for watching",
        "thank you very much for watching",
        "please subscribe",
        "subscribe to my channel",
        "like and subscribe",
        "see you in the next video",
        "bye",
        "merci",
        "merci d avoir regarde",
        "merci d avoir regarde cette video",
        "merci de votre attention",
        "sous titrage st 501",
        "sous titrage societe radio canada",
        "amara org",
    }
)
SILENCE_HALLUCINATION_PREFIXES = (
    "sous titres realises par",
    "sous titres fait par",
    "sous titrage",
    "subtitles by",
    "transcription by",
)


def normalize(text: str) -> str:
    """Lower case, no accents, no punctuation: what the phrase lists are written in."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9]+", " ", ascii_text)).strip()


@dataclass(frozen=True)
class Dropped:
    segment: TranscriptSegment
    reason: str
    """"no_speech", "low_logprob", "repetition" or "hallucination"."""


class NoiseFilter:
    def __init__(
        self,
        *,
        no_speech_threshold: float,
        logprob_threshold: float,
        compression_ratio_threshold: float,
        repetition_max: int,
        hallucination_max_speech_s: float,
        vad_aggressiveness: int,
    ) -> None:
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.compression_ratio_threshold = compression_ratio_threshold
        self.repetition_max = repetition_max
        self.hallucination_max_speech_s = hallucination_max_speech_s
        self.vad_aggressiveness = vad_aggressiveness

    def reason_to_drop(self, segment: TranscriptSegment, flags: np.ndarray) -> str | None:
        if segment.no_speech_prob >= self.no_speech_threshold:
            return "no_speech"
        if segment.avg_logprob <= self.logprob_threshold:
            return "low_logprob"
        if (
            segment.compression_ratio > self.compression_ratio_threshold
            or longest_repeat(normalize(segment.text).split()) >= self.repetition_max
        ):
            return "repetition"
        phrase = normalize(segment.text)
        known = phrase in SILENCE_HALLUCINATIONS or phrase.startswith(SILENCE_HALLUCINATION_PREFIXES)
        if known and voiced_seconds(flags, segment.start, segment.end) <= self.hallucination_max_speech_s:
            return "hallucination"
        return None

    def _looping_segments(self, segments: tuple[TranscriptSegment, ...]) -> set[int]:
        """Indexes of the repeats when one text fills `repetition_max` or more segments in a row
        (the first stays)."""
        looping: set[int] = set()
        run_start = 0
        texts = [normalize(s.text) for s in segments]
        for i in range(1, len(texts) + 1):
            if i < len(texts) and texts[i] and texts[i] == texts[run_start]:
                continue
            if i - run_start >= self.repetition_max:
                looping.update(range(run_start + 1, i))
            run_start = i
        return looping

    def apply(self, transcript: Transcript, audio: np.ndarray) -> tuple[Transcript, list[Dropped]]:
        """The transcript without the dropped segments, and what was dropped and why (CPU: a thread)."""
        if not transcript.segments:
            return transcript, []
        flags = voiced_frames(audio, aggressiveness=self.vad_aggressiveness)
        kept: list[TranscriptSegment] = []
        dropped: list[Dropped] = []
        looping = self._looping_segments(transcript.segments)
        for index, segment in enumerate(transcript.segments):
            reason = "repetition" if index in looping else None
            if reason is None and segment.text:
                reason = self.reason_to_drop(segment, flags)
            if reason is None:
                kept.append(segment)
            else:
                dropped.append(Dropped(segment, reason))
        if not dropped:
            return transcript, []
        text = " ".join(s.text for s in kept if s.text)
        return dataclasses.replace(transcript, text=text, segments=tuple(kept)), dropped
