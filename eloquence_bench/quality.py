"""Transcript quality: WER on normalized text (lower case, no punctuation), with jiwer.

The one scorer of the bench (bench.json `wer`) and of the tests that judge real speech.
"""

from __future__ import annotations

import re
import unicodedata


def normalize_text(text: str) -> str:
    """Lower-case, no punctuation: what WER is computed on."""
    text = text.lower().replace("-", " ")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text)).strip()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference`, rounded to 4 decimals (1.0: nothing heard)."""
    import jiwer

    return round(float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis) or "<empty>")), 4)


def normalize_french(text: str) -> str:
    """French (any non-English) text for WER: accents kept, apostrophes and hyphens split words."""
    text = unicodedata.normalize("NFC", text.lower()).replace("’", "'")
    text = re.sub(r"[^\w]+", " ", text)  # apostrophes and hyphens split words, as the speech does
    return re.sub(r"\s+", " ", text).strip()


def french_wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: word errors over all references' words (an empty hypothesis costs every word)."""
    import jiwer

    refs = [normalize_french(r) for r in references]
    hyps = [normalize_french(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))
