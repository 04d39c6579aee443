"""Watches the champion's served traffic hour by hour, from the prediction log, before any label arrives.

The daily monitoring assets judge a day once it has landed; this sensor ticks every minute and judges
each hour of the champion's requests as soon as it is complete (mlops_core/monitoring/hourly.py: score
shift, flag rate and error rate against the same hour of the champion's earlier days). Every judged hour is recorded
as an observation of `champion_hourly_watch` (visible in the UI), a flagged hour is alerted within the tick,
and `hourly_retrain_after` flagged hours in a row ask for a retraining through the same cool-down and
in-flight rules as the daily triggers (0: alert only).

The cursor keeps the champion version, its reference per hour of the day (counts per score bin, flags), the
last hour judged and the log id to read from: rows of hours not yet complete are read again next tick.
"""

import json

import dagster as dg

from mlops_assets.constants import MONITORING, RETRAINING_JOB
from mlops_core.monitoring.hourly import HourlyRules, ScoreReference, complete_hours, hour_of, judge_hour
from mlops_core.monitoring.verdicts import CHAMPION_WATCH, MonitoringVerdict
from mlops_core.serving.prediction_log import read_predictions
from resources.alerts import AlertResource
from resources.retraining import RetrainingPolicy
from resources.serving import ServingEndpointResource
from sensors.retraining import request_retraining

CHAMPION_HOURLY_WATCH = dg.AssetKey("champion_hourly_watch")
RULES = HourlyRules()

champion_hourly_watch = dg.AssetSpec(
    CHAMPION_HOURLY_WATCH,
    group_name=MONITORING,
    description="The champion's served traffic judged each hour by champion_watch_sensor: score shift, flag rate and "
    "error rate against the same hour of its earlier days. One observation per judged hour.",
)


def _reference(cursor: dict, hour: str) -> ScoreReference:
    ref = cursor["by_hour"].get(hour[11:13], {"counts": [], "flagged": 0})
    return ScoreReference(cursor["version"], tuple(ref["counts"]), ref["flagged"])


def _keep(cursor: dict, hour: str, reference: ScoreReference) -> None:
    cursor["by_hour"][hour[11:13]] = {"counts": list(reference.counts), "flagged": reference.flagged}


@dg.sensor(
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Judges each completed hour of the champion's served traffic (score shift, flag rate, error rate) against "
    "the same hour of its earlier days; alerts a flagged hour and retrains after the retraining policy's "
    "hourly_retrain_after flagged hours in a row.",
)
def champion_watch_sensor(
    context: dg.SensorEvaluationContext,
    serving_endpoint: ServingEndpointResource,
    retraining_policy: RetrainingPolicy,
    alerts: AlertResource,
):
    cursor = json.loads(context.cursor) if context.cursor else {}
    frame = read_predictions(serving_endpoint.prediction_log_path, after_id=cursor.get("read_after"))
    rows = frame[(frame["variant"] == "champion") & (frame["served"] == 1)] if len(frame) else frame
    if rows.empty:
        if len(frame):  # only shadow and canary rows: nothing to judge, nothing to read again
            context.update_cursor(json.dumps({**cursor, "read_after": int(frame["id"].max())}))
        return dg.SkipReason("no new champion request in the prediction log")
    rows = rows.assign(hour=hour_of(rows["event_timestamp"]))
    version = str(rows["model_version"].iloc[-1])
    if cursor.get("version") != version:
        # A new champion builds its own references; the previous one's traffic says nothing about its scores.
        cursor = {"version": version, "by_hour": {}, "last_hour": None, "streak": 0}
    rows = rows[rows["model_version"].astype(str) == version]
    events, verdicts, filling = [], [], 0
    for hour, hour_rows in complete_hours(rows, rows["event_timestamp"].max(), cursor["last_hour"]):
        cursor["last_hour"] = hour
        reference = _reference(cursor, hour)
        if reference.requests < RULES.reference_requests:
            _keep(cursor, hour, reference.plus(hour_rows))
            filling += 1
            continue
        verdict = judge_hour(hour, hour_rows, reference, RULES)
        if not verdict.judged:
            continue
        verdicts.append(verdict)
        if verdict.flagged:
            cursor["streak"] += 1
            alerts.send(
                "Champion degraded within the hour",
                f"champion {version}, hour {hour} UTC ({verdict.requests} requests): " + "; ".join(verdict.violations),
                {"sensor": "champion_watch_sensor", "hour": hour, "champion_version": version},
            )
        else:
            cursor["streak"] = 0
            _keep(cursor, hour, reference.plus(hour_rows))
        events.append(
            dg.AssetObservation(
                CHAMPION_HOURLY_WATCH,
                metadata={
                    **{k: v for k, v in verdict.as_dict().items() if v is not None and k != "violations"},
                    "violations": "; ".join(verdict.violations) or "none",
                    "flagged": verdict.flagged,
                    "champion_version": version,
                    "flagged_hours_in_a_row": cursor["streak"],
                },
            )
        )
    # Read again from the first row of an hour not judged yet; else past everything read.
    pending = rows.loc[rows["hour"] > (cursor["last_hour"] or ""), "id"]
    cursor["read_after"] = int(pending.min()) - 1 if len(pending) else int(frame["id"].max())
    flagged = [v for v in verdicts if v.flagged]
    summary = (
        f"champion {version}: {len(verdicts)} hour(s) judged, {len(flagged)} flagged, {filling} filled a reference"
    )
    runs = []
    needed = retraining_policy.hourly_retrain_after
    if flagged and needed and cursor["streak"] >= needed:
        last = flagged[-1]
        trigger = MonitoringVerdict(
            asset=CHAMPION_WATCH,
            day=last.hour[:10],
            triggered=True,
            reason=f"champion {version} flagged {cursor['streak']} hours in a row, last {last.hour}: "
            + "; ".join(last.violations),
            values={"hour": last.hour, "flagged_hours_in_a_row": cursor["streak"], "threshold": needed},
        )
        request = request_retraining(context, "champion_watch_sensor", [trigger], retraining_policy, alerts)
        if isinstance(request, dg.RunRequest):
            runs.append(request)
            cursor["streak"] = 0
        else:
            summary += f"; {request.skip_message}"
    context.update_cursor(json.dumps(cursor))
    return dg.SensorResult(run_requests=runs, skip_reason=None if runs else summary, asset_events=events)
