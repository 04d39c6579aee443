"""The closed loop, simulated day by day against the real platform.

A history is landed, loaded and trained on first, and its champion is rolled out to a live endpoint on
127.0.0.1. Then, for each simulated day: the day's files land (and the labels that became known that
day), data_layer_job loads them behind its gates, the day's transactions are sent to the endpoint one
request at a time, monitoring_job judges the day, and the retraining and performance sensors tick
(in process, with their cursors), launching retraining_job — training, gates, staged rollout — when
they see a reason. Every step is a real Dagster run on the local instance, visible in the UI.

Beside the served model, two others score the same feature vectors (read back from the prediction log):
the first champion, kept frozen, shows what the automation bought; the oracle, retrained every day on
every label known that day with no gates (mlops_core/training/oracle.py), shows how far it is from the
best the labels allowed.
"""

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import orjson
import pandas as pd

from mlops_assets.constants import (
    DATA_LAYER_JOB,
    MONITORING_JOB,
    PROMOTE_JOB,
    RETRAINING_JOB,
    ROLLBACK_JOB,
    ROLLOUT_JOB,
    TRAINING_JOB,
)
from mlops_cli.simulation.daemon import InProcessDaemon, LaunchedRun, TickResult, failed_checks
from mlops_core import registry
from mlops_core.contracts import SOURCES
from mlops_core.datagen.generator import DemoSpec, SimulatedDay, check_bad_days, simulate
from mlops_core.datagen.writer import write_partition
from mlops_core.local_state import prepare_instance, reset_local_state
from mlops_core.monitoring.timeline import ROLLING_DAYS, DayRecord, DayScores, format_line, pooled_auc_pr, recall
from mlops_core.serving import server
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.models import LoadedModel, load_version
from mlops_core.serving.prediction_log import read_predictions
from mlops_core.serving.replay import RAW_FIELDS
from mlops_core.settings import Settings, record_settings
from mlops_core.training.matrix import encode_rows
from mlops_core.training.oracle import Oracle

