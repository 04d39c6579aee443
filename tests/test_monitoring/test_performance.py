"""Realized performance, Page-Hinkley, calibration drift and CBPE on hand-made and seeded data."""

import math

import numpy as np
import orjson
import pandas as pd
import pytest

from mlops_core.monitoring.performance import (
    PERFORMANCE_COLUMNS,
    PageHinkley,
    calibration_drift,
    error_stream,
    live_performance,
)
from mlops_core.serving.prediction_log import PredictionLog, PredictionRecord, features_json, read_predictions
from mlops_core.training.metrics import expected_calibration_error

NAN = float("nan")

# transaction, score, decision, model_version, channel, country, label (None: not known yet)
HAND_ROWS = [
    ("t1", 0.90, 1, "v1", "online", "US", 1),
    ("t2", 0.80, 1, "v1", "online", "US", 0),
    ("t3", 0.70, 1, "v2", "online", "GB", 1),
    ("t4", 0.40, 0, "v2", "in_store", "US", 1),
    ("t5", 0.30, 0, "v1", "in_store", "GB", 0),
    ("t6", 0.20, 0, "v2", "in_store", "GB", 0),
    ("t7", 0.60, 1, "v1", "online", "GB", None),
    ("t8", 0.10, 0, "v2", "in_store", "US", None),
    ("t9", 0.05, 0, "v2", "in_store", "DE", 0),
    ("t10", 0.65, 1, "v1", "online", "DE", 0),
]

# (segment, value): n_scored, n_labelled, positives, flag_rate, precision, recall, f1, auc_pr
HAND_EXPECTED = {
    # Labelled flags: t1 TP, t2 FP, t3 TP, t10 FP; t4 is the one missed fraud. Frauds rank
    # 1st, 3rd and 5th among the labelled scores: AP = (1 + 2/3 + 3/5) / 3.
    ("overall", "all"): (10, 8, 3, 0.5, 0.5, 2 / 3, 4 / 7, 34 / 45),
    ("model_version", "v1"): (5, 4, 1, 0.8, 1 / 3, 1.0, 0.5, 1.0),
    ("model_version", "v2"): (5, 4, 2, 0.2, 1.0, 0.5, 2 / 3, 1.0),
    ("channel", "in_store"): (5, 4, 1, 0.0, NAN, 0.0, NAN, 1.0),
    ("channel", "online"): (5, 4, 2, 1.0, 0.5, 1.0, 2 / 3, 5 / 6),
    # No fraud in DE: recall and AUC-PR undefined, precision 0 (t10 is a false alarm).
    ("country", "DE"): (2, 2, 0, 0.5, 0.0, NAN, NAN, NAN),
    ("country", "GB"): (4, 3, 1, 0.5, 1.0, 1.0, 1.0, 1.0),
    ("country", "US"): (4, 3, 2, 0.5, 0.5, 0.5, 0.5, 5 / 6),
}


def _hand_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    # Plus an error row of the log (no score), which is left out.
    rows = [*HAND_ROWS, ("t11", None, None, "v1", "online", "US", None)]
    predictions = pd.DataFrame(
        rows, columns=["transaction_id", "score", "decision", "model_version", "channel", "country", "label"]
    )
    predictions["event_timestamp"] = pd.date_range("2026-01-01", periods=len(predictions), freq="h", tz="UTC")
    labels = predictions.loc[predictions["label"].notna(), ["transaction_id", "label"]].rename(
        columns={"label": "is_fraud"}
    )
    # Plus a label of a transaction this window never scored, which is ignored.
    labels = pd.DataFrame(
        {
            "transaction_id": [*labels["transaction_id"], "elsewhere"],
            "is_fraud": [*labels["is_fraud"].astype(bool), True],
        }
    )
    return predictions.drop(columns="label"), labels


def _same(actual: float, expected: float) -> bool:
    return math.isnan(expected) if math.isnan(actual) else actual == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_live_performance_matches_hand_computed_values():
    predictions, labels = _hand_frames()
    table = live_performance(predictions, labels, segments=("channel", "country"))
    assert tuple(table.columns) == PERFORMANCE_COLUMNS
    assert list(zip(table["segment"], table["value"])) == list(HAND_EXPECTED)
    for (segment, value), expected in HAND_EXPECTED.items():
        row = table[(table["segment"] == segment) & (table["value"] == value)].iloc[0]
        n_scored, n_labelled, positives, *rates = expected
        assert (row["n_scored"], row["n_labelled"], row["positives"]) == (n_scored, n_labelled, positives), (
            segment,
            value,
        )
        assert row["label_coverage"] == pytest.approx(n_labelled / n_scored)
        for metric, want in zip(("flag_rate", "precision", "recall", "f1", "auc_pr"), rates, strict=True):
            assert _same(row[metric], want), (segment, value, metric, row[metric], want)


