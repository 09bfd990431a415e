"""Per-component benchmarks, each runnable alone: `python -m eloquence_bench.components.<name> --help`.

- `whisper_stt`: the encoder-window gate, the sidecar's overhead against faster-whisper, streams
  at real-time pace;
- `azure_tts`: time to first audio and total against Piper called directly (and the Azure SDK
  path against the stand-in);
- `llm`: MistralLLM's time to first token against the raw `mistralai` SDK;
- `providers`: the STT and TTS plugins against the raw sidecar protocol;
- `endpointing`: latency against false endpoints, for several turn-handling settings.

Each starts the services it needs on free loopback ports (`eloquence.services.running_service`).
"""