SENSORS = ("retraining_sensor", "performance_sensor", "champion_watch_sensor", "ab_verdict_sensor")
# Settings a caller's environment may carry that would point a simulation in another MLOPS_HOME at
# foreign state, an endpoint, or another policy.
INHERITED_VARIABLES = (
    "MLOPS_DATA_DIR",
    "MLOPS_DUCKDB_PATH",
    "DAGSTER_HOME",
    "MLOPS_REPORTS_DIR",
    "MLOPS_MLFLOW_DIR",
    "MLOPS_SERVING_URL",
    "MLOPS_PARTITIONS_START",
    "MLOPS_ADMIN_TOKEN",
    "MLOPS_LABEL_MATURITY_DAYS",
    "MLOPS_TRAINING_LOOKBACK_DAYS",
    "MLOPS_TRAIN_ON_EARLY_FRAUDS",
    "MLOPS_RETRAIN_NEW_LABELS",
    "MLOPS_RETRAIN_PREDICTION_PSI",
    "MLOPS_RETRAIN_CONFIDENCE",
    "MLOPS_RETRAIN_PAGE_HINKLEY_THRESHOLD",
)
# Dagster's own step logs would drown the timeline; runs stay fully logged in the instance and the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class SimulationSpec:
    days: int = 60
    scenario: str = "concept_drift"
    drift_day: int = 30  # 0-based simulated day the scenario starts
    # Single bad landing days on top of the scenario: (0-based simulated day, a "bad_*" scenario), e.g.
    # ((1, "bad_missing_column"),). The data layer holds that day while the world goes on drifting.
    bad_days: tuple[tuple[int, str], ...] = ()
    history_days: int = 60  # landed and trained on before day 0 (windows warm up, labels mature)
    rows_per_day: int = 2000
    label_maturity_days: int = 7
    # Retrain on the last 5 weeks of mature data, the newest 10% for validation and 10% for the test split:
    # with all history the new pattern would stay a minority of the train split for months.
    training_lookback_days: int = 35
    validation_share: float = 0.1
    test_share: float = 0.1
    seed: int = 7
    # Share of the accounts that fade and stop (the churn project's signal; datagen/churn.py); 0: none.
    churn_share: float = 0.0
    port: int = 8000
    rollout_replay: int = 300
    canary_share: float = 0.25
    evidently_reports: bool = False  # Evidently's HTML per day costs seconds; the drift table is always written
    # Gate thresholds for the first champion only (candidate_evaluation config); None keeps the defaults.
    # Tests that exercise the loop, not the gates, open them so a short history always yields a champion.
    initial_gates: dict | None = None
    # Age bands with fewer frauds than this in a retraining's test split are not compared by the fairness
    # gate. The simulation's test splits hold about 3.5 days (a few dozen frauds in all); at the product's
    # default of 10, a recall on 10 frauds (95% interval about +-0.3) made the gate a coin toss.
    fairness_min_frauds: int = 30
    # The oracle is retrained at the end of every simulated day (two fits on every label known): False
    # leaves its columns empty where only the platform's path is under test.
    oracle: bool = True
    # Its XGBoost threads: the simulation is idle while it fits. Fixed, so its models do not depend on the machine.
    oracle_threads: int = 2
    # Its bound on boosting rounds (early stopping picks the count below it); None: the platform's own bound
    # (XGBoostConfig.n_estimators). A test of the loop's wiring, not of the oracle's quality, sets it low.
    oracle_max_trees: int | None = None
    # The A/B verdict a canary needs before production ("off", "better", "not worse"), the relative change of the
    # champion's cost it must be able to detect (0: the declaration's) and the days it may run.
    ab_test_required: str = "off"
    ab_min_effect: float = 0.0
    ab_max_days: int = 0
    # Retrainings the simulation launches itself after the sensors of a day: (day index, the candidate's
    # XGBoostConfig overrides), e.g. (14, {"false_negative_cost": 3.0}): a setting changed by mistake.
    forced_retrainings: tuple[tuple[int, dict], ...] = ()
    # Labels that make retraining_sensor retrain (MLOPS_RETRAIN_NEW_LABELS); None: 30 days of rows, a monthly
    # retraining on a stable world. At 14 days' worth a plain 60-day history retrained four times by design,
    # each a chance to promote a model that is worse within the gates' tolerance; drift and performance
    # triggers, not label volume, answer a changed world.
    retrain_new_labels: int | None = None
    # Retraining also learns the frauds confirmed before their transactions matured (MLOPS_TRAIN_ON_EARLY_FRAUDS):
    # a customer report arrives within 3 days, a chargeback by maturity - 3, so a new pattern reaches the train
    # split days before its legitimate neighbours mature. The oracle learns them too.
    early_frauds: bool = True

    def __post_init__(self) -> None:
        if self.days < 1 or not 0 <= self.drift_day < self.days:
            raise ValueError(
                f"need days >= 1 and 0 <= drift_day < days, got days={self.days}, drift_day={self.drift_day}"
            )
        if self.history_days < 35 + self.label_maturity_days:
            raise ValueError(
                f"history_days must be >= {35 + self.label_maturity_days}: 30 days for the windowed features to warm up, "
                f"the label maturity ({self.label_maturity_days}) and a few days to train on; got {self.history_days}"
            )
        if self.oracle_max_trees is not None and self.oracle_max_trees < 1:
            raise ValueError(f"oracle_max_trees must be >= 1 (or None), got {self.oracle_max_trees}")
        # Before the run resets anything: the same rules as the generator's, on the simulated days.
        check_bad_days(self.bad_days, self.days)


