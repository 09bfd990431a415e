"""Which Whisper model serves which language: `WHISPER_MODELS=en:tiny.en,fr:base`.

Each language is served by the model that fits it: English stays on the fast English-only tiny.en,
French goes to the multilingual base. Every distinct model loads once, before the server listens.
A request's language is checked against this map before any audio is read, so a language no model
serves gets `unsupported_language`, and an English-only model is never asked for another language.
`*` names the model for every other language it knows (`en:tiny.en,*:base`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whisper_stt.model import DEFAULT_TEMPERATURES, Transcript, UnsupportedLanguageError, WhisperTranscriber
from whisper_stt.packaged_models import resolve_model
from whisper_stt.settings import LanguageDecoding, WhisperSTTSettings

logger = logging.getLogger("whisper_stt.language_models")

ANY_LANGUAGE = "*"


def normalize_language(language: str) -> str:
    """ "fr-FR" / "fr_CA" / " FR " -> "fr"."""
    return language.strip().lower().replace("_", "-").split("-")[0]


def parse_model_map(value: str) -> dict[str, str]:
    """ "en:tiny.en, fr:base" -> {"en": "tiny.en", "fr": "base"} (a path may follow the colon)."""
    models: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        language, sep, reference = item.partition(":")
        code = language.strip() if language.strip() == ANY_LANGUAGE else normalize_language(language)
        if not sep or not code or not reference.strip():
            raise ValueError(
                f"WHISPER_MODELS: {item.strip()!r} is not language:model (e.g. en:tiny.en,fr:base)"
            )
        if code in models:
            raise ValueError(f"WHISPER_MODELS names {code!r} twice")
        models[code] = reference.strip()
    if not models:
        raise ValueError("WHISPER_MODELS is empty; e.g. en:tiny.en,fr:base")
    return models


@dataclass
class _Route:
    transcriber: WhisperTranscriber
    decoding: LanguageDecoding = field(default_factory=LanguageDecoding)


class LanguageModels:
    """The transcriber of each language; `transcribe` and `check_language` as on one WhisperTranscriber."""

    def __init__(
        self,
        *,
        models: Mapping[str, WhisperTranscriber],
        default_language: str,
        decoding: Mapping[str, LanguageDecoding] | None = None,
    ) -> None:
        self._routes: dict[str, _Route] = {}
        decoding = {normalize_language(k): v for k, v in (decoding or {}).items()}
        for language, transcriber in models.items():
            if language == ANY_LANGUAGE:
                if not transcriber.multilingual:
                    raise ValueError(
                        f"WHISPER_MODELS: {transcriber.model_path} is English-only and cannot serve '*'"
                    )
            elif language not in transcriber.supported_languages:
                kind = "English-only" if not transcriber.multilingual else "multilingual"
                raise ValueError(
                    f"WHISPER_MODELS: {language} -> {transcriber.model_path}: this {kind} model cannot "
                    f"transcribe {language!r}"
                )
            self._routes[language] = _Route(transcriber, decoding.get(language, LanguageDecoding()))
        self.default_language = self.check_language(default_language)

    @property
    def languages(self) -> list[str]:
        """The languages served (a `*` model adds every code it knows)."""
        codes = [code for code in self._routes if code != ANY_LANGUAGE]
        wildcard = self._routes.get(ANY_LANGUAGE)
        if wildcard is not None:
            codes += [c for c in wildcard.transcriber.supported_languages if c not in codes]
        return codes

    @property
    def model_path(self) -> str:
        """The default language's model (/health's `model`; `models` has them all)."""
        return self.transcriber_for(None).model_path

    @property
    def models(self) -> dict[str, str]:
        return {code: route.transcriber.model_path for code, route in self._routes.items()}

    @property
    def encoder_window(self) -> str:
        return next(iter(self._routes.values())).transcriber.encoder_window

    def transcribers(self) -> list[WhisperTranscriber]:
        """Each loaded model once (two languages may share one)."""
        unique: dict[int, WhisperTranscriber] = {}
        for route in self._routes.values():
            unique.setdefault(id(route.transcriber), route.transcriber)
        return list(unique.values())

    def _route(self, code: str) -> _Route | None:
        route = self._routes.get(code)
        if route is None and ANY_LANGUAGE in self._routes:
            wildcard = self._routes[ANY_LANGUAGE]
            if code in wildcard.transcriber.supported_languages:
                return wildcard
        return route

    def check_language(self, language: str | None) -> str:
        """The code of a served language (None or blank: the default), else UnsupportedLanguageError."""
        if language is None or not language.strip():
            return getattr(self, "default_language", None) or next(iter(self._routes))
        code = normalize_language(language)
        if self._route(code) is None:
            raise UnsupportedLanguageError(language, self.languages, hint="set WHISPER_MODELS to add one")
        return code

    def transcriber_for(self, language: str | None) -> WhisperTranscriber:
        route = self._route(self.check_language(language))
        assert route is not None
        return route.transcriber

    def warm_up(self) -> None:
        for transcriber in self.transcribers():
            transcriber.warm_up()

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES,
        beam_size: int | None = None,
        **options: Any,
    ) -> Transcript:
        """Blocking, like WhisperTranscriber.transcribe, on the language's model and decoding settings."""
        code = self.check_language(language)
        route = self._route(code)
        assert route is not None
        if temperatures == DEFAULT_TEMPERATURES and not route.decoding.fallback:
            temperatures = (0.0,)
        if beam_size is None and route.decoding.beam_size is not None:
            beam_size = route.decoding.beam_size
        return route.transcriber.transcribe(
            audio, language=code, temperatures=temperatures, beam_size=beam_size, **options
        )


def load_language_models(settings: WhisperSTTSettings, *, warm_up: bool = True) -> LanguageModels:
    """Resolve (joining a packaged model on first use), load and warm every model of the settings."""
    cache_dir = Path(settings.whisper_model_cache) if settings.whisper_model_cache else None
    loaded: dict[Path, WhisperTranscriber] = {}
    models: dict[str, WhisperTranscriber] = {}
    for language, reference in settings.model_map().items():
        path = resolve_model(reference, cache_dir=cache_dir)
        if path not in loaded:
            started = time.perf_counter()
            loaded[path] = WhisperTranscriber(
                model_path=str(path),
                device=settings.whisper_device,
                compute_type=settings.whisper_compute_type,
                cpu_threads=settings.whisper_cpu_threads,
                workers=settings.whisper_workers,
                beam_size=settings.whisper_beam_size,
                default_language="en" if language == ANY_LANGUAGE else language,
                encoder_window=settings.whisper_encoder_window,
                min_window_s=settings.whisper_encoder_min_window_s,
                margin_s=settings.whisper_encoder_margin_s,
            )
            if warm_up:
                loaded[path].warm_up()
            logger.info("Loaded %s for %s in %.1f s", path, language, time.perf_counter() - started)
        models[language] = loaded[path]
    return LanguageModels(
        models=models, default_language=settings.whisper_language, decoding=settings.whisper_decoding
    )
