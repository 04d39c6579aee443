"""The verdict the sensors read: its builders decide and word it, `from_metadata` refuses anything else by name."""

import datetime as dt
import math

import dagster as dg
import pytest

from mlops_assets.monitoring.drift import FEATURE_DRIFT_CHECK, feature_drift
from mlops_assets.monitoring.labels import LABEL_VOLUME_CHECK, label_volume
from mlops_assets.monitoring.model_quality import (
    CHAMPION_PERFORMANCE_CHECK,
    PREDICTION_DRIFT_CHECK,
    concept_drift,
    prediction_drift,
)
from mlops_core.monitoring.verdicts import (
    VALUE_FIELDS,
    MonitoringVerdict,
    VerdictError,
    concept_drift_verdict,
    feature_drift_verdict,
    label_volume_verdict,
    prediction_drift_verdict,
)

DAY = dt.date(2026, 3, 4)


def every_kind() -> list[MonitoringVerdict]:
    return [
        feature_drift_verdict(DAY, 0.8, ["amount_usd", "hour_of_day"], 2000, 0.5),
        feature_drift_verdict(DAY, None, [], 0, 0.5),
        prediction_drift_verdict(DAY, 0.1, 0.25),
        prediction_drift_verdict(DAY, None, 0.25, "no champion or no prediction log yet"),
        label_volume_verdict(DAY, 2500, 2000, None),
        concept_drift_verdict(
            DAY,
            confidence=0.99,
            page_hinkley_threshold=50.0,
            recall={"recall": float("nan"), "frauds": 0, "p_value": 1.0, "drop": False},
            reference_recall=0.8,
            alarm_at="2026-02-01 10:00",
            calibration={"ece": 0.04, "bound": 0.03, "drift": True},
        ),
    ]


@pytest.mark.parametrize("verdict", every_kind(), ids=lambda v: f"{v.asset}-{v.triggered}")
def test_a_verdict_survives_its_metadata(verdict):
    assert MonitoringVerdict.from_metadata(verdict.to_metadata()) == verdict
    assert set(verdict.to_metadata()) == {"asset", "day", "triggered", "reason", *VALUE_FIELDS[verdict.asset]}


def test_the_builders_decide_at_the_threshold_and_say_why():
    assert (
        feature_drift_verdict(DAY, 0.5, ["a"], 10, 0.5).triggered
        and not feature_drift_verdict(DAY, 0.49, ["a"], 10, 0.5).triggered
    )
    assert (
        feature_drift_verdict(DAY, 0.8, ["a", "b"], 10, 0.5).reason
        == "feature drift on 2026-03-04: 80% of features drifted (a, b)"
    )
    assert (
        "no transactions" in feature_drift_verdict(DAY, None, [], 0, 0.0).reason
        and not feature_drift_verdict(DAY, None, [], 0, 0.0).triggered
    )
    assert (
        label_volume_verdict(DAY, 2000, 2000, None).triggered
        and not label_volume_verdict(DAY, 1999, 2000, None).triggered
    )
    assert prediction_drift_verdict(DAY, 0.41, 0.25).reason.startswith("prediction drift on 2026-03-04: score PSI 0.41")
    assert not prediction_drift_verdict(DAY, 0.24, 0.25).triggered
    quiet = concept_drift_verdict(
        DAY, confidence=0.99, page_hinkley_threshold=50.0, note="no champion or no prediction log yet"
    )
    assert not quiet.triggered and quiet.values["recent_recall"] is None
    # A recall drop counts only against a known recall at promotion.
    dropped = {"recall": 0.1, "frauds": 40, "p_value": 1e-20, "drop": True}
    assert concept_drift_verdict(
        DAY, confidence=0.99, page_hinkley_threshold=50.0, recall=dropped, reference_recall=0.8
    ).triggered
    assert not concept_drift_verdict(
        DAY, confidence=0.99, page_hinkley_threshold=50.0, recall=dropped, reference_recall=None
    ).triggered


