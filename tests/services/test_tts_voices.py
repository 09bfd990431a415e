"""azure-tts voice choice: the session's language decides, the context picks a voice within it.

The catalogs hold the voices the real engines report: the Azure voices of the default settings,
the bundled Piper voice, and espeak-ng's French voice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from azure_tts.azure_engine import voice_language
from azure_tts.espeak_engine import EspeakEngine
from azure_tts.piper_engine import PiperEngine, default_voice_path
from azure_tts.settings import AzureTTSSettings, ContextVoices, default_contexts
from azure_tts.voices import NoVoiceForLanguageError, UnknownVoiceError, VoiceCatalog, VoiceInfo

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)

JENNY, GUY, DENISE, HENRI = "en-US-JennyNeural", "en-US-GuyNeural", "fr-FR-DeniseNeural", "fr-FR-HenriNeural"
JOE, ESPEAK_FR, ESPEAK_EN = "en_US-joe-medium", "espeak-fr+m2", "espeak-en-us"


@pytest.fixture(scope="module")
def engine_voices() -> dict[str, list[VoiceInfo]]:
    settings = AzureTTSSettings(_env_file=None)
    azure = [VoiceInfo(name=v, engine="azure", language=voice_language(v)) for v in settings.azure_voices]
    piper = PiperEngine(voice_paths=[default_voice_path()], max_workers=1)
    espeak = EspeakEngine(voices=["fr+m2", "en-us"], max_workers=1)
    return {"azure": azure, "piper": piper.voices, "espeak": espeak.voices}


def catalog(
    engine_voices: dict[str, list[VoiceInfo]],
    primary: str,
    *,
    engines: tuple[str, ...] = ("azure", "piper", "espeak"),
    espeak_voices: tuple[str, ...] = (ESPEAK_FR,),
    contexts: dict[str, ContextVoices] | None = None,
) -> VoiceCatalog:
    """The catalog a service with `primary` builds: Piper is loaded beside Azure/espeak (the fallback)."""
    loaded = [e for e in engines if e == primary or e in ("piper", "espeak")]
    voices = [v for e in loaded for v in engine_voices[e] if e != "espeak" or v.name in espeak_voices]
    defaults = {"azure": JENNY, "piper": JOE, "espeak": espeak_voices[0]}
    return VoiceCatalog(
        primary_engine=primary,
        voices=voices,
        default_voices={e: defaults[e] for e in loaded},
        contexts=default_contexts() if contexts is None else contexts,
    )


# language x context x engine: (engine, voice) spoken
EXPECTED = {
    ("azure", "en", "greeting"): ("azure", JENNY),
    ("azure", "en", "coaching"): ("azure", JENNY),  # never the French coaching voice
    ("azure", "fr", "greeting"): ("azure", DENISE),
    ("azure", "fr", "coaching"): ("azure", HENRI),
    ("piper", "en", "greeting"): ("piper", JOE),
    ("piper", "en", "coaching"): ("piper", JOE),
    ("piper", "fr", "greeting"): ("espeak", ESPEAK_FR),  # no French Piper voice: espeak-ng speaks French
    ("piper", "fr", "coaching"): ("espeak", ESPEAK_FR),
    ("espeak", "en", "greeting"): ("piper", JOE),  # espeak has French only by default: Piper speaks English
    ("espeak", "en", "coaching"): ("piper", JOE),
    ("espeak", "fr", "greeting"): ("espeak", ESPEAK_FR),
    ("espeak", "fr", "coaching"): ("espeak", ESPEAK_FR),
}


@pytest.mark.parametrize(("engine", "language", "context"), list(EXPECTED))
def test_voice_for_every_language_context_and_engine(
    engine_voices: dict[str, list[VoiceInfo]], engine: str, language: str, context: str
) -> None:
    choice = catalog(engine_voices, engine).choose(voice=None, context=context, language=language)
    assert (choice.engine, choice.voice) == EXPECTED[(engine, language, context)]
    assert choice.language.split("-")[0] == language  # the session's language is always kept


@pytest.mark.parametrize("language", ["en", "en-US", "en-GB", "EN_us"])
def test_an_english_session_never_gets_a_french_voice(
    engine_voices: dict[str, list[VoiceInfo]], language: str
) -> None:
    for engine in ("azure", "piper", "espeak"):
        voices = catalog(engine_voices, engine)
        for context in ("greeting", "coaching", "unknown", None):
            choice = voices.choose(voice=None, context=context, language=language)
            assert choice.language.startswith("en-"), (engine, context, choice)


def test_region_tags_and_an_unknown_context_keep_the_language(
    engine_voices: dict[str, list[VoiceInfo]],
) -> None:
    azure = catalog(engine_voices, "azure")
    assert azure.choose(voice=None, context="coaching", language="fr-CA").voice == HENRI
    assert azure.choose(voice=None, context="small-talk", language="fr").voice == DENISE  # first French voice
    assert azure.choose(voice=None, context="small-talk", language="en").voice == JENNY


def test_a_context_may_name_one_voice_per_language(engine_voices: dict[str, list[VoiceInfo]]) -> None:
    contexts = {
        "greeting": ContextVoices(azure=[DENISE, GUY], espeak=["espeak-en-us"]),
        "coaching": ContextVoices(azure=HENRI),
    }
    azure = catalog(engine_voices, "azure", contexts=contexts)
    assert azure.choose(voice=None, context="greeting", language="en").voice == GUY
    assert azure.choose(voice=None, context="greeting", language="fr").voice == DENISE
    assert azure.choose(voice=None, context="coaching", language="en").voice == JENNY
    espeak = catalog(engine_voices, "espeak", espeak_voices=(ESPEAK_FR, ESPEAK_EN), contexts=contexts)
    assert espeak.choose(voice=None, context="greeting", language="en").voice == ESPEAK_EN
    assert espeak.choose(voice=None, context="greeting", language="fr").voice == ESPEAK_FR


def test_without_a_language_the_context_voice_is_used(engine_voices: dict[str, list[VoiceInfo]]) -> None:
    azure = catalog(engine_voices, "azure")
    assert azure.choose(voice=None, context="greeting", language=None).voice == DENISE
    assert azure.choose(voice=None, context="coaching", language=None).voice == HENRI
    assert azure.choose(voice=None, context=None, language=None).voice == JENNY
    assert azure.contexts() == {"greeting": DENISE, "coaching": HENRI}
    assert catalog(engine_voices, "piper").contexts() == {"greeting": JOE, "coaching": JOE}


def test_an_explicit_voice_wins_and_names_its_engine(engine_voices: dict[str, list[VoiceInfo]]) -> None:
    azure = catalog(engine_voices, "azure")
    choice = azure.choose(voice=HENRI, context="greeting", language="en")
    assert (choice.engine, choice.voice) == ("azure", HENRI)
    assert azure.choose(voice=ESPEAK_FR, context=None, language=None).engine == "espeak"
    with pytest.raises(UnknownVoiceError, match="unknown voice 'nobody'"):
        azure.choose(voice="nobody", context=None, language="en")


def test_a_language_no_engine_speaks_is_refused_with_what_to_install(
    engine_voices: dict[str, list[VoiceInfo]],
) -> None:
    # Piper only: what a service without espeak-ng loads
    piper_only = catalog(engine_voices, "piper", engines=("piper",), espeak_voices=("none",))
    assert piper_only.choose(voice=None, context="coaching", language="en").voice == JOE
    with pytest.raises(NoVoiceForLanguageError) as refused:
        piper_only.choose(voice=None, context="coaching", language="fr")
    assert refused.value.code == "unsupported_language"
    assert "apt-get install espeak-ng" in str(refused.value) and "PIPER_VOICE" in str(refused.value)
    with pytest.raises(NoVoiceForLanguageError, match="no voice here speaks 'de'"):
        catalog(engine_voices, "azure").choose(voice=None, context=None, language="de")


def test_the_fallback_for_a_failed_azure_voice_keeps_the_language(
    engine_voices: dict[str, list[VoiceInfo]],
) -> None:
    azure = catalog(engine_voices, "azure")
    english = azure.choose_fallback(context="coaching", language="en")
    french = azure.choose_fallback(context="greeting", language="fr")
    assert english is not None and (english.engine, english.voice) == ("piper", JOE)
    assert french is not None and (french.engine, french.voice) == ("espeak", ESPEAK_FR)
    assert azure.choose_fallback(context=None, language="de") is None  # then the Azure error stands


def test_default_contexts_greet_with_denise_and_coach_with_henri() -> None:
    contexts = default_contexts()
    assert contexts["greeting"].azure == DENISE and contexts["coaching"].azure == HENRI


def test_settings_accept_espeak_and_its_voices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TTS_ENGINE", "espeak")
    monkeypatch.setenv("ESPEAK_VOICES", '["fr+m2", "en-us"]')
    monkeypatch.setenv("VOICE_CONTEXTS", '{"greeting": {"azure": ["fr-FR-DeniseNeural", "en-US-GuyNeural"]}}')
    settings = AzureTTSSettings()
    assert settings.primary_engine() == "espeak" and settings.espeak_voices == ["fr+m2", "en-us"]
    assert settings.voice_contexts["greeting"].azure == [DENISE, GUY]
