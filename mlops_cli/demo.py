"""`mlops demo`: generate demo data, list the scenarios, and run the platform end to end on them."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import click

from mlops_cli.common import (
    LABELLED_DAYS,
    WARM_UP_DAYS,
    _output_to,
    _partition_range,
    _print_endpoint,
    _print_where_to_look,
    _recorded_port,
    _StageFailure,
    min_demo_days,
    rollout_run_config,
    run_stage,
)
from mlops_core.local_state import PortBusyError, prepare_instance, reset_local_state
from mlops_core.settings import Settings, record_settings

# Long enough for every project in projects/: churn's weekly snapshots need 90 days of window, enough labelled
# snapshots to pass its gates, and 30 days of label horizon (fraud needs 90: mlops_cli.common.min_demo_days).
DEMO_DAYS = 180
# A third of the accounts fade and stop at some point in the history: the churn project's signal.
DEMO_CHURN_SHARE = 0.3


@click.group()
def demo() -> None:
    """Generate demo data and run the platform end to end on it."""


def _scenario_help() -> str:
    from mlops_core.datagen.generator import SCENARIOS

    return "; ".join(f"{name}: {text}" for name, text in SCENARIOS.items())


@demo.command("generate")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First day, YYYY-MM-DD.")
@click.option("--days", type=click.IntRange(min=1), required=True, help="Number of days.")
@click.option(
    "--rows-per-day", type=click.IntRange(min=10), default=2000, show_default=True, help="Mean transactions per day."
)
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same files.")
@click.option("--scenario", default="baseline", show_default=True, help="See `mlops demo scenarios`.")
@click.option(
    "--drift-day",
    type=click.IntRange(min=0),
    default=None,
    help="0-based day the scenario starts (default: days // 2).",
)
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--landing-dir", type=click.Path(path_type=Path), default=None, help="Default: $MLOPS_DATA_DIR/landing.")
@click.option(
    "--churn-share",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Share of accounts whose spending fades and stops during the window (customer churn); 0 leaves the "
    "data exactly as without churn.",
)
def demo_generate(start, days, rows_per_day, seed, scenario, drift_day, file_format, landing_dir, churn_share) -> None:
    """Write a realistic card-transaction landing zone (transactions, late labels, accounts)."""
    from mlops_core.datagen.generator import DemoSpec, generate_landing

    landing_dir = landing_dir or Settings.from_env().landing_dir
    try:
        spec = DemoSpec(
            start=start.date(),
            days=days,
            rows_per_day=rows_per_day,
            seed=seed,
            scenario=scenario,
            drift_day=drift_day,
            file_format=file_format,
            churn_share=churn_share,
        )
        summary = generate_landing(spec, landing_dir)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    click.echo(f"Wrote {len(summary.files)} files to {landing_dir}")
    click.echo(f"Rows per source: {summary.rows}; fraud rate {summary.fraud_rate:.2%}")


@demo.command("scenarios")
def demo_scenarios() -> None:
    """List the demo data scenarios."""
    from mlops_core.datagen.generator import SCENARIOS

    for name, text in SCENARIOS.items():
        click.echo(f"{name:28s} {text}")


@demo.command("run")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=DEMO_DAYS,
    show_default=True,
    help=f"Days of history, ending the day before the platform's today (MLOPS_TODAY). At least "
    f"{min_demo_days(45)} with the default 45-day label maturity ({WARM_UP_DAYS} to warm up the windows, "
    f"{LABELLED_DAYS} labelled days, the maturity); with --loop-days, {WARM_UP_DAYS + 5} + 7 + the loop days.",
)
@click.option("--rows-per-day", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--scenario", default="baseline", show_default=True)
@click.option(
    "--churn-share",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=DEMO_CHURN_SHARE,
    show_default=True,
    help="Share of the accounts whose spending fades, then stops, during the history: the churn project's "
    "signal. 0 gives the fraud-only world.",
)
@click.option(
    "--fresh/--reuse",
    default=True,
    show_default=True,
    help="Start from an empty MLOPS_HOME (landing, warehouse, runs, registry).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the endpoint the demo leaves running on 127.0.0.1 (default: the recorded one, else 8000); recorded for every later command.",
)
@click.option(
    "--loop-days",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Then run the closed loop for this many more days of covariate drift (see `mlops simulate`).",
)
def demo_run(days, rows_per_day, seed, scenario, churn_share, fresh, port, loop_days) -> None:
    """The main job: demo data, data layer, features, training with gates, staged rollout; leaves a live endpoint.

    With --loop-days N the last N days are simulated instead: each lands, is served, monitored and judged by
    the sensors, which retrain and roll out when the data drifts (it does from the middle of those days)."""
    port = port or _recorded_port()
    if loop_days:
        _demo_loop(days, rows_per_day, seed, churn_share, port, loop_days)
        return
    from mlops_core.datagen.generator import DemoSpec, generate_landing
    from mlops_core.serving import server

    settings = Settings.from_env()
    minimum = min_demo_days(settings.label_maturity_days)
    if days < minimum:
        raise click.BadParameter(
            f"{days} days of history are too few: the demo needs at least {minimum} ({WARM_UP_DAYS} days for the "
            f"windowed features to warm up, {LABELLED_DAYS} labelled days to train, validate and test on, and the "
            f"{settings.label_maturity_days}-day label maturity, MLOPS_LABEL_MATURITY_DAYS)",
            param_hint="--days",
        )
    first = settings.today - timedelta(days=days)
    last = settings.last_complete_day
    try:
        spec = DemoSpec(
            start=first, days=days, rows_per_day=rows_per_day, seed=seed, scenario=scenario, churn_share=churn_share
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    try:
        stopped = reset_local_state(settings, port) if fresh else None
    except PortBusyError as err:
        raise click.ClickException(str(err)) from None
    if stopped:
        click.echo(f"Stopped the earlier demo endpoint (pid {stopped})")
    # Before the code location loads: its partitions and its serving_endpoint resource read these once.
    url = f"http://127.0.0.1:{port}"
    record_settings(
        settings.home, MLOPS_TODAY=settings.clock, MLOPS_PARTITIONS_START=first.isoformat(), MLOPS_SERVING_URL=url
    )
    settings = replace(settings, serving_url=url, partitions_start=first)
    prepare_instance(settings)
    from mlops_assets.constants import DATA_LAYER_JOB, ROLLOUT_JOB, TRAINING_JOB
    from mlops_assets.transform.manifest import ensure_manifest
    from mlops_cli.simulation.loop import NEXT_STEPS

    log_path = settings.home / "demo.log"
    click.echo(
        f"History {first}..{last} (today is {settings.today}, MLOPS_TODAY={settings.clock}); run logs (dbt, Dagster) go to {log_path}"
    )
    with _output_to(log_path) as echo:
        ensure_manifest()
        summary = generate_landing(spec, settings.landing_dir)
        echo(f"Generated {summary.rows} rows ({scenario}) in {settings.landing_dir}")
        run_stage("The data layer", DATA_LAYER_JOB, NEXT_STEPS[DATA_LAYER_JOB], _partition_range(first, last))
        echo("Data layer loaded: landing -> raw (gated) -> dbt marts")
        run_stage("Training (feature checks and model quality gates)", TRAINING_JOB, NEXT_STEPS[TRAINING_JOB])
        echo("Trained: feature store, candidate and baseline, every quality gate passed, challenger registered")
        server.ensure_admin_token(settings)
        if server.running_pid(server.ServingPaths.for_role(settings, "production").pid_file(port)) is None:
            pid = server.start_detached(settings, port=port)
            echo(f"Started the endpoint on {url} (pid {pid})")
        run_stage(
            "The rollout (staging smoke test, shadow agreement, canary health)",
            ROLLOUT_JOB,
            NEXT_STEPS[ROLLOUT_JOB],
            run_config=rollout_run_config(replay_requests=300, canary_share=0.25),
        )
        echo("Rolled out: staging, shadow, canary, champion in production")
    _print_where_to_look(settings)
    _print_endpoint(settings, port)
    _demo_projects(settings, port, days)


def _run_closed_loop(spec, intro: str, plot_name: str, title: str, keep_endpoint: bool, out_dir: Path | None = None):
    """Run the simulation with run output sent to $MLOPS_HOME/simulation.log, then write its timeline and plot.
    Returns (loop, records, timeline csv, plot)."""
    from mlops_cli.simulation.loop import ClosedLoop
    from mlops_core.monitoring.timeline import plot_timeline, write_timeline

    settings = Settings.from_env()
    log_path = settings.home / "simulation.log"
    click.echo(f"{intro}; run logs (dbt, Dagster) go to {log_path}")
    from mlops_cli.simulation.loop import StageFailed

    with _output_to(log_path) as echo:
        loop = ClosedLoop(settings, spec, echo=echo)
        try:
            records = loop.run()
        except StageFailed as failed:
            raise _StageFailure(failed.stage, failed.failures, failed.next_step) from None
        except PortBusyError as err:
            raise click.ClickException(str(err)) from None
        finally:
            if not keep_endpoint:
                loop.stop_endpoint()
    out_dir = out_dir or settings.reports_dir / "simulation"
    _, as_csv = write_timeline(records, out_dir)
    return loop, records, as_csv, plot_timeline(records, out_dir / plot_name, title)


def _claim_calendar_and_port(settings: Settings, first: date, port: int) -> None:
    """Before the code location loads (its partitions and its serving resource read these once): refuse a
    port a foreign server holds, and record the demo's first day and endpoint for every later command."""
    try:
        from mlops_core.local_state import claim_port

        claim_port(settings, port)
    except PortBusyError as err:
        raise click.ClickException(str(err)) from None
    record_settings(
        settings.home,
        MLOPS_TODAY=settings.clock,
        MLOPS_PARTITIONS_START=first.isoformat(),
        MLOPS_SERVING_URL=f"http://127.0.0.1:{port}",
    )


