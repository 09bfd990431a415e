"""The universal coach: one Agent for every exercise, its AgentSession, and the worker.

- `CoachAgent`: instructions and greeting from the exercise registry; greets on entry.
- `build_pipeline(...)`: WhisperSTT + MistralLLM + AzureTTS for one session (with their fallback
  chains), with the exercise's voice context and quick replies.
- `build_session(...)`: the AgentSession (Silero VAD, the pipeline, the turn handling tuned for
  latency). The worker, `eloquence talk`, the console and the bench share it.
- `entrypoint(ctx)`: the exercise comes from the job (dispatch) or room metadata; the client
  messages go out on the data channel (topic `eloquence`).
- `run_worker("dev" | "start")`: `eloquence worker`, registered as LIVEKIT_AGENT_NAME.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    JobContext,
    JobProcess,
    ModelSettings,
    inference,
    llm,
    stt,
    tts,
    vad,
)
from livekit.agents.types import NOT_GIVEN, FlushSentinel
from livekit.agents.voice.speech_handle import SpeechHandle
from livekit.agents.voice.turn import TurnHandlingOptions

# Imported here, not in the job: the plugin registers on the worker's main thread before the
# worker starts, so the framework preloads it into the job processes.
from providers.endpoints import (
    DEFAULT_LOCAL_MODEL,
    MistralEndpoint,
    normalize_server_url,
    resolve_mistral_endpoint,
)
from providers.fallback import build_llm, build_stt, build_tts
from providers.turn_transcript import TurnRevisions

from .agent_metrics import record_rate_limited, track_session
from .client_messages import ClientMessages
from .exercises import Exercise
from .keys import sidecar_key
from .metadata import SessionMetadata, parse_metadata
from .settings import AppSettings
from .spoken_reply import SpokenReplyOptions, shape_for_speech
from .timeline import TurnTimeline
from .turn_limits import RateLimitedNodes, UserLimits, process_rate_limits
from .turn_recovery import RecoveringLLMNode

if TYPE_CHECKING:
    from livekit.agents import AgentServer

logger = logging.getLogger("eloquence.agent")
GreetingTTS = tts.TTS  # `Pipeline.tts` shadows the module inside the class body
_T = TypeVar("_T")


class CoachAgent(RateLimitedNodes, RecoveringLLMNode, Agent):
    """One agent for every exercise: the registry entry supplies persona, greeting and tools.

    Its STT, LLM and TTS nodes count the user's units when `user_limits` is set (turn_limits.py);
    an LLM that fails for good gets a spoken apology, not silence (turn_recovery.py).
    Its replies are shaped for speech (spoken_reply.py): a short first clause synthesized on its
    own, whole sentences, `spoken_reply.max_sentences` at most. `spoken_reply` defaults to the
    settings' (`spoken_reply_options(AppSettings())`)."""

    def __init__(
        self,
        *,
        exercise: Exercise,
        language: str | None = None,
        spoken_reply: SpokenReplyOptions | None = None,
        greeting_tts: tts.TTS | None = None,
    ) -> None:
        self.exercise = exercise
        self.language = exercise.resolve_language(language)
        self.greeting_tts = greeting_tts
        """Speaks the greeting in its own voice context (`Pipeline.greeting_tts`); None: the replies' TTS."""
        self.spoken_reply = spoken_reply or spoken_reply_options(AppSettings())
        super().__init__(instructions=exercise.instructions(self.language), tools=list(exercise.tools))
        self.greeting_handle: SpeechHandle | None = None
        self.timeline: TurnTimeline | None = None
        """Set by `eloquence talk` and the bench: the nodes mark the turn's instants on it."""
        self.turn_revisions = TurnRevisions()
        """A sentence a pause had split, transcribed again as one piece by the STT: the user's message."""

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterator[llm.ChatChunk | str | FlushSentinel]:
        timeline = self.timeline
        if timeline is not None:
            timeline.mark("llm_request")
        user_text = next(
            (m.text_content or "" for m in reversed(chat_ctx.messages()) if m.role == "user"), ""
        )
        async with _closing(super().llm_node(chat_ctx, tools, model_settings)) as chunks:
            source = chunks if timeline is None else _marking_first_token(chunks, timeline)
            handed = False  # the first clause went to the TTS (a reply without one: at its end)
            async for piece in shape_for_speech(source, self.spoken_reply, user_text=user_text):
                if timeline is not None and not handed and isinstance(piece, FlushSentinel):
                    handed = True
                    timeline.mark("tts_text")
                yield piece
            if timeline is not None and not handed:
                timeline.mark("tts_text")

    async def tts_node(self, text: AsyncIterable[str], model_settings: ModelSettings) -> AsyncIterator[Any]:
        timeline = self.timeline
        if timeline is None:
            async with _closing(super().tts_node(text, model_settings)) as frames:
                async for frame in frames:
                    yield frame
            return

        async def marked_text() -> AsyncIterator[str]:
            first = True
            async for chunk in text:
                if first and chunk.strip():
                    first = False
                    timeline.mark("tts_request")  # the provider sends text on a pooled socket at once
                yield chunk

        first_frame = True
        async with _closing(super().tts_node(marked_text(), model_settings)) as frames:
            async for frame in frames:
                if first_frame:
                    first_frame = False
                    timeline.mark("tts_first_audio")
                yield frame

    async def stt_node(
        self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
    ) -> AsyncIterator[stt.SpeechEvent]:
        async with _closing(super().stt_node(audio, model_settings)) as events:
            async for event in events:
                self.turn_revisions.observe(event)
                yield event

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        text = new_message.text_content or ""
        if (whole := self.turn_revisions.revise(text)) != text:
            new_message.content = [whole]
        await super().on_user_turn_completed(turn_ctx, new_message)

    async def on_enter(self) -> None:
        # the greeting is a fixed sentence: said, not generated, so it costs no LLM call
        text = self.exercise.greeting(self.language)
        # say() takes no per-utterance voice: the greeting's own TTS speaks it as ready-made audio
        audio = synthesized_frames(self.greeting_tts, text) if self.greeting_tts is not None else NOT_GIVEN
        self.greeting_handle = self.session.say(text, audio=audio, allow_interruptions=True)


