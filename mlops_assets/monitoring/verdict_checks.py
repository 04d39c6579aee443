"""A monitoring verdict as a WARN asset check on its asset: written by the asset, read by the sensors.

The check fails when the day's verdict asks for retraining. It never blocks (the day's monitoring result
stands either way); it makes drift visible on the asset graph, and its metadata is the verdict the
retraining sensors act on (mlops_core/monitoring/verdicts.py declares its fields).
"""

import dagster as dg

from mlops_core.monitoring.verdicts import MonitoringVerdict, VerdictError


def verdict_check_spec(key: dg.AssetCheckKey, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(key.name, asset=key.asset_key, blocking=False, description=description)


def verdict_check_result(key: dg.AssetCheckKey, verdict: MonitoringVerdict) -> dg.AssetCheckResult:
    """The check result of `verdict`: failed (severity WARN) when it asks for retraining."""
    if verdict.asset != key.asset_key.to_user_string():
        raise ValueError(f"a {verdict.asset} verdict cannot be the result of {key.to_user_string()}")
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=not verdict.triggered,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.reason,
        metadata=verdict.to_metadata(),
    )


def verdict_of(key: dg.AssetCheckKey, evaluation: dg.AssetCheckEvaluation) -> MonitoringVerdict:
    """The verdict a check evaluation carries. Raises VerdictError when its metadata is not one, when it
    is another asset's, or when the check's outcome contradicts it."""
    verdict = MonitoringVerdict.from_metadata({name: entry.value for name, entry in evaluation.metadata.items()})
    if verdict.asset != key.asset_key.to_user_string():
        raise VerdictError(f"{key.to_user_string()}: field 'asset' names {verdict.asset!r}")
    if verdict.triggered == evaluation.passed:
        raise VerdictError(
            f"{key.to_user_string()}: field 'triggered' is {verdict.triggered} but the check {'passed' if evaluation.passed else 'failed'}"
        )
    return verdict
