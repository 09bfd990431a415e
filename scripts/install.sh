#!/usr/bin/env bash
# Installs everything Eloquence needs into ./.venv (idempotent; a second run takes seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools used by the tests and the compose check (Debian). Skipped when already there.
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# the TLS proxy test runs docker/caddy/Caddyfile; the Kubernetes test renders with kubectl's kustomize
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ! command -v kubectl >/dev/null 2>&1; then
  # Debian ships kubectl as kubernetes-client; Kubernetes' own apt repository as kubectl.
  # apt-cache knows neither before the package lists exist (a fresh machine): update first.
  if [ "$(id -u)" = 0 ] && [ "${ELOQUENCE_SKIP_APT:-0}" != 1 ]; then apt-get update -qq; fi
  for pkg in kubectl kubernetes-client; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then need+=("$pkg"); break; fi
  done
fi
if [ ${#need[@]} -gt 0 ] && [ "${ELOQUENCE_SKIP_APT:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install.sh: please install with apt-get: ${need[*]}" >&2
  fi
fi

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# llama.cpp's default native build crashes on this CPU family; the portable build works.
# pip caches the built wheel (~/.cache/pip), so only the first install on a machine pays ~4 min.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF"
.venv/bin/python -m pip install -q --upgrade "pip==26.3" >/dev/null
.venv/bin/python -m pip install -q -e '.[all]'
echo "install.sh: ready (.venv)"