async def synthesized_frames(tts_model: tts.TTS, text: str) -> AsyncIterator[rtc.AudioFrame]:
    """`text` spoken by `tts_model`, frame by frame as the audio arrives."""
    async with tts_model.synthesize(text) as stream:
        async for audio in stream:
            yield audio.frame


def _closing(it: AsyncIterator[_T]) -> contextlib.aclosing[AsyncGenerator[_T, None]]:
    """`contextlib.aclosing` for a node's output (typed as an iterator, made by an async generator)."""
    return contextlib.aclosing(cast(AsyncGenerator[_T, None], it))


async def _marking_first_token(
    chunks: AsyncIterable[llm.ChatChunk | str | FlushSentinel], timeline: TurnTimeline
) -> AsyncIterator[llm.ChatChunk | str | FlushSentinel]:
    marked = False
    async for chunk in chunks:
        if not marked:
            delta = getattr(chunk, "delta", None)
            if chunk if isinstance(chunk, str) else getattr(delta, "content", None):
                marked = True
                timeline.mark("llm_first_token")
        yield chunk


def spoken_reply_options(settings: AppSettings) -> SpokenReplyOptions:
    """How replies are shaped for speech, from the settings (the LLM's token budget included)."""
    return SpokenReplyOptions(max_tokens=settings.llm_max_tokens, max_sentences=settings.reply_max_sentences)


def default_turn_handling(settings: AppSettings, *, language: str | None = None) -> TurnHandlingOptions:
    """Latency-first turn handling (README.md, "Turn-taking settings").

    The VAD ends speech; the whisper-stt stream is flushed at once (manual_flush). The turn
    detector (ELOQUENCE_TURN_DETECTOR) tells a finished sentence from a mid-sentence pause: a
    finished one commits after `min_endpointing_delay`, a pause waits up to
    `max_endpointing_delay`. The default, `transcript`, reads the final transcript
    (eloquence/turn_detector.py); `eot` is livekit's local audio end-of-turn model
    (`turn-detector-v1-mini`, in process); `vad` is silence alone. Preemptive generation (and
    TTS) start the reply on the final transcript while the commit waits. `language` is the
    session's (its word lists); None: ELOQUENCE_LANGUAGE.
    """
    detector: Any
    if settings.turn_detector == "transcript":
        from .turn_detector import TranscriptTurnDetector

        detector = TranscriptTurnDetector(language=language or settings.language)
    elif settings.turn_detector == "eot":
        # pinned to the local model: "auto" would pick the cloud one in dev mode
        detector = inference.TurnDetector(version="v1-mini")
    elif settings.turn_detector == "vad":
        detector = "vad"
    else:
        raise ValueError(
            f"ELOQUENCE_TURN_DETECTOR must be 'transcript', 'eot' or 'vad', not {settings.turn_detector!r}"
        )
    return TurnHandlingOptions(
        turn_detection=detector,
        endpointing={
            "mode": "fixed",
            "min_delay": settings.min_endpointing_delay,
            "max_delay": settings.max_endpointing_delay,
        },
        preemptive_generation={"enabled": True, "preemptive_tts": settings.preemptive_tts},
        # "vad": the adaptive interruption model is a cloud service
        interruption={"enabled": True, "mode": "vad"},
    )


