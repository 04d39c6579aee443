"""The `mlops` command line. Heavy imports (dagster, the code location) happen inside
the commands that need them, so `mlops demo generate` starts fast."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import click

from mlops_core.local_state import PortBusyError, prepare_instance, reset_local_state
from mlops_core.settings import REPO_ROOT, Settings, record_settings

# Windowed features need 30 days to warm up, and the first model needs labelled days after them for its
# train, validation and test splits (enough frauds per age band for the fairness gate to judge).
WARM_UP_DAYS = 30
LABELLED_DAYS = 15


def min_demo_days(label_maturity_days: int) -> int:
    """The shortest history `mlops demo run` accepts: warm-up, labelled days, and the label maturity."""
    return WARM_UP_DAYS + LABELLED_DAYS + label_maturity_days


def _recorded_port() -> int:
    return Settings.from_env().serving_port


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StageFailure(click.ClickException):
    """A stage of the platform stopped: printed as which check, what it measured against its bound, and
    what to do next, with exit code 1 and no traceback."""

    def __init__(self, stage: str, failures, next_step: str) -> None:
        lines = [f"{stage} stopped the run:"]
        lines += [f"  - {_one_line(failure)}" for failure in failures] or ["  - a step failed (see the run in the UI)"]
        lines.append(f"What to do next: {next_step}")
        super().__init__("\n".join(lines))

    def format_message(self) -> str:
        return self.message


@click.group()
def main() -> None:
    """MLOps platform: demo data, the data layer and the Dagster UI."""


@main.group()
def demo() -> None:
    """Generate demo data and run the platform end to end on it."""


def _scenario_help() -> str:
    from mlops_core.datagen.generator import SCENARIOS

    return "; ".join(f"{name}: {text}" for name, text in SCENARIOS.items())


@demo.command("generate")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First day, YYYY-MM-DD.")
@click.option("--days", type=click.IntRange(min=1), required=True, help="Number of days.")
@click.option("--rows-per-day", type=click.IntRange(min=10), default=2000, show_default=True, help="Mean transactions per day.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same files.")
@click.option("--scenario", default="baseline", show_default=True, help="See `mlops demo scenarios`.")
@click.option("--drift-day", type=click.IntRange(min=0), default=None, help="0-based day the scenario starts (default: days // 2).")
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--landing-dir", type=click.Path(path_type=Path), default=None, help="Default: $MLOPS_DATA_DIR/landing.")
def demo_generate(start, days, rows_per_day, seed, scenario, drift_day, file_format, landing_dir) -> None:
    """Write a realistic card-transaction landing zone (transactions, late labels, accounts)."""
    from mlops_core.datagen.generator import DemoSpec, generate_landing

    landing_dir = landing_dir or Settings.from_env().landing_dir
    try:
        spec = DemoSpec(
            start=start.date(), days=days, rows_per_day=rows_per_day, seed=seed,
            scenario=scenario, drift_day=drift_day, file_format=file_format,
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


def run_job(job_name: str, tags: dict[str, str] | None = None, run_config: dict | None = None) -> bool:
    """Execute one job of the code location as a run on the local instance."""
    return _execute(job_name, tags, run_config)[0]


def _execute(job_name: str, tags: dict[str, str] | None = None, run_config: dict | None = None) -> tuple[bool, tuple[str, ...]]:
    """Run a job in process on the local instance: (success, its failed blocking checks with what each measured)."""
    import dagster as dg

    from mlops_assets.definitions import defs
    from mlops_cli.simulation.daemon import failed_checks

    job = defs.resolve_job_def(job_name)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, tags=tags or {}, run_config=run_config, raise_on_error=False)
    if result.success:
        return True, ()
    steps = tuple(f"step {e.step_key} failed: {e.event_specific_data.error.message.strip()[:300]}" for e in result.all_events if e.is_step_failure)
    return False, failed_checks(result) or steps


def run_stage(stage: str, job_name: str, next_step: str, tags: dict[str, str] | None = None, run_config: dict | None = None) -> None:
    """Run a job; when it fails, stop the command with the failed checks and what to do next (exit 1)."""
    ok, failures = _execute(job_name, tags, run_config)
    if not ok:
        raise _StageFailure(stage, failures, next_step)


def _partition_range(first: date, last: date) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first.isoformat(), "dagster/asset_partition_range_end": last.isoformat()}


def _execute_data_layer(first: date, last: date) -> tuple[bool, tuple[str, ...]]:
    from mlops_assets.constants import DATA_LAYER_JOB

    return _execute(DATA_LAYER_JOB, _partition_range(first, last))


def run_data_layer(first: date, last: date) -> bool:
    """Materialize the data layer for a range of days as one run on the local instance."""
    from mlops_assets.constants import DATA_LAYER_JOB

    return run_job(DATA_LAYER_JOB, _partition_range(first, last))


def run_training() -> bool:
    """Features, candidate and baseline, evaluation with the gates, challenger registration."""
    from mlops_assets.constants import TRAINING_JOB

    return run_job(TRAINING_JOB)


def run_promote(reason: str) -> bool:
    """Move champion to the challenger, recorded in the alias history."""
    from mlops_assets.constants import PROMOTE_JOB

    return run_job(PROMOTE_JOB, run_config=promote_run_config(reason))


def promote_run_config(reason: str) -> dict:
    return {"ops": {"champion_model": {"config": {"reason": reason, "actor": "mlops cli"}}}}


def rollout_run_config(replay_requests: int, canary_share: float) -> dict:
    """rollout_job's config: how much recent traffic to replay through shadow and canary (0 = real traffic only)."""
    canary_replay = int(replay_requests / max(canary_share, 0.05)) if replay_requests else 0
    return {
        "ops": {
            "shadow_endpoint": {"config": {"replay_requests": replay_requests, "min_requests": min(100, replay_requests or 100)}},
            "canary_endpoint": {"config": {"replay_requests": canary_replay, "share": canary_share}},
            "champion_model": {"config": {"reason": "staged rollout: staging, shadow and canary passed", "actor": "rollout_job"}},
        }
    }


