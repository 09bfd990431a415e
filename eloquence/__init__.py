"""Eloquence: the voice-coach application (agent, API, CLI, benchmark)."""

__version__ = "0.1.0"
