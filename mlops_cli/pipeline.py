"""The pipeline's commands: `mlops ingest`, `train`, `promote`, `rollout` and `prepare`."""

from __future__ import annotations

import contextlib

import click

from mlops_cli.common import (
    _execute_data_layer,
    _output_to,
    _StageFailure,
    promote_run_config,
    rollout_run_config,
    run_stage,
)
from mlops_core.local_state import prepare_instance
from mlops_core.settings import Settings


@click.command("ingest")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First day to (re)load.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day (default: --start).")
def ingest(start, end) -> None:
    """(Re)materialize the data layer for landed days, e.g. after fixing a file."""
    settings = Settings.from_env()
    first = start.date()
    last = (end or start).date()
    if not settings.partitions_start <= first <= last <= settings.last_complete_day:
        raise click.BadParameter(
            f"{first}..{last} is outside the daily partitions {settings.partitions_start}..{settings.last_complete_day} "
            f"(MLOPS_PARTITIONS_START and MLOPS_TODAY={settings.clock}; set them, or MLOPS_TODAY=system for the machine's date)",
            param_hint="--start/--end",
        )
    prepare_instance(settings)
    from mlops_assets.transform.manifest import ensure_manifest
    from mlops_core.ingestion_summary import format_day_summary

    log_path = settings.home / "ingest.log"
    click.echo(f"Loading {first}..{last}; run logs (dbt, Dagster) go to {log_path}")
    with _output_to(log_path):
        ensure_manifest()
        ok, failures = _execute_data_layer(first, last)
    click.echo(format_day_summary(settings.duckdb_path, first, last))
    if not ok:
        raise _StageFailure(
            "The data layer",
            failures,
            "held days wait in raw with their reason (above) and block no later day; fix the landed file and run "
            "`mlops ingest --start DAY` again to release it; rejected rows are in quarantine.rejected_rows.",
        )


@click.command("train")
def train() -> None:
    """Run training_job: features, candidate, baseline, evaluation and gates, challenger registration."""
    from mlops_core.preconditions import require_data_layer

    settings = Settings.from_env()
    prepare_instance(settings)
    require_data_layer(settings)
    from mlops_assets.constants import TRAINING_JOB
    from mlops_cli.simulation.loop import NEXT_STEPS

    run_stage("Training (feature checks and model quality gates)", TRAINING_JOB, NEXT_STEPS[TRAINING_JOB])
    click.echo(f"Evaluation report: {settings.reports_dir / 'evaluation-latest.html'}")


@click.command("promote")
@click.option("--reason", required=True, help="Why the challenger becomes champion (kept in the alias history).")
def promote(reason) -> None:
    """Move the champion alias to the current challenger."""
    prepare_instance(Settings.from_env())
    from mlops_assets.constants import PROMOTE_JOB

    run_stage(
        "Promotion",
        PROMOTE_JOB,
        "train a challenger first (`mlops train`); a challenger that is already champion is not promoted again.",
        run_config=promote_run_config(reason),
    )


@click.command("rollout")
@click.option(
    "--replay",
    "replay_requests",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Recent transactions replayed through shadow and canary (0 = judge real traffic).",
)
@click.option("--canary-share", type=click.FloatRange(0.01, 1.0), default=0.1, show_default=True)
def rollout(replay_requests, canary_share) -> None:
    """Roll the challenger out: staging smoke test, shadow, canary, promotion, production (at the recorded endpoint)."""
    from mlops_core.preconditions import require_challenger, require_endpoint
    from mlops_core.serving import server

    settings = Settings.from_env()
    prepare_instance(settings)
    server.ensure_admin_token(settings)
    require_challenger(settings)
    require_endpoint(settings)
    from mlops_assets.constants import ROLLOUT_JOB
    from mlops_cli.simulation.loop import NEXT_STEPS

    run_stage(
        "The rollout",
        ROLLOUT_JOB,
        NEXT_STEPS[ROLLOUT_JOB],
        run_config=rollout_run_config(replay_requests, canary_share),
    )
    click.echo(f"Rollout complete: the challenger is champion and serves all traffic at {settings.serving_url}.")


@click.command("prepare")
@click.option(
    "--env",
    "as_env",
    is_flag=True,
    help="Print only shell exports (MLOPS_HOME, DAGSTER_HOME) for `eval`, e.g. before `dagster job execute`.",
)
def prepare(as_env) -> None:
    """Create local state and the admin token, install the instance profile and parse the dbt project (no network)."""
    import shlex

    from mlops_core.serving import server

    settings = Settings.from_env()
    prepare_instance(settings)
    # Loading the code location writes nothing; the token the endpoint and Dagster share is made here.
    server.ensure_admin_token(settings)
    from mlops_assets.transform.manifest import ensure_manifest

    with _output_to(settings.home / "prepare.log") if as_env else contextlib.nullcontext():
        manifest = ensure_manifest()
    if as_env:
        click.echo(f"export MLOPS_HOME={shlex.quote(str(settings.home))}")
        click.echo(f"export DAGSTER_HOME={shlex.quote(str(settings.dagster_home))}")
        return
    click.echo(f"dbt manifest: {manifest}")
    click.echo(f"DAGSTER_HOME: {settings.dagster_home}")
