"""Ingest landing partitions into the warehouse with the data gates applied. No dagster.

For each partition day: read its files, reject bad rows into quarantine with a
reason, decide whether the batch is accepted or held, and replace the day's rows
atomically. Dagster assets wrap `ingest_partitions` and turn its report into
asset checks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_core import warehouse
from mlops_core.contracts import SourceContract
from mlops_core.landing import (
    CHECK_FILES_READABLE,
    CHECK_SCHEMA,
    FileRead,
    fingerprint,
    landed_records,
    line_field,
    list_partition_files,
    partition_dir,
    read_landing_file,
)
from mlops_core.validation import (
    CHECK_REFERENCES,
    CHECK_TIMESTAMPS,
    CHECK_UNIQUE_IDS,
    CHECK_VALUES,
    PARTITION,
    ROW_NUMBER,
    SOURCE_FILE,
    RowRejections,
    coerce_to_contract,
    contract_violations,
    drop_rejected,
    duplicate_ids,
    timestamp_violations,
)

CHECK_VOLUME = "check_volume"
CHECK_PARTITION_CONTINUITY = "check_partition_continuity"
CHECK_LANDING_UNCHANGED = "check_landing_unchanged"
ROW_LEVEL_CHECKS = (CHECK_VALUES, CHECK_UNIQUE_IDS, CHECK_TIMESTAMPS, CHECK_REFERENCES)

CHECK_DESCRIPTIONS = {
    CHECK_FILES_READABLE: "Every partition has landing files and each is a readable, non-empty parquet or CSV file.",
    CHECK_SCHEMA: "Each file has exactly the contract's columns (none missing, renamed or extra) with the right types.",
    CHECK_VALUES: "Rows with values that break the contract (type, finite numbers, range, allowed set, control "
    "characters in ids, nulls) stay under the reject-rate threshold.",
    CHECK_UNIQUE_IDS: "Rows repeating an id stay under the reject-rate threshold.",
    CHECK_TIMESTAMPS: "Rows whose timestamp lies outside the partition day, in the future, or out of order with the row "
    "it refers to (a transaction before its account's opening, a verdict before its transaction) stay under the "
    "reject-rate threshold.",
    CHECK_REFERENCES: "Rows pointing to unknown ids of another source stay under the reject-rate threshold.",
    CHECK_VOLUME: "The day's row count is within bounds of the trailing days' median (not judged when a file's rows "
    "could not be read).",
    CHECK_PARTITION_CONTINUITY: "No earlier day is missing from the warehouse (a held day was loaded and judged: it counts).",
    CHECK_LANDING_UNCHANGED: "Landing files of loaded days have not changed since they were loaded (else the warehouse is stale).",
}

REJECTED_COLUMNS = [
    "partition_date",
    "source_file",
    "row_number",
    "check_name",
    "reason",
    "record",
    "record_id",
    "run_id",
    "quarantined_at",
]


def gate_checks(contract: SourceContract) -> list[str]:
    """The blocking checks that apply to a source, in the order they are evaluated."""
    checks = [CHECK_FILES_READABLE, CHECK_SCHEMA, CHECK_VALUES, CHECK_UNIQUE_IDS, CHECK_TIMESTAMPS]
    if contract.references:
        checks.append(CHECK_REFERENCES)
    if contract.expect_steady_volume:
        checks.append(CHECK_VOLUME)
    checks.append(CHECK_PARTITION_CONTINUITY)
    return checks


@dataclass(frozen=True)
class IngestionThresholds:
    max_reject_rate: float = 0.02
    volume_min_ratio: float = 0.5
    volume_max_ratio: float = 2.0
    volume_lookback_days: int = 7
    volume_min_history: int = 3


@dataclass
class PartitionOutcome:
    partition_date: date
    n_landed: int = 0
    # Rows that passed the row-level checks and are kept in raw; they reach the marts
    # only when the day's status is 'accepted'.
    n_accepted: int = 0
    n_rejected: int = 0
    fingerprint: str = ""
    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # False when a file's rows could not be read, so the landed count is not the day's volume.
    volume_known: bool = True

    @property
    def status(self) -> str:
        return "held" if self.failures else "accepted"

    @property
    def reasons(self) -> dict[str, list[str]]:
        return {check: list(messages) for check, messages in sorted(self.failures.items())}


@dataclass
class CheckSummary:
    check_name: str
    passed: bool
    description: str
    failing_partitions: list[str]
    rejected_rows: int


@dataclass
class IngestionReport:
    source: str
    outcomes: list[PartitionOutcome]
    rejected_by_check: dict[str, int]
    # Loaded days whose landing files changed afterwards: (day, what changed).
    changed_since_load: list[tuple[str, str]]
    thresholds: IngestionThresholds

    @property
    def n_landed(self) -> int:
        return sum(o.n_landed for o in self.outcomes)

    @property
    def n_accepted(self) -> int:
        return sum(o.n_accepted for o in self.outcomes)

    @property
    def n_rejected(self) -> int:
        return sum(o.n_rejected for o in self.outcomes)

    @property
    def n_held(self) -> int:
        """Rows kept in raw for held days: loaded, but not released to the marts."""
        return sum(o.n_accepted for o in self.outcomes if o.status == "held")

    @property
    def held_partitions(self) -> list[str]:
        return [o.partition_date.isoformat() for o in self.outcomes if o.status == "held"]

    def held_reasons(self, max_length: int = 300) -> dict[str, dict[str, str]]:
        """Each held day's failed checks with their first message, e.g. for check metadata."""
        return {
            o.partition_date.isoformat(): {check: messages[0][:max_length] for check, messages in o.reasons.items()}
            for o in self.outcomes
            if o.status == "held"
        }

    def summary(self, check_name: str, max_messages: int = 5) -> CheckSummary:
        failing = [o for o in self.outcomes if check_name in o.failures]
        rejected = self.rejected_by_check.get(check_name, 0)
        if not failing:
            text = f"Passed for {len(self.outcomes)} partition(s)."
            if rejected:
                text += f" {rejected} row(s) quarantined, within the {self.thresholds.max_reject_rate:.1%} threshold."
            if check_name == CHECK_VOLUME:
                unjudged = [o.partition_date.isoformat() for o in self.outcomes if not o.volume_known]
                if unjudged:
                    text += f" Not judged for {', '.join(unjudged)}: a file's rows could not be read (see {CHECK_FILES_READABLE})."
            return CheckSummary(check_name, True, text, [], rejected)
        messages = [f"{o.partition_date}: {m}" for o in failing for m in o.failures[check_name]]
        text = "\n".join(messages[:max_messages])
        if len(messages) > max_messages:
            text += f"\n... and {len(messages) - max_messages} more"
        return CheckSummary(check_name, False, text, [o.partition_date.isoformat() for o in failing], rejected)


