"""Raw assets: one per landing source, daily partitioned, with the data gates as checks.

A gate's verdict is per day, and a day it fails is held inside raw (staging reads only
accepted batches). Dagster's blocking acts per step, for every day of a run at once, so the
gates here do not block: a held day must not stop its other sources or the accepted days
from reaching the marts. The run still fails on a held day, after the marts, at the
blocking check of daily_load_summary (mlops_assets/ingestion/summary.py).
"""

from datetime import date

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import INGESTION, daily_partitions
from mlops_core.contracts import SOURCES, SourceContract
from mlops_core.ingestion import (
    CHECK_DESCRIPTIONS,
    CHECK_LANDING_UNCHANGED,
    IngestionReport,
    IngestionThresholds,
    gate_checks,
    ingest_partitions,
)
from resources.landing import LandingZone


class IngestionConfig(dg.Config):
    """Thresholds of the data gates; the defaults suit daily card-transaction feeds."""

    max_reject_rate: float = Field(
        default=0.02, description="Share of a day's rows a row-level check may reject before the day is held."
    )
    volume_min_ratio: float = Field(
        default=0.5, description="Fewest rows a day may have, as a multiple of the trailing median."
    )
    volume_max_ratio: float = Field(
        default=2.0, description="Most rows a day may have, as a multiple of the trailing median."
    )
    volume_lookback_days: int = Field(
        default=7, description="Trailing loaded days whose median is the volume baseline."
    )
    volume_min_history: int = Field(default=3, description="Days of history needed before the volume gate applies.")

    def thresholds(self) -> IngestionThresholds:
        return IngestionThresholds(
            max_reject_rate=self.max_reject_rate,
            volume_min_ratio=self.volume_min_ratio,
            volume_max_ratio=self.volume_max_ratio,
            volume_lookback_days=self.volume_lookback_days,
            volume_min_history=self.volume_min_history,
        )


HELD_DAYS = "held_days"


def raw_asset_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(f"raw_{source}")


def _check_results(report: IngestionReport, contract: SourceContract, config: IngestionConfig):
    held = report.held_reasons()
    for check_name in gate_checks(contract):
        summary = report.summary(check_name)
        yield dg.AssetCheckResult(
            check_name=check_name,
            passed=summary.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=summary.description,
            metadata={
                "failing_partitions": summary.failing_partitions,
                # Each held day's message for this check: what the run summary names.
                HELD_DAYS: {day: held[day][check_name] for day in summary.failing_partitions},
                "rejected_rows": summary.rejected_rows,
                "max_reject_rate": config.max_reject_rate,
                "volume_bounds": f"{config.volume_min_ratio}x..{config.volume_max_ratio}x of {config.volume_lookback_days}-day median",
            },
        )
    changed = report.changed_since_load
    yield dg.AssetCheckResult(
        check_name=CHECK_LANDING_UNCHANGED,
        passed=not changed,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "Landing files unchanged since load."
            if not changed
            else "Re-materialize these days, their landing files changed after loading:\n"
            + "\n".join(f"{day}: {what}" for day, what in changed[:10])
        ),
        metadata={"changed_partitions": [day for day, _ in changed]},
    )


def _partition_table(report: IngestionReport, max_rows: int = 62) -> str:
    lines = ["| day | landed | kept in raw | quarantined | status | failed checks |", "|---|---:|---:|---:|---|---|"]
    for o in report.outcomes[-max_rows:]:
        failed = ", ".join(sorted(o.failures)) or "-"
        lines.append(f"| {o.partition_date} | {o.n_landed} | {o.n_accepted} | {o.n_rejected} | {o.status} | {failed} |")
    if len(report.outcomes) > max_rows:
        lines.append(f"| ... {len(report.outcomes) - max_rows} earlier days | | | | | |")
    return "\n".join(lines)


def build_raw_asset(contract: SourceContract) -> dg.AssetsDefinition:
    key = raw_asset_key(contract.name)
    check_specs = [
        dg.AssetCheckSpec(name, asset=key, description=CHECK_DESCRIPTIONS[name]) for name in gate_checks(contract)
    ]
    check_specs.append(
        dg.AssetCheckSpec(CHECK_LANDING_UNCHANGED, asset=key, description=CHECK_DESCRIPTIONS[CHECK_LANDING_UNCHANGED])
    )

    @dg.asset(
        key=key,
        group_name=INGESTION,
        partitions_def=daily_partitions,
        # A backfill of many days runs as one run that loads them in chunks.
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[raw_asset_key(ref.source) for ref in contract.references],
        check_specs=check_specs,
        kinds={"duckdb", "pandera"},
        description=f"{contract.model.__doc__} Landing files validated against the contract; "
        f"bad rows in quarantine.rejected_rows. Table raw.{contract.name}.",
    )
    def raw_source(
        context: dg.AssetExecutionContext, config: IngestionConfig, warehouse: DuckDBResource, landing: LandingZone
    ):
        days = [date.fromisoformat(key) for key in context.partition_keys]
        with warehouse.get_connection() as con:
            report = ingest_partitions(
                con, landing.path, contract, days, thresholds=config.thresholds(), run_id=context.run_id
            )
        context.log.info(
            f"{contract.name}: {report.n_landed} rows landed, {report.n_accepted - report.n_held} accepted, "
            f"{report.n_held} held, {report.n_rejected} quarantined; held days: {report.held_partitions or 'none'}"
        )
        for day, reasons in report.held_reasons().items():
            context.log.warning(f"{contract.name} {day} held: " + "; ".join(f"{c}: {m}" for c, m in reasons.items()))
        yield dg.MaterializeResult(
            metadata={
                # Rows of accepted days: what the marts can read. Held rows wait in raw.
                "dagster/row_count": report.n_accepted - report.n_held,
                "rows_landed": report.n_landed,
                "rows_held": report.n_held,
                "rows_quarantined": report.n_rejected,
                "held_partitions": report.held_partitions,
                "partitions": dg.MetadataValue.md(_partition_table(report)),
                "table": f"raw.{contract.name}",
                "quarantine": f"quarantine.rejected_rows where source = '{contract.name}'",
            }
        )
        yield from _check_results(report, contract, config)

    return raw_source


raw_assets = [build_raw_asset(contract) for contract in SOURCES.values()]
