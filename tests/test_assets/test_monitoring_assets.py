"""Monitoring assets materialized over a generated history with a promoted champion.

The drift scenario shifts spending from day 40: its days must show drift against the
training split, and the days before must not.

The contract tests at the end make each asset's retraining verdict trigger and read it back through the
sensors' own reader: a field renamed in a writer fails them without any change here.
"""

from datetime import date, timedelta

import dagster as dg
import duckdb
import mlflow
import pytest
from generated_history import loaded_history, promote_a_champion

from mlops_assets.monitoring.drift import DRIFT_TABLE, FEATURE_DRIFT_CHECK, feature_drift
from mlops_assets.monitoring.estimated_performance import ESTIMATED_PERFORMANCE_CHECK, estimated_performance
from mlops_assets.monitoring.labels import LABEL_VOLUME_CHECK, label_volume
from mlops_assets.monitoring.model_quality import (
    CHAMPION_PERFORMANCE_CHECK,
    PREDICTION_DRIFT_CHECK,
    concept_drift,
    prediction_drift,
)
from mlops_assets.training.models import FRAUD_MODEL_CANDIDATE, TRAINING_CUTOFF
from mlops_core import registry
from resources.alerts import AlertResource
from resources.environment import build_resources
from resources.retraining import RetrainingPolicy
from sensors.retraining import performance_sensor, read_verdicts, retraining_sensor

pytestmark = pytest.mark.slow

START = date(2026, 1, 5)
DAYS = 56
LAST_DAY = START + timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    with loaded_history(tmp_path_factory.mktemp("monitoring-home"), START, DAYS, rows_per_day=300, seed=33) as settings:
        promote_a_champion(settings)
        yield settings


def materialize(
    settings, asset, day: date, config: dict | None = None, policy: RetrainingPolicy | None = None, instance=None
):
    resources = build_resources(settings)
    if policy is not None:
        resources["retraining_policy"] = policy
    return dg.materialize(
        [asset],
        partition_key=day.isoformat(),
        resources=resources,
        instance=instance or dg.DagsterInstance.ephemeral(),
        run_config={"ops": {asset.op.name: {"config": config}}} if config else None,
    )


def metadata(result, key: str) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items() if k == key or key == "*"}


def test_feature_drift_is_recorded_with_a_report_for_people(settings):
    day = START + timedelta(days=5)
    result = materialize(settings, feature_drift, day)
    assert result.success
    meta = metadata(result, "*")
    assert meta["transactions"] > 200 and meta["reference_rows"] > 1000
    assert 0.0 <= meta["share_drifted"] <= 1.0 and meta["dataset_drift"] == (meta["share_drifted"] >= 0.5)
    # Day 6 of the history: the 7- and 30-day windows still reach before the first transaction, and the
    # calendar never matches a multi-week reference; all are compared and shown, none is counted.
    left_out = meta["left_out_of_share"]
    assert {"day_of_week", "is_weekend", "txn_count_7d", "txn_count_30d", "amount_to_mean_30d"} <= set(left_out)
    # The 1-hour window is warm; the champion may still barely use it (a reason of its own, checked below).
    assert not left_out.get("txn_count_1h", "").startswith("window not warm")
    assert not left_out.get("amount_usd", "").startswith("window not warm")
    assert meta["counted_features"] == 31 - len(left_out) == len(meta["counted"])
    assert not set(meta["counted"]) & set(left_out)
    assert not set(meta["drifted_features"]) & set(left_out)
    report = (settings.reports_dir / f"drift-{day.isoformat()}.html").read_text()
    assert "<html" in report.lower() and "amount_usd" in report
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = con.execute(
            f"select count(*), count(distinct feature) from {DRIFT_TABLE} where day = ?", [day]
        ).fetchall()[0]
    assert rows[0] == rows[1] == 31