@dataclass
class Pipeline:
    """The STT, LLM and TTS one session uses (fallback chains when several are configured)."""

    stt: stt.STT
    llm: llm.LLM
    tts: tts.TTS
    greeting_tts: GreetingTTS | None = None
    """The greeting's voice context (`Exercise.greeting_context`); `tts` speaks the replies."""

    async def aclose(self) -> None:
        for component in (self.stt, self.llm, self.tts, self.greeting_tts):
            if component is not None:
                await component.aclose()


def llm_endpoints(settings: AppSettings) -> list[MistralEndpoint]:
    """The Mistral endpoints to try, in order: the configured one (cloud, Scaleway, ...) or the
    local LLM service; with ELOQUENCE_LLM_LOCAL_FALLBACK, the local service after a remote one."""
    local = MistralEndpoint(
        server_url=normalize_server_url(settings.local_llm_url),
        api_key=sidecar_key(settings),  # the local LLM is a sidecar: the sidecars' shared key
        model=DEFAULT_LOCAL_MODEL,
        is_local=True,
    )
    if not (settings.mistral_api_key or settings.mistral_base_url):
        return [local]
    remote = resolve_mistral_endpoint(
        api_key=settings.mistral_api_key, base_url=settings.mistral_base_url, model=settings.mistral_model
    )
    return [remote, local] if settings.llm_local_fallback and not remote.is_local else [remote]


def build_pipeline(
    settings: AppSettings,
    exercise: Exercise,
    *,
    language: str,
    llm_endpoint: MistralEndpoint | None = None,
) -> Pipeline:
    """Providers for one session, from the settings (URLs, Mistral endpoint, fallbacks) and the
    exercise (voice context; quick replies in `language`, which answer small talk without the LLM).

    `llm_endpoint` overrides the settings' LLM.
    """
    stt_urls = [settings.whisper_stt_url, *filter(None, [settings.whisper_stt_fallback_url])]
    tts_urls = [settings.azure_tts_url, *filter(None, [settings.azure_tts_fallback_url])]
    endpoints = [llm_endpoint] if llm_endpoint is not None else llm_endpoints(settings)
    greeting_tts = build_tts(
        tts_urls, context=exercise.greeting_context, language=language, api_key=sidecar_key(settings)
    )
    return Pipeline(
        stt=build_stt(stt_urls, language=language, api_key=sidecar_key(settings)),
        llm=build_llm(
            endpoints, max_tokens=settings.llm_max_tokens, quick_replies=exercise.quick_replies(language)
        ),
        tts=build_tts(
            tts_urls, context=exercise.voice_context, language=language, api_key=sidecar_key(settings)
        ),
        greeting_tts=greeting_tts,
    )


def build_session(
    *,
    settings: AppSettings,
    pipeline: Pipeline | None = None,
    llm_model: llm.LLM | None = None,
    vad_model: vad.VAD | None = None,
    turn_handling: TurnHandlingOptions | None = None,
    aec_warmup_duration: float | None = 3.0,
) -> AgentSession:
    """The AgentSession shared by the worker, `eloquence talk` and the bench.

    Without a `pipeline` it is a text-only session (no STT/TTS; `llm_model` answers, if given),
    which is what the text-mode tests run.
    """
    kwargs: dict[str, Any] = {}
    if pipeline is not None:
        kwargs.update(stt=pipeline.stt, llm=pipeline.llm, tts=pipeline.tts)
    elif llm_model is not None:
        kwargs.update(llm=llm_model)
    return AgentSession(
        vad=vad_model if vad_model is not None else inference.VAD(model="silero"),
        turn_handling=turn_handling if turn_handling is not None else default_turn_handling(settings),
        aec_warmup_duration=aec_warmup_duration,
        user_away_timeout=None,
        **kwargs,
    )


