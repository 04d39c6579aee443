"""Batch scoring: every transaction of one event day scored by a registered model in one pass.

Features come from the same point-in-time SQL as the training set (features.offline.day_features),
run over the events of [day - 30 days, day + 1) of the accounts that transact on the day only.
Windows are per account and the longest reaches 30 days back from the day's first instant, so
every row of the day sees exactly the history it would see over the whole warehouse, and no
event after the day is read. Feature drift reads the same frame as its current side.

The day's matrix is scored in a few large chunks, one onnxruntime call each, and written to
`scoring.batch_scores`, replacing the day's previous scores in one transaction. No dagster here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from mlops_core.features.offline import checked_identifier, day_features
from mlops_core.features.spec import ACCOUNT_HISTORY_TABLE, EVENTS_TABLE
from mlops_core.training import matrix
from mlops_core.warehouse import transaction

if TYPE_CHECKING:  # serving's model loading imports MLflow: batch scoring is handed a loaded model
    from mlops_core.serving.models import LoadedModel

SCORES_TABLE = "scoring.batch_scores"
# Rows per onnxruntime call: large enough that a day is one or a few calls, small enough that
# the float32 matrix of a chunk (about 50 columns) stays near 20 MB.
CHUNK_ROWS = 100_000

# Column -> (DuckDB type, description); the table, the frame and the UI schema all follow it.
SCORE_COLUMNS: dict[str, tuple[str, str]] = {
    "transaction_id": ("varchar", "The scored transaction."),
    "account_id": ("varchar", "Its account."),
    "event_timestamp": ("timestamp", "When it happened, UTC (stored naive, like the marts)."),
    "event_date": ("date", "Its event day: the partition it was scored in."),
    "fraud_probability": ("double", "P(fraud) from the model, in [0, 1]."),
    "is_fraud": ("boolean", "fraud_probability >= the model's operating threshold."),
    "model_version": ("varchar", "Registry version of the model that scored it."),
    "scored_at": ("timestamp", "When the batch was scored, UTC (stored naive)."),
}

SCORES_DDL = (
    f"create table if not exists {SCORES_TABLE} (\n"
    + ",\n".join(f"    {name} {sql_type} not null" for name, (sql_type, _) in SCORE_COLUMNS.items())
    + "\n)"
)

_STAGING_VIEW = "batch_scores_staging"


def score_matrix(model: LoadedModel, X: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """P(fraud) for every row of X, one onnxruntime call per `chunk_rows` rows."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if len(X) == 0:
        return np.empty(0, dtype=np.float64)
    return np.concatenate([model.score(X[i : i + chunk_rows]) for i in range(0, len(X), chunk_rows)])


def score_day(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    model: LoadedModel,
    scored_at: dt.datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
) -> pd.DataFrame:
    """One row per transaction of `day` with the model's probability and decision (columns SCORE_COLUMNS).

    A day without transactions gives an empty frame with the same columns.
    """
    features = day_features(con, day, events, account_history)
    probability = score_matrix(model, matrix.encode(features), chunk_rows)
    scored_at = scored_at or dt.datetime.now(dt.UTC)
    if scored_at.tzinfo is not None:  # naive means UTC already, as in the warehouse
        scored_at = scored_at.astimezone(dt.UTC).replace(tzinfo=None)
    rows = len(features)
    return pd.DataFrame(
        {
            "transaction_id": features["transaction_id"].astype(object),
            "account_id": features["account_id"].astype(object),
            "event_timestamp": features["event_timestamp"],
            "event_date": pd.Series([day] * rows, dtype=object, index=features.index),
            "fraud_probability": probability,
            "is_fraud": probability >= model.threshold,
            "model_version": pd.Series([str(model.version)] * rows, dtype=object, index=features.index),
            "scored_at": pd.Series([scored_at] * rows, dtype="datetime64[us]", index=features.index),
        },
        columns=list(SCORE_COLUMNS),
    ).reset_index(drop=True)


