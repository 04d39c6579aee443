"""The feature-store assets materialized on a small generated history: checks pass, and fail for the right reason."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import duckdb
import pytest
from generated_history import loaded_history

from mlops_assets.features.online_store import CHECK_FRESHNESS, CHECK_PARITY, online_features, online_store_fresh
from mlops_assets.features.training_set import CHECK_JOIN, CHECK_POINT_IN_TIME, training_set
from mlops_core.features import offline, online
from mlops_core.features.stores import SqliteOnlineStore
from resources.environment import build_resources

START = date(2026, 1, 5)
# Legitimate labels arrive 45 days after the event (the generator's maturity), so the
# history must be longer than that for the training set to hold both classes.
DAYS = 56
RUN_CONFIG = {"ops": {"training_set": {"config": {"leakage_sample_size": 150}}}}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    with loaded_history(tmp_path_factory.mktemp("feature-home"), START, DAYS, rows_per_day=200, seed=11) as settings:
        yield settings


def materialize_features(settings, assets=(training_set, online_features), checks=(online_store_fresh,)):
    return dg.materialize(
        [*assets, *checks],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        run_config=RUN_CONFIG if training_set in assets else None,
        raise_on_error=False,
    )


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_feature_assets_build_and_every_check_passes(settings):
    result = materialize_features(settings)
    assert result.success
    checks = check_results(result)
    assert {name for name, ev in checks.items() if ev.passed} == {
        CHECK_POINT_IN_TIME,
        CHECK_JOIN,
        CHECK_PARITY,
        CHECK_FRESHNESS,
    }
    metadata = result.asset_materializations_for_node("training_set")[0].metadata
    assert len(metadata["data_version"].value) == 16
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows, first_test, last_train = con.execute(
            "select count(*), min(event_timestamp) filter (split = 'test'), max(event_timestamp) filter (split = 'train') "
            "from features.training_set"
        ).fetchone()
        horizon = con.execute(
            "select max(landed_date) + 1 - interval 45 day from marts.transactions_enriched"
        ).fetchone()[0]
        newest = con.execute("select max(event_timestamp) from features.training_set").fetchone()[0]
    assert rows == metadata["dagster/row_count"].value > 1000
    assert last_train < first_test
    assert newest < horizon
    store = SqliteOnlineStore(settings.online_store_path)
    try:
        status = store.status()
    finally:
        store.close()
    assert status.events > 0 and status.accounts > 0
    assert status.watermark_us == status.offline_watermark_us


def test_rebuilding_the_same_data_gives_the_same_data_version(settings):
    first = materialize_features(settings, assets=(training_set,), checks=())
    second = materialize_features(settings, assets=(training_set,), checks=())
    versions = [
        r.asset_materializations_for_node("training_set")[0].metadata["data_version"].value for r in (first, second)
    ]
    assert versions[0] == versions[1]


def test_leaky_features_fail_the_point_in_time_check(settings, monkeypatch):
    honest = offline.point_in_time_features_sql

    def leaky(*args, **kwargs):
        # Frames that include the row itself: each transaction sees its own amount.
        return honest(*args, **kwargs).replace("exclude group", "")

    monkeypatch.setattr(offline, "point_in_time_features_sql", leaky)
    result = materialize_features(settings, assets=(training_set,), checks=())
    assert not result.success
    leakage = check_results(result)[CHECK_POINT_IN_TIME]
    assert not leakage.passed
    assert "feature values differ" in leakage.description
    assert leakage.metadata["mismatched_values"].value > 0


def test_online_path_that_sees_the_current_event_fails_parity(settings, monkeypatch):
    honest = online.OnlineFeatureService.get_online_features

    def record_then_look_up(self, requests):
        # A serving bug: the transaction is recorded a microsecond early, so it counts itself.
        self.record(
            [
                {**r, "event_timestamp": online.parse_timestamp(r["event_timestamp"]) - timedelta(microseconds=1)}
                for r in requests
            ]
        )
        return honest(self, requests)

    monkeypatch.setattr(online.OnlineFeatureService, "get_online_features", record_then_look_up)
    result = materialize_features(settings, assets=(online_features,), checks=())
    assert not result.success
    parity = check_results(result)[CHECK_PARITY]
    assert not parity.passed
    assert parity.metadata["mismatched_values"].value > 0


def test_store_behind_the_warehouse_is_not_fresh(settings):
    assert materialize_features(settings, assets=(online_features,), checks=()).success
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute(
            "create or replace table marts.transactions_enriched as "
            "select * from marts.transactions_enriched union all "
            "select * replace ('t-late' as transaction_id, event_timestamp + interval 2 hour as event_timestamp) "
            "from (select * from marts.transactions_enriched order by event_timestamp desc limit 1)"
        )
    try:
        result = dg.materialize(
            [online_features.to_source_asset(), online_store_fresh],
            resources=build_resources(settings),
            instance=dg.DagsterInstance.ephemeral(),
            selection=dg.AssetSelection.checks(online_store_fresh),
            raise_on_error=False,
        )
        freshness = check_results(result)[CHECK_FRESHNESS]
        assert not freshness.passed
        assert "trails the warehouse by 2.0 h" in freshness.description
    finally:
        with duckdb.connect(str(settings.duckdb_path)) as con:
            con.execute("delete from marts.transactions_enriched where transaction_id = 't-late'")


def test_the_training_set_in_buckets_is_one_step_per_bucket_and_the_same_table(settings):
    """slices=3: a plan step, three bucket steps and the combine; the table and its data version are those of
    one bucket (same rows; the data version may differ only in a float's last bit, so the rows are compared),
    and the bucket files are gone once the table holds them."""

    def build(slices: int):
        config = {"ops": {"training_set": {"config": {"leakage_sample_size": 150, "slices": slices}}}}
        result = dg.materialize(
            [training_set],
            resources=build_resources(settings),
            instance=dg.DagsterInstance.ephemeral(),
            run_config=config,
            raise_on_error=False,
        )
        assert result.success
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            rows = con.execute(
                "select * exclude (split), split from features.training_set order by transaction_id"
            ).fetchall()
        return result, rows

    one, rows_one = build(1)
    three, rows_three = build(3)
    steps = sorted({e.step_key for e in three.all_events if e.event_type_value == "STEP_SUCCESS"})
    assert steps == [
        "training_set.build_training_set_bucket[bucket_0]",
        "training_set.build_training_set_bucket[bucket_1]",
        "training_set.build_training_set_bucket[bucket_2]",
        "training_set.combine_training_set",
        "training_set.plan_training_set",
    ]
    metadata = three.asset_materializations_for_node("training_set")[0].metadata
    assert metadata["slices"].value == 3 and len(metadata["rows_by_bucket"].value) == 3
    assert sum(metadata["rows_by_bucket"].value) == metadata["dagster/row_count"].value == len(rows_one)
    assert len(rows_three) == len(rows_one)
    for a, b in zip(rows_three, rows_one):
        assert a[0] == b[0]
        for x, y in zip(a, b):
            assert x == y or (isinstance(y, float) and abs(x - y) <= 1e-12 * max(1.0, abs(y))), (a[0], x, y)
    assert all(check.passed for check in check_results(three).values())
    assert not list((settings.home / "staging" / "training_set").iterdir()), "bucket files left behind"


def test_a_failed_check_on_the_bucketed_training_set_stops_the_candidate(settings, monkeypatch):
    from mlops_assets.training.models import fraud_model_candidate

    honest = offline.point_in_time_features_sql
    monkeypatch.setattr(
        offline, "point_in_time_features_sql", lambda *a, **k: honest(*a, **k).replace("exclude group", "")
    )
    result = dg.materialize(
        [training_set, fraud_model_candidate],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"training_set": {"config": {"leakage_sample_size": 150, "slices": 2}}}},
        raise_on_error=False,
    )
    assert not check_results(result)[CHECK_POINT_IN_TIME].passed
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "fraud_model_candidate" not in materialized
