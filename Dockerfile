# The code location image: Dagster's code server, run and step workers, `mlops serve` and
# `mlflow server` all run from it. See docs/kubernetes.md.
#
#   docker build -t registry.example.com/mlops-platform:0.1.0 .
#
# The Helm chart starts the code server with its own args (codeServerArgs in
# deploy/helm/values.yaml), so the default command below sits in CMD, never ENTRYPOINT:
# an ENTRYPOINT would be prefixed to the chart's args.

FROM python:3.11-slim AS build

# The same uv series as scripts/bootstrap.sh, from PyPI.
RUN pip install --no-cache-dir --disable-pip-version-check "uv>=0.13,<0.14"

# Byte-compiled at install: without .pyc files every dagster CLI call (each run and step
# worker) starts twice as slowly. No interpreter downloads: the image's Python 3.11 is used.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, from the lock file only, so code changes reuse this layer.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed editable: the code finds dbt_project/ and
# dagster.yaml relative to the source tree (mlops_core.settings.REPO_ROOT = /app).
COPY README.md workspace.yaml dagster.yaml ./
COPY mlops_cli/ mlops_cli/
COPY mlops_core/ mlops_core/
COPY mlops_assets/ mlops_assets/
COPY resources/ resources/
COPY sensors/ sensors/
COPY dbt_project/ dbt_project/
COPY projects/ projects/
RUN uv sync --frozen --no-dev
# UV_COMPILE_BYTECODE compiles the installed libraries; the project is installed editable, so its own packages
# are compiled here. Without this, every run and step pod (PYTHONDONTWRITEBYTECODE, read-only source) compiled
# them from source again: 0.4 s of each import of the code location.
RUN /app/.venv/bin/python -m compileall -q mlops_cli mlops_core mlops_assets resources sensors

# The dbt manifest is parsed once here (no network, no database), so no process parses
# it at import time. Build-time state goes to a scratch MLOPS_HOME that is then deleted.
RUN MLOPS_HOME=/tmp/mlops-build /app/.venv/bin/mlops prepare \
    && test -s /app/dbt_project/target/manifest.json \
    && rm -rf /tmp/mlops-build /app/dbt_project/logs


FROM python:3.11-slim

# libstdc++ for the C++ extensions (xgboost, onnxruntime); libgomp ships inside the wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 mlops \
    && useradd --system --uid 10001 --gid mlops --home-dir /home/mlops --create-home --shell /usr/sbin/nologin mlops

# DAGSTER_HOME matches global.dagsterHome of the Helm chart; MLOPS_HOME is the shared
# volume (deploy/k8s/storage.yaml) holding the DuckDB warehouse, landing zone and reports.
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    MLOPS_HOME=/var/lib/mlops \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false

COPY --from=build /app /app

# The source and the environment stay root-owned and read-only; the user writes only its
# state directories and dbt's target/ (dagster-dbt writes one run directory per dbt call).
RUN mkdir -p /opt/dagster/dagster_home /var/lib/mlops \
    && chown -R mlops:mlops /opt/dagster/dagster_home /var/lib/mlops /app/dbt_project

USER 10001:10001
WORKDIR /app

EXPOSE 4000

CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "mlops_assets.definitions", "--location-name", "mlops_assets"]
