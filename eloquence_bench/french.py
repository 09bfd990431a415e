"""French test speech, made reproducibly with espeak-ng, and the WER French transcripts are scored with.

No French voice installs from PyPI here, so the French corpus is spoken by Debian's `espeak-ng`
(`apt-get install espeak-ng`). espeak-ng is deterministic: the same text, voice and rate give the
same samples on every run. Each sentence is spoken by each recipe (voice + variant + rate), so a
figure never rests on one robotic voice:

    espeak-ng -v fr+m3 -s 140 --stdout "Bonjour, ..." > out.wav

`SENTENCES` are things a French coaching user says (8 to 12 words). `french_wer` keeps accents
(they are spelling) but not case, punctuation, apostrophes or hyphens ("l'équipe" = "l équipe").
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from sidecar_common.pcm import pcm16_to_float

SAMPLE_RATE = 16000

SENTENCES: tuple[str, ...] = (
    "Bonjour, je voudrais préparer ma présentation de demain matin.",
    "Comment puis-je calmer mon stress avant une présentation importante ?",
    "J'ai tendance à parler trop vite quand je suis nerveux.",
    "Pouvez-vous m'aider à travailler mon introduction ?",
    "Je n'arrive pas à regarder le public dans les yeux.",
    "Quelle est la meilleure façon de terminer un discours ?",
    "Je voudrais faire des pauses plus longues entre mes idées.",
    "Ma voix tremble toujours au début de mes exposés.",
    "Est-ce que mes gestes sont trop nombreux pendant que je parle ?",
    "Merci beaucoup, je me sens plus confiant maintenant.",
    "Comment répondre à une question difficile sans perdre mes moyens ?",
    "Je dois présenter les résultats de l'équipe devant la direction.",
)


@dataclass(frozen=True)
class EspeakRecipe:
    """One espeak-ng voice: `voice` is a language voice plus an optional variant (`fr+m3`)."""

    voice: str
    rate: int = 150
    """Words per minute (espeak-ng's default is 175)."""

    @property
    def label(self) -> str:
        return f"{self.voice} -s {self.rate}"

    def argv(self, text: str) -> list[str]:
        return ["espeak-ng", "-v", self.voice, "-s", str(self.rate), "--stdout", text]


# France, Belgium and Switzerland; male and female variants; slow to brisk.
RECIPES: tuple[EspeakRecipe, ...] = (
    EspeakRecipe("fr", 150),
    EspeakRecipe("fr+m3", 140),
    EspeakRecipe("fr+f2", 160),
    EspeakRecipe("fr-be+m1", 150),
    EspeakRecipe("fr+f4", 130),
    EspeakRecipe("fr-ch+m7", 170),
)


class EspeakMissingError(RuntimeError):
    pass


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.cache
def _speak_cached(text: str, recipe: EspeakRecipe, sample_rate: int) -> bytes:
    if not espeak_available():
        raise EspeakMissingError("French test speech needs espeak-ng: apt-get install espeak-ng")
    wav = subprocess.run(recipe.argv(text), capture_output=True, check=True, timeout=60).stdout
    # --stdout writes a streaming WAV (sizes unset): 44-byte header, 16-bit mono at the voice's rate.
    if wav[:4] != b"RIFF" or len(wav) < 44:
        raise EspeakMissingError(f"espeak-ng gave no WAV for {recipe.label}")
    rate = int.from_bytes(wav[24:28], "little")
    audio = pcm16_to_float(wav[44 : 44 + (len(wav) - 44) // 2 * 2])
    if rate != sample_rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate).astype(np.float32)
    return audio.tobytes()


def speak_french(
    text: str, recipe: EspeakRecipe = RECIPES[0], *, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """float32 mono French speech (cached per process)."""
    return np.frombuffer(_speak_cached(text, recipe, sample_rate), dtype=np.float32).copy()


@dataclass(frozen=True)
class FrenchUtterance:
    text: str
    recipe: EspeakRecipe


def corpus(
    sentences: tuple[str, ...] = SENTENCES,
    recipes: tuple[EspeakRecipe, ...] = RECIPES,
    *,
    every_recipe: bool = False,
) -> list[FrenchUtterance]:
    """Sentence i spoken by recipe i mod len(recipes), or (`every_recipe`) by every recipe."""
    if every_recipe:
        return [FrenchUtterance(s, r) for r in recipes for s in sentences]
    return [FrenchUtterance(s, recipes[i % len(recipes)]) for i, s in enumerate(sentences)]
