"""What the `mlops` commands share: running a job as a stage that stops with its failed checks and what
to do next, the output of a run sent to a log, and the summaries printed at the end."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import date
from pathlib import Path

import click

from mlops_core.settings import Settings

# Windowed features need 30 days to warm up, and the first model needs labelled days after them for its
# train, validation and test splits (enough frauds per age band for the fairness gate to judge).
WARM_UP_DAYS = 30
LABELLED_DAYS = 15


def min_demo_days(label_maturity_days: int) -> int:
    """The shortest history `mlops demo run` accepts: warm-up, labelled days, and the label maturity."""
    return WARM_UP_DAYS + LABELLED_DAYS + label_maturity_days


def _recorded_port() -> int:
    return Settings.from_env().serving_port


class _StageFailure(click.ClickException):
    """A stage of the platform stopped: printed as which check, what it measured against its bound, and
    what to do next, with exit code 1 and no traceback."""

    def __init__(self, stage: str, failures, next_step: str) -> None:
        from mlops_core.ingestion_summary import shorten  # duckdb: not for every command's start

        lines = [f"{stage} stopped the run:"]
        lines += [f"  - {shorten(failure, 400)}" for failure in failures] or [
            "  - a step failed (see the run in the UI)"
        ]
        lines.append(f"What to do next: {next_step}")
        super().__init__("\n".join(lines))

    def format_message(self) -> str:
        return self.message


def _execute(
    job_name: str, tags: dict[str, str] | None = None, run_config: dict | None = None
) -> tuple[bool, tuple[str, ...]]:
    """Run a job in process on the local instance: (success, its failed blocking checks with what each measured)."""
    import dagster as dg

    from mlops_assets.definitions import defs
    from mlops_cli.simulation.daemon import failed_checks

    job = defs.resolve_job_def(job_name)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, tags=tags or {}, run_config=run_config, raise_on_error=False)
    if result.success:
        return True, ()
    steps = tuple(
        f"step {e.step_key} failed: {e.event_specific_data.error.message.strip()[:300]}"
        for e in result.all_events
        if e.is_step_failure
    )
    return False, failed_checks(result) or steps


def run_stage(
    stage: str, job_name: str, next_step: str, tags: dict[str, str] | None = None, run_config: dict | None = None
) -> None:
    """Run a job; when it fails, stop the command with the failed checks and what to do next (exit 1)."""
    ok, failures = _execute(job_name, tags, run_config)
    if not ok:
        raise _StageFailure(stage, failures, next_step)


def _partition_range(first: date, last: date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def _execute_data_layer(first: date, last: date) -> tuple[bool, tuple[str, ...]]:
    from mlops_assets.constants import DATA_LAYER_JOB

    return _execute(DATA_LAYER_JOB, _partition_range(first, last))


def run_data_layer(first: date, last: date) -> bool:
    """Materialize the data layer for a range of days as one run on the local instance."""
    return _execute_data_layer(first, last)[0]


def promote_run_config(reason: str) -> dict:
    return {"ops": {"champion_model": {"config": {"reason": reason, "actor": "mlops cli"}}}}


def rollout_run_config(replay_requests: int, canary_share: float) -> dict:
    """rollout_job's config: how much recent traffic to replay through shadow and canary (0 = real traffic only)."""
    canary_replay = int(replay_requests / max(canary_share, 0.05)) if replay_requests else 0
    return {
        "ops": {
            "shadow_endpoint": {
                "config": {"replay_requests": replay_requests, "min_requests": min(100, replay_requests or 100)}
            },
            "canary_endpoint": {"config": {"replay_requests": canary_replay, "share": canary_share}},
            "champion_model": {
                "config": {"reason": "staged rollout: staging, shadow and canary passed", "actor": "rollout_job"}
            },
        }
    }


