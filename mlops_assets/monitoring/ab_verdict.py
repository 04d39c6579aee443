"""The daily A/B verdict of a canary held for it (rollout.ab_test): is it catching more fraud, at what cost,
than the champion, on the days whose labels have matured?"""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import MONITORING, daily_partitions
from mlops_assets.deployment.prediction_log import PREDICTION_LOG
from mlops_core import ab_tests, registry
from mlops_core.monitoring.ab_test import WORSE, ABRules, meets, split_arms, verdict_of
from mlops_core.monitoring.reads import ab_answers, latest_labels, warehouse_log_exists
from mlops_core.serving.routing import SegmentRule
from resources.registry import ModelRegistry
from resources.settings import SettingsResource

AB_VERDICT = dg.AssetKey("ab_verdict")
EMPTY_ANSWERS = pd.DataFrame(
    {
        "transaction_id": pd.Series(dtype="string"),
        "account_id": pd.Series(dtype="string"),
        "decision": pd.Series(dtype="bool"),
        "model_version": pd.Series(dtype="string"),
        "variant": pd.Series(dtype="string"),
        "features": pd.Series(dtype="string"),
    }
)
NO_LABELS = pd.DataFrame({"transaction_id": pd.Series(dtype="string"), "is_fraud": pd.Series(dtype="boolean")})
CHECK_NOT_WORSE = "ab_canary_not_worse"


def _arm_metadata(name: str, arm) -> dict[str, object]:
    return {
        f"{name}_rows": arm.rows,
        f"{name}_frauds": arm.frauds,
        f"{name}_recall": arm.recall,
        f"{name}_precision": arm.precision,
        f"{name}_cost_per_transaction": arm.cost_per_transaction,
    }


def _plain(value: object) -> object:
    """numpy numbers as Python's; NaN (an arm with no frauds yet) as None."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if value != value else float(value)
    return value


def _clean(metadata: dict[str, object]) -> dict[str, object]:
    return {k: _plain(v) for k, v in metadata.items()}


@dg.asset(
    key=AB_VERDICT,
    group_name=MONITORING,
    partitions_def=daily_partitions,
    automation_condition=dg.AutomationCondition.eager(),
    deps=[PREDICTION_LOG, dg.AssetKey(["marts", "label_events"]), dg.AssetKey(["marts", "transactions_enriched"])],
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NOT_WORSE,
            asset=AB_VERDICT,
            blocking=False,
            description="The canary held for its A/B verdict is not significantly costlier than the champion "
            "(WARN; ab_verdict_sensor rolls a worse one back).",
        )
    ],
)
def ab_verdict(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBResource,
    model_registry: ModelRegistry,
    settings: SettingsResource,
):
    """The running A/B test's verdict as of this day (registry.ab_tests, mlops_core/monitoring/ab_test.py).

    The matured days are those at least the label maturity old: every label on them is final. On them, the
    canary's answers (its sticky accounts) and the champion's answers to the other accounts, less the segments
    kept on the champion, are joined to the labels landed by this day; the verdict compares their expected
    cost per transaction with a 95% interval once each arm holds the rows needed to see the declared effect.
    It meets the requirement: the test passed (ab_verdict_sensor promotes). Worse: failed, and no verdict by the
    deadline: expired (the sensor drains the canary and rolls it back). Nothing running: nothing to judge."""
    day = dt.date.fromisoformat(context.partition_key)
    maturity = settings.get().label_maturity_days
    now = dt.datetime.now(dt.UTC)
    with warehouse.get_connection() as con:
        tests = ab_tests.running(con, registry.MODEL_NAME)
        if not tests:
            yield dg.MaterializeResult(metadata={"day": day.isoformat(), "status": "no A/B test running"})
            yield dg.AssetCheckResult(
                check_name=CHECK_NOT_WORSE, asset_key=AB_VERDICT, passed=True, description="no A/B test running"
            )
            return
        test = tests[-1]
        challenger, champion = model_registry.challenger(), model_registry.champion()
        reason = None
        if challenger is None or str(challenger.version) != test.version:
            reason = f"version {test.version} is no longer the challenger (now {challenger.version if challenger else 'none'})"
        elif champion is None or str(champion.version) != test.champion_version:
            reason = f"the champion is no longer version {test.champion_version} (now {champion.version if champion else 'none'})"
        if reason:
            ab_tests.end(con, test, ab_tests.SUPERSEDED, reason, now)
            yield dg.MaterializeResult(
                metadata={"day": day.isoformat(), "status": ab_tests.SUPERSEDED, "reason": reason}
            )
            yield dg.AssetCheckResult(check_name=CHECK_NOT_WORSE, asset_key=AB_VERDICT, passed=True, description=reason)
            return
        last_matured = day - dt.timedelta(days=maturity)
        answers = ab_answers(con, test.started_on, last_matured) if warehouse_log_exists(con) else EMPTY_ANSWERS
        labels = latest_labels(con, answers, landed_by=day) if len(answers) else NO_LABELS
        answers = answers.merge(labels, on="transaction_id", how="left")
        rules = ABRules(**test.rules)
        excluded = tuple(SegmentRule.of(rule) for rule in test.excluded)
        arms = split_arms(answers, test.champion_version, test.version, test.canary_share, excluded)
        verdict = verdict_of(arms, rules)
        if meets(verdict.verdict, test.required):
            status, reason = (
                ab_tests.PASSED,
                f"A/B verdict {verdict.verdict} (required {test.required}): {verdict.detail}",
            )
        elif verdict.verdict == WORSE:
            status, reason = ab_tests.FAILED, f"A/B verdict worse: {verdict.detail}"
        elif day >= test.deadline:
            status, reason = (
                ab_tests.EXPIRED,
                f"no {test.required!r} verdict by {test.deadline.isoformat()} (now {verdict.verdict}): {verdict.detail}",
            )
        else:
            status, reason = ab_tests.RUNNING, f"{verdict.verdict}: {verdict.detail}"
        recorded = test.verdict_day is None or day >= test.verdict_day
        if recorded:
            # A backfill of an older day reports its verdict but does not overwrite a newer one.
            ab_tests.record_verdict(con, test, verdict.as_metadata(), day, status, reason, now)
    metadata = _clean(
        {
            "day": day.isoformat(),
            "version": test.version,
            "champion_version": test.champion_version,
            "required": test.required,
            "status": status if recorded else f"{status} (not recorded: a newer day was judged)",
            "verdict": verdict.verdict,
            "matured_days": f"{test.started_on.isoformat()}..{last_matured.isoformat()}",
            "cost_difference": verdict.cost_difference,
            "cost_interval_low": verdict.cost_interval[0],
            "cost_interval_high": verdict.cost_interval[1],
            "recall_difference": verdict.recall_difference,
            "required_rows_per_arm": verdict.required_rows_per_arm,
            "excluded_rows": arms.excluded_rows,
            "unlabelled_rows": arms.unlabelled_rows,
            "deadline": test.deadline.isoformat(),
            **_arm_metadata("champion", verdict.champion),
            **_arm_metadata("canary", verdict.canary),
            "detail": verdict.detail,
        }
    )
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=CHECK_NOT_WORSE,
        asset_key=AB_VERDICT,
        passed=verdict.verdict != WORSE,
        severity=dg.AssetCheckSeverity.WARN,
        description=reason,
        metadata={"verdict": verdict.verdict, "status": status},
    )
