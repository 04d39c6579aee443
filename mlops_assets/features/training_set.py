"""The point-in-time training set, with the leakage and join checks that gate training.

A graph of three kinds of steps, so a large history is built one account-hash bucket per step (on Kubernetes,
one pod per bucket with its own memory request; docs/production.md): `plan_training_set` resolves the spec and
the bucket count, `build_training_set_bucket` writes one bucket's rows to a Parquet file, and
`combine_training_set` makes the table of the files, cuts the splits and runs the checks. The demo's history
is one bucket.
"""

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import FEATURES, latest_metadata_text
from mlops_core.features import spec as feature_spec
from mlops_core.features.audits import audit_join, audit_point_in_time
from mlops_core.features.offline import (
    DEFAULT_WAREHOUSE_MEMORY,
    TRAINING_SET_TABLE,
    TrainingSetSpec,
    bucket_file_name,
    combine_buckets,
    newest_landed_day,
    slices_for,
    summarize_training_set,
    write_bucket,
)
from mlops_core.warehouse import memory_limit
from resources.settings import SettingsResource

TRAINING_SET = dg.AssetKey("training_set")


def latest_training_cutoff(instance: dg.DagsterInstance) -> str | None:
    """The label cutoff of the newest training set: what a model trained now learns from. Builds of the
    training set never run side by side (their jobs hold the one warehouse-writer slot), so a model step
    reading it after its build reads its own build's cutoff."""
    return latest_metadata_text(instance, TRAINING_SET, "cutoff")


