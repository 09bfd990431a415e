"""Engine failures, each with the code the HTTP and websocket answers carry (API.md)."""

from __future__ import annotations


class SynthesisError(Exception):
    """An engine could not synthesize a chunk; `code` is the wire code, `status` the HTTP status."""

    code = "engine_error"
    status = 502

    def __init__(self, message: str, *, engine: str) -> None:
        super().__init__(message)
        self.engine = engine


class EngineAuthError(SynthesisError):
    """Credentials refused: never retried, the message says what to check."""

    code = "engine_auth_failed"
    status = 502


class EngineThrottledError(SynthesisError):
    """The engine said TooManyRequests; retried with backoff before the first byte."""

    code = "engine_throttled"
    status = 503


class EngineTimeoutError(SynthesisError):
    code = "timeout"
    status = 504
