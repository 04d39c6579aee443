"""The record of why a retraining happened, whoever asked for it."""

import dagster as dg
from pydantic import Field

from mlops_assets.constants import MONITORING

RETRAINING_REQUEST = dg.AssetKey("retraining_request")


class RetrainingRequestConfig(dg.Config):
    reason: str = Field(
        default="", description="Why you retrain. Required when you launch retraining_job by hand from the UI."
    )


@dg.asset(key=RETRAINING_REQUEST, group_name=MONITORING, kinds={"python"})
def retraining_request(context: dg.AssetExecutionContext, config: RetrainingRequestConfig):
    """First step of retraining_job: the trigger and its reasons, from the sensor's or schedule's run tags,
    or from the config of a run launched by hand (which must give one). Its history is the audit log
    of every retraining."""
    tags = context.run.tags
    reasons = (tags.get("mlops/reasons") or config.reason).strip()
    trigger = tags.get("mlops/trigger", "manual")
    if not reasons:
        raise dg.Failure(
            "a retraining launched by hand needs a reason: set ops.retraining_request.config.reason in the launchpad"
        )
    return dg.MaterializeResult(metadata={"trigger": trigger, "reasons": reasons, "run_id": context.run_id})