def _demo_loop(days: int, rows_per_day: int, seed: int, churn_share: float, port: int, loop_days: int) -> None:
    settings = Settings.from_env()
    if days - loop_days >= 1:
        _claim_calendar_and_port(settings, settings.today - timedelta(days=days), port)
    from mlops_cli.simulation.loop import SimulationSpec

    try:
        spec = SimulationSpec(
            days=loop_days,
            scenario="covariate_drift",
            drift_day=loop_days // 2,
            history_days=days - loop_days,
            rows_per_day=rows_per_day,
            seed=seed,
            churn_share=churn_share,
            port=port,
            # The oracle refits twice a day on the whole history: minutes the demo's story does not need
            # (`mlops simulate` runs it).
            oracle=False,
        )
    except ValueError as err:
        raise click.UsageError(f"--days {days} with --loop-days {loop_days}: {err}") from err
    intro = f"{days - loop_days} days of history, then {loop_days} days of the closed loop (spending shifts from day {loop_days // 2})"
    loop, records, as_csv, png = _run_closed_loop(
        spec,
        intro,
        "simulation-demo.png",
        "demo: covariate drift, AUC-PR with the closed loop vs frozen",
        keep_endpoint=True,
    )
    settings = loop.settings
    _print_where_to_look(settings)
    click.echo(f"  Loop timeline:   {as_csv}; plot {png}")
    promoted = [r for r in records if r.promoted]
    if not promoted:
        # A gate stopping a retrained model is the platform working; the champion kept serving.
        click.echo(
            "\nNo retrained model got through the gates in these days; the champion kept serving (see the runs in the UI)."
        )
    _print_endpoint(settings, port)
    _demo_projects(settings, port, days)


