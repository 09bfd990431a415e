#!/usr/bin/env bash
# Installs everything, then runs the whole test suite (what CI runs). A skipped test fails here:
# install.sh installs every engine the tests need (tests/conftest.py, ELOQUENCE_NO_SKIPS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export ELOQUENCE_NO_SKIPS=1
exec .venv/bin/python -m pytest "$@"