# --- the worker ----------------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before any job: loads the Silero VAD and reads the settings.

    Nothing else is loaded here: the default turn detector (`transcript`) has no model, and
    `eot`'s audio model loads in the session that uses it. The local LLM server's prompt cache
    gets every exercise's opening, in the background (llm_warmup.py): the first turn after
    `eloquence up` pays no full prefill."""
    from .llm_warmup import warm_llm_prompts_in_background

    proc.userdata["vad"] = inference.VAD(model="silero")
    proc.userdata["settings"] = settings = AppSettings()
    warm_llm_prompts_in_background(settings)


async def entrypoint(ctx: JobContext) -> None:
    settings: AppSettings = ctx.proc.userdata.get("settings") or AppSettings()
    await ctx.connect()
    meta: SessionMetadata = parse_metadata(
        ("job", ctx.job.metadata), ("room", ctx.room.metadata), default_language=settings.language
    )
    logger.info(
        "session for exercise %s (%s), user %s, room %s",
        meta.exercise.name,
        meta.language,
        meta.user_id,
        ctx.room.name,
        extra={"warnings": list(meta.warnings)},
    )
    pipeline = build_pipeline(settings, meta.exercise, language=meta.language)
    session = build_session(
        settings=settings,
        pipeline=pipeline,
        vad_model=ctx.proc.userdata.get("vad"),
        turn_handling=default_turn_handling(settings, language=meta.language),
    )
    messages = ClientMessages(room=ctx.room)
    messages.attach(session)
    session_ended = track_session(session)
    agent = CoachAgent(exercise=meta.exercise, language=meta.language, greeting_tts=pipeline.greeting_tts)
    agent.user_limits = UserLimits.from_settings(
        settings,
        process_rate_limits(settings),
        user_id=meta.user_id,
        room=ctx.room.name,
        on_limited=record_rate_limited,
    )

    async def cleanup() -> None:
        session_ended()
        await messages.aclose()
        await pipeline.aclose()

    ctx.add_shutdown_callback(cleanup)
    await session.start(agent=agent, room=ctx.room)


class _SessionCountLoad:
    """Worker load = active sessions / AGENT_MAX_SESSIONS.

    The framework's default load is the whole machine's CPU, which on an all-in-one box is
    mostly the sidecars' inference: the worker would report itself full and refuse jobs while
    it has nothing to do. Counting our own sessions keeps it accepting up to its real capacity.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max(1, max_sessions)

    def __call__(self, server: AgentServer) -> float:
        return min(1.0, len(server.active_jobs) / self.max_sessions)


def build_server(settings: AppSettings, *, host: str = "0.0.0.0", port: int | None = None) -> AgentServer:
    from livekit.agents import AgentServer

    from .agent_metrics import multiprocess_dir

    server = AgentServer(
        load_threshold=settings.agent_load_threshold,
        load_fnc=_SessionCountLoad(settings.agent_max_sessions),
        # two cores: one warm job process is enough, more only cost memory
        num_idle_processes=1,
        host=host,
        port=port if port is not None else settings.agent_health_port,
        ws_url=settings.livekit_server_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        setup_fnc=prewarm,
        # sessions run in job processes: their metrics meet in this directory (agent_metrics.py)
        prometheus_multiproc_dir=multiprocess_dir(),
    )
    server.rtc_session(entrypoint, agent_name=settings.livekit_agent_name)
    return server


def run_worker(mode: str, *, host: str = "0.0.0.0", port: int | None = None) -> int:
    """`eloquence worker dev|start`: the framework's worker loop (health on AGENT_HEALTH_PORT)."""
    from livekit.agents.cli import proto
    from livekit.agents.cli.cli import _run_worker  # what `python -m livekit.agents start` runs

    if mode not in ("dev", "start"):
        raise ValueError(f"mode must be dev or start, not {mode!r}")
    from .agent_health import AgentHealthError, AgentHealthServer

    settings = AppSettings()
    # the framework's health server moves to a loopback ephemeral port; ours (/health) takes the port
    server = build_server(settings, host="127.0.0.1", port=0)
    port = port if port is not None else settings.agent_health_port
    try:
        AgentHealthServer(server, host=host, port=port, agent_name=settings.livekit_agent_name)
    except AgentHealthError as e:
        logger.error("%s", e)
        return 1
    _run_worker(
        server,
        proto.CliArgs(
            log_level=settings.livekit_log_level.upper(),
            log_format="colored" if mode == "dev" else "json",
            dev=mode == "dev",
        ),
    )
    return 0
