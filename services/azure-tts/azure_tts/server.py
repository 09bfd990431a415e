"""The azure-tts handlers (API.md): thin HTTP and websocket handlers over `TextToSpeech`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from sidecar_common.app import SidecarAPI, open_websocket
from sidecar_common.audio import wav_bytes
from sidecar_common.http import InvalidJSON, SidecarError, parse_json

from . import openapi
from .errors import EngineThrottledError, SynthesisError
from .messages import OpenAISpeechRequest, SynthesizeRequest, validation_message
from .pcm_frames import PCMFramer
from .stream_socket import StreamSocket
from .synthesis import SpeechOptions, SpeechSession, TextToSpeech
from .voices import UnknownVoiceError

RequestT = TypeVar("RequestT", bound=BaseModel)

logger = logging.getLogger("azure_tts.server")

SAMPLE_RATES = [16000, 24000]
MAX_BODY_BYTES = 256 * 1024


async def audio_frames(
    session: SpeechSession, chunks: list[str], sample_rate: int
) -> AsyncGenerator[bytes, None]:
    """200 ms frames of the chunks' audio; each chunk's last frame may be shorter."""
    framer = PCMFramer(sample_rate=sample_rate)
    for chunk in chunks:
        async with aclosing(session.speak(chunk)) as pieces:
            async for pcm in pieces:
                for frame in framer.push(pcm):
                    yield frame
        if rest := framer.flush():
            yield rest


class AzureTTSAPI(SidecarAPI):
    """The handlers over `TextToSpeech`, whose engines are loaded; the lifespan warms them up."""

    metrics_prefix = "azure_tts"
    max_body_bytes = MAX_BODY_BYTES

    def __init__(
        self, *, tts: TextToSpeech, max_text_chars: int, retry_after_s: int, registry: CollectorRegistry
    ) -> None:
        super().__init__(registry=registry)
        self.tts = tts
        self.max_text_chars = max_text_chars
        self.retry_after_s = retry_after_s

    def openapi_paths(self) -> dict[str, Any]:
        catalog = self.tts.catalog
        return openapi.paths(
            voices=catalog.names(), languages=catalog.languages(), max_text_chars=self.max_text_chars
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/voices", self.voices),
            web.post("/v1/synthesize", self.synthesize),
            web.post("/v1/audio/speech", self.openai_speech),
            web.get("/v1/stream", self.stream),
        ]

    def health(self) -> dict[str, Any]:
        return {
            "engine": self.tts.primary_engine,
            "fallback": "piper" if self.tts.fallback else None,
            "voices": self.tts.catalog.names(),
            "sample_rates": SAMPLE_RATES,
            "active_syntheses": self.tts.active,
        }

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        for engine in self.tts.engines.values():
            start = time.perf_counter()
            await engine.warm_up()
            logger.info("warmed up %s in %.2f s", engine.name, time.perf_counter() - start)
        yield
        for engine in self.tts.engines.values():
            await engine.aclose()

    async def voices(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "engine": self.tts.primary_engine,
                "voices": [
                    {"name": v.name, "engine": v.engine, "language": v.language}
                    for v in self.tts.catalog.voices
                ],
                "contexts": self.tts.catalog.contexts(),
            }
        )

    async def synthesize(self, request: web.Request) -> web.StreamResponse:
        req = await _request_model(request, SynthesizeRequest)
        options = SpeechOptions(
            sample_rate=req.sample_rate, rate=req.rate, pitch=req.pitch, style=req.style,
            context=req.context, language=req.language,
        )  # fmt: skip
        return await self._speak(request, req.text, voice=req.voice, options=options, wav=req.format == "wav")

    async def openai_speech(self, request: web.Request) -> web.StreamResponse:
        req = await _request_model(request, OpenAISpeechRequest)
        options = SpeechOptions(sample_rate=req.sample_rate, rate=req.speed)
        return await self._speak(
            request, req.input, voice=req.voice, options=options, wav=req.response_format == "wav"
        )

    async def _speak(
        self, request: web.Request, text: str, *, voice: str | None, options: SpeechOptions, wav: bool
    ) -> web.StreamResponse:
        if len(text) > self.max_text_chars:
            raise SidecarError(
                413, "too_large", f"text has {len(text)} characters; the limit is {self.max_text_chars}",
                limit=self.max_text_chars,
            )  # fmt: skip
        try:
            choice = self.tts.catalog.choose(voice=voice, context=options.context, language=options.language)
        except UnknownVoiceError as e:
            raise SidecarError(400, e.code, str(e), valid_voices=e.valid) from None
        headers = {
            "X-Sample-Rate": str(options.sample_rate),
            "X-Voice": choice.voice,
            "X-Engine": choice.engine,
        }
        if not text.strip():
            return _audio_response(b"", options.sample_rate, headers, wav=wav)
        if not self.tts.try_admit("http"):
            raise SidecarError(
                429, "overloaded", f"all {self.tts.max_concurrent} synthesis slots are busy; retry later",
                headers={"Retry-After": str(self.retry_after_s)},
            )  # fmt: skip
        try:
            session = self.tts.session(choice, options)
            chunks = self.tts.chunker(options.language).split(text)
            async with aclosing(audio_frames(session, chunks, options.sample_rate)) as frames:
                if wav:
                    pcm = b"".join([frame async for frame in frames])
                    return _audio_response(pcm, options.sample_rate, _headers(session, options), wav=True)
                return await self._stream_pcm(request, session, options, frames)
        except SynthesisError as e:
            logger.warning("synthesis failed: %s", e)
            raise _engine_error(e, self.retry_after_s) from None
        except asyncio.CancelledError:
            self.tts.metrics.cancelled.labels("http").inc()
            raise
        finally:
            self.tts.release()

    async def _stream_pcm(
        self,
        request: web.Request,
        session: SpeechSession,
        options: SpeechOptions,
        frames: AsyncIterator[bytes],
    ) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        try:
            async for frame in frames:
                if response is None:
                    # The first frame fixed the engine (after any fallback): now the headers can go.
                    response = web.StreamResponse(headers=_headers(session, options))
                    response.content_type = "audio/pcm"
                    response.enable_chunked_encoding()
                    await response.prepare(request)
                await response.write(frame)
        except SynthesisError as e:
            if response is None:
                raise
            # Audio already went out: cut the body short so the client sees an incomplete response.
            logger.error("synthesis failed mid-stream: %s", e)
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionResetError:
            self.tts.metrics.cancelled.labels("http").inc()
            raise
        if response is None:
            return _audio_response(b"", options.sample_rate, _headers(session, options), wav=False)
        await response.write_eof()
        return response

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = await open_websocket(request, heartbeat=30, max_msg_size=64 * 1024)
        await StreamSocket(tts=self.tts, ws=ws, max_text_chars=self.max_text_chars).run()
        return ws


async def _request_model(request: web.Request, model: type[RequestT]) -> RequestT:
    """The JSON body validated as `model`; a 4xx `SidecarError` says what is wrong with it."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise SidecarError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes") from None
    try:
        body = parse_json(raw)
    except InvalidJSON as e:
        raise SidecarError(400, "invalid_json", f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise SidecarError(400, "invalid_request", "body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise SidecarError(400, "invalid_request", validation_message(e)) from None


def _headers(session: SpeechSession, options: SpeechOptions) -> dict[str, str]:
    headers = {
        "X-Sample-Rate": str(options.sample_rate),
        "X-Voice": session.choice.voice,
        "X-Engine": session.choice.engine,
    }
    if session.fallback_reason:
        headers["X-Fallback-Reason"] = session.fallback_reason
    return headers


def _audio_response(pcm: bytes, sample_rate: int, headers: dict[str, str], *, wav: bool) -> web.Response:
    if wav:
        return web.Response(body=wav_bytes(pcm, sample_rate), content_type="audio/wav", headers=headers)
    return web.Response(body=pcm, content_type="audio/pcm", headers=headers)


def _engine_error(error: SynthesisError, retry_after_s: int) -> SidecarError:
    headers = {"Retry-After": str(retry_after_s)} if isinstance(error, EngineThrottledError) else None
    return SidecarError(error.status, error.code, str(error), headers=headers, engine=error.engine)
