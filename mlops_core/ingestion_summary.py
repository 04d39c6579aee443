"""What the data layer made of each landed day, read back from raw.load_log. No dagster.

Rows of a day fall in three groups: accepted (the day passed every gate, so its rows reach
the marts), held (they passed the row checks but a gate held the day, so they wait in raw)
and quarantined (rejected rows, in quarantine.rejected_rows with their reason). "Loaded"
means accepted: held rows never count as loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from mlops_core.contracts import SOURCES


@dataclass(frozen=True)
class SourceDay:
    """One source's load of one day, as raw.load_log recorded it."""

    source: str
    day: date
    status: str  # accepted | held
    n_landed: int
    n_kept: int  # passed the row checks and kept in raw (accepted or held)
    n_quarantined: int
    # Each failed check with its messages (file, column, expected vs found).
    reasons: dict[str, list[str]]

    @property
    def n_accepted(self) -> int:
        return self.n_kept if self.status == "accepted" else 0

    @property
    def n_held(self) -> int:
        return self.n_kept if self.status == "held" else 0


@dataclass(frozen=True)
class DaySummary:
    day: date
    sources: tuple[SourceDay, ...]
    # Sources with no load recorded for the day.
    not_loaded: tuple[str, ...]

    @property
    def n_accepted(self) -> int:
        return sum(s.n_accepted for s in self.sources)

    @property
    def n_held(self) -> int:
        return sum(s.n_held for s in self.sources)

    @property
    def n_quarantined(self) -> int:
        return sum(s.n_quarantined for s in self.sources)

    @property
    def held(self) -> tuple[SourceDay, ...]:
        return tuple(s for s in self.sources if s.status == "held")


def day_summaries(con: duckdb.DuckDBPyConnection, first: date, last: date) -> list[DaySummary]:
    """Every day from `first` to `last` (inclusive) that any source recorded, oldest first."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw' AND table_name = 'load_log'"
    ).fetchone()[0]
    if not exists:
        return []
    has_reasons = con.execute(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_schema = 'raw' AND table_name = 'load_log' AND column_name = 'reasons'"
    ).fetchone()[0]
    reasons = "reasons" if has_reasons else "'{}'"
    rows = con.execute(
        f"SELECT source, partition_date, status, n_landed, n_accepted, n_rejected, failed_checks, {reasons} "
        "FROM raw.load_log WHERE partition_date BETWEEN ? AND ? ORDER BY partition_date, source",
        [first, last],
    ).fetchall()
    by_day: dict[date, list[SourceDay]] = {}
    for source, day, status, n_landed, n_kept, n_rejected, failed_checks, reason_json in rows:
        recorded = json.loads(reason_json or "{}")
        # A load from before reasons were kept still names its failed checks.
        checks = {check: recorded.get(check, []) for check in json.loads(failed_checks)}
        by_day.setdefault(day, []).append(SourceDay(source, day, status, n_landed, n_kept, n_rejected, checks))
    order = list(SOURCES)
    return [
        DaySummary(
            day,
            tuple(sorted(loads, key=lambda s: order.index(s.source) if s.source in order else len(order))),
            tuple(name for name in order if name not in {s.source for s in loads}),
        )
        for day, loads in sorted(by_day.items())
    ]


def held_lines(summaries: list[DaySummary], max_reason: int = 240) -> list[str]:
    """One line per held source and day: the failed checks and the first reason of each."""
    lines = []
    for summary in summaries:
        for load in summary.held:
            checks = "; ".join(
                f"{check}: {shorten(messages[0], max_reason)}" if messages else check
                for check, messages in load.reasons.items()
            )
            lines.append(f"{load.day} {load.source} held by {checks}")
    return lines


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_day_summary(warehouse: duckdb.DuckDBPyConnection | str | Path, first: date, last: date) -> str:
    """The per-day summary of `first`..`last` as text: rows accepted, quarantined and held per
    day, totals, and each held day with its failed check and reason.

    `warehouse` is an open connection or the path of the DuckDB file (opened read-only).
    """
    if isinstance(warehouse, duckdb.DuckDBPyConnection):
        summaries = day_summaries(warehouse, first, last)
    elif not Path(warehouse).exists():
        summaries = []
    else:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            summaries = day_summaries(con, first, last)
    if not summaries:
        return f"Data layer {first}..{last}: no day loaded."
    lines = [
        f"Data layer {first}..{last}, rows per day (accepted reach the marts; held wait in raw; quarantined are rejected):"
    ]
    lines.append(f"  {'day':10s} {'accepted':>9s} {'quarantined':>11s} {'held':>7s}  status")
    for s in summaries:
        status = "held: " + ", ".join(load.source for load in s.held) if s.held else "accepted"
        if s.not_loaded:
            status += f" (not loaded: {', '.join(s.not_loaded)})"
        lines.append(f"  {s.day.isoformat():10s} {s.n_accepted:>9d} {s.n_quarantined:>11d} {s.n_held:>7d}  {status}")
    held_days = [s for s in summaries if s.held]
    lines.append(
        f"Rows loaded: {sum(s.n_accepted for s in summaries)} accepted; {sum(s.n_quarantined for s in summaries)} "
        f"quarantined (quarantine.rejected_rows); {sum(s.n_held for s in summaries)} held in raw, not loaded. "
        f"{len(held_days)} of {len(summaries)} day(s) held."
    )
    if held_days:
        lines.append("Held days (fix or re-deliver the landed file, then `mlops ingest --start DAY`):")
        lines += [f"  {line}" for line in held_lines(held_days)]
    return "\n".join(lines)
