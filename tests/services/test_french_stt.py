"""French through the whisper-stt sidecar (a real subprocess, the real models): each language on the
model that fits it, French speech from espeak-ng (`eloquence_bench.french`) within a measured WER.

Figures behind the bound (`python -m eloquence_bench.components.french_stt`, 2 shared cores under
other work; the WERs are deterministic except the stock call's, which samples; times move 2-4x):

| espeak-ng French, Whisper base | WER 12 utt. | WER 72 utt. | empty /72 | median | p95 |
|---|---|---|---|---|---|
| sidecar at a flush, French decoding (beam 5, no fallback) | 0.66 | 0.66 | 3 | 390 ms | 660 ms |
| sidecar at a flush, service-wide (beam 1, fallback 0/0.4/0.8) | 0.74 | 0.69 | 17 | 930 ms | 1.9 s |
| raw faster-whisper, stock (30 s window, beam 1, its fallback) | 0.83-0.86 | | 0 /12 | 4.2 s | 9.3 s |

- The voice dominates: with the same model and decoding, espeak-ng voices range from WER 0.48
  (fr-ch+m7) to 0.98 (fr+f4) on the 72, and from 0.50 (fr+m2) to 0.92 (fr+f4) over 16 variants
  at 150 wpm with beam 1; Whisper base reads espeak-ng's *English* at 0.07 and Piper's at 0.00. So it is
  espeak-ng's French and base's French together, not robotic speech as such.
- The empty transcripts were the temperature fallback: a pass with avg_logprob under -1 is redone
  at 0.4 and 0.8, the sampled text scores lower still, and the noise filter's -1.2 drops it. Beam 5
  at temperature 0 scores higher and keeps them (empties 24 -> 3 of 72 in-process).
- The 1-2 s passes were that fallback (up to three decodes) and the loop guard: a looping short
  window is redone on the 30 s window, which Whisper base encodes in about 1.7 s here against
  0.2-0.4 s for the utterance window. Its WER was the same (0.76 against 0.76 on one voice): the
  window costs time, not accuracy. The guard still fires on 1 of 72 (2.9 s, output still a loop).

The bound, 0.72: 0.06 (7 of 113 words) over the measured 0.66, and under the service-wide decoding
(0.74 on these 12) and the stock call (0.83), so French sliding back to either, or to tiny.en
(about 1.0), fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from eloquence.services import WHISPER_STT, ServiceProcess, free_port, running_service
from eloquence_bench.components.french_stt import BASE_ENV, clip, flush_final
from eloquence_bench.french import corpus, espeak_available, speak_french
from eloquence_bench.quality import french_wer
from eloquence_bench.speech import speak, to_wav
from whisper_stt.language_models import LanguageModels, parse_model_map
from whisper_stt.model import UnsupportedLanguageError, WhisperTranscriber
from whisper_stt.packaged_models import resolve_model
from whisper_stt.settings import WhisperSTTSettings

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)"
    ),
]

FRENCH_MAX_WER = 0.72
FRENCH_MAX_EMPTY = 1  # of 12; measured 0


@pytest.fixture(scope="module")
def whisper(service_log_dir: Path) -> Iterator[ServiceProcess]:
    """The default sidecar: en -> tiny.en, fr -> base, French decoded with beam 5."""
    with running_service(WHISPER_STT, service_log_dir / "french-stt", env=BASE_ENV) as service:
        yield service


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


async def test_french_speech_through_the_sidecar_is_within_the_measured_wer(
    http: aiohttp.ClientSession, whisper: ServiceProcess
) -> None:
    utterances = corpus()  # 12 sentences, six espeak-ng voices and rates in turn
    finals = [await flush_final(http, whisper.url, clip(u), "fr") for u in utterances]
    texts = [text for _, text, _ in finals]
    assert all(language == "fr" for _, _, language in finals)
    assert sum(not t for t in texts) <= FRENCH_MAX_EMPTY, texts
    error = french_wer([u.text for u in utterances], texts)
    assert error <= FRENCH_MAX_WER, list(zip([u.text for u in utterances], texts, strict=True))


async def test_each_language_is_served_by_its_own_model(
    http: aiohttp.ClientSession, whisper: ServiceProcess
) -> None:
    async with http.get(f"{whisper.url}/health") as resp:
        health = await resp.json()
    assert health["models"] == {"en": str(resolve_model("tiny.en")), "fr": str(resolve_model("base"))}
    assert health["language"] == "en"

    english = "Please speak a little more slowly during the introduction."
    form = aiohttp.FormData()
    form.add_field(
        "file", to_wav(np.concatenate([np.zeros(4000, np.float32), speak(english)])), filename="a.wav"
    )
    form.add_field("language", "en")
    form.add_field("response_format", "verbose_json")
    async with http.post(f"{whisper.url}/v1/audio/transcriptions", data=form) as resp:
        body = await resp.json()
    assert body["language"] == "en" and french_wer([english], [body["text"]]) <= 0.1, body

    french = "Bonjour, je voudrais préparer ma présentation de demain matin."
    form = aiohttp.FormData()
    form.add_field("file", to_wav(speak_french(french)), filename="a.wav")
    form.add_field("language", "fr-FR")  # a region tag is the language
    form.add_field("response_format", "verbose_json")
    async with http.post(f"{whisper.url}/v1/audio/transcriptions", data=form) as resp:
        body = await resp.json()
    assert body["language"] == "fr" and french_wer([french], [body["text"]]) <= 0.2, body


async def test_a_language_no_model_serves_is_refused(
    http: aiohttp.ClientSession, whisper: ServiceProcess
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", to_wav(speak_french("Guten Tag.")), filename="a.wav")
    form.add_field("language", "de")
    async with http.post(f"{whisper.url}/v1/audio/transcriptions", data=form) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["code"] == "unsupported_language" and error["supported"] == ["en", "fr"]
    assert "WHISPER_MODELS" in error["message"]

    async with http.ws_connect(whisper.url.replace("http", "ws") + "/v1/stream?language=de") as ws:
        event = json.loads((await ws.receive(timeout=30)).data)
        assert (event["type"], event["code"]) == ("error", "unsupported_language")
        await ws.receive(timeout=30)
        assert ws.close_code == 1008


@pytest.fixture(scope="module")
def tiny_en() -> WhisperTranscriber:
    return WhisperTranscriber(model_path=str(resolve_model("tiny.en")), cpu_threads=1)


def test_an_english_only_model_is_never_given_another_language(tiny_en: WhisperTranscriber) -> None:
    with pytest.raises(ValueError, match="English-only model cannot transcribe 'fr'"):
        LanguageModels(models={"en": tiny_en, "fr": tiny_en}, default_language="en")
    with pytest.raises(ValueError, match="English-only and cannot serve"):
        LanguageModels(models={"en": tiny_en, "*": tiny_en}, default_language="en")
    english_only = LanguageModels(models={"en": tiny_en}, default_language="en")
    with pytest.raises(UnsupportedLanguageError, match="'fr' is not served here"):
        english_only.transcribe(np.zeros(16000, np.float32), language="fr")
    assert english_only.check_language("EN-us") == "en" and english_only.check_language(None) == "en"


def test_a_wildcard_serves_every_other_language_of_a_multilingual_model(tiny_en: WhisperTranscriber) -> None:
    base = WhisperTranscriber(model_path=str(resolve_model("base")), cpu_threads=1)
    models = LanguageModels(models={"en": tiny_en, "*": base}, default_language="en")
    assert models.transcriber_for("en") is tiny_en
    assert models.transcriber_for("de") is base and models.transcriber_for("fr") is base
    assert {"en", "fr", "de"} <= set(models.languages)
    with pytest.raises(UnsupportedLanguageError):
        models.check_language("xx")


def test_models_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    assert WhisperSTTSettings().model_map() == {"en": "tiny.en", "fr": "base"}
    assert parse_model_map(" en : tiny.en , fr-FR:/models/x:y ") == {"en": "tiny.en", "fr": "/models/x:y"}
    for bad in ("", "en", "en:tiny.en,en:base", ":base"):
        with pytest.raises(ValueError, match="WHISPER_MODELS"):
            parse_model_map(bad)
    # the single-model setting of earlier versions serves WHISPER_LANGUAGE
    monkeypatch.setenv("WHISPER_MODEL", "/models/french")
    monkeypatch.setenv("WHISPER_LANGUAGE", "fr")
    assert WhisperSTTSettings().model_map() == {"en": "tiny.en", "fr": "/models/french"}


def test_a_model_map_that_asks_tiny_en_for_french_stops_the_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "whisper_stt", "--port", str(free_port())],
        env={**os.environ, "WHISPER_MODELS": "en:tiny.en,fr:tiny.en"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert (
        "fr -> " in done.stderr and "cannot transcribe 'fr'" in done.stderr and "Traceback" not in done.stderr
    )
