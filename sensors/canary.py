"""Watches a live canary and rolls it back when it keeps breaking the rules.

Each tick judges every prediction logged since the cursor (no request is skipped between
ticks). A window too small to judge leaves the cursor where it is, so the next tick
judges a bigger one. `consecutive` bad windows in a row drain the canary at once (one
HTTP call from the sensor) and launch canary_rollback_job, which restores the aliases,
records the event and alerts.
"""

import datetime as dt
import json

import dagster as dg

from mlops_assets.constants import ROLLBACK_JOB
from mlops_core.projects.catalog import fraud_project
from mlops_core.serving.analysis import CanaryRules, OfflineExpectation, canary_window
from mlops_core.serving.client import EndpointError
from mlops_core.serving.prediction_log import read_predictions
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource

# The fraud project's declared canary rules (projects/fraud/defs.yaml), as the canary stage judges by.
RULES = CanaryRules(**fraud_project().rollout.canary.rules.model_dump())


def _expected_of(canary: str, model_registry: ModelRegistry) -> dict | None:
    """The canary's behaviour on its own test split, read once per canary and kept in the cursor: the canary is the
    challenger while it soaks. None when the challenger is another version or logged no scores."""
    challenger = model_registry.challenger()
    if challenger is None or str(challenger.version) != str(canary):
        return None
    expected = model_registry.offline_expectation(challenger)
    return None if expected is None else expected.as_dict()


@dg.sensor(
    job_name=ROLLBACK_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rolls a canary back after consecutive windows breaking the error-rate, p99, score-shift or flag-rate "
    "rules (shift and flag rate against the champion's and its own test split's).",
)
def canary_rollback_sensor(
    context: dg.SensorEvaluationContext, serving_endpoint: ServingEndpointResource, model_registry: ModelRegistry
):
    cursor = json.loads(context.cursor) if context.cursor else {}
    try:
        with serving_endpoint.client() as client:
            deployment = client.deployment()
    except EndpointError as exc:
        return dg.SkipReason(f"endpoint not reachable: {exc}")
    canary = deployment.get("canary_version")
    if not canary:
        context.update_cursor(json.dumps({**cursor, "canary_version": None, "streak": 0}))
        return dg.SkipReason("no canary is live")
    if cursor.get("canary_version") != canary or cursor.get("canary_since") != deployment["changed_at"]:
        cursor = {
            "canary_version": canary,
            "canary_since": deployment["changed_at"],
            "last_id": None,
            "streak": 0,
            "windows": [],
            "expected": _expected_of(canary, model_registry),
        }
    since = dt.datetime.fromisoformat(cursor["canary_since"]).timestamp()
    frame = read_predictions(serving_endpoint.prediction_log_path, since=since, after_id=cursor["last_id"])
    expected = cursor.get("expected")
    window = canary_window(frame, RULES, None if not expected else OfflineExpectation.from_dict(expected))
    if not window.judged:
        return dg.SkipReason(
            f"canary {canary}: {window.canary_requests} new canary requests, judging at {RULES.min_requests}"
        )
    streak = cursor["streak"] + 1 if window.violations else 0
    windows = (cursor.get("windows", []) + [window.as_metadata()])[-RULES.consecutive :]
    cursor = {**cursor, "last_id": int(frame["id"].max()), "streak": streak, "windows": windows}
    context.update_cursor(json.dumps(cursor))
    if streak < RULES.consecutive:
        return dg.SkipReason(
            f"canary {canary}: {window.canary_requests} requests judged; {streak}/{RULES.consecutive} bad windows in a row"
            + (f" ({'; '.join(window.violations)})" if window.violations else "")
        )
    reason = f"canary {canary} broke the rules in {streak} consecutive windows: {'; '.join(window.violations)}"
    try:
        with serving_endpoint.client() as client:
            client.rollback(reason)  # drain now; the job does the bookkeeping
    except EndpointError as exc:
        context.log.error(f"could not drain canary {canary}: {exc}; the rollback job will retry")
    return dg.RunRequest(
        run_key=f"canary-rollback-{canary}-{cursor['canary_since']}",
        run_config={
            "ops": {
                "canary_rollback": {
                    "config": {"canary_version": canary, "reason": reason, "evidence": json.dumps({"windows": windows})}
                }
            }
        },
        tags={"mlops/trigger": "canary_rollback_sensor", "mlops/reason": reason[:200]},
    )
