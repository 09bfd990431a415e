"""Transcript quality: WER on normalized text (lower case, no punctuation), with jiwer."""

from __future__ import annotations

import re


def normalize_text(text: str) -> str:
    text = text.lower().replace("-", " ")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text)).strip()


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return round(float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis) or "<empty>")), 4)
