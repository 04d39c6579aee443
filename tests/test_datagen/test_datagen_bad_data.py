"""Each bad-data scenario corrupts exactly the affected days and leaves the rest consistent.

Every detector below is also run on the baseline, where it must find nothing, so each
assertion can fail.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mlops_core.contracts import (
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    LABELS,
    MAX_AMOUNT,
    MERCHANT_CATEGORIES,
    TRANSACTIONS,
)
from mlops_core.datagen.corruption import ABSURD_AMOUNT, FUTURE_YEAR
from mlops_core.datagen.generator import DemoSpec
from mlops_core.datagen.labels import MATURITY_DAYS
from mlops_core.datagen.scenarios import SCENARIOS

START = dt.date(2024, 3, 1)
DRIFT_DAY = 2
# Long enough that transactions of affected days would mature inside the window.
DAYS = DRIFT_DAY + MATURITY_DAYS + 3
ROWS_PER_DAY = 150
BAD = [name for name in SCENARIOS if name.startswith("bad_")]
# Faults that make the whole transactions file unusable.
WHOLE_FILE = (
    "bad_missing_column",
    "bad_renamed_column",
    "bad_extra_column",
    "bad_wrong_type",
    "bad_missing_partition",
    "bad_empty_file",
    "bad_unreadable_file",
)
FILE_FAULTS = ["bad_missing_column", "bad_wrong_type", "bad_empty_file", "bad_unreadable_file"]


def spec_for(scenario: str, file_format: str = "parquet", days: int = DAYS) -> DemoSpec:
    return DemoSpec(START, days, ROWS_PER_DAY, seed=9, scenario=scenario, drift_day=DRIFT_DAY, file_format=file_format)


def _share(mask: pd.Series) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def _frame(reader, source, day):
    partition = reader.partition(source, day)
    return partition, partition.frame


def measure(scenario: str, reader, base_reader, day: dt.date, days: list[dt.date]) -> float:
    """How strongly the scenario's corruption shows on a day: 0.0 on a clean day."""
    partition, frame = _frame(reader, "transactions", day)
    ok = partition.status == "ok"
    if scenario == "bad_missing_partition":
        return float(partition.status == "missing")
    if scenario == "bad_empty_file":
        return float(partition.status == "empty")
    if scenario == "bad_unreadable_file":
        return float(partition.status == "unreadable")
    if scenario == "bad_unknown_transactions":
        labels = reader.partition("labels", day).frame
        return _share(~reader.known(labels["transaction_id"], "transactions", "transaction_id"))
    assert ok, f"{scenario}: transactions of {day} unreadable"
    if scenario == "bad_missing_column":
        return float("merchant_category" not in frame.columns)
    if scenario == "bad_renamed_column":
        return float("amt" in frame.columns and "amount" not in frame.columns)
    if scenario == "bad_extra_column":
        return float("promo_code" in frame.columns)
    if scenario == "bad_wrong_type":
        if partition.path.suffix == ".parquet":
            return float(str(pq.read_schema(partition.path).field("amount").type) == "string")
        return _share(pd.to_numeric(frame["amount"].astype(str), errors="coerce").isna())
    amount = frame["amount"].astype(float) if "amount" in frame.columns else None
    if scenario == "bad_out_of_range":
        return _share((amount <= 0) | (amount > MAX_AMOUNT))
    if scenario == "bad_allowed_values":
        return _share(~frame["channel"].isin(CHANNELS) | ~frame["currency"].isin(CURRENCIES))
    if scenario == "bad_nulls":
        return _share(frame["account_id"].isna() | frame["merchant_id"].isna())
    if scenario == "bad_duplicate_ids":
        return _share(frame["transaction_id"].duplicated())
    if scenario == "bad_unknown_accounts":
        return _share(~reader.known(frame["account_id"], "accounts", "account_id"))
    if scenario == "bad_timestamps":
        stamps = pd.to_datetime(frame["event_timestamp"].astype(str), format="ISO8601", utc=True)
        return _share(stamps.dt.date != day)
    base_rows = len(base_reader.partition("transactions", day).frame)
    if scenario in ("bad_volume_drop", "bad_volume_spike"):
        return len(frame) / base_rows - 1
    raise AssertionError(f"no detector for {scenario}")


EXPECTED = (
    {name: (0.03, 0.08) for name in BAD}
    | {name: (1.0, 1.0) for name in WHOLE_FILE}
    | {"bad_volume_drop": (-0.95, -0.85), "bad_volume_spike": (3.5, 4.5)}
)


def _check_days(scenario, reader, base_reader, spec):
    days = spec.dates
    # The days around the drift day and the last days (where maturity labels land).
    checked = [i for i in range(len(days)) if i < DRIFT_DAY + 4 or i >= len(days) - 3]
    for index, day in ((i, days[i]) for i in checked):
        value = measure(scenario, reader, base_reader, day, days)
        if index < DRIFT_DAY:
            assert value == 0.0, (scenario, day, value)
            continue
        low, high = EXPECTED[scenario]
        n_rows = len(reader.partition("labels", day).frame) if scenario == "bad_unknown_transactions" else ROWS_PER_DAY
        if n_rows >= 100 or low == high:
            assert low <= value <= high, (scenario, day, value)
        elif n_rows > 0:
            assert value > 0, (scenario, day, value)


@pytest.mark.parametrize("scenario", BAD)
def test_corruption_shows_on_affected_days_only(scenario, make_landing):
    _, base_reader = make_landing(spec_for("baseline"))
    _, reader = make_landing(spec_for(scenario))
    _check_days(scenario, reader, base_reader, spec_for(scenario))
    for day in spec_for(scenario).dates[DRIFT_DAY : DRIFT_DAY + 3] + spec_for(scenario).dates[-2:]:
        assert measure(scenario, base_reader, base_reader, day, spec_for(scenario).dates) == 0.0, (scenario, day)


