"""The online feature store's state, rebuilt from the warehouse, with parity and freshness checks."""

import time

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import FEATURES
from mlops_core.features.audits import FLOAT_RELATIVE_TOLERANCE, materialize_online_store, replay_parity
from mlops_core.features.offline import newest_event_us
from mlops_core.features.spec import spec_version
from resources.online_store import OnlineStoreResource

ONLINE_FEATURES = dg.AssetKey("online_features")
CHECK_PARITY = "check_online_offline_parity"
CHECK_FRESHNESS = "check_online_store_fresh"
SOURCES = [dg.AssetKey(["marts", name]) for name in ("transactions_enriched", "account_history")]


class OnlineFeaturesConfig(dg.Config):
    """Size of the parity replay."""

    parity_transactions: int = Field(
        default=500,
        description="Newest transactions replayed through a scratch store and compared with the offline SQL.",
    )


def _freshness(con, online_store: OnlineStoreResource, config: "FreshnessConfig") -> dg.AssetCheckResult:
    store = online_store.open()
    try:
        status = store.status()
    finally:
        store.close()
    newest_us = newest_event_us(con)
    lag_hours = None if status.watermark_us is None or newest_us is None else (newest_us - status.watermark_us) / 3.6e9
    age_hours = None if status.materialized_at is None else (time.time() - status.materialized_at) / 3600
    problems = []
    if status.materialized_at is None:
        problems.append("the store was never rebuilt")
    elif age_hours > config.max_age_hours:
        problems.append(f"last rebuilt {age_hours:.1f} h ago, limit {config.max_age_hours} h")
    if newest_us is not None and (lag_hours is None or lag_hours > config.max_lag_hours):
        problems.append(
            f"newest event trails the warehouse by {lag_hours if lag_hours is None else round(lag_hours, 2)} h, limit {config.max_lag_hours} h"
        )
    if status.spec_version != spec_version():
        problems.append(f"state built by feature spec {status.spec_version}, code has {spec_version()}")
    return dg.AssetCheckResult(
        check_name=CHECK_FRESHNESS,
        asset_key=ONLINE_FEATURES,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="Fresh: " + f"newest event {status.watermark}, rebuilt {age_hours:.2f} h ago."
        if not problems
        else "Stale: " + "; ".join(problems) + ".",
        metadata={
            "store_watermark": str(status.watermark),
            "lag_hours": lag_hours,
            "rebuilt_hours_ago": age_hours,
            "max_lag_hours": config.max_lag_hours,
            "max_age_hours": config.max_age_hours,
            "spec_version": status.spec_version,
        },
    )


@dg.asset(
    key=ONLINE_FEATURES,
    group_name=FEATURES,
    deps=SOURCES,
    kinds={"sqlite", "redis"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_PARITY,
            asset=ONLINE_FEATURES,
            blocking=True,
            description="The newest transactions replayed through the online path as traffic brings them (bursts of an "
            "account in one batch, late transactions after a rebuild, retries and re-sent ids) give the offline values: "
            f"exact for counts and categories, {FLOAT_RELATIVE_TOLERANCE:g} relative for floats.",
        ),
    ],
)
def online_features(
    context: dg.AssetExecutionContext,
    config: OnlineFeaturesConfig,
    warehouse: DuckDBResource,
    online_store: OnlineStoreResource,
):
    """Online store state: each account's events of the last 30 days plus the allowed lateness, and its snapshots,
    rebuilt from the warehouse. Events serving recorded after the warehouse's newest are kept."""
    with warehouse.get_connection() as con:
        store = online_store.open()
        try:
            summary = materialize_online_store(
                con, store, allowed_lateness_seconds=online_store.allowed_lateness_seconds
            )
            status = store.status()
        finally:
            store.close()
        with online_store.scratch() as scratch:
            parity = replay_parity(
                con,
                scratch,
                transactions=config.parity_transactions,
                allowed_lateness_seconds=online_store.allowed_lateness_seconds,
            )
    context.log.info(f"online store rebuilt: {summary.events} events, {summary.accounts} accounts")
    yield dg.MaterializeResult(
        metadata={
            "backend": online_store.backend,
            "events": status.events,
            "accounts": status.accounts,
            "offline_watermark": summary.offline_watermark,
            "retained_since": summary.retained_since,
            "allowed_lateness_days": online_store.allowed_lateness_days,
            "store_watermark": str(status.watermark),
            "feature_spec_version": spec_version(),
        }
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_PARITY,
        passed=parity.passed,
        description=parity.describe(),
        metadata={
            "replayed_transactions": parity.replayed,
            "mismatched_values": len(parity.mismatches),
            "missing_rows": parity.missing,
            "refused_rows": parity.refused,
            "batches": parity.batches,
            "burst_batches": parity.burst_batches,
            "tied_rows": parity.tied_rows,
            "late_transactions": parity.late,
            "exact_retries": parity.resent_exact,
            "altered_resends": parity.resent_altered,
            "float_relative_tolerance": FLOAT_RELATIVE_TOLERANCE,
        },
    )


class FreshnessConfig(dg.Config):
    """Limits of the freshness check."""

    max_lag_hours: float = Field(
        default=0.0, description="How far the store's newest event may trail the warehouse's, in hours."
    )
    max_age_hours: float = Field(
        default=26.0, description="How long ago the last rebuild may have been, in hours (daily rebuilds plus slack)."
    )


@dg.asset_check(
    asset=ONLINE_FEATURES,
    name=CHECK_FRESHNESS,
    description="The live store holds the warehouse's newest events, was rebuilt recently and by the current feature spec. "
    "Runs after each rebuild and on its own from the UI.",
)
def online_store_fresh(
    config: FreshnessConfig, warehouse: DuckDBResource, online_store: OnlineStoreResource
) -> dg.AssetCheckResult:
    with warehouse.get_connection() as con:
        return _freshness(con, online_store, config)
