"""espeak-ng voices: French (and any espeak-ng language) offline, behind the same engine protocol.

No French Piper voice installs from PyPI, so the embedded default speaks French with Debian's
`espeak-ng` (robotic, but intelligible and offline). Each text chunk is one `espeak-ng --stdout`
process, run in a worker thread with the text on stdin (never parsed as options), so the chunk's
audio goes out as soon as that chunk is spoken; the event loop only awaits. Without espeak-ng the
engine refuses to load with what to install.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from sidecar_common.audio import peak_normalize, resample
from sidecar_common.pcm import float_to_pcm16, pcm16_to_float

from .errors import EngineTimeoutError, SynthesisError
from .offline_engine import OfflineEngine
from .voices import VoiceInfo

PEAK = 0.8
BASE_WORDS_PER_MINUTE = 175  # espeak-ng's own default speed
_WAV_HEADER = 44
# Regions espeak-ng's bare language voices speak ("en" is British English).
_DEFAULT_REGIONS = {"fr": "FR", "en": "GB", "de": "DE", "es": "ES", "it": "IT", "pt": "PT", "nl": "NL"}
INSTALL_HINT = "install it with `apt-get install espeak-ng` (the Dockerfile and scripts/install.sh do)"


class EspeakUnavailableError(OSError):
    """espeak-ng is not installed, or a configured voice does not exist: the message says what to do.

    An OSError, so the sidecar's start-up reports it as one line (exit status 2), not a traceback.
    """


def espeak_executable() -> str | None:
    return shutil.which("espeak-ng")


def voice_name(voice: str) -> str:
    """The catalog name of an espeak-ng voice: "fr+m2" -> "espeak-fr+m2"."""
    return f"espeak-{voice}"


def voice_language(voice: str) -> str:
    """BCP-47 tag of an espeak-ng voice id: "fr+m3" -> "fr-FR", "fr-be" -> "fr-BE", "en-us" -> "en-US"."""
    language, _, region = voice.split("+")[0].lower().partition("-")
    region = region or _DEFAULT_REGIONS.get(language, "")
    return f"{language}-{region.upper()}" if region else language


def _clean(text: str) -> str:
    # One line of plain text: "[[" would start espeak-ng's phoneme input, control characters are noise.
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    return text.replace("[[", "[ [").strip()


class EspeakEngine(OfflineEngine):
    name = "espeak"
    warm_up_text = "Prêt."

    def __init__(
        self,
        *,
        voices: Sequence[str],
        max_workers: int = 2,
        timeout_s: float = 20.0,
        executable: str | None = None,
    ) -> None:
        if not voices:
            raise ValueError("at least one espeak-ng voice is needed (ESPEAK_VOICES)")
        exe = executable or espeak_executable()
        if exe is None:
            raise EspeakUnavailableError(f"espeak-ng is not installed: {INSTALL_HINT}")
        self._exe = exe
        self._timeout_s = timeout_s
        self._ids: dict[str, str] = {}
        infos: list[VoiceInfo] = []
        for voice in voices:
            self._check_voice(voice)
            name = voice_name(voice)
            self._ids[name] = voice
            infos.append(VoiceInfo(name=name, engine=self.name, language=voice_language(voice)))
        super().__init__(voices=infos, max_workers=max_workers)

    def _check_voice(self, voice: str) -> None:
        base, _, variant = voice.partition("+")
        probe = subprocess.run(
            [self._exe, "-v", base, "-q", "x"], capture_output=True, text=True, timeout=self._timeout_s
        )
        if probe.returncode != 0:
            raise EspeakUnavailableError(
                f"espeak-ng has no voice {base!r} (ESPEAK_VOICES); `espeak-ng --voices` lists them"
            )
        if (
            variant
            and (data := self._data_dir()) is not None
            and not (data / "voices" / "!v" / variant).is_file()
        ):
            # espeak-ng would silently ignore an unknown variant: refuse it here instead
            raise EspeakUnavailableError(f"espeak-ng has no voice variant {variant!r} (in {voice!r})")

    def _data_dir(self) -> Path | None:
        out = subprocess.run(
            [self._exe, "--version"], capture_output=True, text=True, timeout=self._timeout_s
        )
        match = re.search(r"Data at:\s*(\S+)", out.stdout)
        return Path(match.group(1)) if match else None

    def _run(self, text: str, voice: str, sample_rate: int, rate: float | None) -> bytes:
        """Blocking (a worker thread): one chunk to 16-bit PCM at `sample_rate`, peak at 80 %."""
        speed = max(80, min(450, round(BASE_WORDS_PER_MINUTE * (rate or 1.0))))
        argv = [self._exe, "-v", self._ids[voice], "-s", str(speed), "--stdout"]
        try:
            done = subprocess.run(
                argv, input=text.encode("utf-8"), capture_output=True, timeout=self._timeout_s
            )
        except subprocess.TimeoutExpired:
            raise EngineTimeoutError(
                f"espeak-ng took over {self._timeout_s:.0f} s", engine=self.name
            ) from None
        except OSError as e:
            raise SynthesisError(f"espeak-ng could not run: {e.strerror or e}", engine=self.name) from None
        wav = done.stdout
        if done.returncode != 0 or wav[:4] != b"RIFF" or len(wav) < _WAV_HEADER:
            reason = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
            raise SynthesisError(f"espeak-ng failed: {reason}", engine=self.name)
        # --stdout writes a streaming WAV (sizes unset): a 44-byte header, then 16-bit mono samples.
        native_rate = int.from_bytes(wav[24:28], "little")
        body = wav[_WAV_HEADER : _WAV_HEADER + (len(wav) - _WAV_HEADER) // 2 * 2]
        audio = resample(pcm16_to_float(body), native_rate, sample_rate)
        return float_to_pcm16(peak_normalize(audio, peak=PEAK))

    async def synthesize(
        self, text: str, *, voice: str, sample_rate: int, rate: float | None = None, **_: object
    ) -> AsyncGenerator[bytes, None]:
        """16-bit mono PCM at `sample_rate` for one chunk (one piece)."""
        text = _clean(text)
        if not text:
            return
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(self._executor, self._run, text, voice, sample_rate, rate)
        if pcm:
            yield pcm


def load_espeak(
    voices: Sequence[str], *, primary: bool, max_workers: int
) -> tuple[EspeakEngine | None, str | None]:
    """The engine, or (when it is only the extra engine) None and the warning that says what is missing.

    As the primary engine (TTS_ENGINE=espeak) a missing espeak-ng is a start-up error.
    """
    if not voices:
        if primary:
            raise EspeakUnavailableError("TTS_ENGINE=espeak needs at least one voice in ESPEAK_VOICES")
        return None, None
    try:
        return EspeakEngine(voices=voices, max_workers=max_workers), None
    except EspeakUnavailableError as e:
        if primary:
            raise
        languages = ", ".join(sorted({voice_language(v) for v in voices}))
        return None, f"{e}; {languages} will have no offline voice unless PIPER_VOICE or Azure speaks it"