def run_rollout(replay_requests: int = 0, canary_share: float = 0.1) -> bool:
    """Staging, shadow, canary, promotion and production for the current challenger."""
    from mlops_assets.constants import ROLLOUT_JOB

    return run_job(ROLLOUT_JOB, run_config=rollout_run_config(replay_requests, canary_share))


def _print_where_to_look(settings: Settings) -> None:
    import duckdb

    from mlops_core.warehouse import checked_identifier

    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        loads = con.execute(
            "SELECT source, count(*) FILTER (status = 'accepted'), count(*) FILTER (status = 'held'), "
            "sum(n_accepted), sum(n_rejected) FROM raw.load_log GROUP BY source ORDER BY source"
        ).fetchall()
        marts = con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema = 'marts' ORDER BY 1"
        ).fetchall()
        counts = {name: con.execute(f"SELECT count(*) FROM {checked_identifier(name)}").fetchall()[0][0] for (name,) in marts}
    click.echo("\nData layer")
    for source, accepted, held, rows, rejected in loads:
        click.echo(f"  raw.{source:13s} {accepted} day(s) accepted, {held} held; {rows} rows loaded, {rejected} quarantined")
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
    click.echo(f"  online store     {settings.online_store_path if settings.online_store == 'sqlite' else 'redis ($MLOPS_REDIS_URL)'}")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        has_history = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'registry' AND table_name = 'alias_history'"
        ).fetchone()[0]
        changes = con.execute("SELECT changed_at, alias, from_version, to_version, reason FROM registry.alias_history ORDER BY changed_at").fetchall() if has_history else []
    if changes:
        click.echo("\nModel registry (fraud_detector)")
        for when, alias, before, after, why in changes[-4:]:
            click.echo(f"  {when:%Y-%m-%d %H:%M:%S} {alias:10s} {before or '-'} -> {after or '-'}  ({why})")
        click.echo(f"  evaluation report: {settings.reports_dir / 'evaluation-latest.html'}")
        click.echo(f"  MLflow store:      {settings.mlflow_dir}  (mlflow ui --backend-store-uri sqlite:///{settings.mlflow_dir / 'mlflow.db'})")
    click.echo("\nWhere to look")
    click.echo(f"  Dagster UI:      .venv/bin/mlops ui   then open http://127.0.0.1:3000 (runs, asset graph, checks)")
    click.echo(f"  DuckDB file:     {settings.duckdb_path}")
    click.echo(f"                   e.g. .venv/bin/python -c \"import duckdb; print(duckdb.connect('{settings.duckdb_path}', read_only=True).sql('from marts.transactions_enriched limit 5'))\"")
    click.echo("  Rejected rows:   quarantine.rejected_rows (source, partition_date, source_file, row_number, check_name, reason, record)")
    click.echo(f"  Landing zone:    {settings.landing_dir}")
    click.echo(f"  Reports:         {settings.reports_dir}")
    click.echo(f"  DAGSTER_HOME:    {settings.dagster_home}")


