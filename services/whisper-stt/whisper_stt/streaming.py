"""One /v1/stream websocket session: webrtcvad segmentation, interims, finals and flush (see API.md).

The receive loop only classifies audio and schedules work. Events leave through one ordered outbox,
drained by a sender task: a final is a task in that outbox, so whatever comes after it (its
`end_of_speech`, the next utterance's events) waits for it, and the order on the wire is always
start_of_speech, interim*, final, end_of_speech. An interim that completes after its utterance was
finalized is dropped. Closing the socket cancels everything the session started.

Speculative finals: the segmenter reports a short pause (`pause_ms`) long before anyone can call it
the end of speech, so the final's pass starts there. If the utterance then ends (a flush, or the
segmenter's own end of speech) with no voiced frame since, that pass is the final, already done or
under way; if the speaker goes on, it becomes an interim. The pause's audio differs from the final's
only by a shorter silent tail, which changed no transcript on the held-out set.

Turn context (`context=turn`): a speaker who pauses mid-sentence is cut into utterances, and Whisper
mis-hears each half alone. An utterance that starts within `turn_gap_s` of the previous one's end is
transcribed together with it, from the turn's first utterance on, as one piece; its final says which
finals it `replaces`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr
from aiohttp import WSCloseCode, WSMsgType, web

from sidecar_common.audio import AudioFormatError, pcm16_to_float
from sidecar_common.http import InvalidJSON, parse_json
from whisper_stt.model import SAMPLE_RATE, Transcript
from whisper_stt.recognizer import SpeechRecognizer
from whisper_stt.settings import WhisperSTTSettings
from whisper_stt.transcription_queue import InterimShed, Overloaded, Priority
from whisper_stt.vad import (
    AudioHistory,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UtteranceSegmenter,
)

logger = logging.getLogger("whisper_stt.streaming")

CLOSE_TRY_AGAIN_LATER = 1013
_stream_ids = itertools.count(1)

Event = dict[str, Any]


# Whisper mis-hears the first words when speech starts within ~0.2 s of the clip's start, which the
# VAD's pre-roll allows ("calm my nerves" became "come in earth"); digital silence in front fixes it.
_LEAD_IN = np.zeros(int(0.2 * SAMPLE_RATE), dtype=np.float32)


def _with_lead_in(audio: np.ndarray) -> np.ndarray:
    return np.concatenate([_LEAD_IN, audio]) if audio.size else audio


STREAM_CONTEXTS = ("utterance", "turn")


def turn_context_requested(value: str | None) -> bool:
    """The `context` query parameter: "utterance" (the default) or "turn"; else a StreamError."""
    if value is None or value == "utterance":
        return False
    if value == "turn":
        return True
    raise StreamError(
        "invalid_request",
        f"context must be one of {', '.join(STREAM_CONTEXTS)}, got {value!r}",
        close_code=WSCloseCode.POLICY_VIOLATION,
    )


class StreamError(Exception):
    """Ends the session with an `error` event and a close code."""

    def __init__(self, code: str, message: str, *, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


@dataclass(frozen=True)
class _Cover:
    """What one final pass transcribes: the utterance, or the turn up to and including it."""

    audio: np.ndarray
    first_sample: int
    """Stream position of `audio[0]`."""
    start_s: float
    """Stream time of the first voiced frame covered."""
    replaces: tuple[int, ...] = ()
    """Earlier utterances of the turn whose finals this one supersedes."""


@dataclass
class _Speculation:
    """A final's pass started at a pause, before the utterance ended."""

    task: asyncio.Task[Transcript | None]
    """None when the queue shed it."""
    cover: _Cover


@dataclass
class _Utterance:
    id: int
    start_s: float
    finalized: bool = False
    interim_task: asyncio.Task[None] | None = None
    next_interim_s: float = 0.0
    speculation: _Speculation | None = None
    last_interim_s: float = 0.0
    """End of the audio of the last interim sent: an older one arriving late is dropped."""


@dataclass(frozen=True)
class _Turn:
    """The finalized utterances a following one may be transcribed with."""

    first_sample: int
    start_s: float
    end_s: float
    """Stream time just after the last voiced frame of its last utterance."""
    utterance_ids: tuple[int, ...]


