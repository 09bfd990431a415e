"""whisper-stt: a local streaming speech-to-text sidecar (faster-whisper + webrtcvad), see API.md."""