@demo.command("run")
@click.option("--days", type=click.IntRange(min=1), default=90, show_default=True,
              help=f"Days of history, ending the day before the platform's today (MLOPS_TODAY). At least "
              f"{min_demo_days(45)} with the default 45-day label maturity ({WARM_UP_DAYS} to warm up the windows, "
              f"{LABELLED_DAYS} labelled days, the maturity); with --loop-days, {WARM_UP_DAYS + 5} + 7 + the loop days.")
@click.option("--rows-per-day", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--scenario", default="baseline", show_default=True)
@click.option("--fresh/--reuse", default=True, show_default=True, help="Start from an empty MLOPS_HOME (landing, warehouse, runs, registry).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port of the endpoint the demo leaves running on 127.0.0.1 (default: the recorded one, else 8000); recorded for every later command.")
@click.option("--loop-days", type=click.IntRange(min=0), default=0, show_default=True,
              help="Then run the closed loop for this many more days of covariate drift (see `mlops simulate`).")
def demo_run(days, rows_per_day, seed, scenario, fresh, port, loop_days) -> None:
    """The main job: demo data, data layer, features, training with gates, staged rollout; leaves a live endpoint.

    With --loop-days N the last N days are simulated instead: each lands, is served, monitored and judged by
    the sensors, which retrain and roll out when the data drifts (it does from the middle of those days)."""
    port = port or _recorded_port()
    if loop_days:
        _demo_loop(days, rows_per_day, seed, port, loop_days)
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
        spec = DemoSpec(start=first, days=days, rows_per_day=rows_per_day, seed=seed, scenario=scenario)
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
    record_settings(settings.home, MLOPS_TODAY=settings.clock, MLOPS_PARTITIONS_START=first.isoformat(), MLOPS_SERVING_URL=url)
    settings = replace(settings, serving_url=url, partitions_start=first)
    prepare_instance(settings)
    from mlops_assets.constants import DATA_LAYER_JOB, ROLLOUT_JOB, TRAINING_JOB
    from mlops_cli.simulation.loop import NEXT_STEPS
    from mlops_assets.transform.project import ensure_manifest

    log_path = settings.home / "demo.log"
    click.echo(f"History {first}..{last} (today is {settings.today}, MLOPS_TODAY={settings.clock}); run logs (dbt, Dagster) go to {log_path}")
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
        run_stage("The rollout (staging smoke test, shadow agreement, canary health)", ROLLOUT_JOB, NEXT_STEPS[ROLLOUT_JOB],
                  run_config=rollout_run_config(replay_requests=300, canary_share=0.25))
        echo("Rolled out: staging, shadow, canary, champion in production")
    _print_where_to_look(settings)
    _print_endpoint(settings, port)


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
        settings.home, MLOPS_TODAY=settings.clock, MLOPS_PARTITIONS_START=first.isoformat(), MLOPS_SERVING_URL=f"http://127.0.0.1:{port}"
    )