def _rejections_frame(
    batch: pd.DataFrame, tables: dict[str, pa.Table], rejection: RowRejections, id_column: str
) -> pd.DataFrame:
    """Rejected rows for quarantine, each with its record read back from the landed file."""
    rows = batch.loc[rejection.reasons.index, [PARTITION, SOURCE_FILE, ROW_NUMBER, id_column]].assign(
        reason=rejection.reasons
    )
    records = pd.Series(index=rows.index, dtype=object)
    for path, group in rows.groupby(SOURCE_FILE, sort=False, observed=True):
        records[group.index] = landed_records(tables[path], group[ROW_NUMBER].to_numpy())
    return pd.DataFrame(
        {
            "partition_date": rows[PARTITION].to_numpy(),
            "source_file": rows[SOURCE_FILE].to_numpy(),
            "row_number": rows[ROW_NUMBER].to_numpy(),
            "check_name": rejection.check_name,
            "reason": rows["reason"].to_numpy(),
            "record": records.to_numpy(),
            "record_id": rows[id_column].astype(object).where(rows[id_column].notna(), None).to_numpy(),
        }
    )


def _unusable_file_rows(day: date, read: FileRead, id_column: str) -> pd.DataFrame:
    """Every row of a file that cannot be used, kept as landed with the file's problem.

    A file that breaks the schema keeps its rows as read; a CSV that does not parse keeps
    its text lines; a file whose rows cannot be told apart is one row with no number.
    """
    check_name = read.problems[0][0]
    reason = "; ".join(message for _, message in read.problems)
    ids: list[object] | None = None
    if read.table is not None:
        records = landed_records(read.table)
        if id_column in read.table.column_names:
            ids = [None if v is None else str(v) for v in read.table.column(id_column).to_pylist()]
    elif read.lines is not None:
        records = [json.dumps({"line": line}, ensure_ascii=False) for line in read.lines]
        ids = [line_field(read.header, line, id_column) for line in read.lines]
    else:
        records = [None]
    row_numbers = pd.array(np.arange(len(records)) if read.rows_known else [None], dtype="Int64")
    return pd.DataFrame(
        {
            "partition_date": day,
            "source_file": str(read.path),
            "row_number": row_numbers,
            "check_name": check_name,
            "reason": reason,
            "record": pd.Series(records, dtype=object),
            "record_id": pd.Series(ids if ids is not None else [None] * len(records), dtype=object),
        }
    )


