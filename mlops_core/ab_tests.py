"""A canary held for its A/B verdict: what was started, what the daily verdict said, how it ended. No dagster here.

With `rollout.ab_test.required` in a project's declaration, `champion_model` does not promote a canary that
passed its soak: it starts an A/B test here (the canary and champion versions, the canary's share of accounts,
the segments kept on the champion, the rules and the first event day the canary serves) and leaves the
canary answering its share. The daily `ab_verdict` asset judges the matured days
(mlops_core/monitoring/ab_test.py) and records each verdict here; the test ends

- `passed` when the verdict meets the requirement ("better", or "better"/"not worse"): ab_verdict_sensor
  launches the promotion, and champion_model promotes the version because this row says it passed;
- `failed` on a "worse" verdict, and `expired` without a verdict by the deadline: the sensor drains the
  canary and launches canary_rollback_job;
- `superseded` when another challenger replaced the version before a verdict;
- `promoted` once champion_model promoted the version on a passed test.

One row per test in registry.ab_tests, in the warehouse beside registry.alias_history and registry.approvals.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_core.approvals import naive_utc

if TYPE_CHECKING:
    import duckdb

TABLE = "registry.ab_tests"
# The triggers that say the champion itself degraded (recall on confirmed frauds, the hourly watch): with
# rollout.ab_test.unless_champion_degraded, their retraining neither waits for a verdict nor is held by a test.
DEGRADATION_TRIGGERS = ("performance_sensor", "champion_watch_sensor")
TRIGGER_TAG = "mlops/trigger"
RUNNING, PASSED, FAILED, EXPIRED, SUPERSEDED = "running", "passed", "failed", "expired", "superseded"
# A passed test whose version was promoted on it: used once; a later rollout of that version is tested anew.
PROMOTED = "promoted"
# The columns in the order ABTest takes them.
COLUMNS = (
    "model_name",
    "version",
    "champion_version",
    "required",
    "canary_share",
    "excluded",
    "rules",
    "started_on",
    "deadline",
    "status",
    "verdict",
    "verdict_day",
    "started_at",
    "ended_at",
    "reason",
)
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model_name VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    champion_version VARCHAR NOT NULL,
    required VARCHAR NOT NULL,
    canary_share DOUBLE NOT NULL,
    excluded VARCHAR NOT NULL,
    rules VARCHAR NOT NULL,
    started_on DATE NOT NULL,
    deadline DATE NOT NULL,
    status VARCHAR NOT NULL,
    verdict VARCHAR,
    verdict_day DATE,
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    reason VARCHAR
)
"""


@dataclass(frozen=True)
class ABTest:
    model_name: str
    version: str
    champion_version: str
    required: str
    canary_share: float
    excluded: list[dict[str, Any]]
    rules: dict[str, float]
    started_on: dt.date  # first event day the canary answers
    deadline: dt.date  # no verdict meeting the requirement by this event day: the test expires
    status: str
    verdict: dict[str, Any] | None
    verdict_day: dt.date | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    reason: str | None


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS registry")
    con.execute(_DDL)


def _row(values) -> ABTest:
    fields = list(values)
    fields[5] = json.loads(fields[5])
    fields[6] = json.loads(fields[6])
    fields[10] = json.loads(fields[10]) if fields[10] else None
    return ABTest(*fields)


def latest(con: duckdb.DuckDBPyConnection, model_name: str, version: str) -> ABTest | None:
    """The newest test of this version, whatever its status."""
    ensure_table(con)
    found = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE model_name = ? AND version = ? ORDER BY started_at DESC, rowid DESC LIMIT 1",
        [model_name, str(version)],
    ).fetchall()
    return _row(found[0]) if found else None


def running(con: duckdb.DuckDBPyConnection, model_name: str) -> list[ABTest]:
    ensure_table(con)
    rows = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE model_name = ? AND status = ? ORDER BY started_at",
        [model_name, RUNNING],
    ).fetchall()
    return [_row(r) for r in rows]


def start(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str,
    champion_version: str,
    required: str,
    canary_share: float,
    excluded: list[dict[str, Any]],
    rules: dict[str, float],
    started_on: dt.date,
    max_days: int,
    now: dt.datetime,
) -> ABTest:
    """Start the test of `version` against `champion_version`; a test of it already running or passed is returned
    as is (a rerun of the rollout does not restart it). Any other running test of the model is superseded."""
    if required not in ("better", "not worse"):
        raise ValueError(f"an A/B test requires 'better' or 'not worse', got {required!r}")
    if not 0 < canary_share <= 1:
        raise ValueError(f"an A/B test needs a canary share in (0, 1], got {canary_share}")
    current = latest(con, model_name, version)
    if (
        current is not None
        and current.status in (RUNNING, PASSED)
        and current.champion_version == str(champion_version)
    ):
        return current
    for other in running(con, model_name):
        end(con, other, SUPERSEDED, f"version {version} replaced it as canary before a verdict", now)
    con.execute(
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, NULL, NULL)",
        [
            model_name,
            str(version),
            str(champion_version),
            required,
            float(canary_share),
            json.dumps(excluded, sort_keys=True),
            json.dumps(rules, sort_keys=True),
            started_on,
            started_on + dt.timedelta(days=max_days),
            RUNNING,
            naive_utc(now),
        ],
    )
    return latest(con, model_name, version)


def record_verdict(
    con: duckdb.DuckDBPyConnection,
    test: ABTest,
    verdict: dict[str, Any],
    day: dt.date,
    status: str,
    reason: str,
    now: dt.datetime,
) -> ABTest:
    """The day's verdict on a running test, and its end when `status` is not RUNNING."""
    con.execute(
        f"UPDATE {TABLE} SET verdict = ?, verdict_day = ?, status = ?, reason = ?, ended_at = ? "
        "WHERE model_name = ? AND version = ? AND started_at = ? AND status = ?",
        [
            json.dumps(verdict, sort_keys=True, default=str),
            day,
            status,
            reason,
            None if status == RUNNING else naive_utc(now),
            test.model_name,
            test.version,
            test.started_at,
            RUNNING,
        ],
    )
    return latest(con, test.model_name, test.version)


def end(con: duckdb.DuckDBPyConnection, test: ABTest, status: str, reason: str, now: dt.datetime) -> None:
    con.execute(
        f"UPDATE {TABLE} SET status = ?, reason = ?, ended_at = ? "
        "WHERE model_name = ? AND version = ? AND started_at = ? AND status = ?",
        [status, reason, naive_utc(now), test.model_name, test.version, test.started_at, test.status],
    )


def ended_since(con: duckdb.DuckDBPyConnection, model_name: str, since: dt.datetime | None) -> list[ABTest]:
    """Tests that passed, failed or expired after `since` (all of them when None), oldest first: what
    ab_verdict_sensor has to act on. A superseded test needs nothing."""
    ensure_table(con)
    rows = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} WHERE model_name = ? AND status IN (?, ?, ?) "
        "AND (CAST(? AS TIMESTAMP) IS NULL OR ended_at > CAST(? AS TIMESTAMP)) ORDER BY ended_at",
        [model_name, PASSED, FAILED, EXPIRED, since, since],
    ).fetchall()
    return [_row(r) for r in rows]