def _demo_projects(settings: Settings, port: int, days: int) -> None:
    """Every other declared project (projects/<name>/, snapshot grain) through its own jobs over the same shared
    data layer: training with its declared gates, batch scoring, then one online answer from the live endpoint.
    A project whose calendar needs more history than the demo landed is named, with the --days it needs."""
    from mlops_cli.projects import latest_materialization
    from mlops_core.projects.catalog import projects_dir
    from mlops_core.projects.declaration import load_projects
    from mlops_core.projects.training import min_history_days

    projects = [p for p in load_projects(projects_dir()) if p.entity.grain == "snapshot"]
    if not projects:
        return
    click.echo("\nThe other model projects, over the same data layer (projects/<name>/: a declaration and SQL):")
    trained = []
    with _output_to(settings.home / "demo.log") as echo:
        for project in projects:
            name, needed = project.name, min_history_days(project)
            if days < needed:
                echo(
                    f"  {name}: not trained: its weekly snapshots need at least {needed} days of history (its longest "
                    f"window, three labelled snapshots, the {project.label.horizon_days}-day label horizon); this demo "
                    f"landed {days}. Run `mlops demo run --days {max(needed, 180)}`."
                )
                continue
            next_step = (
                f"read the failed checks above; the Dagster UI (`mlops ui`) shows the {name} asset group, and "
                f"`mlops project train {name}` runs it again"
            )
            run_stage(f"{name}: training (its declared gates)", f"{name}_training_job", next_step)
            run_stage(f"{name}: batch scoring", f"{name}_scoring_job", next_step)
            evaluation, champion = (
                latest_materialization(name, "candidate_evaluation"),
                latest_materialization(name, "champion_model"),
            )
            scores = latest_materialization(name, "batch_scores")
            echo(
                f"  {name}: {project.model.family}, every declared gate passed; test AUC-PR "
                f"{evaluation['test_auc_pr']:.3f} against {evaluation['baseline_test_auc_pr']:.3f} for the best "
                f"single-feature rule; champion version {champion['champion_version']} of {project.registered_model}"
            )
            echo(
                f"  {name}: {scores['dagster/row_count']} {project.entity.name}s of the {scores['snapshot_date']} snapshot scored "
                f"into {scores['table']} ({scores['flagged']} flagged); report {evaluation.get('report_file')}"
            )
            trained.append(project)
    for project in trained:
        _print_project_endpoint(settings, port, project)


def _print_project_endpoint(settings: Settings, port: int, project) -> None:
    """One answer from project's online route on the live endpoint, for an entity of its published snapshot."""
    import json

    import httpx
    import pandas as pd

    from mlops_core.serving.projects import features_path, features_root

    key = project.entity.key
    if [f.name for f in project.serving.request_schema] != [key] or project.serving.mode == "batch":
        return  # its requests carry more than the entity key, or it has no online route: nothing to show simply
    published = pd.read_parquet(features_path(features_root(settings.data_dir), project.name), columns=[key])
    body = {key: str(published[key].sort_values().iloc[0])}
    url = f"http://127.0.0.1:{port}/v1/models/{project.name}/predict"
    answer = httpx.post(url, json=body, timeout=30)
    click.echo(f"""  curl -s -X POST {url} -H 'content-type: application/json' -d '{json.dumps(body)}'
  -> {answer.text.strip()}""")
