"""The point-in-time training set, with the leakage and join checks that gate training."""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import FEATURES
from mlops_core.features import spec as feature_spec
from mlops_core.features.audits import audit_join, audit_point_in_time
from mlops_core.features.offline import (
    DEFAULT_WAREHOUSE_MEMORY,
    TRAINING_SET_TABLE,
    TrainingSetSpec,
    build_training_set,
    newest_landed_day,
    slices_for,
)
from resources.settings import SettingsResource

TRAINING_SET = dg.AssetKey("training_set")
CHECK_POINT_IN_TIME = "check_point_in_time_correct"
CHECK_JOIN = "check_one_row_per_labelled_transaction"
MARTS = [dg.AssetKey(["marts", name]) for name in ("transactions_enriched", "account_history", "label_events")]


class TrainingSetConfig(dg.Config):
    """How the training set is cut; every field is recorded in the metadata."""

    cutoff: str | None = Field(
        default=None,
        description="Training cutoff, ISO-8601 UTC. Only labels known by then are used. Default: the end of the newest landed day.",
    )
    label_maturity_days: int | None = Field(
        default=None,
        description="Transactions younger than this at the cutoff are left out: their legitimate labels are not in yet. "
        "Default: MLOPS_LABEL_MATURITY_DAYS (45).",
    )
    lookback_days: int | None = Field(
        default=None,
        description="Only the last N days of mature transactions. Default: MLOPS_TRAINING_LOOKBACK_DAYS, else all history.",
    )
    validation_share: float = Field(
        default=0.15, description="Share of rows, by time, in the validation split (after train)."
    )
    test_share: float = Field(default=0.15, description="Share of rows, by time, in the test split (the newest).")
    leakage_sample_size: int = Field(default=300, description="Rows the leakage check recomputes by brute force.")
    slices: int | None = Field(
        default=None,
        ge=1,
        description="Account-hash slices the rows are built in, one at a time, which bounds the warehouse's memory "
        "(the table is the same). Default: one slice per 2 million events before the horizon.",
    )
    warehouse_memory: str | None = Field(
        default=DEFAULT_WAREHOUSE_MEMORY,
        description="DuckDB's memory limit during the build (e.g. '2GB'); past it DuckDB spills to disk, so the "
        "step's memory stays bounded as the history grows. Null: DuckDB's default, 80% of the machine.",
    )


def resolve_cutoff(con, config: TrainingSetConfig) -> dt.datetime:
    if config.cutoff:
        cutoff = dt.datetime.fromisoformat(config.cutoff.replace("Z", "+00:00"))
        return cutoff if cutoff.tzinfo else cutoff.replace(tzinfo=dt.UTC)
    newest_day = newest_landed_day(con)
    if newest_day is None:
        raise ValueError("marts.transactions_enriched is empty: ingest and build the warehouse before the training set")
    return dt.datetime.combine(newest_day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def _feature_table() -> str:
    lines = ["| feature | kind | dtype | definition | default |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['name']} | {r['kind']} | {r['dtype']} | {r['definition']} | {r['default']} |"
        for r in feature_spec.describe()
    ]
    return "\n".join(lines)


@dg.asset(
    key=TRAINING_SET,
    group_name=FEATURES,
    # retraining_request only records why a retraining run happened; it feeds no data.
    deps=[*MARTS, dg.AssetKey("retraining_request")],
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_POINT_IN_TIME,
            asset=TRAINING_SET,
            blocking=True,
            description="A sample recomputed by brute force from events strictly before each row matches; no label "
            "known after the cutoff, no row inside the maturity window.",
        ),
        dg.AssetCheckSpec(
            CHECK_JOIN,
            asset=TRAINING_SET,
            blocking=True,
            description="Exactly one row per mature labelled transaction: none dropped, none duplicated, no null feature.",
        ),
    ],
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, warehouse: DuckDBResource, settings: SettingsResource
):
    """Labelled transactions with every feature as of their own event time, split train/validation/test by time.
    Table features.training_set."""
    defaults = settings.get()
    with warehouse.get_connection() as con:
        spec = TrainingSetSpec(
            cutoff=resolve_cutoff(con, config),
            label_maturity_days=config.label_maturity_days or defaults.label_maturity_days,
            lookback_days=config.lookback_days or defaults.training_lookback_days,
            validation_share=config.validation_share,
            test_share=config.test_share,
        )
        slices = config.slices or slices_for(con, spec)
        summary = build_training_set(
            con, spec, slices=slices, warehouse_memory=config.warehouse_memory, on_step=context.log.debug
        )
        leakage = audit_point_in_time(con, TRAINING_SET_TABLE, spec, sample_size=config.leakage_sample_size)
        join = audit_join(con, TRAINING_SET_TABLE, spec)
    context.log.info(f"training set {summary.data_version}: {summary.rows_by_split}")
    splits = "\n".join(
        ["| split | rows | fraud rate | first event | last event |", "|---|---:|---:|---|---|"]
        + [
            f"| {s} | {summary.rows_by_split[s]} | {summary.fraud_rate_by_split[s]:.4f} | "
            f"{summary.split_bounds.get(s, ('-', '-'))[0]} | {summary.split_bounds.get(s, ('-', '-'))[1]} |"
            for s in ("train", "validation", "test")
        ]
    )
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(summary.data_version),
        metadata={
            "dagster/row_count": summary.rows,
            "data_version": summary.data_version,
            "table": TRAINING_SET_TABLE,
            "cutoff": spec.cutoff.isoformat(),
            "label_maturity_days": spec.label_maturity_days,
            "lookback_days": spec.lookback_days,
            "entity_horizon": spec.entity_horizon.isoformat(),
            "slices": slices,
            "warehouse_memory": config.warehouse_memory or "DuckDB default",
            "splits": dg.MetadataValue.md(splits),
            "labels_after_cutoff_left_out": summary.labels_after_cutoff,
            "mature_transactions_without_label": summary.unlabeled_mature_transactions,
            "feature_spec_version": feature_spec.spec_version(),
            "features": dg.MetadataValue.md(_feature_table()),
            "feature_names": list(feature_spec.FEATURE_NAMES),
        },
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_POINT_IN_TIME,
        passed=leakage.passed,
        description=leakage.describe(),
        metadata={
            "sampled_rows": leakage.sampled,
            "mismatched_values": len(leakage.mismatches),
            "labels_after_cutoff": leakage.labels_after_cutoff,
            "rows_inside_maturity_window": leakage.rows_inside_maturity_window,
            "labels_not_as_known_at_cutoff": leakage.labels_not_as_known,
            "float_relative_tolerance": 1e-9,
        },
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_JOIN,
        passed=join.passed,
        description=join.describe(),
        metadata={
            "rows": join.rows,
            "expected_rows": join.expected_rows,
            "distinct_transactions": join.distinct_transactions,
            "null_feature_values": sum(join.null_features.values()),
        },
    )
