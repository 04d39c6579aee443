"""Reading landing files: each broken file is named with the column and expected vs found."""

from datetime import date

import landing_factory as lf
import pandas as pd
import pytest

from mlops_core.contracts import LABELS, TRANSACTIONS
from mlops_core.landing import (
    CHECK_FILES_READABLE,
    CHECK_SCHEMA,
    fingerprint,
    list_partition_files,
    read_landing_file,
)


@pytest.mark.parametrize("name", ["part-0.parquet", "part-0.csv"])
def test_valid_files_read_with_contract_columns(landing, name):
    path = lf.write(landing, "transactions", "2026-01-05", lf.transactions("2026-01-05", n=4), name)
    read = read_landing_file(path, TRANSACTIONS)
    assert read.problems == []
    assert list(read.frame.columns) == TRANSACTIONS.columns
    assert len(read.frame) == 4


def test_empty_file_is_named(landing):
    path = landing / "x.parquet"
    path.write_bytes(b"")
    read = read_landing_file(path, TRANSACTIONS)
    assert read.frame is None
    assert read.problems == [(CHECK_FILES_READABLE, f"{path}: empty file (0 bytes)")]


def test_corrupt_parquet_is_unreadable(landing):
    path = landing / "x.parquet"
    path.write_bytes(b"PAR1 truncated garbage")
    read = read_landing_file(path, TRANSACTIONS)
    ((check, message),) = read.problems
    assert check == CHECK_FILES_READABLE
    assert message.startswith(f"{path}: unreadable parquet file")


def test_csv_without_contract_header_is_unreadable(landing):
    path = landing / "x.csv"
    path.write_bytes(b"\x00\x01binary,junk\n\x02,\x03\n")
    ((check, message),) = read_landing_file(path, TRANSACTIONS).problems
    assert check == CHECK_FILES_READABLE
    assert "none of the expected columns" in message


def test_unsupported_suffix(landing):
    path = landing / "x.xlsx"
    path.write_bytes(b"data")
    ((check, message),) = read_landing_file(path, TRANSACTIONS).problems
    assert check == CHECK_FILES_READABLE and "'.xlsx'" in message


def test_renamed_column_names_both_and_keeps_rows(landing):
    frame = lf.transactions("2026-01-05", n=3).rename(columns={"amount": "amt"})
    path = lf.write(landing, "transactions", "2026-01-05", frame)
    read = read_landing_file(path, TRANSACTIONS)
    ((check, message),) = read.problems
    assert check == CHECK_SCHEMA
    assert str(path) in message
    assert "missing column(s) ['amount']" in message and "unexpected column(s) ['amt']" in message
    assert "renamed" in message
    assert read.frame is None and read.table.num_rows == 3


def test_extra_and_missing_columns(landing):
    frame = lf.transactions("2026-01-05", n=3).drop(columns=["merchant_category"]).assign(promo_code="X")
    path = lf.write(landing, "transactions", "2026-01-05", frame)
    ((check, message),) = read_landing_file(path, TRANSACTIONS).problems
    assert check == CHECK_SCHEMA
    assert "missing column(s) ['merchant_category']" in message
    assert "unexpected column(s) ['promo_code']" in message


def test_amount_as_text_in_parquet_is_a_schema_break(landing):
    frame = lf.transactions("2026-01-05", n=3)
    frame["amount"] = frame["amount"].map(lambda v: f"{v:.2f}")
    path = lf.write(landing, "transactions", "2026-01-05", frame)
    ((check, message),) = read_landing_file(path, TRANSACTIONS).problems
    assert check == CHECK_SCHEMA
    assert message == f"{path}: column 'amount': expected number (float64), found string (string)"


def test_integer_amounts_and_naive_timestamps_are_accepted(landing):
    frame = lf.transactions("2026-01-05", n=3)
    frame["amount"] = [1, 2, 3]
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_convert(None)
    path = lf.write(landing, "transactions", "2026-01-05", frame)
    assert read_landing_file(path, TRANSACTIONS).problems == []


def test_partition_listing_skips_markers_and_fingerprint_tracks_changes(landing):
    path = lf.write(landing, "labels", "2026-01-05", lf.labels(["t1"], "2026-01-05"))
    (path.parent / "_SUCCESS").write_text("")
    (path.parent / ".part-0.parquet.crc").write_text("")
    files = list_partition_files(landing, "labels", date(2026, 1, 5))
    assert files == [path]
    before = fingerprint(files)
    lf.write(landing, "labels", "2026-01-05", lf.labels(["t1", "t2"], "2026-01-05"))
    assert fingerprint(list_partition_files(landing, "labels", date(2026, 1, 5))) != before
    assert list_partition_files(landing, "labels", date(2026, 1, 6)) == []


def test_csv_values_arrive_as_text_for_coercion(landing):
    path = lf.write(landing, "labels", "2026-01-05", lf.labels(["t1"], "2026-01-05"), "part-0.csv")
    read = read_landing_file(path, LABELS)
    assert read.problems == []
    assert all(pd.api.types.is_string_dtype(read.frame[c]) for c in LABELS.columns)