def test_nan_numbers_become_null():
    verdict = concept_drift_verdict(
        DAY,
        confidence=0.99,
        page_hinkley_threshold=50.0,
        recall={"recall": math.nan, "frauds": 0, "p_value": 1.0, "drop": False},
    )
    assert verdict.to_metadata()["recent_recall"] is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("triggered"), "monitoring verdict: field 'triggered' is missing"),
        (lambda m: m.pop("reason"), "monitoring verdict: field 'reason' is missing"),
        (lambda m: m.update(triggered="yes"), "field 'triggered' must be a boolean, got 'yes'"),
        (lambda m: m.update(day="04/03/2026"), "field 'day' must be an ISO date (YYYY-MM-DD), got '04/03/2026'"),
        (lambda m: m.update(reason=" "), "field 'reason' must be a non-empty string"),
        (lambda m: m.update(asset="feature_drfit"), "field 'asset' must be one of"),
        (lambda m: m.pop("share_drifted"), "feature_drift verdict: field 'share_drifted' is missing"),
        (
            lambda m: m.update(share_drifted=float("nan")),
            "field 'share_drifted' must be a finite number or null, got nan",
        ),
        (lambda m: m.update(share_drifted=True), "field 'share_drifted' must be a finite number or null, got True"),
        (lambda m: m.update(drifted_features="amount_usd"), "field 'drifted_features' must be a list of strings"),
        (lambda m: m.update(transactions=2000.5), "field 'transactions' must be an integer, got 2000.5"),
    ],
)
def test_from_metadata_names_the_missing_or_invalid_field(change, message):
    metadata = feature_drift_verdict(DAY, 0.8, ["amount_usd"], 2000, 0.5).to_metadata()
    change(metadata)
    with pytest.raises(VerdictError) as raised:
        MonitoringVerdict.from_metadata(metadata)
    assert message in str(raised.value)


def test_a_writer_cannot_build_a_verdict_the_reader_would_refuse():
    with pytest.raises(VerdictError, match="unknown value field"):
        MonitoringVerdict(
            "label_volume",
            "2026-03-04",
            True,
            "label volume",
            {"new_labels": 3, "threshold": 2, "training_cutoff": None, "counted_from": "champion"},
        )
    with pytest.raises(VerdictError, match="field 'threshold' is missing"):
        MonitoringVerdict("prediction_drift", "2026-03-04", False, "quiet", {"psi": 0.1})


@pytest.mark.parametrize(
    ("asset", "key"),
    [
        (feature_drift, FEATURE_DRIFT_CHECK),
        (prediction_drift, PREDICTION_DRIFT_CHECK),
        (label_volume, LABEL_VOLUME_CHECK),
        (concept_drift, CHAMPION_PERFORMANCE_CHECK),
    ],
    ids=["feature_drift", "prediction_drift", "label_volume", "concept_drift"],
)
def test_each_monitoring_asset_carries_its_verdict_as_a_non_blocking_check(
    asset: dg.AssetsDefinition, key: dg.AssetCheckKey
):
    (spec,) = asset.check_specs
    assert spec.key == key and key.name.startswith("check_") and not spec.blocking
    assert spec.description.startswith("Passes while") and "retrain" in spec.description
    assert key.asset_key.to_user_string() in VALUE_FIELDS
    # The thresholds come from the policy resource the sensors use, not from the asset's own config.
    assert "retraining_policy" in asset.required_resource_keys


def test_a_provisional_champion_asks_for_a_retraining_whatever_its_recall():
    """Promoted below the quality minimums (as better than a failing champion), its own low recall at
    promotion is no norm: the verdict fires, and says why, even when every test holds."""
    holding = {"recall": 0.3, "frauds": 40, "p_value": 0.6, "drop": False}
    why = "version 3 was promoted below the quality minimums (test AUC-PR 0.100, recall 0.30)"
    provisional = concept_drift_verdict(
        DAY, confidence=0.99, page_hinkley_threshold=50.0, recall=holding, reference_recall=0.3, provisional=why
    )
    assert provisional.triggered and provisional.values["provisional_champion"] is True
    assert provisional.reason == f"model degraded on {DAY}: provisional champion: {why}"
    assert MonitoringVerdict.from_metadata(provisional.to_metadata()) == provisional
    plain = concept_drift_verdict(
        DAY, confidence=0.99, page_hinkley_threshold=50.0, recall=holding, reference_recall=0.3
    )
    assert not plain.triggered and plain.values["provisional_champion"] is False
