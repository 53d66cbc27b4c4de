# The worker image: the trigger-worker package plus this project's tasks, baked in.
# The same image runs the API (`trigger api`) in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first so code edits do not reinstall them.
COPY pyproject.toml README.md ./
COPY worker ./worker
# DL3013 (pin versions): ".[server]" is this source tree, not a package from an index
# hadolint ignore=DL3013
RUN pip install ".[server]" \
    && useradd --create-home --uid 1000 trigger

# The project: config and tasks (imported by the worker from /app).
COPY trigger_config.py ./
COPY trigger ./trigger
# bytecode now (PYTHONDONTWRITEBYTECODE above): no worker start compiles the tasks
RUN python -m compileall -q trigger_config.py trigger

USER trigger
ENV TRIGGER_API_URL=http://api:3030
CMD ["trigger", "worker"]
