"""azure-tts sidecar: sentence-chunked streaming speech from Azure Speech or a local Piper voice."""