@pytest.mark.parametrize("scenario", FILE_FAULTS)
def test_csv_analogues_of_file_level_faults(scenario, make_landing):
    spec = spec_for(scenario, "csv", days=4)
    _, base_reader = make_landing(spec_for("baseline", "csv", days=4))
    _, reader = make_landing(spec)
    _check_days(scenario, reader, base_reader, spec)
    for day in spec.dates:
        assert measure(scenario, base_reader, base_reader, day, spec.dates) == 0.0, (scenario, day)


def test_csv_wrong_type_keeps_number_and_currency_in_the_text(make_landing):
    _, reader = make_landing(spec_for("bad_wrong_type", "csv", days=4))
    frame = reader.partition("transactions", START + dt.timedelta(days=3)).frame
    expected = frame["amount"].str.split(" ").str[1]
    assert frame["amount"].str.fullmatch(r"\d+\.\d\d [A-Z]{3}").all()
    assert (expected == frame["currency"]).all()


def test_row_faults_mix_their_kinds(make_landing):
    day = START + dt.timedelta(days=DRIFT_DAY)
    _, reader = make_landing(spec_for("bad_out_of_range"))
    amount = reader.partition("transactions", day).frame["amount"]
    assert (amount < 0).any() and (amount == ABSURD_AMOUNT).any()
    _, reader = make_landing(spec_for("bad_allowed_values"))
    frame = reader.partition("transactions", day).frame
    assert (frame["channel"] == "mobile").any() and (frame["currency"] == "XXX").any()
    _, reader = make_landing(spec_for("bad_nulls"))
    frame = reader.partition("transactions", day).frame
    assert frame["account_id"].isna().any() and frame["merchant_id"].isna().any()
    _, reader = make_landing(spec_for("bad_timestamps"))
    stamps = reader.partition("transactions", day).frame["event_timestamp"]
    assert (stamps.dt.date == day - dt.timedelta(days=1)).any() and (stamps.dt.year == FUTURE_YEAR).any()
    _, reader = make_landing(spec_for("bad_duplicate_ids"))
    frame = reader.partition("transactions", day).frame
    repeated = frame[frame["transaction_id"].duplicated(keep=False)]
    exact = repeated.duplicated(keep=False)
    assert exact.any() and (~exact).any()


def same_bytes(reader, other, source: str, day: dt.date) -> bool:
    return reader.partition(source, day).path.read_bytes() == other.partition(source, day).path.read_bytes()


def _valid_transactions(reader, days) -> pd.DataFrame:
    """Rows ingestion would accept: readable file, contract columns, row checks, unique id."""

    def usable(day):
        table = reader.partition("transactions", day).table
        if table is None or table.schema.names != TRANSACTIONS.columns:
            return False
        return table.schema.field("amount").type != pa.string()

    rows = reader.concat("transactions", [day for day in days if usable(day)])
    good = (
        rows["amount"].between(0, MAX_AMOUNT, inclusive="right")
        & rows["channel"].isin(CHANNELS)
        & rows["currency"].isin(CURRENCIES)
        & rows["country"].isin(COUNTRIES)
        & rows["merchant_category"].isin(MERCHANT_CATEGORIES)
        & rows["merchant_id"].notna()
        & reader.known(rows["account_id"], "accounts", "account_id")
        & (rows["event_timestamp"].dt.date == rows["_date"])
    )
    valid = rows[good.fillna(False).astype(bool)]
    return valid[~valid["transaction_id"].duplicated(keep=False)]


@pytest.mark.parametrize("scenario", [name for name in BAD if name != "bad_unknown_transactions"])
def test_other_sources_stay_clean_and_bad_days_get_no_labels(scenario, make_landing):
    spec = spec_for(scenario)
    _, base_reader = make_landing(spec_for("baseline"))
    _, reader = make_landing(spec)
    for index, day in enumerate(spec.dates):
        assert same_bytes(reader, base_reader, "accounts", day)
        if index < DRIFT_DAY:
            for source in ("transactions", "labels"):
                assert same_bytes(reader, base_reader, source, day)
    labels = reader.concat("labels", spec.dates)
    LABELS.model.validate(labels.drop(columns="_date"))
    assert (labels["labeled_at"].dt.date == labels["_date"]).all()
    valid = _valid_transactions(reader, spec.dates)
    assert pc.is_in(pa.array(labels["transaction_id"]), value_set=pa.array(valid["transaction_id"])).to_numpy().all()
    # Labels are the baseline's minus those of the bad days' transactions: a batch that
    # ingestion rejects or holds never gets labels pointing into it.
    base_labels = base_reader.concat("labels", spec.dates)
    base_days = base_reader.concat("transactions", spec.dates).set_index("transaction_id")["_date"]
    of_clean_days = base_labels["transaction_id"].map(base_days) < spec.dates[DRIFT_DAY]
    expected = base_labels[of_clean_days.to_numpy()].reset_index(drop=True)
    assert 0 < len(expected) < len(base_labels)
    pd.testing.assert_frame_equal(labels, expected)


def test_unknown_transactions_leave_transactions_and_accounts_untouched(make_landing):
    spec = spec_for("bad_unknown_transactions")
    _, base_reader = make_landing(spec_for("baseline"))
    _, reader = make_landing(spec)
    for day in spec.dates:
        for source in ("accounts", "transactions"):
            assert same_bytes(reader, base_reader, source, day)
