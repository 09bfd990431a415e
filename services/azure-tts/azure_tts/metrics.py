"""Prometheus metrics of the azure-tts sidecar, per engine, on the service's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "azure_tts"


class TTSMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.time_to_first_byte = Histogram(
            f"{PREFIX}_time_to_first_byte_seconds",
            "From the request (or the segment's first chunk) to its first audio byte",
            ["engine"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 5, 10),
        )
        self.chunk_seconds = Histogram(
            f"{PREFIX}_chunk_synthesis_seconds",
            "Time to synthesize one text chunk (cache misses only)",
            ["engine"],
            registry=registry,
            buckets=(0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 5, 10),
        )
        self.characters = Counter(
            f"{PREFIX}_characters", "Characters synthesized", ["engine"], registry=registry
        )
        self.errors = Counter(f"{PREFIX}_errors", "Engine failures", ["engine", "code"], registry=registry)
        self.fallbacks = Counter(
            f"{PREFIX}_fallbacks", "Requests moved to another engine before their first byte",
            ["from_engine", "to_engine", "reason"], registry=registry,
        )  # fmt: skip
        self.retries = Counter(f"{PREFIX}_retries", "Engine retries", ["engine", "reason"], registry=registry)
        self.cache_hits = Counter(
            f"{PREFIX}_cache_hits", "Chunks served from the cache", ["engine"], registry=registry
        )
        self.cache_misses = Counter(
            f"{PREFIX}_cache_misses", "Chunks synthesized", ["engine"], registry=registry
        )
        self.cache_bytes = Gauge(f"{PREFIX}_cache_bytes", "Bytes of audio in the cache", registry=registry)
        self.active = Gauge(f"{PREFIX}_active_syntheses", "Syntheses admitted and running", registry=registry)
        self.rejected = Counter(
            f"{PREFIX}_rejected",
            "Syntheses refused because the service was full",
            ["transport"],
            registry=registry,
        )
        self.cancelled = Counter(
            f"{PREFIX}_cancelled",
            "Syntheses stopped because the client went away",
            ["transport"],
            registry=registry,
        )