def test_feature_drift_flags_a_shifted_day(settings, tmp_path):
    """The same day before and after its amounts are multiplied tenfold in the warehouse: the amount
    features drift only after. (Windowed counts of a short demo history drift by themselves as the
    windows fill up, so the test compares the day with itself rather than expecting no drift.)"""
    day = LAST_DAY
    amounts = {"amount_usd", "log_amount_usd"}
    before = set(
        metadata(materialize(settings, feature_drift, day, {"evidently_report": False}), "drifted_features")[
            "drifted_features"
        ]
    )
    assert not amounts & before
    # The warehouse is the module's: the day is put back for the tests that run after this one, in any order.
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("update marts.transactions_enriched set amount_usd = amount_usd * 10 where event_date = ?", [day])
    try:
        result = materialize(settings, feature_drift, day, {"evidently_report": False})
        drifted = set(metadata(result, "drifted_features")["drifted_features"])
        # Rewriting a day replaces its rows.
        materialize(settings, feature_drift, day, {"evidently_report": False})
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            rows = con.execute(f"select count(*) from {DRIFT_TABLE} where day = ?", [day]).fetchall()[0][0]
            compared = {
                f
                for (f,) in con.execute(
                    f"select feature from {DRIFT_TABLE} where day = ? and drifted", [day]
                ).fetchall()
            }
        left_out = metadata(result, "left_out_of_share")["left_out_of_share"]
    finally:
        with duckdb.connect(str(settings.duckdb_path)) as con:
            con.execute(
                "update marts.transactions_enriched set amount_usd = amount_usd / 10 where event_date = ?", [day]
            )
    # Every feature is compared; the share counts those the champion leans on.
    assert amounts <= compared
    assert amounts - set(left_out) <= drifted and not drifted & set(left_out)
    assert rows == 31


def test_an_ordinary_warm_day_is_not_drift_though_its_weekday_differs_from_the_reference(settings):
    """The false trigger of the plain demo history: one day's weekday against a multi-week reference drifted
    on every day. It is still measured (and drifts), but the share that retrains does not count it."""
    day = LAST_DAY - timedelta(days=2)
    meta = metadata(materialize(settings, feature_drift, day, {"evidently_report": False}), "*")
    left_out = meta["left_out_of_share"]
    # Every window is warm by now: what is left out is the calendar and what the champion barely uses.
    barely = {f for f, why in left_out.items() if why.startswith("barely used by the champion (version ")}
    assert set(left_out) - barely == {"day_of_week", "is_weekend"}
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        calendar = dict(
            con.execute(
                f"select feature, drifted from {DRIFT_TABLE} where day = ? and feature in ('day_of_week', 'is_weekend')",
                [day],
            ).fetchall()
        )
    assert calendar == {"day_of_week": True, "is_weekend": True}
    assert meta["share_drifted"] < 0.5 and not meta["dataset_drift"]
    assert meta["counted_features"] == 31 - len(left_out) == len(meta["counted"]) >= 5


def test_feature_drift_of_an_empty_day_says_so(settings):
    result = materialize(settings, feature_drift, START - timedelta(days=3))
    assert result.success and metadata(result, "transactions")["transactions"] == 0


def test_label_volume_counts_labels_after_the_champions_cutoff(settings):
    mlflow.set_tracking_uri(registry.tracking_uri(settings.mlflow_dir))
    client = mlflow.MlflowClient()
    champion = registry.alias_version(client, registry.CHAMPION)
    cutoff = client.get_model_version(registry.MODEL_NAME, champion).tags["training_cutoff"]
    assert cutoff.startswith((LAST_DAY + timedelta(days=1)).isoformat())
    result = materialize(settings, label_volume, LAST_DAY)
    meta = metadata(result, "*")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        landed = con.execute("select count(*) from marts.label_events where landed_date = ?", [LAST_DAY]).fetchall()[0][
            0
        ]
    assert meta["labels_landed"] == landed > 0
    assert meta["champion_version"] == champion
    # The champion was trained with a cutoff at the end of the newest day: nothing newer exists yet.
    assert meta["new_labels_since_cutoff"] == 0
    # Move the cutoff back ten days: the labels of those days become new evidence. The champion is the
    # module's: its cutoff is put back for the tests that run after this one, in any order.
    earlier = (LAST_DAY - timedelta(days=9)).isoformat() + "T00:00:00+00:00"
    client.set_model_version_tag(registry.MODEL_NAME, champion, "training_cutoff", earlier)
    try:
        moved = metadata(materialize(settings, label_volume, LAST_DAY), "*")
    finally:
        client.set_model_version_tag(registry.MODEL_NAME, champion, "training_cutoff", cutoff)
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        expected = con.execute(
            "select count(*) from marts.label_events where labeled_at > ? and labeled_at < ?",
            [LAST_DAY - timedelta(days=9), LAST_DAY + timedelta(days=1)],
        ).fetchall()[0][0]
    assert moved["new_labels_since_cutoff"] == expected > 0


