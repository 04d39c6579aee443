#!/usr/bin/env bash
# The pipeline a team's CI runs on every change, on a small generated sample, through the Dagster CLI:
# the data layer behind its gates, training with every quality gate, then the staged rollout (staging,
# shadow, canary, promotion) to an ephemeral endpoint on 127.0.0.1. A blocking check that fails fails its
# run, `dagster job execute` exits non-zero, and so does this script. The evaluation report is copied to
# $CI_ARTIFACTS_DIR whatever happens, for the workflow to upload.
#
# .github/workflows/pipeline.yml and .gitlab-ci.yml call this script; tests/test_ci_workflows.py runs it
# too, so the workflow cannot rot unnoticed. Needs the environment of scripts/bootstrap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLOPS_HOME="${MLOPS_HOME:-$PWD/.mlops-pipeline-ci}"
export MLFLOW_DISABLE_TELEMETRY=true
ARTIFACTS="${CI_ARTIFACTS_DIR:-$MLOPS_HOME/ci-artifacts}"
PORT="${CI_SERVING_PORT:-8765}"
mkdir -p "$ARTIFACTS"

collect() {
  # The evaluation report (and the run logs' tail) whether the gates passed or not: a failed gate explains itself there.
  cp "$MLOPS_HOME"/reports/evaluation-latest.html "$ARTIFACTS"/ 2>/dev/null || true
  .venv/bin/mlops serve --stop --port "$PORT" >/dev/null 2>&1 || true
}
trap collect EXIT

.venv/bin/mlops prepare
# 75 days of 1,500 transactions: legitimate labels mature after 45 days, so a month is labelled.
.venv/bin/mlops demo generate --start 2026-01-01 --days 75 --rows-per-day 1500 --seed 5
eval "$(.venv/bin/mlops prepare --env)"
export MLOPS_SERVING_URL="http://127.0.0.1:$PORT"
execute() { .venv/bin/dagster job execute -m mlops_assets.definitions -j "$@"; }

echo "ci_pipeline: data_layer_job (ingestion gates, dbt models and tests)"
execute data_layer_job \
  --tags '{"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-03-16"}'
echo "ci_pipeline: training_job (feature checks, candidate, baseline, quality gates, registration)"
execute training_job
echo "ci_pipeline: rollout_job to an ephemeral endpoint on $MLOPS_SERVING_URL"
.venv/bin/mlops serve --detach --port "$PORT"
execute rollout_job -c scripts/ci_rollout.yaml
curl --fail --silent --show-error "$MLOPS_SERVING_URL/ready" >/dev/null
echo "ci_pipeline: passed; the evaluation report is in $ARTIFACTS"
