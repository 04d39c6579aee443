"""Baseline output follows the landing contract, file by file, in both formats."""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_core.contracts import SOURCES
from mlops_core.datagen.generator import DemoSpec
from mlops_core.datagen.world import COUNTRY_CURRENCY

START = dt.date(2024, 3, 1)


@pytest.fixture(scope="module", params=["parquet", "csv"])
def both_formats(request, make_landing):
    spec = DemoSpec(START, days=5, rows_per_day=300, seed=21, file_format=request.param)
    return (spec, *make_landing(spec))


def test_every_file_validates_against_its_pandera_contract(both_formats):
    spec, _, reader = both_formats
    for source, contract in SOURCES.items():
        for day in spec.dates:
            frame = reader.typed(source, day)
            assert list(frame.columns) == contract.columns, (source, day)
            contract.model.validate(frame)


def test_parquet_stores_utc_timestamps_in_nanoseconds(baseline_small):
    spec, summary, _ = baseline_small
    for path in summary.files:
        schema = pq.read_schema(path)
        timestamps = [field for field in schema if pa.types.is_timestamp(field.type)]
        assert timestamps, path
        assert all(field.type == pa.timestamp("ns", tz="UTC") for field in timestamps), path


def test_csv_timestamps_are_iso_8601_with_utc_offset(make_landing):
    summary, _ = make_landing(DemoSpec(START, days=5, rows_per_day=300, seed=21, file_format="csv"))
    text = next(p for p in summary.files if "transactions" in p.parts).read_text()
    stamps = re.findall(r'"(\d{4}-\d\d-\d\dT[^"]*)"', text)
    assert stamps
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", s) for s in stamps)


def test_events_fall_inside_their_partition_day_and_ids_are_unique(baseline_small):
    spec, _, reader = baseline_small
    transactions = reader.concat("transactions", spec.dates)
    assert (transactions["event_timestamp"].dt.date == transactions["_date"]).all()
    assert transactions["transaction_id"].is_unique
    assert transactions["event_timestamp"].is_monotonic_increasing


def test_accounts_first_partition_is_the_book_and_later_ones_the_new_openings(baseline_long):
    spec, _, reader = baseline_long
    accounts = reader.concat("accounts", spec.dates)
    assert accounts["account_id"].is_unique
    first = accounts[accounts["_date"] == spec.start]
    later = accounts[accounts["_date"] > spec.start]
    assert (first["created_at"].dt.date <= spec.start).all()
    assert (first["created_at"].dt.date < spec.start - dt.timedelta(days=365)).any()
    assert (later["created_at"].dt.date == later["_date"]).all()
    assert len(later) > 0
    # Accounts are opened over the five years before the window.
    assert first["created_at"].min() < pd.Timestamp(spec.start, tz="UTC") - pd.Timedelta(days=4 * 365)


def test_transactions_reference_accounts_opened_before_their_day(baseline_small):
    spec, _, reader = baseline_small
    accounts = reader.concat("accounts", spec.dates).set_index("account_id")["created_at"]
    transactions = reader.concat("transactions", spec.dates)
    created = transactions["account_id"].map(accounts)
    assert created.notna().all()
    assert (created < transactions["event_timestamp"].dt.floor("D")).all()


def test_currency_is_the_merchant_countrys(baseline_small):
    spec, _, reader = baseline_small
    transactions = reader.concat("transactions", spec.dates)
    assert (transactions["currency"] == transactions["country"].map(COUNTRY_CURRENCY)).all()
    assert transactions["country"].nunique() > 3
