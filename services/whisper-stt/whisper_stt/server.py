"""The whisper-stt handlers, /v1/audio/transcriptions and /v1/stream (API.md), on the sidecar skeleton."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, WSCloseCode, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry

from sidecar_common.app import SidecarAPI, open_websocket
from sidecar_common.audio import AudioFormatError, decode_audio
from sidecar_common.http import SidecarError
from whisper_stt import openapi
from whisper_stt.language_models import LanguageModels
from whisper_stt.metrics import WhisperMetrics
from whisper_stt.model import DEFAULT_TEMPERATURES, SAMPLE_RATE, UnsupportedLanguageError
from whisper_stt.noise_filter import NoiseFilter
from whisper_stt.recognizer import MIN_AUDIO_S, SpeechRecognizer
from whisper_stt.settings import WhisperSTTSettings
from whisper_stt.streaming import (
    CLOSE_TRY_AGAIN_LATER,
    StreamError,
    StreamSession,
    reject_stream,
    turn_context_requested,
)
from whisper_stt.transcription_queue import Overloaded, Priority, TranscriptionQueue

logger = logging.getLogger("whisper_stt.server")

RESPONSE_FORMATS = ("json", "text", "verbose_json")
_FORM_FIELD_LIMIT = 64 * 1024  # bytes of any form field other than `file`


class WhisperSTTAPI(SidecarAPI):
    """The handlers around one loaded model; its queue starts with the server (it needs the loop)."""

    metrics_prefix = "whisper_stt"
    # multipart is read part by part with its own limits; this only bounds other bodies.
    max_body_bytes = _FORM_FIELD_LIMIT

    def __init__(
        self, *, settings: WhisperSTTSettings, transcriber: LanguageModels, registry: CollectorRegistry
    ) -> None:
        super().__init__(registry=registry)
        self.settings = settings
        self.transcriber = transcriber
        self.metrics = WhisperMetrics(registry)
        self.streams: set[StreamSession] = set()
        self._recognizer: SpeechRecognizer | None = None

    @property
    def recognizer(self) -> SpeechRecognizer:
        if self._recognizer is None:
            raise RuntimeError("the transcription queue starts with the server")
        return self._recognizer

    def openapi_paths(self) -> dict[str, Any]:
        return openapi.paths(languages=self.transcriber.languages, response_formats=list(RESPONSE_FORMATS))

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/audio/transcriptions", self.transcriptions), web.get("/v1/stream", self.stream)]

    def health(self) -> dict[str, Any]:
        queue = self.recognizer.queue
        return {
            "model": self.transcriber.model_path,
            "models": self.transcriber.models,
            "language": self.transcriber.default_language,
            "queue_depth": queue.depth,
            "running": queue.running,
            "active_streams": len(self.streams),
            "encoder_window": self.transcriber.encoder_window,
            # For leak checks: both return to their idle values once every client is gone.
            "open_tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(),
        }

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        settings = self.settings
        queue = TranscriptionQueue(
            max_pending=settings.whisper_queue_size,
            workers=settings.whisper_workers,
            retry_after_s=settings.whisper_retry_after_s,
            metrics=self.metrics,
        )
        noise_filter = NoiseFilter(
            no_speech_threshold=settings.whisper_no_speech_threshold,
            logprob_threshold=settings.whisper_logprob_threshold,
            compression_ratio_threshold=settings.whisper_compression_ratio_threshold,
            repetition_max=settings.whisper_repetition_max,
            hallucination_max_speech_s=settings.whisper_hallucination_max_speech_s,
            vad_aggressiveness=settings.whisper_vad_aggressiveness,
        )
        self._recognizer = SpeechRecognizer(
            transcriber=self.transcriber, noise_filter=noise_filter, queue=queue, metrics=self.metrics
        )
        yield
        await queue.aclose()

    async def shutdown(self) -> None:
        for session in list(self.streams):
            await session.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        form = await _read_transcription_form(request, self.settings.whisper_max_upload_bytes)
        response_format = form.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise SidecarError(
                400, "invalid_request", f"response_format must be one of {', '.join(RESPONSE_FORMATS)}"
            )
        temperatures = _parse_temperatures(form.get("temperature"))
        try:
            language = self.recognizer.transcriber.check_language(form.get("language"))
            # Decoding and resampling a long upload is CPU work: keep it off the event loop.
            audio = await asyncio.to_thread(decode_audio, form["file"], target_rate=SAMPLE_RATE)
            if len(audio) < MIN_AUDIO_S * SAMPLE_RATE:
                raise SidecarError(
                    400, "audio_too_short", f"audio is shorter than {MIN_AUDIO_S * 1000:.0f} ms"
                )
            transcript = await self.recognizer.transcribe(
                audio,
                priority=Priority.FINAL,
                language=language,
                prompt=form.get("prompt"),
                temperatures=temperatures,
            )
        except AudioFormatError as e:
            raise SidecarError(400, "invalid_audio", str(e)) from None
        except UnsupportedLanguageError as e:
            raise SidecarError(400, "unsupported_language", str(e), supported=e.supported) from None
        except Overloaded as e:
            raise SidecarError(
                429, "overloaded", str(e), headers={"Retry-After": str(e.retry_after_s)}
            ) from None
        if response_format == "text":
            return web.Response(text=transcript.text, content_type="text/plain")
        if response_format == "json":
            return web.json_response({"text": transcript.text})
        return web.json_response(
            {
                "text": transcript.text,
                "language": transcript.language,
                "duration": round(transcript.duration, 3),
                "segments": [
                    {
                        "id": i,
                        "start": round(s.start, 3),
                        "end": round(s.end, 3),
                        "text": s.text,
                        "avg_logprob": round(s.avg_logprob, 4),
                        "no_speech_prob": round(s.no_speech_prob, 4),
                    }
                    for i, s in enumerate(transcript.segments)
                ],
            }
        )

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = await open_websocket(request, heartbeat=30.0, max_msg_size=4 * 1024 * 1024)
        try:
            if len(self.streams) >= self.settings.whisper_max_streams:
                self.metrics.rejections.labels("max_streams").inc()
                raise StreamError(
                    "overloaded",
                    f"this service already serves {len(self.streams)} streams",
                    close_code=CLOSE_TRY_AGAIN_LATER,
                )
            sample_rate, language = _stream_parameters(request, self.recognizer)
            turn_context = turn_context_requested(request.query.get("context"))
        except StreamError as e:
            await reject_stream(ws, e)
            return ws
        session = StreamSession(
            ws=ws,
            recognizer=self.recognizer,
            settings=self.settings,
            sample_rate=sample_rate,
            language=language,
            turn_context=turn_context,
        )
        self.streams.add(session)
        self.metrics.active_streams.set(len(self.streams))
        try:
            await session.run()
        finally:
            self.streams.discard(session)
            self.metrics.active_streams.set(len(self.streams))
        return ws


async def _read_field(part: BodyPartReader, limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(256 * 1024):
        data.extend(chunk)
        if len(data) > limit:
            raise SidecarError(413, "too_large", f"{what} is over the limit of {limit} bytes")
    return bytes(data)


async def _read_transcription_form(request: web.Request, max_upload: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > max_upload + _FORM_FIELD_LIMIT:
        raise SidecarError(413, "too_large", f"upload is over the limit of {max_upload} bytes")
    if not request.content_type.startswith("multipart/"):
        raise SidecarError(400, "invalid_request", "send multipart/form-data with a `file` field")
    form: dict[str, Any] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.name == "file":
                form["file"] = await _read_field(part, max_upload, "the uploaded file")
            else:
                form[part.name] = (await _read_field(part, _FORM_FIELD_LIMIT, part.name)).decode(
                    "utf-8", "replace"
                )
    except HttpProcessingError:  # a part's headers that HTTP does not allow (raw bytes in a name...)
        raise SidecarError(400, "invalid_request", "malformed multipart body: invalid part headers") from None
    except (ValueError, AssertionError) as e:  # aiohttp's multipart parser on a malformed body
        raise SidecarError(400, "invalid_request", f"malformed multipart body: {e}") from None
    if not form.get("file"):
        raise SidecarError(400, "invalid_request", "the `file` field is missing or empty")
    return form


def _parse_temperatures(value: str | None) -> tuple[float, ...]:
    if value is None or not value.strip():
        return DEFAULT_TEMPERATURES
    try:
        temperature = float(value)
    except ValueError:
        raise SidecarError(400, "invalid_request", f"temperature must be a number, got {value!r}") from None
    if not 0.0 <= temperature <= 1.0:
        raise SidecarError(400, "invalid_request", "temperature must be between 0 and 1")
    return (temperature,)


def _stream_parameters(request: web.Request, recognizer: SpeechRecognizer) -> tuple[int, str]:
    raw_rate = request.query.get("sample_rate", str(SAMPLE_RATE))
    try:
        sample_rate = int(raw_rate)
    except ValueError:
        sample_rate = 0
    if not 8000 <= sample_rate <= 48000:
        raise StreamError(
            "invalid_request",
            f"sample_rate must be an integer from 8000 to 48000, got {raw_rate!r}",
            close_code=WSCloseCode.POLICY_VIOLATION,
        )
    try:
        language = recognizer.transcriber.check_language(request.query.get("language"))
    except UnsupportedLanguageError as e:
        raise StreamError("unsupported_language", str(e), close_code=WSCloseCode.POLICY_VIOLATION) from None
    return sample_rate, language