@contextlib.contextmanager
def isolated_home(home: Path, **overrides: str) -> Iterator[Settings]:
    """The environment of a simulation in `home` (nothing inherited from INHERITED_VARIABLES, `overrides`
    set); the caller's environment is restored afterwards, including what the simulation exported."""
    saved = dict(os.environ)
    for key in INHERITED_VARIABLES:
        os.environ.pop(key, None)
    os.environ["MLOPS_HOME"] = str(home)
    os.environ.update(overrides)
    try:
        yield Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# The simulation's label-volume policy in days of transactions (SimulationSpec.retrain_new_labels).
LABEL_VOLUME_DAYS = 30


def _merge(*configs: dict | None) -> dict:
    merged: dict = {}
    for config in configs:
        for key, value in (config or {}).items():
            merged[key] = (
                _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
            )
    return merged


def _rollout_config(spec: SimulationSpec) -> dict:
    # Traffic is replayed from the warehouse during the rollout: the simulation sends none while a run is going.
    return {
        "ops": {
            "shadow_endpoint": {
                "config": {"replay_requests": spec.rollout_replay, "min_requests": min(100, spec.rollout_replay)}
            },
            "canary_endpoint": {
                "config": {"replay_requests": int(spec.rollout_replay / spec.canary_share), "share": spec.canary_share}
            },
            "champion_model": {
                "config": {
                    "reason": "staged rollout: staging, shadow and canary passed",
                    "actor": "simulation",
                    **_ab_config(spec),
                }
            },
        }
    }


def _ab_config(spec: SimulationSpec) -> dict:
    """champion_model's A/B settings in every run that may promote: the rollout's and the A/B sensor's."""
    return {
        "ab_test_required": spec.ab_test_required,
        "ab_min_effect": spec.ab_min_effect,
        "ab_max_days": spec.ab_max_days,
    }


def _retraining_config(spec: SimulationSpec) -> dict:
    """retraining_job as the sensors launch it here: the rollout's replay, and the simulation's splits."""
    splits = {
        "ops": {
            "training_set": {"config": {"validation_share": spec.validation_share, "test_share": spec.test_share}},
            "candidate_evaluation": {"config": {"fairness_min_positives": spec.fairness_min_frauds}},
        }
    }
    return _merge(_rollout_config(spec), splits)


def _run(
    defs: dg.Definitions, job_name: str, tags: dict | None = None, run_config: dict | None = None
) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, tags=tags or {}, run_config=_merge(QUIET, run_config), raise_on_error=False
        )


class StageFailed(RuntimeError):
    """A run of the platform stopped: which stage, which checks (each with what it measured against its
    bound), and what the user can do next."""

    def __init__(self, stage: str, job: str, failures: tuple[str, ...], next_step: str) -> None:
        self.stage, self.job, self.failures, self.next_step = stage, job, failures, next_step
        super().__init__(f"{stage} ({job}) stopped: {'; '.join(failures) or 'a step failed'}")


# What a user can do when a stage of the history's set-up stops.
NEXT_STEPS = {
    DATA_LAYER_JOB: "the rejected rows are in quarantine.rejected_rows; fix the landed file and run `mlops ingest --start DAY`.",
    TRAINING_JOB: "the evaluation report (reports/evaluation-latest.html) shows each gate's number against its bound; "
    "more history (--days) or more rows per day (--rows-per-day) give the gates more evidence.",
    ROLLOUT_JOB: "the endpoint's log is in data/serving/production/; retry the rollout with `mlops rollout --replay 300`.",
}


def _failed(result: dg.ExecuteInProcessResult) -> str:
    """What stopped a run: its failed blocking checks, else its failed steps."""
    steps = [e.step_key for e in result.all_events if e.is_step_failure]
    return ", ".join(failed_checks(result) or steps) or "failed"


def _land(settings: Settings, day: SimulatedDay) -> None:
    landed = {"accounts": day.accounts, "transactions": day.transactions, "labels": day.labels}
    for source in SOURCES:
        write_partition(
            settings.landing_dir, source, day.date, landed[source].table, "parquet", landed[source].file_fault
        )