def _demo_loop(days: int, rows_per_day: int, seed: int, port: int, loop_days: int) -> None:
    settings = Settings.from_env()
    if days - loop_days >= 1:
        _claim_calendar_and_port(settings, settings.today - timedelta(days=days), port)
    from mlops_cli.simulation.loop import SimulationSpec

    try:
        spec = SimulationSpec(
            days=loop_days, scenario="covariate_drift", drift_day=loop_days // 2, history_days=days - loop_days,
            rows_per_day=rows_per_day, seed=seed, port=port,
        )
    except ValueError as err:
        raise click.UsageError(f"--days {days} with --loop-days {loop_days}: {err}") from err
    intro = f"{days - loop_days} days of history, then {loop_days} days of the closed loop (spending shifts from day {loop_days // 2})"
    loop, records, as_csv, png = _run_closed_loop(
        spec, intro, "simulation-demo.png", "demo: covariate drift, AUC-PR with the closed loop vs frozen", keep_endpoint=True
    )
    settings = loop.settings
    _print_where_to_look(settings)
    click.echo(f"  Loop timeline:   {as_csv}; plot {png}")
    promoted = [r for r in records if r.promoted]
    if not promoted:
        # A gate stopping a retrained model is the platform working; the champion kept serving.
        click.echo("\nNo retrained model got through the gates in these days; the champion kept serving (see the runs in the UI).")
    _print_endpoint(settings, port)


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
Live endpoint:     http://127.0.0.1:{port}  (champion version {deployment['champion_version']})
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


@main.command("simulate")
@click.option("--days", type=click.IntRange(min=1), default=60, show_default=True, help="Simulated days after the history.")
@click.option("--scenario", default="concept_drift", show_default=True, help="What changes from --drift-day on; see `mlops demo scenarios`.")
@click.option("--drift-day", type=click.IntRange(min=0), default=30, show_default=True, help="0-based simulated day the scenario starts.")
@click.option("--history-days", type=click.IntRange(min=1), default=60, show_default=True, help="Days loaded and trained on before day 0.")
@click.option("--rows-per-day", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--label-maturity-days", type=click.IntRange(min=4, max=365), default=7, show_default=True,
              help="Dispute window of the simulated bank: a legitimate label lands this many days after the transaction.")
@click.option("--training-lookback-days", type=click.IntRange(min=7), default=35, show_default=True,
              help="Days of mature data each retraining takes.")
@click.option("--fairness-min-frauds", type=click.IntRange(min=1), default=30, show_default=True,
              help="Retraining's fairness gate compares only age bands with this many frauds in its test split (product default: 10).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port of the endpoint on 127.0.0.1 (default: the recorded one, else 8000).")
