#!/usr/bin/env bash
# Style and types: ruff (whole repository, tests included) and mypy on providers/ and services/.
# Needs the [lint] extra (in [all]); scripts/install.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "lint.sh: ruff and mypy clean"
