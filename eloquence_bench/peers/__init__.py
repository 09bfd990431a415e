"""Peers from PyPI, on the same models and inputs, paced the same way, clock started at t0.

- whisper-stt sidecar vs `wyoming-faster-whisper` (same CTranslate2 model directory, compute
  type, beam size and threads; the same bench client streams the audio in real time and ends
  the stream at the same endpoint, 250 ms after t0: our `flush`, their `audio-stop`);
- azure-tts sidecar vs `wyoming-piper` (same voice file, same texts; time to the first audible
  PCM chunk);
- the whole loop vs a headless `pipecat-ai` pipeline (`pipecat_pipeline.py`) built from its
  Whisper, Piper and OpenAI-compatible LLM services, pointed at our local LLM server.

The peers pin versions of their own that clash with ours, so they live in a separate virtual
environment (`venv.py`). This package's `__init__` imports nothing: `pipecat_pipeline.py` runs
inside that environment as `python -m eloquence_bench.peers.pipecat_pipeline`.
"""