def test_live_performance_before_any_label_is_all_nan_not_an_error():
    predictions, _ = _hand_frames()
    no_labels = pd.DataFrame({"transaction_id": pd.Series(dtype=str), "is_fraud": pd.Series(dtype=bool)})
    table = live_performance(predictions, no_labels)
    assert (table["n_labelled"] == 0).all() and (table["label_coverage"] == 0).all()
    assert table[["precision", "recall", "f1", "auc_pr"]].isna().all().all()
    # What is known at scoring time is still there.
    assert table.iloc[0]["flag_rate"] == pytest.approx(0.5)


def test_segments_come_from_the_features_json_when_not_a_column():
    predictions, labels = _hand_frames()
    predictions["features"] = [
        orjson.dumps({"is_online": int(channel == "online"), "amount_usd": 10.0}).decode() if score == score else None
        for channel, score in zip(predictions["channel"], predictions["score"])
    ]
    table = live_performance(predictions.drop(columns=["channel", "country"]), labels, segments=("is_online",))
    online = table[(table["segment"] == "is_online") & (table["value"] == 1)].iloc[0]
    assert (online["n_scored"], online["positives"], online["precision"]) == (5, 2, 0.5)
    with pytest.raises(ValueError, match="join the transactions"):
        live_performance(predictions.drop(columns=["channel", "country"]), labels, segments=("country",))


def test_log_rows_count_each_transaction_once_overall_and_every_model_by_version(tmp_path):
    log = PredictionLog(tmp_path / "predictions.sqlite")
    records = []
    for i in range(6):
        event = f"2026-01-01T0{i}:00:00+00:00"
        # Champion "3" flags t4 and t5; shadow "4" only t5.
        records.append(
            PredictionRecord(
                0.0,
                "r",
                f"t{i}",
                "a",
                event,
                "3",
                "champion",
                1,
                "ok",
                0.1 * i,
                int(i >= 4),
                1.0,
                features_json({"is_online": i % 2}),
            )
        )
        records.append(
            PredictionRecord(0.0, "r", f"t{i}", "a", event, "4", "shadow", 0, "ok", 0.15 * i, int(i >= 5), None, None)
        )
    records.append(
        PredictionRecord(
            0.0, "r", "t6", "a", "2026-01-01T06:00:00+00:00", "4", "shadow", 0, "error", None, None, None, None, "boom"
        )
    )
    log.append(records)
    log.close()
    labels = pd.DataFrame({"transaction_id": ["t1", "t4", "t5"], "is_fraud": [False, True, False]})
    table = live_performance(
        read_predictions(tmp_path / "predictions.sqlite"), labels, segments=("is_online",)
    ).set_index(["segment", "value"])
    assert table.loc[("overall", "all"), ["n_scored", "n_labelled", "positives"]].tolist() == [6, 3, 1]
    assert table.loc[("overall", "all"), ["precision", "recall"]].tolist() == [0.5, 1.0]
    assert table.loc[("model_version", "4"), ["n_scored", "flag_rate", "precision", "recall", "f1"]].tolist() == [
        6,
        1 / 6,
        0.0,
        0.0,
        0.0,
    ]
    # Served rows only, with the JSON's own values (not 0.0 / 1.0), and no group of shadow rows without features.
    values = list(table.loc["is_online"].index)
    assert values == [0, 1] and all(type(v) is int for v in values)
    assert table.loc[("is_online", 1), "precision"] == 0.0 and math.isnan(table.loc[("is_online", 1), "recall"])


def test_a_transaction_labelled_twice_is_rejected():
    predictions, labels = _hand_frames()
    with pytest.raises(ValueError, match="more than one label"):
        live_performance(predictions, pd.concat([labels, labels.iloc[:1]]))


# ---- Page-Hinkley ----------------------------------------------------------------------------

ERROR_RATE = 0.05
N_STREAMS = 100


def _stream(seed: int, n: int, rate: float) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(np.float64)


def test_streaming_update_and_vectorized_detect_agree():
    for seed, alpha in ((1, 1.0), (2, 1 - 1e-4), (3, 0.999)):
        rng = np.random.default_rng(seed)
        x = np.r_[rng.random(3000) < ERROR_RATE, rng.random(3000) < 3 * ERROR_RATE].astype(np.float64)
        detector = PageHinkley(alpha=alpha)
        streamed = next((i for i, value in enumerate(x) if detector.update(value)), None)
        assert streamed is not None and streamed == detector.detect(x) == PageHinkley(alpha=alpha).detect(x)
        # The alarm reset the detector: it starts counting again from the next value.
        assert detector.n_ == 0 and detector.update(x[streamed + 1]) is False and detector.n_ == 1