def _labels_between(settings, since: date, until: date) -> int:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return con.execute(
            "select count(*) from marts.label_events where labeled_at > ? and labeled_at < ?", [since, until]
        ).fetchall()[0][0]


def _candidate_trained(instance, cutoff: str) -> None:
    """What fraud_model_candidate records on every run, a gate stopping it or not: its training set's cutoff."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=FRAUD_MODEL_CANDIDATE, metadata={TRAINING_CUTOFF: cutoff})
    )


def test_label_volume_counts_from_a_newer_candidates_cutoff_so_a_stopped_candidate_is_not_retrained_on_the_same_labels(
    settings,
):
    """The champion learnt up to day -9; a candidate trained since learnt up to day -3 and was stopped by a gate.
    New evidence is what came after day -3: counting from the champion would ask for the same retraining again
    after every cool-down. A candidate older than the champion does not pull the count back."""
    client, champion = _champion_client(settings)
    cutoff = client.get_model_version(registry.MODEL_NAME, champion).tags["training_cutoff"]
    champion_day, candidate_day, end = (
        LAST_DAY - timedelta(days=9),
        LAST_DAY - timedelta(days=3),
        LAST_DAY + timedelta(days=1),
    )
    client.set_model_version_tag(registry.MODEL_NAME, champion, "training_cutoff", f"{champion_day}T00:00:00+00:00")
    # Between the two cutoffs, so that a count from the wrong one is far off.
    threshold = (_labels_between(settings, champion_day, end) + _labels_between(settings, candidate_day, end)) // 2
    policy = RetrainingPolicy(new_labels=threshold)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            _candidate_trained(instance, f"{LAST_DAY - timedelta(days=30)}T00:00:00+00:00")
            older = metadata(materialize(settings, label_volume, LAST_DAY, policy=policy, instance=instance), "*")
            older_verdict, older_request = read_back(instance, LABEL_VOLUME_CHECK, retraining_sensor, policy)
        with dg.DagsterInstance.ephemeral() as instance:
            _candidate_trained(instance, f"{candidate_day}T00:00:00+00:00")
            newer = materialize(settings, label_volume, LAST_DAY, policy=policy, instance=instance)
            verdict, request = read_back(instance, LABEL_VOLUME_CHECK, retraining_sensor, policy)
    finally:
        client.set_model_version_tag(registry.MODEL_NAME, champion, "training_cutoff", cutoff)
    assert older["new_labels_since_cutoff"] == _labels_between(settings, champion_day, end) >= threshold
    assert older["counted_since"] == f"{champion_day}T00:00:00+00:00 (champion)"
    assert older_verdict.triggered and isinstance(older_request, dg.RunRequest)
    meta = metadata(newer, "*")
    assert meta["new_labels_since_cutoff"] == _labels_between(settings, candidate_day, end) < threshold
    assert meta["counted_since"] == f"{candidate_day}T00:00:00+00:00 (last candidate)"
    assert meta["champion_training_cutoff"] == f"{champion_day}T00:00:00+00:00"
    assert not verdict.triggered and verdict.values["counted_from"] == "last candidate"
    assert "since the last candidate's training cutoff" in verdict.reason
    assert verdict.values["training_cutoff"] == f"{candidate_day}T00:00:00+00:00"
    assert not isinstance(request, dg.RunRequest)


def _champion_client(settings) -> tuple[mlflow.MlflowClient, str]:
    mlflow.set_tracking_uri(registry.tracking_uri(settings.mlflow_dir))
    client = mlflow.MlflowClient()
    return client, registry.alias_version(client, registry.CHAMPION)


def read_back(instance, check: dg.AssetCheckKey, sensor, policy: RetrainingPolicy):
    """The one verdict the sensors' reader finds for `check`, and what the sensor does with it."""
    read = read_verdicts(dg.build_sensor_context(instance=instance), (check,))
    assert read.errors == [] and read.pending == 0
    (verdict,) = read.verdicts
    context = dg.build_sensor_context(
        instance=instance, resources={"retraining_policy": policy, "alerts": AlertResource()}
    )
    return verdict, sensor(context)


