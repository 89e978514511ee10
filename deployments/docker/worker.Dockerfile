# The pipeline image: the Prefect worker and the flow-run Jobs it starts, the Prefect server and
# the MLflow server (deployments/k8s). The service has its own image, the champion's Bento
# (`bentoml containerize`). Build from the repo root (`make images` does both):
#   docker build -f deployments/docker/worker.Dockerfile -t clip-har-worker .
FROM python:3.11-slim-bookworm

# git: the data registry is a git + DVC repository
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# The uid of the Bento image's bentoml user: flow runs and the service write the same state volume.
RUN groupadd --gid 1034 clip-har && useradd --uid 1034 --gid 1034 --create-home clip-har

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    BENTOML_DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    GIT_PYTHON_REFRESH=quiet
WORKDIR /opt/clip-har

# Dependencies in their own layer (a source change does not reinstall torch), pinned by
# constraints.txt as `make install` pins them; `scale` adds psycopg, prefect-kubernetes and Dask.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['scale']))" > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt

# The project, editable: flows load their entrypoints (flows/*.py) from this folder and Bento
# builds read deployments/ and clip_har/ from it, as in a checkout.
COPY README.md prefect.yaml ./
COPY clip_har ./clip_har
COPY clip_har_cli ./clip_har_cli
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
COPY expectations ./expectations
# Owned by the runtime user: what a library writes to the working directory (lightning_logs,
# a relative output path) must not fail the run.
RUN pip install --no-deps -e . && chown -R clip-har:clip-har /opt/clip-har

USER clip-har
