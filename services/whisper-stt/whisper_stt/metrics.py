"""Prometheus metrics of the whisper-stt service, on its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


class WhisperMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_wait = Histogram(
            "whisper_queue_wait_seconds",
            "Time a job waited for the model",
            ["kind"],
            registry=registry,
            buckets=_SECONDS,
        )
        self.inference = Histogram(
            "whisper_inference_seconds",
            "Time of one transcription pass",
            ["kind"],
            registry=registry,
            buckets=_SECONDS,
        )
        self.queue_depth = Gauge("whisper_queue_depth", "Jobs waiting for the model", registry=registry)
        self.active_streams = Gauge("whisper_active_streams", "Open /v1/stream sockets", registry=registry)
        self.rejections = Counter(
            "whisper_rejections", "Work refused by admission control", ["reason"], registry=registry
        )
        self.interims_shed = Counter(
            "whisper_interims_shed", "Interim passes skipped under load", registry=registry
        )
        self.segments_dropped = Counter(
            "whisper_segments_dropped", "Segments removed by the noise filter", ["reason"], registry=registry
        )
        self.short_window_retries = Counter(
            "whisper_short_window_retries",
            "Short encoder window passes redone on the full window (degenerate output)",
            registry=registry,
        )
