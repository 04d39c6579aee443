"""Acts on the end of an A/B test (mlops_core/ab_tests.py): promotes a canary whose verdict met the
requirement, rolls back one that was worse or found no verdict in time.

The daily ab_verdict asset judges and records; this sensor only acts, on each test that ended since its
cursor (the ended_at of the last one it acted on):
- passed: launches promote_job, whose champion_model promotes the version because its test passed;
- failed or expired: drains the canary at once (one HTTP call) and launches canary_rollback_job, which takes
  the challenger alias off the version, records the verdict as evidence and alerts.
Run keys name the version and the test's start, so a tick that repeats launches nothing twice.
"""

import datetime as dt
import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import PROMOTE_JOB, ROLLBACK_JOB
from mlops_assets.jobs import canary_rollback_job, promote_job
from mlops_core import ab_tests, registry
from mlops_core.serving.client import EndpointError
from resources.serving import ServingEndpointResource

ACTOR = "ab_verdict_sensor"


def _evidence(test: ab_tests.ABTest) -> str:
    return json.dumps(
        {"ab_test": {"required": test.required, "verdict_day": str(test.verdict_day)}, "verdict": test.verdict},
        default=str,
    )


@dg.sensor(
    jobs=[promote_job, canary_rollback_job],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Promotes a canary whose A/B verdict met the requirement; drains and rolls back one that was worse "
    "or had no verdict by its deadline.",
)
def ab_verdict_sensor(
    context: dg.SensorEvaluationContext, warehouse: DuckDBResource, serving_endpoint: ServingEndpointResource
):
    since = dt.datetime.fromisoformat(context.cursor) if context.cursor else None
    with warehouse.get_connection() as con:
        ended = ab_tests.ended_since(con, registry.MODEL_NAME, since)
    if not ended:
        return dg.SkipReason("no A/B test ended since the last tick")
    requests = []
    for test in ended:
        key = f"ab-{test.status}-{test.version}-{test.started_at.isoformat()}"
        if test.status == ab_tests.PASSED:
            requests.append(
                dg.RunRequest(
                    run_key=key,
                    job_name=PROMOTE_JOB,
                    run_config={"ops": {"champion_model": {"config": {"reason": test.reason[:500], "actor": ACTOR}}}},
                    tags={"mlops/trigger": ACTOR, "mlops/reason": (test.reason or "")[:200]},
                )
            )
            continue
        reason = test.reason or f"A/B test {test.status}"
        try:
            with serving_endpoint.client() as client:
                if str(client.deployment().get("canary_version")) == test.version:
                    client.rollback(reason[:500])  # drain now; the job does the bookkeeping
        except EndpointError as exc:
            context.log.error(f"could not drain canary {test.version}: {exc}; the rollback job will retry")
        requests.append(
            dg.RunRequest(
                run_key=key,
                job_name=ROLLBACK_JOB,
                run_config={
                    "ops": {
                        "canary_rollback": {
                            "config": {
                                "canary_version": test.version,
                                "reason": reason[:500],
                                "evidence": _evidence(test),
                                "actor": ACTOR,
                            }
                        }
                    }
                },
                tags={"mlops/trigger": ACTOR, "mlops/reason": reason[:200]},
            )
        )
    context.update_cursor(ended[-1].ended_at.isoformat())
    return requests