@click.option("--keep-endpoint/--stop-endpoint", default=False, show_default=True, help="Leave the endpoint running at the end.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Default: $MLOPS_REPORTS_DIR/simulation.")
def simulate_command(days, scenario, drift_day, history_days, rows_per_day, label_maturity_days, training_lookback_days, fairness_min_frauds, seed, port, keep_endpoint, out_dir) -> None:
    """The closed loop, day by day: data lands, the endpoint serves, labels arrive late, sensors retrain and roll out.

    Starts from an empty MLOPS_HOME. Prints a day-by-day timeline and writes timeline.csv/json and a PNG
    of the live metric with automation against the frozen first champion.
    """
    settings = Settings.from_env()
    port = port or settings.serving_port
    _claim_calendar_and_port(settings, settings.today - timedelta(days=history_days + days), port)
    from mlops_cli.simulation.loop import SimulationSpec

    try:
        spec = SimulationSpec(
            days=days, scenario=scenario, drift_day=drift_day, history_days=history_days, rows_per_day=rows_per_day,
            label_maturity_days=label_maturity_days, training_lookback_days=training_lookback_days,
            fairness_min_frauds=fairness_min_frauds, seed=seed, port=port,
        )
        from mlops_core.datagen.scenarios import get_scenario

        get_scenario(scenario)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    started = time.monotonic()
    _, records, as_csv, png = _run_closed_loop(
        spec,
        f"Simulating {days} days of {scenario} (drift on day {drift_day}) after {history_days} days of history",
        f"simulation-{scenario}.png",
        f"{scenario}, drift on day {drift_day}: AUC-PR with the closed loop vs frozen",
        keep_endpoint,
        out_dir,
    )
    promotions = [r for r in records if r.promoted]
    blocked = [r for r in records if r.data_layer != "ok"]
    click.echo(f"\n{len(records)} days in {time.monotonic() - started:.0f} s; timeline {as_csv}; plot {png}")
    click.echo(f"Promotions: {', '.join(f'v{r.promoted} on day {r.index}' for r in promotions) or 'none'}")
    if blocked:
        click.echo(f"Data gates blocked {len(blocked)} day(s): {', '.join(str(r.index) for r in blocked)}; champion at the end: v{records[-1].champion}")
    after = [r for r in records if r.affected and r.promoted and r.landing_to_champion_seconds]
    if after:
        click.echo(f"First promotion after the scenario started: day {after[0].index}, {after[0].landing_to_champion_seconds:.0f} s from that day's data landing")
    last = records[-1]
    click.echo(f"Last day, AUC-PR over 7 days: served {last.served_auc_pr_7d:.3f}, frozen first champion {last.frozen_auc_pr_7d:.3f}")


@main.command("ingest")
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
    from mlops_assets.transform.project import ensure_manifest

    from mlops_core.ingestion_summary import format_day_summary

    log_path = settings.home / "ingest.log"
    click.echo(f"Loading {first}..{last}; run logs (dbt, Dagster) go to {log_path}")
    with _output_to(log_path):
        ensure_manifest()
        ok, failures = _execute_data_layer(first, last)
    click.echo(format_day_summary(settings.duckdb_path, first, last))
    if not ok:
        raise _StageFailure(
            "The data layer", failures,
            "held days wait in raw with their reason (above) and block no later day; fix the landed file and run "
            "`mlops ingest --start DAY` again to release it; rejected rows are in quarantine.rejected_rows.",
        )


@main.command("train")
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


@main.command("promote")
@click.option("--reason", required=True, help="Why the challenger becomes champion (kept in the alias history).")
def promote(reason) -> None:
    """Move the champion alias to the current challenger."""
    prepare_instance(Settings.from_env())
    from mlops_assets.constants import PROMOTE_JOB

    run_stage("Promotion", PROMOTE_JOB, "train a challenger first (`mlops train`); a challenger that is already champion is not promoted again.",
              run_config=promote_run_config(reason))


@main.command("rollout")
@click.option("--replay", "replay_requests", type=click.IntRange(min=0), default=0, show_default=True,
              help="Recent transactions replayed through shadow and canary (0 = judge real traffic).")
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

    run_stage("The rollout", ROLLOUT_JOB, NEXT_STEPS[ROLLOUT_JOB], run_config=rollout_run_config(replay_requests, canary_share))
    click.echo(f"Rollout complete: the challenger is champion and serves all traffic at {settings.serving_url}.")


@main.command("prepare")
@click.option("--env", "as_env", is_flag=True, help="Print only shell exports (MLOPS_HOME, DAGSTER_HOME) for `eval`, e.g. before `dagster job execute`.")
def prepare(as_env) -> None:
    """Create local state, install the instance profile and parse the dbt project (no network)."""
    import shlex

    settings = Settings.from_env()
    prepare_instance(settings)
    from mlops_assets.transform.project import ensure_manifest

    with _output_to(settings.home / "prepare.log") if as_env else contextlib.nullcontext():
        manifest = ensure_manifest()
    if as_env:
        click.echo(f"export MLOPS_HOME={shlex.quote(str(settings.home))}")
        click.echo(f"export DAGSTER_HOME={shlex.quote(str(settings.dagster_home))}")
        return
    click.echo(f"dbt manifest: {manifest}")
    click.echo(f"DAGSTER_HOME: {settings.dagster_home}")


