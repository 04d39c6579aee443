"""`mlops simulate`: the closed loop, day by day, against the real platform."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import timedelta
from pathlib import Path

import click

from mlops_cli.demo import _claim_calendar_and_port, _run_closed_loop
from mlops_core.settings import Settings


def _retrain_day(text: str) -> tuple[int, dict]:
    """'14' or '14:false_negative_cost=3,max_depth=3' -> (14, {'false_negative_cost': 3.0, 'max_depth': 3})."""
    day, _, settings = text.partition(":")
    try:
        overrides = {}
        for pair in filter(None, settings.split(",")):
            key, value = pair.split("=", 1)
            overrides[key.strip()] = json.loads(value)
        return int(day), overrides
    except ValueError as err:
        raise ValueError(
            f"--retrain-day {text!r}: expected DAY[:SETTING=VALUE,...], e.g. 14:false_negative_cost=3"
        ) from err


@click.command("simulate")
@click.option(
    "--days", type=click.IntRange(min=1), default=60, show_default=True, help="Simulated days after the history."
)
@click.option(
    "--scenario",
    default="concept_drift",
    show_default=True,
    help="What changes from --drift-day on; see `mlops demo scenarios`.",
)
@click.option(
    "--drift-day",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="0-based simulated day the scenario starts.",
)
@click.option(
    "--history-days",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Days loaded and trained on before day 0.",
)
@click.option("--rows-per-day", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option(
    "--label-maturity-days",
    type=click.IntRange(min=4, max=365),
    default=7,
    show_default=True,
    help="Dispute window of the simulated bank: a legitimate label lands this many days after the transaction.",
)
@click.option(
    "--training-lookback-days",
    type=click.IntRange(min=7),
    default=35,
    show_default=True,
    help="Days of mature data each retraining takes.",
)
@click.option(
    "--fairness-min-frauds",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Retraining's fairness gate compares only age bands with this many frauds in its test split (product default: 10).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--oracle/--no-oracle",
    default=True,
    show_default=True,
    help="Beside the platform, retrain an oracle every day on every label known that day (no gates) and score the same traffic.",
)
@click.option(
    "--ab-test",
    "ab_test",
    type=click.Choice(["off", "better", "not-worse"]),
    default="off",
    show_default=True,
    help="The A/B verdict on matured labels a canary needs before production (rollout.ab_test.required).",
)
@click.option(
    "--ab-min-effect",
    type=click.FloatRange(min=0.0, min_open=False),
    default=0.0,
    show_default=True,
    help="Relative change of the champion's cost per transaction the A/B test must be able to detect (0: the declaration's).",
)
@click.option(
    "--ab-max-days",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Days an A/B test may run without a verdict before its canary is rolled back (0: the declaration's).",
)
@click.option(
    "--canary-share",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.25,
    show_default=True,
    help="Share of accounts the canary answers during a rollout (and an A/B test).",
)
@click.option(
    "--retrain-day",
    "retrain_days",
    multiple=True,
    metavar="DAY[:SETTING=VALUE,...]",
    help="Also launch retraining_job after DAY's sensors, the candidate's config changed as given, e.g. "
    "14:false_negative_cost=3 (a cost setting changed by mistake). Repeatable.",
)
@click.option(
    "--retrain-new-labels",
    type=click.IntRange(min=1),
    default=None,
    help="New labels that make retraining_sensor retrain (default: 30 days of rows).",
)
@click.option(
    "--early-frauds/--no-early-frauds",
    default=True,
    show_default=True,
    help="Retraining also learns the frauds confirmed before their transactions matured (MLOPS_TRAIN_ON_EARLY_FRAUDS).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the endpoint on 127.0.0.1 (default: the recorded one, else 8000).",
)
@click.option(
    "--keep-endpoint/--stop-endpoint", default=False, show_default=True, help="Leave the endpoint running at the end."
)
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Default: $MLOPS_REPORTS_DIR/simulation."
)
def simulate_command(
    days,
    scenario,
    drift_day,
    history_days,
    rows_per_day,
    label_maturity_days,
    training_lookback_days,
    fairness_min_frauds,
    seed,
    oracle,
    ab_test,
    ab_min_effect,
    ab_max_days,
    canary_share,
    retrain_days,
    retrain_new_labels,
    early_frauds,
    port,
    keep_endpoint,
    out_dir,
) -> None:
    """The closed loop, day by day: data lands, the endpoint serves, labels arrive late, sensors retrain and roll out.

    Starts from an empty MLOPS_HOME. Prints a day-by-day timeline, then the summary of the 30 days from the
    drift (the platform against the oracle and the frozen first champion), and writes timeline.csv/json,
    summary.json and a PNG of the three.
    """
    settings = Settings.from_env()
    port = port or settings.serving_port
    _claim_calendar_and_port(settings, settings.today - timedelta(days=history_days + days), port)
    from mlops_cli.simulation.loop import SimulationSpec

    try:
        spec = SimulationSpec(
            days=days,
            scenario=scenario,
            drift_day=drift_day,
            history_days=history_days,
            rows_per_day=rows_per_day,
            label_maturity_days=label_maturity_days,
            training_lookback_days=training_lookback_days,
            fairness_min_frauds=fairness_min_frauds,
            seed=seed,
            oracle=oracle,
            port=port,
            ab_test_required=ab_test.replace("-", " "),
            ab_min_effect=ab_min_effect,
            ab_max_days=ab_max_days,
            canary_share=canary_share,
            forced_retrainings=tuple(_retrain_day(text) for text in retrain_days),
            retrain_new_labels=retrain_new_labels,
            early_frauds=early_frauds,
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
        f"{scenario}, drift on day {drift_day}: AUC-PR with the closed loop, frozen and oracle",
        keep_endpoint,
        out_dir,
    )
    promotions = [r for r in records if r.promoted]
    blocked = [r for r in records if r.data_layer != "ok"]
    click.echo(f"\n{len(records)} days in {time.monotonic() - started:.0f} s; timeline {as_csv}; plot {png}")
    click.echo(f"Promotions: {', '.join(f'v{r.promoted} on day {r.index}' for r in promotions) or 'none'}")
    if blocked:
        click.echo(
            f"Data gates blocked {len(blocked)} day(s): {', '.join(str(r.index) for r in blocked)}; champion at the end: v{records[-1].champion}"
        )
    after = [r for r in records if r.affected and r.promoted and r.landing_to_champion_seconds]
    if after:
        click.echo(
            f"First promotion after the scenario started: day {after[0].index}, {after[0].landing_to_champion_seconds:.0f} s from that day's data landing"
        )
    last = records[-1]
    click.echo(
        f"Last day, AUC-PR over 7 days: served {last.served_auc_pr_7d:.3f}, frozen first champion {last.frozen_auc_pr_7d:.3f}"
    )
    from mlops_core.monitoring.timeline import summarize

    summary = summarize(records, drift_day)
    for line in summary.lines():
        click.echo(line)
    (as_csv.parent / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=1, default=str))
