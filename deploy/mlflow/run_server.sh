#!/usr/bin/env bash
# An MLflow tracking server and model registry with a Postgres backend store and a proxied
# artifact root. Everything comes from the environment, and the backend URI (it holds the
# password) reaches mlflow through MLFLOW_BACKEND_STORE_URI, never the command line, so `ps`
# does not show it. See deploy/mlflow/README.md and docs/production.md.
#
#   MLOPS_MLFLOW_BACKEND_STORE_URI  postgresql+psycopg2://user:pass@host:5432/mlflow   (or the parts:)
#   MLOPS_MLFLOW_PG_HOST, MLOPS_MLFLOW_PG_PORT (5432), MLOPS_MLFLOW_PG_USER,
#   MLOPS_MLFLOW_PG_PASSWORD, MLOPS_MLFLOW_PG_DB (mlflow)
#   MLOPS_MLFLOW_ARTIFACTS_DESTINATION  where artifacts live: a directory, s3://..., gs://...  (required)
#   MLOPS_MLFLOW_HOST     bind address, default 127.0.0.1 (set 0.0.0.0 only inside a pod)
#   MLOPS_MLFLOW_PORT     default 5000
#   MLOPS_MLFLOW_WORKERS  default 2
#   MLOPS_MLFLOW_ALLOWED_HOSTS  extra Host headers to accept, e.g. mlflow.mlops.svc (optional)
#   MLFLOW_BIN            the mlflow executable, default: mlflow on PATH
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  default false here (MLflow's default is true; see below)
#
# Clients then set MLOPS_MLFLOW_TRACKING_URI=http://<host>:<port>.
set -euo pipefail

host="${MLOPS_MLFLOW_HOST:-127.0.0.1}"
port="${MLOPS_MLFLOW_PORT:-5000}"
workers="${MLOPS_MLFLOW_WORKERS:-2}"
mlflow_bin="${MLFLOW_BIN:-mlflow}"

if [[ -z "${MLOPS_MLFLOW_ARTIFACTS_DESTINATION:-}" ]]; then
  echo "run_server.sh: set MLOPS_MLFLOW_ARTIFACTS_DESTINATION (a directory, s3://..., gs://...)" >&2
  exit 2
fi

backend="${MLOPS_MLFLOW_BACKEND_STORE_URI:-}"
if [[ -z "$backend" ]]; then
  for var in MLOPS_MLFLOW_PG_HOST MLOPS_MLFLOW_PG_USER MLOPS_MLFLOW_PG_PASSWORD; do
    if [[ -z "${!var:-}" ]]; then
      echo "run_server.sh: set MLOPS_MLFLOW_BACKEND_STORE_URI or $var (and the other MLOPS_MLFLOW_PG_* parts)" >&2
      exit 2
    fi
  done
  # The password may hold URL-reserved characters: percent-encode user and password.
  encode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
  backend="postgresql+psycopg2://$(encode "$MLOPS_MLFLOW_PG_USER"):$(encode "$MLOPS_MLFLOW_PG_PASSWORD")@${MLOPS_MLFLOW_PG_HOST}:${MLOPS_MLFLOW_PG_PORT:-5432}/${MLOPS_MLFLOW_PG_DB:-mlflow}"
fi
# SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the platform installs psycopg2.
if [[ "$backend" == postgresql://* ]]; then
  backend="postgresql+psycopg2://${backend#postgresql://}"
fi

export MLFLOW_BACKEND_STORE_URI="$backend"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
# The platform uses tracking, the registry and artifacts. MLflow 3's server job runner (huey consumers for
# GenAI scorers, evaluations and prompt optimization, plus periodic trace tasks) starts 8 more processes per
# server: 31.6-33.3 s of CPU in a server's first 28 s against 7.2-7.4 s without it
# (benchmarks/mlflow_server.py). Set it to true to use those MLflow features.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

args=(
  server
  --serve-artifacts
  --artifacts-destination "$MLOPS_MLFLOW_ARTIFACTS_DESTINATION"
  --host "$host"
  --port "$port"
  --workers "$workers"
)
if [[ -n "${MLOPS_MLFLOW_ALLOWED_HOSTS:-}" ]]; then
  args+=(--allowed-hosts "$MLOPS_MLFLOW_ALLOWED_HOSTS")
fi

# exec: the server keeps this PID, so whoever started the script stops the server by it.
exec "$mlflow_bin" "${args[@]}"