def test_contract_a_feature_drift_verdict_reaches_the_retraining_sensor(settings):
    """Amounts ten times larger on a day drift the two amount features: 2 of 31 features reach a policy of 6%."""
    day, policy = LAST_DAY - timedelta(days=7), RetrainingPolicy(drift_share=0.06)
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("update marts.transactions_enriched set amount_usd = amount_usd * 10 where event_date = ?", [day])
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            result = materialize(settings, feature_drift, day, {"evidently_report": False}, policy, instance)
            verdict, request = read_back(instance, FEATURE_DRIFT_CHECK, retraining_sensor, policy)
    finally:
        with duckdb.connect(str(settings.duckdb_path)) as con:
            con.execute(
                "update marts.transactions_enriched set amount_usd = amount_usd / 10 where event_date = ?", [day]
            )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert verdict.triggered and verdict.day == day.isoformat() and verdict.values["threshold"] == 0.06
    assert verdict.values["share_drifted"] == metadata(result, "share_drifted")["share_drifted"] >= 0.06
    assert isinstance(request, dg.RunRequest) and request.tags["mlops/reasons"] == verdict.reason
    assert verdict.reason.startswith(f"feature drift on {day}")


def test_contract_a_label_volume_verdict_reaches_the_retraining_sensor(settings):
    client, champion = _champion_client(settings)
    cutoff = client.get_model_version(registry.MODEL_NAME, champion).tags["training_cutoff"]
    earlier = (LAST_DAY - timedelta(days=9)).isoformat() + "T00:00:00+00:00"
    policy = RetrainingPolicy(new_labels=1)
    client.set_model_version_tag(registry.MODEL_NAME, champion, "training_cutoff", earlier)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            result = materialize(settings, label_volume, LAST_DAY, policy=policy, instance=instance)
            verdict, request = read_back(instance, LABEL_VOLUME_CHECK, retraining_sensor, policy)
    finally:
        client.set_model_version_tag(registry.MODEL_NAME, champion, "training_cutoff", cutoff)
    assert verdict.triggered and verdict.day == LAST_DAY.isoformat()
    assert (
        verdict.values["new_labels_since_cutoff"]
        == metadata(result, "new_labels_since_cutoff")["new_labels_since_cutoff"]
        > 0
    )
    assert isinstance(request, dg.RunRequest) and f"label volume on {LAST_DAY}" in request.tags["mlops/reasons"]


SWITCH = START + timedelta(days=5)


@pytest.fixture(scope="module")
def served(settings):
    """A prediction log of the champion over the whole history: scores of 0.05 except 0.9 on the last day
    (prediction drift), decisions right until SWITCH and wrong from it on (recall on recent frauds falls
    to zero; the matured decision errors step up)."""
    _, champion = _champion_client(settings)
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("create schema if not exists serving")
        con.execute(
            """
            create or replace table serving.prediction_log as
            with verdict as (
                select transaction_id, is_fraud from marts.label_events
                qualify row_number() over (partition by transaction_id order by labeled_at desc) = 1
            )
            select row_number() over (order by t.event_timestamp, t.transaction_id) as id, t.transaction_id,
                   case when t.event_date = $last then 0.9 else 0.05 end as score,
                   (case when t.event_date < $switch then coalesce(v.is_fraud, false) else not coalesce(v.is_fraud, false) end)::int as decision,
                   $version as model_version, 'champion' as variant, true as served, 'ok' as status
            from marts.transactions_enriched as t left join verdict as v using (transaction_id)
            """,
            {"last": LAST_DAY, "switch": SWITCH, "version": champion},
        )
    yield champion
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("drop table serving.prediction_log")


