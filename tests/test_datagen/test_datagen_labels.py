"""Late labels: fraud via chargeback or customer report, legitimate only at maturity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops_core.contracts import LABEL_SOURCES
from mlops_core.datagen.generator import simulate
from mlops_core.datagen.labels import CUSTOMER_REPORT_MAX_DAYS, MATURITY_DAYS, label_times


@pytest.fixture(scope="module")
def joined(baseline_long):
    spec, _, reader = baseline_long
    transactions = reader.concat("transactions", spec.dates)
    labels = reader.concat("labels", spec.dates)
    merged = labels.merge(transactions, on="transaction_id", how="left", suffixes=("", "_tx"), indicator=True)
    return spec, transactions, labels, merged


def test_every_label_references_a_generated_transaction_once(joined):
    _, _, labels, merged = joined
    assert len(labels) > 0
    assert (merged["_merge"] == "both").all()
    assert labels["transaction_id"].is_unique


def test_labeled_at_lies_in_its_partition_day_and_after_the_event(joined):
    _, _, _, merged = joined
    assert (merged["labeled_at"].dt.date == merged["_date"]).all()
    assert (merged["labeled_at"] > merged["event_timestamp"]).all()


def test_legitimate_labels_arrive_exactly_at_maturity(joined):
    _, _, _, merged = joined
    delay = merged["labeled_at"] - merged["event_timestamp"]
    legit = ~merged["is_fraud"]
    assert legit.sum() > 100
    assert (delay[legit] == pd.Timedelta(days=MATURITY_DAYS)).all()
    assert (merged.loc[legit, "label_source"] == "maturity").all()


def test_fraud_labels_arrive_before_maturity_by_chargeback_or_customer_report(joined):
    _, _, _, merged = joined
    fraud = merged[merged["is_fraud"]]
    delay = fraud["labeled_at"] - fraud["event_timestamp"]
    assert len(fraud) > 20
    assert set(fraud["label_source"]) == {"chargeback", "customer_report"}
    assert (delay < pd.Timedelta(days=MATURITY_DAYS)).all()
    reports = fraud["label_source"] == "customer_report"
    assert (delay[reports] <= pd.Timedelta(days=CUSTOMER_REPORT_MAX_DAYS)).all()
    # Chargebacks take days to weeks.
    assert pd.Timedelta(days=5) < delay[~reports].median() < pd.Timedelta(days=20)


def test_no_label_arrives_after_the_window_and_matured_transactions_are_all_labeled(joined):
    spec, transactions, labels, _ = joined
    end = pd.Timestamp(spec.dates[-1], tz="UTC") + pd.Timedelta(days=1)
    assert (labels["labeled_at"] < end).all()
    matured = transactions["event_timestamp"] + pd.Timedelta(days=MATURITY_DAYS) < end
    labeled = transactions["transaction_id"].isin(labels["transaction_id"])
    assert matured.any() and (~matured).any()
    assert labeled[matured].all()
    # Of the recent transactions only some fraud is known: labels are incomplete.
    assert labeled[~matured].mean() < 0.05


def test_labels_tell_the_truth(joined):
    spec, _, labels, _ = joined
    truth = pd.concat(
        [
            pd.DataFrame({"transaction_id": day.clean_transactions["transaction_id"].to_numpy(), "truth": day.is_fraud})
            for day in simulate(spec)
        ]
    )
    checked = labels.merge(truth, on="transaction_id")
    assert len(checked) == len(labels)
    assert np.array_equal(checked["is_fraud"].to_numpy(), checked["truth"].to_numpy())


def test_label_delays_of_many_frauds_stay_below_the_maturity_window():
    rng = np.random.default_rng(0)
    event_s = rng.integers(0, 10**9, 100_000)
    labeled_s, source = label_times(rng, event_s, np.ones(len(event_s), dtype=bool))
    delay_days = (labeled_s - event_s) / 86_400
    assert delay_days.min() > 0
    assert delay_days.max() < MATURITY_DAYS
    reports = source == LABEL_SOURCES.index("customer_report")
    assert 0.1 < reports.mean() < 0.5
    assert delay_days[reports].max() <= CUSTOMER_REPORT_MAX_DAYS
    assert (source[~reports] == LABEL_SOURCES.index("chargeback")).all()