def ensure_scores_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the scoring schema and scoring.batch_scores if missing."""
    con.execute("create schema if not exists scoring")
    con.execute(SCORES_DDL)


def write_scores(con: duckdb.DuckDBPyConnection, day: dt.date, scores: pd.DataFrame) -> int:
    """Replace the scores of `day` in scoring.batch_scores with `scores`; returns the rows written.

    Delete and insert run in one transaction, so a re-run replaces the day rather than adding
    to it, and a failed write leaves the previous scores in place.
    """
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores are missing columns {missing}")
    frame = scores[list(SCORE_COLUMNS)]
    other_days = sorted({str(d) for d in pd.to_datetime(frame["event_date"]).dt.date if d != day})
    if other_days:
        raise ValueError(f"scores for day {day} hold rows of other days {other_days[:5]}: write each day on its own")
    columns = ", ".join(SCORE_COLUMNS)
    casts = ", ".join(
        f"cast({checked_identifier(name)} as {sql_type})" for name, (sql_type, _) in SCORE_COLUMNS.items()
    )
    # Registered outside the transaction: unregistering inside an aborted one would fail and
    # hide the error that aborted it.
    con.register(_STAGING_VIEW, frame)
    try:
        with transaction(con):
            ensure_scores_table(con)
            con.execute(f"delete from {SCORES_TABLE} where event_date = $day", {"day": day})
            con.execute(f"insert into {SCORES_TABLE} ({columns}) select {casts} from {_STAGING_VIEW}")
    finally:
        con.unregister(_STAGING_VIEW)
    return len(frame)


@dataclass(frozen=True)
class ScoreAudit:
    """How the stored scores of one day compare with the day's transactions in the marts."""

    day: dt.date
    transactions: int
    scored_rows: int
    missing: int  # transactions of the day without a score
    duplicated: int  # rows beyond the first for a transaction scored more than once
    unexpected: int  # scores of the day for a transaction that is not one of the day's
    null_values: int  # rows with a null in any column
    out_of_range: int  # probabilities outside [0, 1], NaN included

    @property
    def passed(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected or self.null_values or self.out_of_range)

    def describe(self) -> str:
        text = (
            f"{self.scored_rows} scores for {self.transactions} transactions of {self.day}: {self.missing} missing, "
            f"{self.duplicated} duplicated, {self.unexpected} not of that day, {self.null_values} with nulls, "
            f"{self.out_of_range} probabilities outside [0, 1]."
        )
        return ("Complete: " if self.passed else "Incomplete: ") + text


def audit_scores(con: duckdb.DuckDBPyConnection, day: dt.date, events: str = EVENTS_TABLE) -> ScoreAudit:
    """Every transaction of `day` (event_date in the marts) has exactly one complete, in-range score."""
    events = checked_identifier(events)
    ensure_scores_table(con)
    any_null = " or ".join(f"{name} is null" for name in SCORE_COLUMNS)
    row = con.execute(
        f"""
with expected as (select transaction_id from {events} where event_date = $day),
scored as (select * from {SCORES_TABLE} where event_date = $day),
per_transaction as (select transaction_id, count(*) as n from scored group by transaction_id)
select
    (select count(*) from expected),
    (select count(*) from scored),
    (select count(*) from expected where transaction_id not in (select transaction_id from per_transaction where transaction_id is not null)),
    (select coalesce(sum(n - 1), 0) from per_transaction),
    (select count(*) from per_transaction where transaction_id is null
        or transaction_id not in (select transaction_id from expected)),
    (select count(*) from scored where {any_null}),
    (select count(*) from scored where not (fraud_probability >= 0 and fraud_probability <= 1))
""",
        {"day": day},
    ).fetchone()
    return ScoreAudit(day, *(int(v) for v in row))


def summarize(scores: pd.DataFrame) -> dict[str, float | int]:
    """Rows, flagged rows, flagged share and mean probability of a scored frame (shares 0 when empty)."""
    rows = len(scores)
    flagged = int(scores["is_fraud"].sum()) if rows else 0
    return {
        "rows": rows,
        "flagged_rows": flagged,
        "flagged_share": flagged / rows if rows else 0.0,
        "mean_probability": float(scores["fraud_probability"].mean()) if rows else 0.0,
    }


def markdown_preview(scores: pd.DataFrame, columns: Sequence[str] = tuple(SCORE_COLUMNS), limit: int = 10) -> str:
    """The `limit` highest-probability rows as a markdown table."""
    top = scores.nlargest(limit, "fraud_probability") if len(scores) else scores
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in top[list(columns)].itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in record) + " |")
    return "\n".join(lines)
