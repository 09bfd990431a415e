"""Which engine and voice speak a request.

An explicit voice wins (it also names the engine). Otherwise the session's language decides, and the
context picks a voice *within* that language: a context's voice in another language is never used
(an English session on Azure never gets the French "coaching" voice, fr-FR-HenriNeural). When the
primary engine has no voice in the language, the first other loaded engine that has one speaks it
(French on a Piper service without a French Piper voice: espeak-ng). No language given: the context's
voice, else the default voice. A language no loaded engine speaks is refused, with what to install.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .settings import ContextVoices

logger = logging.getLogger("azure_tts.voices")

# The engines that may speak a language the primary engine has no voice for, in order of preference.
OFFLINE_ENGINES = ("piper", "espeak")


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    engine: str
    language: str
    """BCP-47 tag, e.g. "en-US"."""


@dataclass(frozen=True)
class VoiceChoice:
    engine: str
    voice: str
    language: str
    style: str | None = None


class UnknownVoiceError(ValueError):
    code = "unknown_voice"

    def __init__(self, voice: str, valid: list[str], *, message: str | None = None) -> None:
        super().__init__(message or f"unknown voice {voice!r}; valid voices: {', '.join(valid)}")
        self.valid = valid


class NoVoiceForLanguageError(UnknownVoiceError):
    """No loaded engine speaks the requested language (answered like an unknown voice: 400)."""

    code = "unsupported_language"

    def __init__(self, language: str, valid: list[str], languages: list[str]) -> None:
        if primary_subtag(language) == "fr":
            hint = (
                "for French offline, install espeak-ng (apt-get install espeak-ng; ESPEAK_VOICES names its "
                "French voice), mount a French Piper voice (PIPER_VOICE), or configure Azure"
            )
        else:
            hint = "mount a Piper voice of that language (PIPER_EXTRA_VOICES) or add an espeak-ng voice"
        super().__init__(
            language,
            valid,
            message=f"no voice here speaks {language!r} (languages: {', '.join(languages)}); {hint}",
        )
        self.language = language


def primary_subtag(language: str) -> str:
    """ "fr-FR" / "fr_CA" / "FR" -> "fr"."""
    return language.strip().lower().replace("_", "-").split("-")[0]


def _names(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


class VoiceCatalog:
    """The voices of the loaded engines and the context map; an explicit voice names its engine."""

    def __init__(
        self,
        *,
        primary_engine: str,
        voices: Sequence[VoiceInfo],
        default_voices: Mapping[str, str],
        contexts: Mapping[str, ContextVoices],
    ) -> None:
        self.primary_engine = primary_engine
        self._voices = list(voices)
        self._by_name = {v.name.lower(): v for v in self._voices}
        self._defaults = dict(default_voices)
        self._contexts = dict(contexts)
        for engine, name in self._defaults.items():
            if name.lower() not in self._by_name:
                raise ValueError(f"default {engine} voice {name!r} is not among the {engine} voices")
        for context in self._contexts:
            for engine in self._defaults:
                for wanted in self._context_names(context, engine):
                    known = self._by_name.get(wanted.lower())
                    if known is None or known.engine != engine:
                        logger.warning(
                            "context %r names unknown %s voice %r: it is not used", context, engine, wanted
                        )

    @property
    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def names(self) -> list[str]:
        return [v.name for v in self._voices]

    def languages(self) -> list[str]:
        return sorted({v.language for v in self._voices})

    def contexts(self) -> dict[str, str]:
        """Context -> the voice it uses on the primary engine (no language given)."""
        return {
            ctx: self.choose_for_engine(self.primary_engine, context=ctx, language=None).voice
            for ctx in self._contexts
        }

    def choose(self, *, voice: str | None, context: str | None, language: str | None) -> VoiceChoice:
        if voice:
            info = self._by_name.get(voice.lower())
            if info is None:
                raise UnknownVoiceError(voice, self.names())
            return self._choice(info, context)
        engines = [self.primary_engine, *(e for e in OFFLINE_ENGINES if e != self.primary_engine)]
        return self._first_engine_with(engines, context=context, language=language)

    def choose_fallback(self, *, context: str | None, language: str | None) -> VoiceChoice | None:
        """The offline voice standing in for a failed primary engine; None when none speaks the language."""
        engines = [e for e in OFFLINE_ENGINES if e != self.primary_engine and e in self._defaults]
        try:
            return self._first_engine_with(engines, context=context, language=language) if engines else None
        except NoVoiceForLanguageError:
            return None

    def choose_for_engine(self, engine: str, *, context: str | None, language: str | None) -> VoiceChoice:
        """The voice `engine` uses for this context within this language (its default when it has none)."""
        info = self._voice_on(engine, context=context, language=language)
        return self._choice(info or self._by_name[self._defaults[engine].lower()], context)

    def _first_engine_with(
        self, engines: Sequence[str], *, context: str | None, language: str | None
    ) -> VoiceChoice:
        for engine in engines:
            if engine in self._defaults:
                info = self._voice_on(engine, context=context, language=language)
                if info is not None:
                    return self._choice(info, context)
        assert language  # without a language every engine has its default voice
        raise NoVoiceForLanguageError(language, self.names(), self.languages())

    def _voice_on(self, engine: str, *, context: str | None, language: str | None) -> VoiceInfo | None:
        """The context's voice in the language, else the engine's voice of the language; None if none."""
        if context and context not in self._contexts:
            logger.debug("unknown context %r: the language's voice", context)
        wanted = primary_subtag(language) if language else None
        on_engine = [v for v in self._voices if v.engine == engine]
        default = self._by_name[self._defaults[engine].lower()]

        def speaks(v: VoiceInfo) -> bool:
            return wanted is None or primary_subtag(v.language) == wanted

        if context in self._contexts:
            for name in self._context_names(context, engine):
                info = self._by_name.get(name.lower())
                if info is not None and info.engine == engine and speaks(info):
                    return info
        if wanted is not None and language:
            exact = language.lower().replace("_", "-")
            # The default voice first, then a voice of the exact region, then any of the language.
            for v in [default, *(v for v in on_engine if v.language.lower() == exact), *on_engine]:
                if speaks(v):
                    return v
            return None
        return default

    def _context_names(self, context: str, engine: str) -> list[str]:
        return _names(getattr(self._contexts[context], engine, None))

    def _choice(self, info: VoiceInfo, context: str | None) -> VoiceChoice:
        ctx = self._contexts.get(context or "")
        style = ctx.style if ctx is not None and info.engine == "azure" else None
        return VoiceChoice(engine=info.engine, voice=info.name, language=info.language, style=style)