CHECK_POINT_IN_TIME = "check_point_in_time_correct"
CHECK_JOIN = "check_one_row_per_labelled_transaction"
MARTS = [dg.AssetKey(["marts", name]) for name in ("transactions_enriched", "account_history", "label_events")]
RETRAINING_REQUEST = dg.AssetKey("retraining_request")


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
    early_frauds: bool | None = Field(
        default=None,
        description="Also train on the frauds already confirmed inside the maturity window (split 'early'; never "
        "validation or test). Default: MLOPS_TRAIN_ON_EARLY_FRAUDS (off).",
    )
    validation_share: float = Field(
        default=0.15, description="Share of rows, by time, in the validation split (after train)."
    )
    test_share: float = Field(default=0.15, description="Share of rows, by time, in the test split (the newest).")
    leakage_sample_size: int = Field(default=300, description="Rows the leakage check recomputes by brute force.")
    slices: int | None = Field(
        default=None,
        ge=1,
        description="Account-hash buckets the rows are built in, one step (one pod on Kubernetes) each, which bounds "
        "each step's memory (the table is the same). Default: one bucket per 2 million events before the horizon.",
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


@dataclass(frozen=True)
class BucketTask:
    """One bucket step's work: the resolved spec (every bucket builds with the same cutoff) and its file."""

    spec: TrainingSetSpec
    bucket: int
    buckets: int
    path: str
    warehouse_memory: str | None


@dataclass(frozen=True)
class BucketFile:
    task: BucketTask
    rows: int


def staging_folder(settings: SettingsResource, run_id: str) -> Path:
    """Where a run's bucket files wait for the combine: on the state volume, so every step's pod sees them."""
    return Path(settings.get().home) / "staging" / "training_set" / run_id


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.DynamicOut(BucketTask))
def plan_training_set(
    context: dg.OpExecutionContext, config: TrainingSetConfig, warehouse: DuckDBResource, settings: SettingsResource
):
    """Resolve the cutoff, maturity and lookback once, and how many account-hash buckets the rows are built in."""
    defaults = settings.get()
    with warehouse.get_connection() as con:
        spec = TrainingSetSpec(
            cutoff=resolve_cutoff(con, config),
            label_maturity_days=config.label_maturity_days or defaults.label_maturity_days,
            lookback_days=config.lookback_days or defaults.training_lookback_days,
            validation_share=config.validation_share,
            test_share=config.test_share,
            early_frauds=defaults.train_on_early_frauds if config.early_frauds is None else config.early_frauds,
        )
        buckets = config.slices or slices_for(con, spec)
    folder = staging_folder(settings, context.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    context.log.info(f"training set as of {spec.cutoff.isoformat()}: {buckets} bucket(s) in {folder}")
    for bucket in range(buckets):
        yield dg.DynamicOutput(
            BucketTask(spec, bucket, buckets, str(folder / bucket_file_name(bucket, buckets)), config.warehouse_memory),
            mapping_key=f"bucket_{bucket}",
        )


@dg.op
def build_training_set_bucket(
    context: dg.OpExecutionContext, task: BucketTask, warehouse: DuckDBResource
) -> BucketFile:
    """The training rows of one account-hash bucket, written to its Parquet file. On Kubernetes each is its own
    pod; its memory request is the production profile's (MLOPS_TRAINING_BUCKET_MEMORY, docs/production.md)."""
    with warehouse.get_connection() as con, memory_limit(con, task.warehouse_memory):
        rows = write_bucket(con, task.spec, task.bucket, task.buckets, task.path)
    context.log.info(f"bucket {task.bucket + 1}/{task.buckets}: {rows} rows")
    return BucketFile(task, rows)


def _combine_config(value: dict) -> dict:
    return {"plan_training_set": {"config": value}, "combine_training_set": {"config": value}}


@dg.op(
    out={
        "result": dg.Out(dg.Nothing, is_required=False),
        CHECK_POINT_IN_TIME: dg.Out(dg.Nothing, is_required=False),
        CHECK_JOIN: dg.Out(dg.Nothing, is_required=False),
    }
)
def combine_training_set(
    context: dg.OpExecutionContext,
    config: TrainingSetConfig,
    buckets: list[BucketFile],
    warehouse: DuckDBResource,
    settings: SettingsResource,
):
    """features.training_set from the bucket files, in one transaction; the splits, the summary and the checks."""
    buckets = sorted(buckets, key=lambda b: b.task.bucket)
    specs = {b.task.spec for b in buckets}
    if len(specs) != 1 or [b.task.bucket for b in buckets] != list(range(buckets[0].task.buckets)):
        raise ValueError(f"bucket files disagree or are missing: {[(b.task.bucket, b.task.buckets) for b in buckets]}")
    spec = specs.pop()
    slices = buckets[0].task.buckets
    with warehouse.get_connection() as con, memory_limit(con, config.warehouse_memory):
        combine_buckets(con, spec, [b.task.path for b in buckets])
        summary = summarize_training_set(con, spec)
        leakage = audit_point_in_time(con, TRAINING_SET_TABLE, spec, sample_size=config.leakage_sample_size)
        join = audit_join(con, TRAINING_SET_TABLE, spec)
    # The files are in the table now. A failed run keeps its folder for a look; the next success removes it
    # too (builds of the training set never run side by side: their jobs hold the one warehouse-writer slot).
    for folder in Path(buckets[0].task.path).parent.parent.iterdir():
        shutil.rmtree(folder, ignore_errors=True)
    context.log.info(f"training set {summary.data_version}: {summary.rows_by_split}")
    splits = "\n".join(
        ["| split | rows | fraud rate | first event | last event |", "|---|---:|---:|---|---|"]
        + [
            f"| {s} | {summary.rows_by_split[s]} | {summary.fraud_rate_by_split[s]:.4f} | "
            f"{summary.split_bounds.get(s, ('-', '-'))[0]} | {summary.split_bounds.get(s, ('-', '-'))[1]} |"
            for s in summary.rows_by_split
        ]
    )
    yield dg.Output(
        None,
        output_name="result",
        data_version=dg.DataVersion(summary.data_version),
        metadata={
            "dagster/row_count": summary.rows,
            "data_version": summary.data_version,
            "table": TRAINING_SET_TABLE,
            "cutoff": spec.cutoff.isoformat(),
            "label_maturity_days": spec.label_maturity_days,
            "lookback_days": spec.lookback_days,
            "early_frauds": spec.early_frauds,
            "entity_horizon": spec.entity_horizon.isoformat(),
            "slices": slices,
            "rows_by_bucket": [b.rows for b in buckets],
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
        asset_key=TRAINING_SET,
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
        asset_key=TRAINING_SET,
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


@dg.graph_asset(
    key=TRAINING_SET,
    group_name=FEATURES,
    # retraining_request only records why a retraining run happened; it feeds no data.
    ins={
        key.to_python_identifier(): dg.AssetIn(key=key, dagster_type=dg.Nothing) for key in (*MARTS, RETRAINING_REQUEST)
    },
    kinds={"duckdb"},
    config=dg.ConfigMapping(config_fn=_combine_config, config_schema=TrainingSetConfig.to_config_schema()),
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
def training_set(**upstream):
    """Labelled transactions with every feature as of their own event time, split train/validation/test by time.
    Table features.training_set, built one account-hash bucket per step."""
    # The marts and retraining_request feed no value: they only order the steps after theirs.
    buckets = plan_training_set(after=list(upstream.values())).map(build_training_set_bucket)
    return combine_training_set(buckets.collect())
