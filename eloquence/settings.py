"""One settings object for the application processes (agent worker, API, CLI)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    whisper_stt_url: str = Field("http://127.0.0.1:8001", validation_alias="WHISPER_STT_URL")
    whisper_stt_fallback_url: str | None = Field(None, validation_alias="WHISPER_STT_FALLBACK_URL")
    azure_tts_url: str = Field(
        "http://127.0.0.1:5002", validation_alias=AliasChoices("AZURE_TTS_URL", "PIPER_TTS_URL")
    )
    azure_tts_fallback_url: str | None = Field(None, validation_alias="AZURE_TTS_FALLBACK_URL")
    mistral_api_key: str | None = Field(None, validation_alias="MISTRAL_API_KEY", repr=False)
    mistral_base_url: str | None = Field(None, validation_alias="MISTRAL_BASE_URL")
    mistral_model: str | None = Field(None, validation_alias="MISTRAL_MODEL")
    local_llm_url: str = Field("http://127.0.0.1:8004", validation_alias="LOCAL_LLM_URL")

    livekit_url: str = Field("ws://127.0.0.1:7880", validation_alias="LIVEKIT_URL")
    """The public URL: the API hands it to clients (wss://livekit.example.com in production)."""
    livekit_internal_url: str | None = Field(None, validation_alias="LIVEKIT_INTERNAL_URL")
    """Where this process itself reaches LiveKit (server API, agent registration), when that differs
    from the public URL: `http://livekit:7880` in compose. Unset: the public URL."""
    livekit_api_key: str = Field("devkey", validation_alias="LIVEKIT_API_KEY")
    livekit_api_secret: str = Field("secret", validation_alias="LIVEKIT_API_SECRET", repr=False)
    livekit_agent_name: str = Field("eloquence-coach", validation_alias="LIVEKIT_AGENT_NAME")
    livekit_log_level: str = Field("info", validation_alias="LIVEKIT_LOG_LEVEL")

    @property
    def livekit_server_url(self) -> str:
        """The URL for server-side calls: LIVEKIT_INTERNAL_URL, else LIVEKIT_URL."""
        return self.livekit_internal_url or self.livekit_url

    api_port: int = Field(8003, validation_alias="API_PORT")
    agent_health_port: int = Field(8080, validation_alias="AGENT_HEALTH_PORT")
    language: str = Field("en", validation_alias="ELOQUENCE_LANGUAGE")
    state_dir: str = Field(".eloquence", validation_alias="ELOQUENCE_STATE_DIR")

    # --- agent session and worker (eloquence/agent.py) ---
    min_endpointing_delay: float = Field(0.3, validation_alias="ELOQUENCE_MIN_ENDPOINTING_DELAY")
    """Seconds of silence after speech before the turn may end (when the turn detector agrees)."""
    max_endpointing_delay: float = Field(2.0, validation_alias="ELOQUENCE_MAX_ENDPOINTING_DELAY")
    """Seconds the agent waits when the turn detector says the user is mid-sentence."""
    turn_detector: str = Field("transcript", validation_alias="ELOQUENCE_TURN_DETECTOR")
    """`transcript` (a sentence ending on "with", "my"... is unfinished: eloquence/turn_detector.py),
    `eot` (livekit's local audio end-of-turn model) or `vad` (silence only)."""
    preemptive_tts: bool = Field(True, validation_alias="ELOQUENCE_PREEMPTIVE_TTS")
    agent_max_sessions: int = Field(4, validation_alias="AGENT_MAX_SESSIONS")
    """Concurrent sessions one worker accepts; its load is active sessions / this."""
    agent_load_threshold: float = Field(1.0, validation_alias="AGENT_LOAD_THRESHOLD")

    # --- token / room API (eloquence/api.py) ---
    api_token_ttl_s: int = Field(3600, ge=60, le=3600, validation_alias="API_TOKEN_TTL_S")
    """LiveKit token lifetime: one hour at most."""
    api_rate_limit_per_minute: int = Field(20, validation_alias="API_RATE_LIMIT_PER_MINUTE")
    api_livekit_timeout_s: float = Field(5.0, validation_alias="API_LIVEKIT_TIMEOUT_S")
    llm_local_fallback: bool = Field(False, validation_alias="ELOQUENCE_LLM_LOCAL_FALLBACK")
    """With a remote Mistral configured, fall back to the local LLM service when it fails."""
    llm_max_tokens: int | None = Field(80, validation_alias="ELOQUENCE_LLM_MAX_TOKENS")
    """Cap on a spoken reply's tokens (about 20 s of speech, for a reply that asks for detail). A
    reply cut by it ends on its last whole sentence (eloquence/spoken_reply.py)."""
    reply_max_sentences: int | None = Field(2, ge=1, validation_alias="ELOQUENCE_REPLY_MAX_SENTENCES")
    """Sentences in a spoken reply (five when the user asks for detail); the LLM stops there, which
    also frees the CPU for the audio."""

    # --- security (eloquence/auth.py, eloquence/rate_limits.py; README "Security") ---
    api_keys: str | None = Field(None, validation_alias="ELOQUENCE_API_KEYS", repr=False)
    """Comma-separated keys for `Authorization: Bearer <key>` on the API; several at once for rotation."""
    api_auth: str = Field("keys", validation_alias="ELOQUENCE_API_AUTH")
    """`keys` (API keys and/or user JWTs) or `none`: no authentication at all (warns; local use only)."""
    jwt_secret: str | None = Field(None, validation_alias="ELOQUENCE_JWT_SECRET", repr=False)
    """HS256 secret that signs your app's user tokens (their `sub` becomes the user_id)."""
    jwt_jwks_url: str | None = Field(None, validation_alias="ELOQUENCE_JWT_JWKS_URL")
    """Your identity provider's JWKS URL (OIDC), for RS256/ES256 user tokens."""
    jwt_audience: str | None = Field(None, validation_alias="ELOQUENCE_JWT_AUDIENCE")
    jwt_issuer: str | None = Field(None, validation_alias="ELOQUENCE_JWT_ISSUER")
    cors_origins: str = Field("", validation_alias="ELOQUENCE_CORS_ORIGINS")
    """Comma-separated browser origins allowed to call the API (`https://app.example.com`)."""
    api_key_rate_limit_per_minute: int = Field(600, validation_alias="API_KEY_RATE_LIMIT_PER_MINUTE")
    """Token requests per minute for one API key (an app backend asks on behalf of many users)."""
    redis_url: str | None = Field(None, validation_alias="REDIS_URL", repr=False)
    """Rate-limit counters shared by every replica (`redis://redis:6379/0`); unset: in memory."""
    stt_per_s: int = Field(10, validation_alias="ELOQUENCE_STT_PER_S")
    """Per user: STT streams or recognitions started per second."""
    tts_per_s: int = Field(5, validation_alias="ELOQUENCE_TTS_PER_S")
    """Per user: sentences sent to synthesis per second (paced, never dropped)."""
    llm_per_s: int = Field(2, validation_alias="ELOQUENCE_LLM_PER_S")
    """Per user: LLM replies to new user messages per second (over it: a spoken "one moment")."""
    sidecar_api_key: str | None = Field(None, validation_alias="SIDECAR_API_KEY", repr=False)
    """Shared bearer key the providers send to the sidecars (the sidecars check it when set)."""
    log_format: str = Field("text", validation_alias="ELOQUENCE_LOG_FORMAT")
    """`text` or `json` (one JSON object per line)."""
