"""The end-to-end run of `eloquence bench`: the real stack, the sidecar loop under concurrency, the
raw baselines and the peers, one phase after another (`bench.py`)."""

from __future__ import annotations

from .bench import BenchOptions, run_bench

__all__ = ["BenchOptions", "run_bench"]