def test_contract_a_prediction_drift_verdict_reaches_the_retraining_sensor(settings, served):
    policy = RetrainingPolicy()
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(settings, prediction_drift, LAST_DAY, policy=policy, instance=instance)
        verdict, request = read_back(instance, PREDICTION_DRIFT_CHECK, retraining_sensor, policy)
    assert verdict.triggered and verdict.values["threshold"] == policy.prediction_psi
    assert verdict.values["psi"] == metadata(result, "psi")["psi"] >= policy.prediction_psi
    assert isinstance(request, dg.RunRequest) and f"prediction drift on {LAST_DAY}" in request.tags["mlops/reasons"]


def test_contract_a_concept_drift_verdict_reaches_the_performance_sensor(settings, served):
    policy = RetrainingPolicy()
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(settings, concept_drift, LAST_DAY, policy=policy, instance=instance)
        verdict, request = read_back(instance, CHAMPION_PERFORMANCE_CHECK, performance_sensor, policy)
    assert verdict.triggered and verdict.reason.startswith(f"model degraded on {LAST_DAY}")
    assert verdict.values["recent_recall"] == metadata(result, "recent_recall")["recent_recall"] == 0.0
    assert isinstance(request, dg.RunRequest) and request.tags["mlops/trigger"] == "performance_sensor"
    assert request.tags["mlops/reasons"] == verdict.reason


def test_contract_an_estimated_performance_verdict_reaches_the_performance_sensor(settings, served):
    """Every served score is 0.05 on the day: no ranking left, so even the upper bound of the estimated AUC-PR
    lies far below the champion's AUC-PR on its reference (its test split, logged at evaluation)."""
    policy = RetrainingPolicy()
    day = LAST_DAY - timedelta(days=3)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(settings, estimated_performance, day, {"draws": 50}, policy=policy, instance=instance)
        verdict, request = read_back(instance, ESTIMATED_PERFORMANCE_CHECK, performance_sensor, policy)
    meta = metadata(result, "*")
    assert meta["reference_rows"] > 0 and meta["served_scores"] >= 200
    assert verdict.triggered and verdict.reason.startswith(f"estimated performance drop on {day}")
    assert verdict.values["estimated_auc_pr_high"] == meta["estimated_auc_pr_high"]
    assert verdict.values["estimated_auc_pr_high"] < (1 - policy.estimated_auc_pr_drop) * meta["reference_auc_pr"]
    # Constant scores rank nothing: the estimated ROC AUC is a coin's.
    assert meta["estimated_roc_auc"] == pytest.approx(0.5)
    assert isinstance(request, dg.RunRequest) and request.tags["mlops/reasons"] == verdict.reason


def test_a_champion_promoted_below_the_minimums_is_provisional_and_asks_for_a_retraining(settings, served):
    """The evaluation tags a candidate whose own test metrics miss the minimums (registry.BELOW_MINIMUMS_TAG).
    Promoted anyway, as better than a failing champion, concept_drift fires on it every day, whatever its
    recall does, until a champion meets the minimums; untagged, the same day says nothing of the kind."""
    client, version = _champion_client(settings)
    run_id = client.get_model_version(registry.MODEL_NAME, version).run_id
    day = SWITCH - timedelta(days=1)
    policy = RetrainingPolicy()
    try:
        client.set_tag(run_id, registry.BELOW_MINIMUMS_TAG, "true")
        with dg.DagsterInstance.ephemeral() as instance:
            result = materialize(settings, concept_drift, day, policy=policy, instance=instance)
            verdict, request = read_back(instance, CHAMPION_PERFORMANCE_CHECK, performance_sensor, policy)
        assert verdict.triggered and verdict.values["provisional_champion"] is True
        assert f"provisional champion: version {version} was promoted below the quality minimums" in verdict.reason
        assert metadata(result, "provisional_champion")["provisional_champion"] is True
        assert isinstance(request, dg.RunRequest) and request.tags["mlops/reasons"] == verdict.reason
    finally:
        client.set_tag(run_id, registry.BELOW_MINIMUMS_TAG, "false")
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(settings, concept_drift, day, policy=policy, instance=instance)
    assert metadata(result, "provisional_champion")["provisional_champion"] is False
    assert "provisional" not in result.get_asset_check_evaluations()[0].description


