"""Batch scores materialized for a day partition with a champion from the real training chain.

The history is small and the gates are opened wide: the gates have their own tests in
test_training_assets.py, and here only a registered, promoted champion is needed.
"""

import dataclasses
from datetime import date, timedelta

import dagster as dg
import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest
from generated_history import loaded_history, promote_a_champion

from mlops_assets.scoring.batch_scores import CHECK_COMPLETE, batch_scores
from mlops_core import registry, scoring
from mlops_core.features import offline
from mlops_core.serving.models import load_alias
from mlops_core.training import matrix
from resources.environment import build_resources

pytestmark = pytest.mark.slow

START = date(2026, 1, 5)
# Legitimate labels mature after 45 days: 56 days leave ten days of labelled transactions to train on.
DAYS = 56
LAST_DAY = START + timedelta(days=DAYS - 1)
EMPTY_DAY = START - timedelta(days=2)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    with loaded_history(tmp_path_factory.mktemp("scoring-home"), START, DAYS, rows_per_day=300, seed=21) as settings:
        promote_a_champion(settings)
        yield settings


def score(settings, day: date, raise_on_error: bool = False):
    return dg.materialize(
        [batch_scores],
        partition_key=day.isoformat(),
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def completeness(result) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == CHECK_COMPLETE
    ]
    return evaluation


def stored(settings, day: date):
    schema, table = scoring.SCORES_TABLE.split(".")
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        exists = con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
        ).fetchone()[0]
        if not exists:  # nothing scored yet (a shuffled order may run a failing day first)
            return pd.DataFrame()
        return con.execute(
            f"select * from {scoring.SCORES_TABLE} where event_date = ? order by transaction_id", [day]
        ).df()


def champion_version(settings) -> str:
    return registry.alias_version(mlflow.MlflowClient(registry.tracking_uri(settings.mlflow_dir)), registry.CHAMPION)


def test_a_day_is_scored_by_the_champion_and_passes_the_check(settings):
    result = score(settings, LAST_DAY)
    assert result.success
    assert completeness(result).passed, completeness(result).description
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("batch_scores")[0].metadata.items()}
    version = champion_version(settings)
    rows = stored(settings, LAST_DAY)
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        day_transactions = con.execute(
            "select count(*) from marts.transactions_enriched where event_date = ?", [LAST_DAY]
        ).fetchone()[0]
        features = con.execute(
            f"select * from ({offline.point_in_time_features_sql()}) where cast(event_timestamp as date) = ? order by transaction_id",
            [LAST_DAY],
        ).df()
    assert day_transactions > 0
    assert (
        metadata["rows"]
        == metadata["dagster/row_count"]
        == len(rows)
        == rows["transaction_id"].nunique()
        == day_transactions
    )
    assert metadata["model_version"] == version and set(rows["model_version"]) == {version}
    assert metadata["flagged_rows"] == int(rows["is_fraud"].sum())
    assert metadata["flagged_share"] == pytest.approx(rows["is_fraud"].mean())
    assert metadata["mean_probability"] == pytest.approx(rows["fraud_probability"].mean())
    assert metadata["day"] == LAST_DAY.isoformat() and metadata["seconds"] > 0
    assert [c.name for c in metadata["dagster/column_schema"].columns] == list(scoring.SCORE_COLUMNS)
    assert "top_scores" in metadata and "note" not in metadata
    # The champion from the registry, on features over the whole warehouse, gives the stored scores.
    champion = load_alias(mlflow.MlflowClient(registry.tracking_uri(settings.mlflow_dir)), registry.CHAMPION)
    expected = champion.score(matrix.encode(features))
    assert list(features["transaction_id"]) == list(rows["transaction_id"])
    np.testing.assert_allclose(rows["fraud_probability"].to_numpy(), expected, rtol=0, atol=1e-6)
    assert (rows["is_fraud"] == (expected >= champion.threshold)).all()


def test_rematerializing_a_day_replaces_its_scores(settings):
    day = LAST_DAY - timedelta(days=1)
    assert score(settings, day).success
    first = stored(settings, day)
    second_result = score(settings, day)
    assert second_result.success and completeness(second_result).passed
    second = stored(settings, day)
    assert len(second) == len(first) > 0
    assert second["transaction_id"].is_unique
    assert second["scored_at"].nunique() == 1 and second["scored_at"].iloc[0] > first["scored_at"].iloc[0]


def test_an_empty_day_writes_no_rows_and_says_why(settings):
    result = score(settings, EMPTY_DAY)
    assert result.success
    assert completeness(result).passed
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("batch_scores")[0].metadata.items()}
    assert metadata["rows"] == metadata["flagged_rows"] == 0
    assert "No transactions on 2026-01-03" in metadata["note"]
    assert stored(settings, EMPTY_DAY).empty


def test_without_a_champion_the_run_fails_naming_the_alias_and_model(settings, tmp_path):
    day = LAST_DAY - timedelta(days=2)
    no_registry = dataclasses.replace(settings, mlflow_dir=tmp_path / "empty-mlflow")
    result = score(no_registry, day)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.to_string()
    assert f"No {registry.CHAMPION!r} alias on registered model {registry.MODEL_NAME!r}" in message
    assert stored(settings, day).empty


def test_incomplete_scores_fail_the_blocking_check(settings, monkeypatch):
    day = LAST_DAY - timedelta(days=3)
    honest = scoring.write_scores

    def drop_one(con, day, scores):
        return honest(con, day, scores.iloc[1:])

    monkeypatch.setattr(scoring, "write_scores", drop_one)
    result = score(settings, day)
    check = completeness(result)
    assert not check.passed
    assert "1 missing" in check.description
    assert not result.success, "a failed blocking check stops the run"
