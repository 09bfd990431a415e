# The application image, shared by the `api` and `agent` services of docker-compose.yml:
#   eloquence api --host 0.0.0.0 --port 8003        (token / room / dispatch API)
#   eloquence worker start --host 0.0.0.0 --port 8080  (livekit-agents worker, health on 8080)
# Build from the repository root: docker build -t eloquence/app .
# Silero VAD and the end-of-turn model ship inside livekit-agents: nothing to download at run time.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --create-home --home-dir /home/eloquence eloquence

WORKDIR /src
COPY pyproject.toml README.md ./
COPY eloquence/ eloquence/
COPY eloquence_bench/ eloquence_bench/
COPY providers/ providers/
COPY services/ services/
# Only the agent extra: livekit-agents, livekit-api, mistralai; no model runtime.
RUN pip install '.[agent]' && rm -rf /src

WORKDIR /home/eloquence
USER eloquence
EXPOSE 8003 8080
CMD ["eloquence", "api", "--host", "0.0.0.0", "--port", "8003"]