def test_concept_drift_counts_a_cards_frauds_as_one_piece_of_evidence(settings, served):
    """A compromised card is used several times before it is blocked, and a model catches all of its frauds or
    none. The recall test then has fewer independent frauds than transactions: the asset measures the design
    effect on the recent frauds' cards (not their transactions: that would give exactly 1) and tests on the
    counts divided by it."""
    from mlops_core.monitoring.performance import calibration_drift, design_effect, recall_drop
    from mlops_core.monitoring.reads import latest_labels, served_decisions

    # A long window: the small history lands about two frauds a day.
    day, window = LAST_DAY, 40
    config = {"recall_window_days": window, "error_window_days": window}
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("create or replace table serving.prediction_log_kept as select * from serving.prediction_log")
        # Every card's frauds share one decision: caught on half of the cards, by a hash of the card.
        con.execute(
            """
            update serving.prediction_log as p set decision = (hash(t.account_id) % 2 = 0)::int
            from marts.transactions_enriched as t where t.transaction_id = p.transaction_id
            """
        )
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            result = materialize(settings, concept_drift, day, config, RetrainingPolicy(), instance)
            verdict, _ = read_back(instance, CHAMPION_PERFORMANCE_CHECK, performance_sensor, RetrainingPolicy())
        first_matured = day - timedelta(days=settings.label_maturity_days + window - 1)
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            log = served_decisions(con, served, day - timedelta(days=window - 1), day)
            labels = latest_labels(con, log, landed_by=day)
            older = served_decisions(con, served, first_matured, day)
            older_labels = latest_labels(con, older, landed_by=day)
    finally:
        with duckdb.connect(str(settings.duckdb_path)) as con:
            con.execute("create or replace table serving.prediction_log as select * from serving.prediction_log_kept")
            con.execute("drop table serving.prediction_log_kept")
    frauds = log[log["transaction_id"].map(labels.set_index("transaction_id")["is_fraud"]) == True]  # noqa: E712
    expected = design_effect(frauds["decision"].to_numpy(float), frauds["account_id"].to_numpy())
    meta = metadata(result, "*")
    assert meta["recent_frauds"] == len(frauds) and meta["recent_fraud_accounts"] == frauds["account_id"].nunique()
    assert frauds["account_id"].nunique() < len(frauds)  # the history's frauds do cluster by card
    assert meta["recall_design_effect"] == pytest.approx(expected) and expected > 1.3
    assert meta["effective_frauds"] == round(len(frauds) / expected) < len(frauds)
    test = recall_drop(
        int(frauds["decision"].sum()),
        len(frauds),
        meta["reference_recall"],
        reference_frauds=meta["reference_frauds"],
        design_effect=expected,
    )
    assert meta["recall_p_value"] == pytest.approx(test["p_value"])
    assert verdict.values["recall_design_effect"] == pytest.approx(expected)
    # Page-Hinkley and the calibration bound count the matured rows' cards: a legitimate card flagged once is
    # flagged every time, so its errors come together.
    y = older["transaction_id"].map(older_labels.set_index("transaction_id")["is_fraud"])
    matured = older[
        (y.notna() & (older["event_date"].dt.date < day - timedelta(days=settings.label_maturity_days - 1))).to_numpy()
    ]
    matured_y = y[matured.index].to_numpy(float)
    errors = design_effect(matured["decision"].to_numpy(float) != matured_y, matured["account_id"].to_numpy())
    residuals = design_effect(matured_y - matured["score"].to_numpy(float), matured["account_id"].to_numpy())
    assert meta["error_design_effect"] == pytest.approx(errors) and errors > 1.5
    assert meta["page_hinkley_threshold_applied"] == pytest.approx(RetrainingPolicy().page_hinkley_threshold * errors)
    assert verdict.values["page_hinkley_threshold"] == pytest.approx(meta["page_hinkley_threshold_applied"])
    assert meta["residual_design_effect"] == pytest.approx(residuals) and residuals > 1.1
    client, version = _champion_client(settings)
    run = client.get_run(client.get_model_version(registry.MODEL_NAME, version).run_id)
    bound = calibration_drift(
        matured_y,
        matured["score"].to_numpy(float),
        run.data.metrics["test_expected_calibration_error"],
        design_effect=residuals,
    )["bound"]
    assert meta["calibration_bound"] == pytest.approx(bound)