class StreamSession:
    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        recognizer: SpeechRecognizer,
        settings: WhisperSTTSettings,
        sample_rate: int,
        language: str,
        turn_context: bool = False,
    ) -> None:
        self.ws = ws
        self.recognizer = recognizer
        self.settings = settings
        self.sample_rate = sample_rate
        self.language = language
        self.turn_context = turn_context
        self.stream_id = f"s{next(_stream_ids)}"
        self._segmenter = UtteranceSegmenter(
            aggressiveness=settings.whisper_vad_aggressiveness,
            min_speech_ms=settings.whisper_min_speech_ms,
            end_silence_ms=settings.whisper_end_silence_ms,
            pre_speech_ms=settings.whisper_pre_speech_ms,
            max_utterance_s=settings.whisper_max_utterance_s,
            pause_ms=settings.whisper_speculative_pause_ms,
        )
        # A turn is one Whisper window at most: it never covers more than an utterance may last.
        self._max_turn_samples = int(settings.whisper_max_utterance_s * SAMPLE_RATE)
        self._turn_gap_s = settings.whisper_turn_gap_ms / 1000
        self._history = AudioHistory(seconds=settings.whisper_max_utterance_s + 1) if turn_context else None
        self._turn: _Turn | None = None
        self._resampler = (
            soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if sample_rate != SAMPLE_RATE
            else None
        )
        self._interim_interval_s = settings.whisper_interim_interval_ms / 1000
        self._utterance_ids = itertools.count(1)
        self._utterance: _Utterance | None = None
        self._outbox: asyncio.Queue[Event | asyncio.Task[Event]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        """Serve until the client closes the socket (or overload closes it)."""
        sender = asyncio.create_task(self._send_events(), name=f"{self.stream_id}-sender")
        try:
            async for msg in self.ws:
                if sender.done():
                    break
                if msg.type == WSMsgType.BINARY:
                    self._on_audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    logger.info("%s: websocket error: %s", self.stream_id, self.ws.exception())
                    break
        finally:
            # Closing the socket finalizes nothing: drop queued jobs and pending events.
            for task in [*self._tasks, sender]:
                task.cancel()
            await asyncio.gather(*self._tasks, sender, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.stream_id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- input ---------------------------------------------------------------------------------

    def _on_audio(self, data: bytes) -> None:
        try:
            samples = pcm16_to_float(data)
        except AudioFormatError as e:
            self._emit_error("invalid_audio", f"{e}; the frame was discarded")
            return
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        if self._history is not None:
            self._history.push(samples)
        for boundary in self._segmenter.push(samples):
            if isinstance(boundary, SpeechStarted):
                self._start_utterance(boundary.start_s, boundary.detected_s)
            elif isinstance(boundary, SpeechPaused):
                self._speculate(boundary)
            elif isinstance(boundary, SpeechResumed):
                self._speculation_stale()
            elif isinstance(boundary, SpeechEnded):
                self._finalize(boundary.audio, boundary.first_sample, boundary.end_s, reason=boundary.reason)
        self._maybe_interim()

    def _on_text(self, data: str) -> None:
        try:
            message = parse_json(data)
        except InvalidJSON:
            self._emit_error("invalid_message", 'text frames must be JSON, like {"type":"flush"}')
            return
        if not isinstance(message, dict) or message.get("type") != "flush":
            self._emit_error("invalid_message", 'unknown message; the only one is {"type":"flush"}')
            return
        if self._segmenter.in_speech:
            first_sample = self._segmenter.utterance_first_sample
            audio = self._segmenter.finish_utterance()
            self._finalize(audio, first_sample, self._segmenter.speech_end_s, reason="flush")
        else:
            # Nothing said since the last final: answer the flush with an empty one at once.
            now = self._segmenter.stream_s
            self._outbox.put_nowait(
                self._event(
                    "final",
                    next(self._utterance_ids),
                    now,
                    now,
                    text="",
                    language=self.language,
                    avg_logprob=0.0,
                    no_speech_prob=1.0,
                    reason="flush",
                    **({"turn_start_s": now, "replaces": []} if self.turn_context else {}),
                )
            )

    # -- utterances ----------------------------------------------------------------------------

    def _start_utterance(self, start_s: float, detected_s: float) -> None:
        utterance = _Utterance(next(self._utterance_ids), start_s)
        utterance.next_interim_s = start_s + self._interim_interval_s
        self._utterance = utterance
        self._outbox.put_nowait(self._event("start_of_speech", utterance.id, start_s, detected_s))

    def _finalize(self, audio: np.ndarray, first_sample: int, end_s: float, *, reason: str) -> None:
        utterance = self._utterance
        if utterance is None or utterance.finalized:
            return
        utterance.finalized = True
        if utterance.interim_task is not None:
            utterance.interim_task.cancel()
        speculation, utterance.speculation = utterance.speculation, None
        if speculation is not None:
            # No voiced frame since its pause: its audio is this final's, but for the silent tail.
            self.recognizer.queue.reprioritize(self.stream_id, Priority.SPECULATIVE, Priority.FINAL)
            cover = speculation.cover
        else:
            cover = self._cover(utterance, audio, first_sample)
        if self.turn_context:
            self._turn = _Turn(cover.first_sample, cover.start_s, end_s, (*cover.replaces, utterance.id))
        final = self._spawn(
            self._final_event(utterance, cover, end_s, reason, speculation), f"final-{utterance.id}"
        )
        self._outbox.put_nowait(final)
        self._outbox.put_nowait(self._event("end_of_speech", utterance.id, utterance.start_s, end_s))

    def _cover(self, utterance: _Utterance, audio: np.ndarray, first_sample: int) -> _Cover:
        """The utterance's audio, or with turn context the turn's up to its end when it continues one."""
        turn, history = self._turn, self._history
        end_sample = first_sample + len(audio)
        if (
            turn is not None
            and history is not None
            and utterance.start_s - turn.end_s <= self._turn_gap_s
            and end_sample - turn.first_sample <= self._max_turn_samples
            and turn.first_sample >= history.start
            and first_sample >= turn.first_sample
        ):
            return _Cover(
                history.between(turn.first_sample, end_sample),
                turn.first_sample,
                turn.start_s,
                turn.utterance_ids,
            )
        return _Cover(audio, first_sample, utterance.start_s)

    async def _transcribe(self, audio: np.ndarray, priority: Priority) -> Transcript:
        return await self.recognizer.transcribe(
            _with_lead_in(audio), priority=priority, language=self.language, stream_id=self.stream_id
        )

    async def _speculative_pass(self, audio: np.ndarray) -> Transcript | None:
        """A final's pass before the final; None when the queue shed it or it failed (the final then
        runs a pass of its own, whose failure is the stream's)."""
        try:
            return await self._transcribe(audio, Priority.SPECULATIVE)
        except InterimShed:
            return None
        except Exception:
            logger.exception("%s: speculative pass failed", self.stream_id)
            return None

    async def _final_event(
        self,
        utterance: _Utterance,
        cover: _Cover,
        end_s: float,
        reason: str,
        speculation: _Speculation | None,
    ) -> Event:
        transcript = await speculation.task if speculation is not None else None
        if transcript is None:  # not speculated, or shed before it ran
            transcript = await self._transcribe(cover.audio, Priority.FINAL)
        fields: dict[str, Any] = {}
        if self.turn_context:
            fields = {"turn_start_s": round(cover.start_s, 3), "replaces": list(cover.replaces)}
        return self._event(
            "final",
            utterance.id,
            utterance.start_s,
            end_s,
            text=transcript.text,
            language=transcript.language,
            avg_logprob=round(transcript.avg_logprob, 4),
            no_speech_prob=round(transcript.no_speech_prob, 4),
            reason=reason,
            **fields,
        )

    # -- speculative finals --------------------------------------------------------------------

    def _speculate(self, pause: SpeechPaused) -> None:
        utterance = self._utterance
        if utterance is None or utterance.finalized or utterance.speculation is not None:
            return
        if utterance.interim_task is not None and not utterance.interim_task.done():
            utterance.interim_task.cancel()  # it waits for older audio; a running pass is dropped
        cover = self._cover(utterance, pause.audio, pause.first_sample)
        task = self._spawn(self._speculative_pass(cover.audio), f"speculative-{utterance.id}")
        utterance.speculation = _Speculation(task, cover)

    def _speculation_stale(self) -> None:
        """The speaker went on after a pause: its pass is an interim now, if it still runs at all."""
        utterance = self._utterance
        if utterance is None or utterance.speculation is None:
            return
        speculation, utterance.speculation = utterance.speculation, None
        self.recognizer.queue.reprioritize(self.stream_id, Priority.SPECULATIVE, Priority.INTERIM)
        if speculation.cover.replaces:  # the turn's text, not this utterance's: no interim
            return
        end_s = self._segmenter.stream_s
        utterance.interim_task = self._spawn(
            self._speculation_as_interim(utterance, speculation, end_s), f"interim-{utterance.id}"
        )

    async def _speculation_as_interim(
        self, utterance: _Utterance, speculation: _Speculation, end_s: float
    ) -> None:
        transcript = await asyncio.shield(speculation.task)
        if transcript is not None:
            self._send_interim(utterance, transcript, end_s)

    def _maybe_interim(self) -> None:
        utterance = self._utterance
        if utterance is None or utterance.finalized or not self._segmenter.in_speech:
            return
        if utterance.speculation is not None:
            return  # a pause: its pass is under way, and is newer than any interim would be
        now = self._segmenter.stream_s
        if now < utterance.next_interim_s:
            return
        if utterance.interim_task is not None and not utterance.interim_task.done():
            return  # one interim in flight per stream: the next one waits for fresher audio
        utterance.next_interim_s = now + self._interim_interval_s
        audio = self._segmenter.utterance_audio()
        utterance.interim_task = self._spawn(self._interim(utterance, audio, now), f"interim-{utterance.id}")

    async def _interim(self, utterance: _Utterance, audio: np.ndarray, end_s: float) -> None:
        try:
            transcript = await self._transcribe(audio, Priority.INTERIM)
        except InterimShed:
            return
        except Exception:
            logger.exception("%s: interim failed", self.stream_id)
            return
        self._send_interim(utterance, transcript, end_s)

    def _send_interim(self, utterance: _Utterance, transcript: Transcript, end_s: float) -> None:
        if utterance.finalized or not transcript.text or end_s <= utterance.last_interim_s:
            return
        utterance.last_interim_s = end_s
        self._outbox.put_nowait(
            self._event("interim", utterance.id, utterance.start_s, end_s, text=transcript.text)
        )

    # -- output --------------------------------------------------------------------------------

    @staticmethod
    def _event(kind: str, utterance_id: int | None, start_s: float, end_s: float, **fields: Any) -> Event:
        return {
            "type": kind,
            "utterance_id": utterance_id,
            "start_s": round(start_s, 3),
            "end_s": round(end_s, 3),
            **fields,
        }

    def _emit_error(self, code: str, message: str) -> None:
        now = self._segmenter.stream_s
        self._outbox.put_nowait(self._event("error", None, now, now, code=code, message=message))

    async def _send_events(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, asyncio.Task):
                try:
                    event = await item
                except Overloaded as e:
                    await self._close_with_error("overloaded", str(e), CLOSE_TRY_AGAIN_LATER)
                    return
                except Exception as e:
                    logger.exception("%s: final failed", self.stream_id)
                    await self._close_with_error(
                        "internal", f"transcription failed: {e}", WSCloseCode.INTERNAL_ERROR
                    )
                    return
            else:
                event = item
            await self.ws.send_str(json.dumps(event))

    async def _close_with_error(self, code: str, message: str, close_code: int) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            now = self._segmenter.stream_s
            await self.ws.send_str(
                json.dumps(self._event("error", None, now, now, code=code, message=message))
            )
            await self.ws.close(code=close_code, message=code.encode())


async def reject_stream(ws: web.WebSocketResponse, error: StreamError) -> None:
    """Refuse a stream right after the handshake: one `error` event, then close."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        event = {
            "type": "error",
            "utterance_id": None,
            "start_s": 0.0,
            "end_s": 0.0,
            "code": error.code,
            "message": str(error),
        }
        await ws.send_str(json.dumps(event))
        await ws.close(code=error.close_code, message=error.code.encode())