def _print_where_to_look(settings: Settings) -> None:
    import duckdb

    from mlops_core.warehouse import checked_identifier

    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        loads = con.execute(
            "SELECT source, count(*) FILTER (status = 'accepted'), count(*) FILTER (status = 'held'), "
            "sum(n_accepted) FILTER (status = 'accepted'), sum(n_rejected) FROM raw.load_log GROUP BY source ORDER BY source"
        ).fetchall()
        marts = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema = 'marts' ORDER BY 1"
        ).fetchall()
        counts = {
            name: con.execute(f"SELECT count(*) FROM {checked_identifier(name)}").fetchall()[0][0] for (name,) in marts
        }
    click.echo("\nData layer")
    for source, accepted, held, rows, rejected in loads:
        click.echo(
            f"  raw.{source:13s} {accepted} day(s) accepted, {held} held; {rows} rows loaded, {rejected} quarantined"
        )
    for name, n in counts.items():
        click.echo(f"  {name:28s} {n} rows")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        has_training_set = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'features' AND table_name = 'training_set'"
        ).fetchone()[0]
        if has_training_set:
            splits = con.execute(
                "SELECT split, count(*), avg(is_fraud::int) FROM features.training_set GROUP BY split ORDER BY min(event_timestamp)"
            ).fetchall()
            click.echo("\nFeature store")
            for split, n, rate in splits:
                click.echo(f"  features.training_set {split:10s} {n} rows, fraud rate {rate:.4f}")
    click.echo(
        f"  online store     {settings.online_store_path if settings.online_store == 'sqlite' else 'redis ($MLOPS_REDIS_URL)'}"
    )
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        has_history = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'registry' AND table_name = 'alias_history'"
        ).fetchone()[0]
        changes = (
            con.execute(
                "SELECT changed_at, alias, from_version, to_version, reason FROM registry.alias_history ORDER BY changed_at"
            ).fetchall()
            if has_history
            else []
        )
    if changes:
        click.echo("\nModel registry (fraud_detector)")
        for when, alias, before, after, why in changes[-4:]:
            click.echo(f"  {when:%Y-%m-%d %H:%M:%S} {alias:10s} {before or '-'} -> {after or '-'}  ({why})")
        click.echo(f"  evaluation report: {settings.reports_dir / 'evaluation-latest.html'}")
        click.echo(
            f"  MLflow store:      {settings.mlflow_dir}  (mlflow ui --backend-store-uri sqlite:///{settings.mlflow_dir / 'mlflow.db'})"
        )
    click.echo("\nWhere to look")
    click.echo("  Dagster UI:      .venv/bin/mlops ui   then open http://127.0.0.1:3000 (runs, asset graph, checks)")
    click.echo(f"  DuckDB file:     {settings.duckdb_path}")
    click.echo(
        f"                   e.g. .venv/bin/python -c \"import duckdb; print(duckdb.connect('{settings.duckdb_path}', read_only=True).sql('from marts.transactions_enriched limit 5'))\""
    )
    click.echo(
        "  Rejected rows:   quarantine.rejected_rows (source, partition_date, source_file, row_number, check_name, reason, record)"
    )
    click.echo(f"  Landing zone:    {settings.landing_dir}")
    click.echo(f"  Reports:         {settings.reports_dir}")
    click.echo(f"  DAGSTER_HOME:    {settings.dagster_home}")


def _print_endpoint(settings: Settings, port: int) -> None:
    import json

    import duckdb

    from mlops_core.serving.client import EndpointClient
    from mlops_core.serving.replay import recent_transactions

    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        (example,) = recent_transactions(con, 1)
    # A transaction the store already holds: recording it again is a no-op, so the check leaves no trace.
    with EndpointClient(f"http://127.0.0.1:{port}") as client:
        answer = client.predict(example)
        deployment = client.deployment()
    click.echo(f"""
Live endpoint:     http://127.0.0.1:{port}  (champion version {deployment["champion_version"]})
  curl -s -X POST http://127.0.0.1:{port}/v1/predict -H 'content-type: application/json' \\
       -d '{json.dumps(example, default=str)}'
  -> {json.dumps(answer)}
  Health, readiness, metrics: /health /ready /metrics; API docs: /docs
  Stop it:         mlops serve --stop --port {port}""")


@contextlib.contextmanager
def _output_to(log_path: Path):
    """Send everything written to fds 1 and 2 (dbt's and Dagster's run output included) to log_path;
    yields an echo that still reaches the terminal."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield lambda line: (terminal.write(line + "\n"), log.write(line + "\n"), log.flush())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()