def _utc(stamp) -> str:
    stamp = pd.Timestamp(stamp)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).isoformat()


def _unknown_reference_reason(contract: SourceContract, column: str, value: str, source: str, held_in) -> str:
    ref = contract.reference(column)
    where = f"accepted or held {source}" if ref.held_counts else f"accepted {source}"
    reason = f"{column}: {value!r} not found in {where}"
    if pd.notna(held_in):
        reason += f" (it is in held {source} of {pd.Timestamp(held_in).date()}: fix that day, then re-ingest this one)"
    return reason


class _Ingestion:
    """One ingestion run of one source over a list of partition days."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        landing_dir: Path,
        contract: SourceContract,
        partitions: list[date],
        thresholds: IngestionThresholds,
        run_id: str,
        now: pd.Timestamp,
    ):
        self.con = con
        self.landing_dir = landing_dir
        self.contract = contract
        self.partitions = sorted(set(partitions))
        self.thresholds = thresholds
        self.run_id = run_id
        self.now = now
        self.loaded_at = now.tz_convert(None)
        history = warehouse.load_history(con, contract.name)
        prior = history[~history["partition_date"].dt.date.isin(self.partitions)] if len(history) else history
        self.prior = prior
        self.known_days: set[date] = set(prior["partition_date"].dt.date) if len(prior) else set()
        # Volumes that may serve as a baseline: days that did not themselves fail the volume gate.
        self.volumes: dict[date, int] = {
            row.partition_date.date(): int(row.n_landed)
            for row in prior.itertuples()
            if not {CHECK_VOLUME, CHECK_FILES_READABLE} & set(json.loads(row.failed_checks))
        }
        self.outcomes: list[PartitionOutcome] = []
        self.rejected_by_check: dict[str, int] = defaultdict(int)

    def run(self, chunk_rows: int) -> IngestionReport:
        pending: list[tuple[date, list[Path], list[FileRead]]] = []
        pending_rows = 0
        for day in self.partitions:
            files = list_partition_files(self.landing_dir, self.contract.name, day)
            reads = [read_landing_file(path, self.contract) for path in files]
            pending.append((day, files, reads))
            pending_rows += sum(r.n_rows for r in reads)
            if pending_rows >= chunk_rows:
                self._process(pending)
                pending, pending_rows = [], 0
        if pending:
            self._process(pending)
        return IngestionReport(
            self.contract.name, self.outcomes, dict(self.rejected_by_check), self._changed_since_load(), self.thresholds
        )

    def _process(self, pending: list[tuple[date, list[Path], list[FileRead]]]) -> None:
        contract = self.contract
        outcomes: dict[date, PartitionOutcome] = {}
        frames, rejected_parts = [], []
        tables: dict[str, pa.Table] = {}
        for day, files, reads in pending:
            outcome = PartitionOutcome(day, fingerprint=fingerprint(files))
            if not files:
                folder = partition_dir(self.landing_dir, contract.name, day)
                outcome.failures[CHECK_FILES_READABLE].append(
                    f"no files in {folder} (missing partition): expected *.parquet or *.csv"
                )
            for read in reads:
                for check_name, message in read.problems:
                    outcome.failures[check_name].append(message)
                outcome.n_landed += read.n_rows
                if read.frame is not None:
                    tables[str(read.path)] = read.table
                    frames.append(
                        read.frame.assign(
                            **{PARTITION: day, SOURCE_FILE: str(read.path), ROW_NUMBER: np.arange(len(read.frame))}
                        )
                    )
                elif read.table is not None or read.lines is not None or not read.rows_known:
                    # Only an empty file leaves nothing to keep.
                    rejected_parts.append(_unusable_file_rows(day, read, contract.id_column))
                if read.lines is not None or not read.rows_known:
                    outcome.volume_known = False
            outcomes[day] = outcome

        lineage = [PARTITION, SOURCE_FILE, ROW_NUMBER]
        batch = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=contract.columns + lineage)
        typed, coerce_rejections = coerce_to_contract(batch[contract.columns], contract)
        typed[lineage] = batch[lineage]
        remaining = drop_rejected(typed, coerce_rejections)
        rejections = [coerce_rejections]
        for find in (
            lambda f: contract_violations(f[contract.columns + [ROW_NUMBER]], contract),
            lambda f: timestamp_violations(f, contract, self.now),
            lambda f: duplicate_ids(f, contract),
            self._loaded_elsewhere,
            self._unknown_references,
            self._out_of_order,
        ):
            found = find(remaining)
            rejections.append(found)
            remaining = drop_rejected(remaining, found)
        rejected_parts += [_rejections_frame(batch, tables, r, contract.id_column) for r in rejections if len(r)]
        rejected = (
            pd.concat(rejected_parts, ignore_index=True)
            if rejected_parts
            else pd.DataFrame(columns=REJECTED_COLUMNS[:7])
        )

        self._decide(outcomes, remaining, rejected)
        statuses = {day: o.status for day, o in outcomes.items()}
        accepted = remaining.assign(
            _batch_status=remaining[PARTITION].map(statuses),
            _run_id=self.run_id,
            _loaded_at=self.loaded_at,
        )
        for column in contract.columns:
            if contract.dtype_of(column).startswith("datetime64"):
                accepted[column] = accepted[column].dt.tz_convert(None)
        # Typed lineage columns: DuckDB scans Python objects (dates, str) row by row.
        # They hold a handful of distinct values, so categoricals are the cheap typing.
        accepted[PARTITION] = pd.to_datetime(accepted[PARTITION])
        for column in (SOURCE_FILE, "_batch_status", "_run_id"):
            accepted[column] = pd.Categorical(accepted[column])
        rejected = rejected.assign(run_id=self.run_id, quarantined_at=self.loaded_at)
        load_log = pd.DataFrame(
            {
                "partition_date": [o.partition_date for o in outcomes.values()],
                "status": [o.status for o in outcomes.values()],
                "n_landed": [o.n_landed for o in outcomes.values()],
                "n_accepted": [o.n_accepted for o in outcomes.values()],
                "n_rejected": [o.n_rejected for o in outcomes.values()],
                "failed_checks": [json.dumps(sorted(o.failures)) for o in outcomes.values()],
                "reasons": [json.dumps(o.reasons, ensure_ascii=False) for o in outcomes.values()],
                "fingerprint": [o.fingerprint for o in outcomes.values()],
                "run_id": self.run_id,
                "loaded_at": self.loaded_at,
            }
        )
        warehouse.replace_partitions(self.con, contract, list(outcomes), accepted, rejected, load_log)
        self.outcomes.extend(outcomes.values())

    def _loaded_elsewhere(self, frame: pd.DataFrame) -> RowRejections:
        if not self.contract.unique_across_partitions or frame.empty:
            return RowRejections(CHECK_UNIQUE_IDS, pd.Series([], dtype=object))
        # Exclude only this chunk's days: earlier chunks of the same run are already
        # written, so an id repeated across chunks is caught here too.
        chunk_days = sorted(set(frame[PARTITION]))
        clash = warehouse.ids_loaded_in_other_partitions(self.con, frame, self.contract, chunk_days)
        reasons = pd.Series(
            [
                f"{self.contract.id_column}: {i!r} already loaded from partition {p.date()}"
                for i, p in zip(clash["id"], clash["other_partition"])
            ],
            index=pd.Index(clash["row_label"].to_numpy(), dtype=frame.index.dtype),
            dtype=object,
        )
        return RowRejections(CHECK_UNIQUE_IDS, reasons.sort_index())

    def _unknown_references(self, frame: pd.DataFrame) -> RowRejections:
        if not self.contract.references or frame.empty:
            return RowRejections(CHECK_REFERENCES, pd.Series([], dtype=object))
        missing = warehouse.unknown_references(self.con, frame, self.contract)
        reasons = pd.Series(
            [
                _unknown_reference_reason(self.contract, c, v, s, h)
                for c, v, s, h in zip(missing["column"], missing["ref_id"], missing["source"], missing["held_in"])
            ],
            index=pd.Index(missing["row_label"].to_numpy(), dtype=frame.index.dtype),
            dtype=object,
        )
        return RowRejections(CHECK_REFERENCES, reasons.groupby(level=0).agg("; ".join).sort_index())

    def _out_of_order(self, frame: pd.DataFrame) -> RowRejections:
        if frame.empty:
            return RowRejections(CHECK_TIMESTAMPS, pd.Series([], dtype=object))
        found = warehouse.time_order_violations(self.con, frame, self.contract)
        reasons = pd.Series(
            [
                f"{column}: {_utc(stamp)} is {relation} {other_column} {_utc(other_stamp)} of {other_source} {other_id!r}"
                + (" (already accepted)" if relation == "after" else "")
                for column, stamp, relation, other_column, other_stamp, other_source, other_id in zip(
                    found["column"],
                    found["stamp"],
                    found["relation"],
                    found["other_column"],
                    found["other_stamp"],
                    found["other_source"],
                    found["other_id"],
                )
            ],
            index=pd.Index(found["row_label"].to_numpy(), dtype=frame.index.dtype),
            dtype=object,
        )
        return RowRejections(CHECK_TIMESTAMPS, reasons.groupby(level=0).agg("; ".join).sort_index())

    def _decide(self, outcomes: dict[date, PartitionOutcome], accepted: pd.DataFrame, rejected: pd.DataFrame) -> None:
        t = self.thresholds
        accepted_counts = accepted[PARTITION].value_counts().to_dict() if len(accepted) else {}
        by_check = rejected.groupby(["partition_date", "check_name"]).size().to_dict() if len(rejected) else {}
        example = (
            rejected.groupby(["partition_date", "check_name"])["reason"].first().to_dict() if len(rejected) else {}
        )
        for day in sorted(outcomes):
            outcome = outcomes[day]
            outcome.n_accepted = int(accepted_counts.get(day, 0))
            outcome.n_rejected = outcome.n_landed - outcome.n_accepted
            for check_name in ROW_LEVEL_CHECKS:
                n = int(by_check.get((day, check_name), 0))
                self.rejected_by_check[check_name] += n
                rate = n / outcome.n_landed if outcome.n_landed else 0.0
                if rate > t.max_reject_rate:
                    outcome.failures[check_name].append(
                        f"{n} of {outcome.n_landed} rows ({rate:.1%}) rejected, above the {t.max_reject_rate:.1%} "
                        f"threshold; e.g. {example[(day, check_name)]}"
                    )
            for check_name in (CHECK_FILES_READABLE, CHECK_SCHEMA):
                self.rejected_by_check[check_name] += int(by_check.get((day, check_name), 0))
            if self.contract.expect_steady_volume and outcome.volume_known:
                self._check_volume(outcome)
            self._check_continuity(outcome)
            self.known_days.add(day)

    def _check_volume(self, outcome: PartitionOutcome) -> None:
        t = self.thresholds
        day = outcome.partition_date
        trailing = [self.volumes[d] for d in sorted(self.volumes) if d < day][-t.volume_lookback_days :]
        if len(trailing) >= t.volume_min_history:
            median = float(np.median(trailing))
            ratio = outcome.n_landed / median if median else float("inf")
            if not t.volume_min_ratio <= ratio <= t.volume_max_ratio:
                outcome.failures[CHECK_VOLUME].append(
                    f"{outcome.n_landed} rows landed, {ratio:.2f}x the median of the {len(trailing)} trailing days "
                    f"({median:.0f}); expected {t.volume_min_ratio}x to {t.volume_max_ratio}x"
                )
                return
        if CHECK_FILES_READABLE not in outcome.failures:
            self.volumes[day] = outcome.n_landed

    def _check_continuity(self, outcome: PartitionOutcome) -> None:
        day = outcome.partition_date
        earlier = [d for d in self.known_days if d < day]
        if earlier and (day - timedelta(days=1)) not in self.known_days:
            last = max(earlier)
            gap = [(last + timedelta(days=i)).isoformat() for i in range(1, (day - last).days)]
            shown = gap if len(gap) <= 5 else gap[:2] + ["..."] + gap[-2:]
            outcome.failures[CHECK_PARTITION_CONTINUITY].append(
                f"{len(gap)} earlier day(s) never loaded: {', '.join(shown)} (last loaded day {last}); load them first"
            )

    def _changed_since_load(self) -> list[tuple[str, str]]:
        changed = []
        for row in self.prior.itertuples():
            day = row.partition_date.date()
            files = list_partition_files(self.landing_dir, self.contract.name, day)
            if fingerprint(files) != row.fingerprint:
                what = f"{len(files)} file(s) now in {partition_dir(self.landing_dir, self.contract.name, day)}"
                changed.append((day.isoformat(), what))
        return changed


def ingest_partitions(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    contract: SourceContract,
    partitions: list[date],
    thresholds: IngestionThresholds | None = None,
    run_id: str = "manual",
    now: pd.Timestamp | None = None,
    chunk_rows: int = 500_000,
) -> IngestionReport:
    """Load the given partition days of one source, replacing what was loaded for them before.

    Rows that fail row-level checks go to quarantine.rejected_rows; the rest go to
    raw.<source> tagged with their day's status ('accepted' or 'held'). Chunks of
    whole days are validated together to bound memory and per-call overhead.
    """
    warehouse.ensure_schema(con)
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    run = _Ingestion(con, landing_dir, contract, partitions, thresholds or IngestionThresholds(), run_id, now)
    return run.run(chunk_rows)