def run_until_signalled(commands: list[list[str]], cwd: Path, grace_seconds: float = 5.0) -> int:
    """Run `commands` side by side, each in its own session, until the first exits or Ctrl-C/SIGTERM
    arrives; then stop every process group (SIGTERM, SIGKILL after `grace_seconds`). `dagster dev`
    ignores signals that reach it through a shell's job control, and its webserver and daemon children
    outlive a plain SIGINT to the parent."""
    processes = [subprocess.Popen(cmd, cwd=cwd, env=os.environ.copy(), start_new_session=True) for cmd in commands]

    def interrupt(signum, frame):  # noqa: ARG001 - the signal module's handler signature
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 130
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.2)
        code = next(p.returncode for p in processes if p.returncode is not None)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


@main.command("ui")
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--mlflow-port", type=int, default=5000, show_default=True,
              help="Port of the MLflow UI over the embedded store (reports, runs, registry); 0 starts none.")
def ui(port, mlflow_port) -> None:
    """Start the Dagster UI and daemon on 127.0.0.1, and the MLflow UI the report links open (Ctrl-C or SIGTERM stops all)."""
    from mlops_core import registry

    settings = Settings.from_env()
    prepare_instance(settings)
    from mlops_assets.transform.project import ensure_manifest

    ensure_manifest()
    bin_dir = Path(sys.executable).parent
    commands = [[str(bin_dir / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]]
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops it)")
    tracking = registry.tracking_uri(settings.mlflow_dir)
    if mlflow_port and not tracking.startswith("http"):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        os.environ["MLOPS_MLFLOW_UI_URL"] = f"http://127.0.0.1:{mlflow_port}"
        commands.append([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", tracking, "--host", "127.0.0.1", "--port", str(mlflow_port)])
        click.echo(f"MLflow UI on http://127.0.0.1:{mlflow_port} (the evaluation reports the Dagster UI links to)")
    # Started in DAGSTER_HOME: from the repo root, dagster dev warns on every start that the repo's
    # dagster.yaml (the template `mlops` installs into DAGSTER_HOME) is not the instance's.
    code = run_until_signalled(commands, cwd=settings.dagster_home)
    # Every child is reaped by now; tearing down the interpreter (dagster, dbt and mlflow imported) took
    # seconds on a busy machine, past the 10 s a stop may take.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; loopback unless you mean it.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: the recorded endpoint's port (MLOPS_SERVING_URL), else 8000.")
@click.option("--role", type=click.Choice(["production", "staging"]), default="production", show_default=True,
              help="staging keeps its own log, serves --model-version only and writes no production state.")
@click.option("--model-version", default=None, help="Serve this registry version (staging); default: the recorded plan, else the champion alias.")
@click.option("--detach", is_flag=True, help="Run in the background; writes a PID file and returns once /health answers.")
@click.option("--stop", "stop_server", is_flag=True, help="Stop the detached server on --port (by its PID file).")
def serve(host, port, role, model_version, detach, stop_server) -> None:
    """The scoring endpoint: POST /v1/predict, /v1/predict/batch; GET /health, /ready, /metrics."""
    from mlops_core.serving import server

    settings = Settings.from_env()
    port = port or settings.serving_port
    settings.export()
    server.ensure_admin_token(settings)
    if stop_server:
        pid = server.stop(settings, port, role)
        click.echo(f"stopped {role} server pid {pid}" if pid else f"no {role} server recorded on port {port}")
        return
    if detach:
        pid = server.start_detached(settings, host, port, role, model_version)
        click.echo(f"{role} endpoint on http://{host}:{port} (pid {pid}); stop it with `mlops serve --stop --port {port}`")
        return
    server.run(settings, host, port, role, model_version)


if __name__ == "__main__":
    main()
