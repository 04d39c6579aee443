"""Expires the approvals nobody decided in time (mlops_core/approvals.py) and alerts each one.

A pending approval holds a challenger between its canary and production; left forever it would block the
next rollout of that model without anyone noticing. Past `rollout.approval.expires_after_hours` it is marked
expired (decided by `approval_expiry`) and an alert names the version and when it was asked. Rolling the
model out again asks anew. The sensor launches nothing.
"""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_core import approvals
from resources.alerts import AlertResource


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks pending approvals past their expiry as expired and alerts each one.",
)
def approval_expiry_sensor(context: dg.SensorEvaluationContext, warehouse: DuckDBResource, alerts: AlertResource):
    with warehouse.get_connection() as con:
        expired = approvals.expire_due(con, dt.datetime.now(dt.UTC))
        waiting = approvals.pending(con)
    for approval in expired:
        alerts.send(
            f"Approval expired: {approval.model_name} version {approval.version}",
            f"asked at {approval.requested_at.isoformat()} UTC, no decision by {approval.expires_at.isoformat()} UTC; "
            "production is unchanged; roll it out again to ask anew",
            {"model": approval.model_name, "version": approval.version},
        )
    return dg.SkipReason(
        f"{len(expired)} approval(s) expired now; {len(waiting)} pending"
        + (f": {', '.join(f'{a.model_name} v{a.version}' for a in waiting)}" if waiting else "")
    )
