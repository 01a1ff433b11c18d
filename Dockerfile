# One image for every process of the cluster: api, beat, workers, sandbox (entrypoint `dispatcher`) and
# Flower (compose overrides the entrypoint with `celery`). docker-compose.yml shows each command.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: wheels for the project and every dependency, installed into a venv the runtime copies ---
FROM ${PYTHON_IMAGE} AS builder
# A compiler only here: a dependency without a wheel for this platform builds in this stage, never at runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a source change then reuses this layer's wheels.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt
COPY config ./config
COPY dispatcher ./dispatcher
COPY workers ./workers
COPY channels ./channels
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels collections-dispatcher

# --- runtime: the venv, a non-root user and a writable state directory; no compiler, no sources ---
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DISPATCHER_STATE_DIR=/var/lib/dispatcher
RUN groupadd --system --gid 10001 dispatcher \
    && useradd --system --uid 10001 --gid dispatcher --home-dir /var/lib/dispatcher --shell /usr/sbin/nologin dispatcher \
    && mkdir -p /var/lib/dispatcher \
    && chown dispatcher:dispatcher /var/lib/dispatcher
COPY --from=builder /opt/venv /opt/venv
USER dispatcher
# The working directory is the state directory: no .env is baked in (settings come from the environment),
# and beat's schedule, the API's callback spool and the sandboxes' files land on the mounted volume.
WORKDIR /var/lib/dispatcher
VOLUME ["/var/lib/dispatcher"]
# No HEALTHCHECK here: the same image runs the API, beat and the workers, and only the API has an HTTP
# endpoint to ask. docker-compose.yml gives the API (GET /readyz) and Flower theirs; a worker or beat that
# must be restarted exits non-zero and the restart policy starts it again.
ENTRYPOINT ["dispatcher"]
CMD ["--help"]
