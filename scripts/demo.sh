#!/usr/bin/env bash
# The main job on the embedded local default: install, start the local stack, run one spoken
# turn through a real AgentSession, write the reply WAV and print the per-stage latencies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/eloquence up --detach
trap '.venv/bin/eloquence down' EXIT
.venv/bin/eloquence talk "${1:-samples/question.wav}" -o "${2:-reply.wav}" --exercise "${EXERCISE:-confidence_boost}"
