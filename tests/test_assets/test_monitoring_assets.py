"""Monitoring assets materialized over a generated history with a promoted champion.

The drift scenario shifts spending from day 40: its days must show drift against the
training split, and the days before must not.
"""

from datetime import date, timedelta

import dagster as dg
import duckdb
import mlflow
import pytest

from generated_history import loaded_history, promote_a_champion
from mlops_assets.monitoring.drift import DRIFT_TABLE, feature_drift
from mlops_assets.monitoring.labels import label_volume
from mlops_core import registry
from resources.environment import build_resources
from resources.mlflow import tracking_uri

pytestmark = pytest.mark.slow

START = date(2026, 1, 5)
DAYS = 56
LAST_DAY = START + timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    with loaded_history(tmp_path_factory.mktemp("monitoring-home"), START, DAYS, rows_per_day=300, seed=33) as settings:
        promote_a_champion(settings)
        yield settings


def materialize(settings, asset, day: date, config: dict | None = None):
    return dg.materialize(
        [asset],
        partition_key=day.isoformat(),
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
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
    report = (settings.reports_dir / f"drift-{day.isoformat()}.html").read_text()
    assert "<html" in report.lower() and "amount_usd" in report
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        rows = con.execute(f"select count(*), count(distinct feature) from {DRIFT_TABLE} where day = ?", [day]).fetchall()[0]
    assert rows[0] == rows[1] == 31


def test_feature_drift_flags_a_shifted_day(settings, tmp_path):
    """The same day before and after its amounts are multiplied tenfold in the warehouse: the amount
    features drift only after. (Windowed counts of a short demo history drift by themselves as the
    windows fill up, so the test compares the day with itself rather than expecting no drift.)"""
    day = LAST_DAY
    amounts = {"amount_usd", "log_amount_usd"}
    before = set(metadata(materialize(settings, feature_drift, day, {"evidently_report": False}), "drifted_features")["drifted_features"])
    assert not amounts & before
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("update marts.transactions_enriched set amount_usd = amount_usd * 10 where event_date = ?", [day])
    result = materialize(settings, feature_drift, day, {"evidently_report": False})
    drifted = set(metadata(result, "drifted_features")["drifted_features"])
    assert amounts <= drifted
    # Rewriting a day replaces its rows.
    materialize(settings, feature_drift, day, {"evidently_report": False})
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        assert con.execute(f"select count(*) from {DRIFT_TABLE} where day = ?", [day]).fetchall()[0][0] == 31


def test_feature_drift_of_an_empty_day_says_so(settings):
    result = materialize(settings, feature_drift, START - timedelta(days=3))
    assert result.success and metadata(result, "transactions")["transactions"] == 0


def test_label_volume_counts_labels_after_the_champions_cutoff(settings):
    mlflow.set_tracking_uri(tracking_uri(settings))
    client = mlflow.MlflowClient()
    champion = registry.alias_version(client, registry.CHAMPION)
    cutoff = client.get_model_version(registry.MODEL_NAME, champion).tags["training_cutoff"]
    assert cutoff.startswith((LAST_DAY + timedelta(days=1)).isoformat())
    result = materialize(settings, label_volume, LAST_DAY)
    meta = metadata(result, "*")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        landed = con.execute("select count(*) from marts.label_events where landed_date = ?", [LAST_DAY]).fetchall()[0][0]
    assert meta["labels_landed"] == landed > 0
    assert meta["champion_version"] == champion
    # The champion was trained with a cutoff at the end of the newest day: nothing newer exists yet.
    assert meta["new_labels_since_cutoff"] == 0
    # Move the cutoff back ten days: the labels of those days become new evidence.
    earlier = (LAST_DAY - timedelta(days=9)).isoformat() + "T00:00:00+00:00"
    client.set_model_version_tag(registry.MODEL_NAME, champion, "training_cutoff", earlier)
    moved = metadata(materialize(settings, label_volume, LAST_DAY), "*")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        expected = con.execute(
            "select count(*) from marts.label_events where labeled_at > ? and labeled_at < ?",
            [LAST_DAY - timedelta(days=9), LAST_DAY + timedelta(days=1)],
        ).fetchall()[0][0]
    assert moved["new_labels_since_cutoff"] == expected > 0