def _day_end(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def _requests(day: SimulatedDay) -> list[dict]:
    rows = day.clean_transactions.select(list(RAW_FIELDS)).to_pylist()
    for row in rows:
        row["event_timestamp"] = row["event_timestamp"].replace(tzinfo=None).isoformat()
        row["amount"] = float(row["amount"])
    return rows


def _latest_metadata(key: str, day: dt.date) -> dict:
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day.isoformat()]), limit=1
        ).records
    if not records:
        return {}
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def _ab_line(metadata: dict) -> str:
    """The day's A/B verdict for the timeline: version, verdict, the smaller arm's rows against those needed."""
    if "verdict" not in metadata:
        return ""
    rows = min(metadata.get("canary_rows") or 0, metadata.get("champion_rows") or 0)
    return (
        f"A/B v{metadata['version']} vs v{metadata['champion_version']}: {metadata['verdict']} "
        f"({rows} of {metadata.get('required_rows_per_arm') or '?'} matured rows per arm; {metadata['status']})"
    )


def sensor_cursor_file(settings: Settings) -> Path:
    """Where the in-process daemon keeps its sensors' cursors: inside DAGSTER_HOME, wiped with the instance."""
    return settings.dagster_home / "simulation" / "sensor_cursors.json"


class ClosedLoop:
    def __init__(self, settings: Settings, spec: SimulationSpec, echo: Callable[[str], None] = print) -> None:
        self.spec = spec
        self.echo = echo
        # The first champion learns from all the history; retraining takes the lookback window (set after it).
        self.settings = replace(
            settings,
            label_maturity_days=spec.label_maturity_days,
            training_lookback_days=None,
            train_on_early_frauds=spec.early_frauds,
        )
        self.records: list[DayRecord] = []
        self.scores: list[DayScores] = []
        self.frozen: LoadedModel | None = None
        self.oracle: Oracle | None = None
        self.log_after: int | None = None
        self.paths = server.ServingPaths.for_role(self.settings, "production")

    # -- set-up -------------------------------------------------------------------------------
    @property
    def first_day(self) -> dt.date:
        """The simulation's calendar: history and simulated days end the day before the platform's today."""
        return self.settings.today - dt.timedelta(days=self.spec.history_days + self.spec.days)

    def _environment(self) -> None:
        """Before the code location loads: its resources read these once. The endpoint and the calendar are
        recorded in MLOPS_HOME too, so later commands (`mlops rollout`, `mlops ui`) see the same ones."""
        url = f"http://127.0.0.1:{self.spec.port}"
        self.settings = replace(self.settings, serving_url=url)
        record_settings(
            self.settings.home,
            MLOPS_SERVING_URL=url,
            MLOPS_TODAY=self.settings.clock,
            MLOPS_PARTITIONS_START=self.first_day.isoformat(),
        )
        os.environ.setdefault(
            "MLOPS_RETRAIN_NEW_LABELS",
            str(
                self.spec.retrain_new_labels
                if self.spec.retrain_new_labels is not None
                else self.spec.rows_per_day * LABEL_VOLUME_DAYS
            ),
        )
        self.settings.export()

    def start(self) -> tuple[dg.Definitions, list[SimulatedDay]]:
        reset_local_state(self.settings, self.spec.port)
        self._environment()
        prepare_instance(self.settings)
        from mlops_assets.transform.manifest import ensure_manifest

        ensure_manifest()
        from mlops_assets.definitions import build_definitions

        defs = build_definitions(self.settings)

        spec = self.spec
        total = spec.history_days + spec.days
        first = self.first_day
        demo = DemoSpec(
            start=first,
            days=total,
            rows_per_day=spec.rows_per_day,
            seed=spec.seed,
            scenario=spec.scenario,
            drift_day=spec.history_days + spec.drift_day,
            bad_days=tuple((spec.history_days + index, name) for index, name in spec.bad_days),
            label_maturity_days=spec.label_maturity_days,
            churn_share=spec.churn_share,
        )
        days = list(simulate(demo))
        history, simulated = days[: spec.history_days], days[spec.history_days :]
        started = time.monotonic()
        for day in history:
            _land(self.settings, day)
        tags = {
            "dagster/asset_partition_range_start": history[0].date.isoformat(),
            "dagster/asset_partition_range_end": history[-1].date.isoformat(),
        }
        gates = {"ops": {"candidate_evaluation": {"config": spec.initial_gates}}} if spec.initial_gates else None
        for job, job_tags, config in ((DATA_LAYER_JOB, tags, None), (TRAINING_JOB, {}, gates)):
            result = _run(defs, job, job_tags, config)
            if not result.success:
                raise StageFailed(
                    f"the history's {job}", job, failed_checks(result) or (_failed(result),), NEXT_STEPS[job]
                )
        server.ensure_admin_token(self.settings)
        pid = server.start_detached(self.settings, port=spec.port)
        result = _run(defs, ROLLOUT_JOB, {}, _rollout_config(spec))
        if not result.success:
            raise StageFailed(
                "the first rollout", ROLLOUT_JOB, failed_checks(result) or (_failed(result),), NEXT_STEPS[ROLLOUT_JOB]
            )
        client = mlflow.MlflowClient(registry.tracking_uri(self.settings.mlflow_dir))
        champion = registry.alias_version(client, registry.CHAMPION)
        self.frozen = load_version(client, champion)
        if spec.oracle:
            self.oracle = self._start_oracle(history)
        self.settings = replace(self.settings, training_lookback_days=spec.training_lookback_days)
        self.settings.export()
        # The resources hold the settings they were built with: retraining must see the lookback window.
        defs = build_definitions(self.settings)
        self.echo(
            f"History {history[0].date}..{history[-1].date}: {spec.history_days} days x ~{spec.rows_per_day} transactions loaded, "
            f"champion v{champion} trained and rolled out to http://127.0.0.1:{spec.port} (pid {pid}) in {time.monotonic() - started:.0f} s"
        )
        return defs, simulated

    def _start_oracle(self, history: list[SimulatedDay]) -> Oracle:
        """The oracle as of the end of the history: every history transaction with its features as of its own
        time (from the warehouse, as the first champion's training set read them) and every label landed."""
        import duckdb

        from mlops_assets.training.models import XGBoostConfig
        from mlops_core.features.offline import point_in_time_features_sql

        params = replace(XGBoostConfig().params(), n_jobs=self.spec.oracle_threads)
        if self.spec.oracle_max_trees is not None:
            params = replace(params, n_estimators=self.spec.oracle_max_trees)
        oracle = Oracle(params, validation_share=self.spec.validation_share)
        con = duckdb.connect(str(self.settings.duckdb_path), read_only=True)
        try:
            oracle.add_events(con.execute(point_in_time_features_sql()).df())
        finally:
            con.close()
        for day in history:
            oracle.add_labels(day.labels.table.to_pandas())
        oracle.refit(_day_end(history[-1].date))
        return oracle

    def _teach_oracle(self, day: SimulatedDay, requests: list[dict], vectors: list[dict]) -> None:
        """After day `day` is served: its transactions (the logged vectors) and its labels; refit for tomorrow."""
        events = pd.DataFrame(vectors)
        events["transaction_id"] = [r["transaction_id"] for r in requests]
        events["event_timestamp"] = pd.to_datetime([r["event_timestamp"] for r in requests])
        self.oracle.add_events(events)
        self.oracle.add_labels(day.labels.table.to_pandas())
        self.oracle.refit(_day_end(day.date))

    # -- one day ------------------------------------------------------------------------------
    def _serve(self, client: EndpointClient, day: SimulatedDay) -> DayScores:
        """Send the day's transactions one by one; score the logged feature vectors with the frozen model."""
        requests = _requests(day)
        answers = [client.predict(tx) for tx in requests]
        ids = {a["transaction_id"] for a in answers}
        deadline = time.monotonic() + 30
        while True:  # the log writer commits every 50 ms
            new_rows = read_predictions(self.paths.predictions, after_id=self.log_after)
            logged = new_rows[
                new_rows["variant"].isin(("champion", "canary"))
                & new_rows["transaction_id"].isin(ids)
                & new_rows["features"].notna()
            ]
            if len(logged) >= len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if len(new_rows):
            self.log_after = int(new_rows["id"].max())
        logged = logged.drop_duplicates("transaction_id").set_index("transaction_id")
        vectors = [orjson.loads(logged.at[a["transaction_id"], "features"]) for a in answers]
        X = encode_rows(vectors)
        frozen_score = self.frozen.score(X).astype(float)
        oracle_score = oracle_decision = None
        if self.oracle is not None and self.oracle.ready:
            oracle_score = self.oracle.score(X)
            oracle_decision = oracle_score >= self.oracle.threshold
        if self.oracle is not None:
            self._teach_oracle(day, requests, vectors)
        return DayScores(
            is_fraud=np.asarray(day.is_fraud, dtype=bool),
            served_score=np.array([a["fraud_probability"] for a in answers], dtype=float),
            served_decision=np.array([a["is_fraud"] for a in answers], dtype=bool),
            frozen_score=frozen_score,
            frozen_decision=frozen_score >= self.frozen.threshold,
            oracle_score=oracle_score,
            oracle_decision=oracle_decision,
        )

    def _running_ab_test(self) -> str | None:
        """The version whose A/B test is running, if one is."""
        import duckdb

        from mlops_core import ab_tests

        con = duckdb.connect(str(self.settings.duckdb_path))
        try:
            running = ab_tests.running(con, registry.MODEL_NAME)
        finally:
            con.close()
        return running[-1].version if running else None

    def _forced_retraining(self, defs: dg.Definitions, day: SimulatedDay, overrides: dict) -> TickResult:
        """retraining_job launched by the simulation itself, its candidate's config changed by `overrides`."""
        reason = "simulation: retraining with " + (
            ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "the defaults"
        )
        config = _merge(_retraining_config(self.spec), {"ops": {"fraud_model_candidate": {"config": dict(overrides)}}})
        result = _run(defs, RETRAINING_JOB, {"mlops/trigger": "simulation", "mlops/reasons": reason}, config)
        run = LaunchedRun("simulation", RETRAINING_JOB, result.run_id, result.success, reason, failed_checks(result))
        return TickResult("simulation", None, (run,))

    def day(
        self, defs: dg.Definitions, daemon: InProcessDaemon, client: EndpointClient, index: int, day: SimulatedDay
    ) -> DayRecord:
        started = time.monotonic()
        phases: dict[str, float] = {}

        def lap(name: str) -> None:
            phases[name] = time.monotonic() - started - sum(phases.values())

        _land(self.settings, day)
        lap("land")
        loaded = _run(defs, DATA_LAYER_JOB, {"dagster/partition": day.date.isoformat()})
        lap("data_layer")
        scores = self._serve(client, day)
        self.scores.append(scores)
        lap("serve")
        monitoring_config = {"ops": {"feature_drift": {"config": {"evidently_report": self.spec.evidently_reports}}}}
        monitored = _run(defs, MONITORING_JOB, {"dagster/partition": day.date.isoformat()}, monitoring_config)
        lap("monitoring")
        drift = _latest_metadata("feature_drift", day.date)
        prediction = _latest_metadata("prediction_drift", day.date)
        concept = _latest_metadata("concept_drift", day.date)
        ab = _latest_metadata("ab_verdict", day.date)
        before = client.deployment().get("champion_version")
        ticks: list[TickResult] = [daemon.tick(name) for name in SENSORS]
        forced = [overrides for at, overrides in self.spec.forced_retrainings if at == index]
        running = self._running_ab_test() if forced else None
        for overrides in forced:
            if running is not None:
                # A new challenger would end the running test before its verdict: the forced retraining waits.
                ticks.append(TickResult("simulation", f"held: the A/B test of v{running} is running", ()))
                continue
            ticks.append(self._forced_retraining(defs, day, overrides))
        after = client.deployment().get("champion_version")
        lap("sensors")
        triggers, outcomes = [], []
        for tick in ticks:
            for run in tick.runs:
                triggers.append(f"{tick.sensor}: {run.reasons}")
                outcomes.append(
                    f"{run.job.removesuffix('_job').replace('_', ' ')} {run.run_id[:8]} "
                    + (
                        "succeeded"
                        if run.success
                        else "stopped by " + (", ".join(run.failed_checks) or "a failed step")
                    )
                )
            if not tick.runs and tick.skip_message and tick.skip_message.startswith("held"):
                triggers.append(f"{tick.sensor} {tick.skip_message[:120]}")
        watched = [o.metadata for tick in ticks for o in tick.observations]
        flagged_hours = [m["hour"].value for m in watched if m["flagged"].value]
        window = self.scores[-ROLLING_DAYS:]
        promoted = after if after != before else None
        return DayRecord(
            day=day.date.isoformat(),
            index=index,
            affected=day.affected,
            champion=after,
            transactions=len(scores.is_fraud),
            frauds=int(scores.is_fraud.sum()),
            served_recall=recall(scores.is_fraud, scores.served_decision),
            frozen_recall=recall(scores.is_fraud, scores.frozen_decision),
            served_auc_pr_7d=pooled_auc_pr(window, "served"),
            frozen_auc_pr_7d=pooled_auc_pr(window, "frozen"),
            oracle_recall=recall(scores.is_fraud, scores.oracle_decision)
            if scores.oracle_decision is not None
            else None,
            oracle_auc_pr_7d=pooled_auc_pr(window, "oracle"),
            served_auc_pr=pooled_auc_pr([scores], "served"),
            frozen_auc_pr=pooled_auc_pr([scores], "frozen"),
            oracle_auc_pr=pooled_auc_pr([scores], "oracle"),
            data_layer="ok" if loaded.success else _failed(loaded),
            drift_share=drift.get("share_drifted"),
            prediction_psi=prediction.get("psi"),
            recent_recall=concept.get("recent_recall"),
            triggers=triggers,
            retraining="; ".join(outcomes),
            promoted=promoted,
            seconds=sum(phases.values()),
            # The day's traffic is replayed between the data layer and monitoring here, but in production it
            # flows alongside: it is not on the path from landing to a new champion.
            landing_to_champion_seconds=(sum(phases.values()) - phases["serve"]) if promoted else None,
            phases=phases,
            monitoring="ok" if monitored.success else _failed(monitored),
            hours_judged=len(watched),
            hours_flagged=flagged_hours,
            ab_test=_ab_line(ab),
        )

    def run(self) -> list[DayRecord]:
        defs, simulated = self.start()
        run_configs = {
            RETRAINING_JOB: _merge(QUIET, _retraining_config(self.spec)),
            PROMOTE_JOB: _merge(QUIET, {"ops": {"champion_model": {"config": _ab_config(self.spec)}}}),
            ROLLBACK_JOB: QUIET,
        }
        # Beside the instance whose storage ids the cursors count: a fresh instance with an old cursor
        # file made the sensors skip every new verdict (a re-run of the demo never retrained).
        daemon = InProcessDaemon(defs, sensor_cursor_file(self.settings), run_configs)
        from mlops_core.monitoring.timeline import HEADER

        self.echo(HEADER)
        with EndpointClient(f"http://127.0.0.1:{self.spec.port}") as client:
            for index, day in enumerate(simulated):
                record = self.day(defs, daemon, client, index, day)
                self.records.append(record)
                self.echo(format_line(record))
        return self.records

    def stop_endpoint(self) -> int | None:
        return server.stop(self.settings, self.spec.port)