def test_no_alarm_before_min_instances():
    x = np.r_[np.zeros(5), np.ones(100)]
    # Without the guard the jump alarms a few values in; with it, at the 30th value.
    assert PageHinkley(delta=0.0, threshold=1.0, min_instances=1).detect(x) < 10
    guarded = PageHinkley(delta=0.0, threshold=1.0, min_instances=30)
    assert guarded.detect(x) == 29 == next(i for i, value in enumerate(x) if guarded.update(value))


def test_page_hinkley_rarely_alarms_on_a_stationary_stream():
    streams = [_stream(seed, 10_000, ERROR_RATE) for seed in range(N_STREAMS)]
    false_alarm_rate = np.mean([PageHinkley().detect(x) is not None for x in streams])
    assert false_alarm_rate <= 0.02
    # The same streams do make an over-sensitive detector alarm, so the check above can fail.
    assert np.mean([PageHinkley(threshold=5.0).detect(x) is not None for x in streams]) >= 0.5


def test_page_hinkley_catches_a_doubled_error_rate_within_a_bounded_delay():
    change = 5000
    delays, early = [], 0
    for seed in range(N_STREAMS):
        x = np.r_[_stream(1000 + seed, change, ERROR_RATE), _stream(2000 + seed, 5000, 2 * ERROR_RATE)]
        alarm = PageHinkley().detect(x)
        if alarm is not None and alarm < change:
            early += 1
        else:
            delays.append(np.inf if alarm is None else alarm - change)
    # Theory (class docstring): threshold / (shift - delta) = 50 / 0.045, about 1,100 values.
    assert early <= 2
    assert np.median(delays) <= 1400
    assert np.max(delays) <= 2500


def test_error_stream_is_ordered_by_event_time_and_detect_returns_the_time():
    rng = np.random.default_rng(5)
    n = 6000
    events = pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC")
    labels = (rng.random(n) < 0.1).astype(int)
    # Decisions are right 97% of the time, then 85% from the middle on.
    wrong = rng.random(n) < np.where(np.arange(n) < n // 2, 0.03, 0.15)
    decision = np.where(wrong, 1 - labels, labels)
    order = rng.permutation(n)
    predictions = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "score": decision * 0.9 + 0.05,
            "decision": decision,
            "model_version": "v1",
            "event_timestamp": [e.isoformat() for e in events],
        }
    ).iloc[order]
    known = pd.DataFrame({"transaction_id": [f"t{i}" for i in range(n)], "is_fraud": labels.astype(bool)})
    stream = error_stream(predictions, known, kind="decision")
    assert stream.index.is_monotonic_increasing and stream.mean() == pytest.approx(wrong.mean())
    alarm = PageHinkley().detect(stream)
    assert isinstance(alarm, pd.Timestamp) and events[n // 2] < alarm < events[n // 2 + 1000]
    cut = error_stream(predictions, known, kind="score", complete_before=events[100])
    assert len(cut) == 100 and cut.index.max() < events[100]


# ---- calibration drift -----------------------------------------------------------------------


def _calibrated(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraud-like scores (base rate about 1.2%) with labels drawn from them: calibrated."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-6.5, 2.2, n)
    p = 1 / (1 + np.exp(-logit))
    return logit, p, (rng.random(n) < p).astype(np.int64)


def test_calibration_drift_flags_a_shifted_base_rate_and_not_a_stationary_window():
    _, p_ref, y_ref = _calibrated(0, 100_000)
    reference_ece = expected_calibration_error(y_ref, p_ref)
    for seed in range(1, 21):
        _, p, y = _calibrated(seed, 20_000)
        stationary = calibration_drift(y, p, reference_ece)
        assert not stationary["drift"] and stationary["ece"] <= stationary["bound"]
        assert stationary["score_to_rate_ratio"] == pytest.approx(1.0, abs=0.25)
        # Fraud doubles while the model's scores stay put.
        doubled = (np.random.default_rng(100 + seed).random(len(p)) < np.minimum(1.0, 2 * p)).astype(np.int64)
        shifted = calibration_drift(doubled, p, reference_ece)
        assert shifted["drift"] and shifted["ece"] > 2 * shifted["bound"]
        assert shifted["score_to_rate_ratio"] == pytest.approx(0.5, abs=0.07)


def test_a_small_window_gets_a_wider_bound():
    _, p, y = _calibrated(3, 40_000)
    assert calibration_drift(y[:2000], p[:2000], 0.001)["bound"] > 2 * calibration_drift(y, p, 0.001)["bound"]
