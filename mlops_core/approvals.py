"""An optional human approval between the canary and production, per project. No dagster here.

With `rollout.approval.required` in a project's declaration, `champion_model` does not promote a challenger
that nobody approved: it records a pending approval (the version, the evidence of its rollout, the report
link) and stops there, so production is left as it was. A decision, from `mlops approve` / `mlops reject` or
from the Dagster UI (approval_job with its config), is recorded here with who, when and why; the promotion
or the removal of the challenger that follows is recorded in the alias history as that person's act. A
pending approval expires after `expires_after_hours`; approval_expiry_sensor marks it expired and alerts.

One row per (model, version) request in registry.approvals, in the warehouse beside registry.alias_history.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

TABLE = "registry.approvals"
PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
DECISIONS = {"approve": APPROVED, "reject": REJECTED}
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model_name VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    requested_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    evidence VARCHAR,
    report VARCHAR,
    decided_by VARCHAR,
    decided_at TIMESTAMP,
    reason VARCHAR
)
"""


class ApprovalError(RuntimeError):
    """A decision that cannot be taken: nothing pending for that version, or it expired."""


@dataclass(frozen=True)
class Approval:
    model_name: str
    version: str
    status: str
    requested_at: dt.datetime
    expires_at: dt.datetime
    evidence: dict[str, Any]
    report: str | None
    decided_by: str | None
    decided_at: dt.datetime | None
    reason: str | None


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """As the warehouse stores times: naive UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS registry")
    con.execute(_DDL)


def _row(values) -> Approval:
    fields = list(values)
    fields[5] = json.loads(fields[5]) if fields[5] else {}
    return Approval(*fields)


def latest(con: duckdb.DuckDBPyConnection, model_name: str, version: str) -> Approval | None:
    """The newest request for this version, whatever its status."""
    ensure_table(con)
    found = con.execute(
        f"SELECT model_name, version, status, requested_at, expires_at, evidence, report, decided_by, decided_at, reason FROM {TABLE} WHERE model_name = ? AND version = ? ORDER BY requested_at DESC, rowid DESC LIMIT 1",
        [model_name, str(version)],
    ).fetchone()
    return None if found is None else _row(found)


def pending(con: duckdb.DuckDBPyConnection, model_name: str | None = None) -> list[Approval]:
    ensure_table(con)
    rows = con.execute(
        f"SELECT model_name, version, status, requested_at, expires_at, evidence, report, decided_by, decided_at, reason FROM {TABLE} WHERE status = ? AND (? IS NULL OR model_name = ?) ORDER BY requested_at",
        [PENDING, model_name, model_name],
    ).fetchall()
    return [_row(r) for r in rows]


def request(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str,
    evidence: dict[str, Any],
    report: str | None,
    now: dt.datetime,
    expires_after_hours: float,
) -> Approval:
    """Record that `version` waits for a decision; a request already pending (or approved) is returned as is,
    so a rerun of the rollout does not restart the clock. An expired or rejected one is requested anew."""
    current = latest(con, model_name, version)
    if current is not None and current.status in (PENDING, APPROVED):
        return current
    requested = naive_utc(now)
    con.execute(
        f"INSERT INTO {TABLE} (model_name, version, status, requested_at, expires_at, evidence, report, decided_by, decided_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
        [
            model_name,
            str(version),
            PENDING,
            requested,
            requested + dt.timedelta(hours=expires_after_hours),
            json.dumps(evidence, sort_keys=True, default=str),
            report,
        ],
    )
    return latest(con, model_name, version)


def decide(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str,
    decision: str,
    actor: str,
    reason: str,
    now: dt.datetime,
) -> Approval:
    """Approve or reject the pending request of `version`. Refused (ApprovalError, naming what was found) when
    none is pending, or when it expired (it is then marked expired)."""
    if decision not in DECISIONS:
        raise ApprovalError(f"decision must be one of {sorted(DECISIONS)}, got {decision!r}")
    if not reason.strip() or not actor.strip():
        raise ApprovalError("a decision needs who takes it and why (actor and reason)")
    current = latest(con, model_name, version)
    if current is None or current.status != PENDING:
        found = "no request" if current is None else f"its latest request is {current.status}"
        raise ApprovalError(f"{model_name!r} version {version} has no pending approval ({found})")
    when = naive_utc(now)
    if when > current.expires_at:
        _set(con, current, EXPIRED, "approval_expiry", f"expired at {current.expires_at.isoformat()}", when)
        raise ApprovalError(
            f"{model_name!r} version {version}: its approval expired at {current.expires_at.isoformat()} "
            "(roll it out again to ask anew)"
        )
    _set(con, current, DECISIONS[decision], actor, reason, when)
    return latest(con, model_name, version)


def _set(con, approval: Approval, status: str, actor: str, reason: str, when: dt.datetime) -> None:
    con.execute(
        f"UPDATE {TABLE} SET status = ?, decided_by = ?, decided_at = ?, reason = ? "
        "WHERE model_name = ? AND version = ? AND requested_at = ? AND status = ?",
        [status, actor, when, reason, approval.model_name, approval.version, approval.requested_at, approval.status],
    )


def expire_due(con: duckdb.DuckDBPyConnection, now: dt.datetime) -> list[Approval]:
    """Mark every pending request past its expiry as expired; returns them (as now recorded)."""
    when = naive_utc(now)
    due = [a for a in pending(con) if when > a.expires_at]
    for approval in due:
        _set(con, approval, EXPIRED, "approval_expiry", f"no decision by {approval.expires_at.isoformat()}", when)
    return [latest(con, a.model_name, a.version) for a in due]
