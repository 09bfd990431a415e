"""Which engine and voice speak a request: explicit voice, else context, else language, else default."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .settings import ContextVoices

logger = logging.getLogger("azure_tts.voices")


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
    def __init__(self, voice: str, valid: list[str]) -> None:
        super().__init__(f"unknown voice {voice!r}; valid voices: {', '.join(valid)}")
        self.valid = valid


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
        for context, per_engine in self._contexts.items():
            for engine in self._defaults:
                wanted: str | None = getattr(per_engine, engine, None)
                known = self._by_name.get((wanted or "").lower())
                if wanted and (known is None or known.engine != engine):
                    logger.warning(
                        "context %r names unknown %s voice %r: the default is used", context, engine, wanted
                    )

    @property
    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def names(self) -> list[str]:
        return [v.name for v in self._voices]

    def contexts(self) -> dict[str, str]:
        """Context -> the voice it uses on the primary engine."""
        return {ctx: self._context_voice(ctx, self.primary_engine) for ctx in self._contexts}

    def choose(self, *, voice: str | None, context: str | None, language: str | None) -> VoiceChoice:
        if voice:
            info = self._by_name.get(voice.lower())
            if info is None:
                raise UnknownVoiceError(voice, self.names())
            return self._choice(info, context)
        return self.choose_for_engine(self.primary_engine, context=context, language=language)

    def choose_for_engine(self, engine: str, *, context: str | None, language: str | None) -> VoiceChoice:
        """The voice `engine` uses for this context or language (also the fallback's choice)."""
        if context and context in self._contexts:
            name = self._context_voice(context, engine)
        else:
            if context:
                logger.debug("unknown context %r: default voice", context)
            name = self._language_voice(engine, language) or self._defaults[engine]
        return self._choice(self._by_name[name.lower()], context)

    def _choice(self, info: VoiceInfo, context: str | None) -> VoiceChoice:
        ctx = self._contexts.get(context or "")
        style = ctx.style if ctx is not None and info.engine == "azure" else None
        return VoiceChoice(engine=info.engine, voice=info.name, language=info.language, style=style)

    def _context_voice(self, context: str, engine: str) -> str:
        name = getattr(self._contexts[context], engine, None)
        if name and name.lower() in self._by_name and self._by_name[name.lower()].engine == engine:
            return self._by_name[name.lower()].name
        return self._defaults[engine]

    def _language_voice(self, engine: str, language: str | None) -> str | None:
        if not language:
            return None
        wanted = language.lower().replace("_", "-")
        default = self._by_name[self._defaults[engine].lower()]
        candidates = [v for v in self._voices if v.engine == engine]
        for v in [default, *candidates]:
            tag = v.language.lower()
            if tag == wanted or tag.split("-")[0] == wanted.split("-")[0]:
                return v.name
        return None
