"""Row-level validation: every rejected row gets the right check and a reason naming column and value."""

from datetime import date

import landing_factory as lf
import pandas as pd

from mlops_core.contracts import ACCOUNTS, LABELS, TRANSACTIONS
from mlops_core.validation import (
    CHECK_TIMESTAMPS,
    CHECK_UNIQUE_IDS,
    CHECK_VALUES,
    PARTITION,
    ROW_NUMBER,
    SOURCE_FILE,
    coerce_to_contract,
    contract_violations,
    drop_rejected,
    duplicate_ids,
    timestamp_violations,
)

NOW = pd.Timestamp("2026-06-01", tz="UTC")


def with_lineage(frame: pd.DataFrame, day: str = "2026-01-05", file: str = "f.parquet") -> pd.DataFrame:
    return frame.assign(**{PARTITION: date.fromisoformat(day), SOURCE_FILE: file, ROW_NUMBER: range(len(frame))})


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(str).astype("string[pyarrow]")


def test_text_values_are_coerced_and_bad_ones_rejected():
    frame = as_text(lf.transactions("2026-01-05", n=4))
    frame.loc[1, "amount"] = "12.50 USD"
    frame.loc[2, "event_timestamp"] = "yesterday"
    typed, rejections = coerce_to_contract(frame, TRANSACTIONS)
    assert rejections.check_name == CHECK_VALUES
    assert rejections.reasons.to_dict() == {
        1: "amount: expected a number, found '12.50 USD'",
        2: "event_timestamp: expected an ISO 8601 timestamp, found 'yesterday'",
    }
    assert typed["amount"].dtype == "float64"
    assert str(typed["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert typed.loc[0, "amount"] == 10.0


def test_boolean_text_is_mapped():
    frame = as_text(lf.labels(["t1", "t2", "t3"], "2026-01-05"))
    frame["is_fraud"] = pd.Series(["true", "0", "maybe"], dtype="string[pyarrow]")
    typed, rejections = coerce_to_contract(frame, LABELS)
    assert rejections.reasons.to_dict() == {2: "is_fraud: expected true or false, found 'maybe'"}
    assert typed["is_fraud"].dtype == bool
    assert typed["is_fraud"].tolist()[:2] == [True, False]


def test_null_flags_are_rejected_not_defaulted():
    frame = lf.labels(["t1", "t2"], "2026-01-05").astype({"is_fraud": object})
    frame.loc[1, "is_fraud"] = None
    typed, rejections = coerce_to_contract(frame, LABELS)
    assert rejections.reasons.to_dict() == {1: "is_fraud: null not allowed"}
    assert contract_violations(drop_rejected(typed, rejections), LABELS).reasons.empty


def test_contract_violations_name_column_check_and_value():
    frame = lf.transactions("2026-01-05", n=5).astype(
        {
            c: "string[pyarrow]"
            for c in [
                "transaction_id",
                "account_id",
                "merchant_id",
                "merchant_category",
                "currency",
                "channel",
                "country",
            ]
        }
    )
    frame.loc[0, "amount"] = -3.0
    frame.loc[1, "amount"] = 10_000_000.0
    frame.loc[2, "channel"] = "mobile"
    frame.loc[3, "account_id"] = None
    frame.loc[3, "currency"] = "XXX"
    reasons = contract_violations(frame, TRANSACTIONS).reasons.to_dict()
    assert reasons[0] == "amount: failed greater_than(0), found -3.0"
    assert reasons[1] == "amount: failed less_than_or_equal_to(50000.0), found 10000000.0"
    assert reasons[2] == "channel: failed isin(('in_store', 'online')), found 'mobile'"
    assert "account_id: null not allowed" in reasons[3] and "currency: failed isin" in reasons[3]
    assert 4 not in reasons


def test_timestamps_outside_day_and_in_future():
    frame = with_lineage(lf.transactions("2026-01-05", n=4))
    frame.loc[0, "event_timestamp"] = pd.Timestamp("2026-01-04T23:59:59Z")
    frame.loc[1, "event_timestamp"] = pd.Timestamp("2026-01-06T00:00:00Z")
    frame.loc[2, "event_timestamp"] = pd.Timestamp("2099-01-05T00:00:00Z")
    rejections = timestamp_violations(frame, TRANSACTIONS, NOW)
    assert rejections.check_name == CHECK_TIMESTAMPS
    reasons = rejections.reasons.to_dict()
    assert reasons[0] == "event_timestamp: 2026-01-04T23:59:59+00:00 is outside partition day 2026-01-05"
    assert "is outside partition day" in reasons[1]
    assert reasons[2].startswith("event_timestamp: 2099-01-05T00:00:00+00:00 is in the future")
    assert 3 not in reasons


def test_snapshot_rows_may_predate_their_day_but_not_follow_it():
    frame = with_lineage(lf.accounts(ids=("old", "late")))
    frame.loc[1, "created_at"] = pd.Timestamp("2026-01-06T08:00:00Z")
    reasons = timestamp_violations(frame, ACCOUNTS, NOW).reasons.to_dict()
    assert list(reasons) == [1]
    assert "is after partition day 2026-01-05" in reasons[1]


def test_duplicate_ids_keep_first_and_point_to_it():
    frame = with_lineage(lf.transactions("2026-01-05", n=4))
    frame.loc[2, "transaction_id"] = frame.loc[0, "transaction_id"]
    frame.loc[3, "transaction_id"] = frame.loc[0, "transaction_id"]
    rejections = duplicate_ids(frame, TRANSACTIONS)
    assert rejections.check_name == CHECK_UNIQUE_IDS
    first = frame.loc[0, "transaction_id"]
    assert rejections.reasons.to_dict() == {
        2: f"transaction_id: duplicate {first!r}, first seen in f.parquet row 0",
        3: f"transaction_id: duplicate {first!r}, first seen in f.parquet row 0",
    }


def test_label_ids_repeat_across_days_but_not_within_one():
    day1 = with_lineage(lf.labels(["t1", "t2"], "2026-01-05"), "2026-01-05")
    day2 = with_lineage(lf.labels(["t1", "t1"], "2026-01-06"), "2026-01-06")
    frame = pd.concat([day1, day2], ignore_index=True)
    assert list(duplicate_ids(frame, LABELS).reasons.index) == [3]
    # Transactions ids are unique across days.
    tx = pd.concat(
        [
            with_lineage(lf.transactions("2026-01-05", n=2, prefix="x"), "2026-01-05"),
            with_lineage(lf.transactions("2026-01-06", n=2, prefix="x"), "2026-01-06"),
        ],
        ignore_index=True,
    )
    assert list(duplicate_ids(tx, TRANSACTIONS).reasons.index) == [2, 3]


def test_rejected_rows_are_dropped():
    frame = lf.transactions("2026-01-05", n=3)
    _, rejections = coerce_to_contract(as_text(frame.assign(amount=["1", "x", "3"])), TRANSACTIONS)
    assert list(drop_rejected(frame, rejections).index) == [0, 2]
