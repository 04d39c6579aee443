"""The data layer's verdict per day, after the marts: the gate that fails a run with a held day."""

from collections.abc import Sequence
from datetime import date

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import WAREHOUSE, daily_partitions
from mlops_assets.ingestion.assets import HELD_DAYS, raw_asset_key
from mlops_core.contracts import SOURCES
from mlops_core.ingestion_summary import day_summaries, format_day_summary, held_lines

CHECK_NO_HELD_DAYS = "check_no_held_days"
SUMMARY_KEY = dg.AssetKey("daily_load_summary")


def build_daily_load_summary(after: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    """The summary asset, run after the raw assets and the `after` assets (the dbt marts)."""
    raw_keys = [raw_asset_key(source) for source in SOURCES]

    @dg.asset(
        key=SUMMARY_KEY,
        group_name=WAREHOUSE,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[*raw_keys, *after],
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_NO_HELD_DAYS,
                asset=SUMMARY_KEY,
                blocking=True,
                description="No landed day of the run was held by a data gate. Checked after the marts are built, so "
                "a held day stops nothing else: its rows wait in raw while the accepted days reach the marts.",
            )
        ],
        kinds={"duckdb"},
        description="Per landed day: rows accepted (in the marts), quarantined and held, and each held day with its "
        "failed check and reason (from raw.load_log).",
    )
    def daily_load_summary(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        window = context.partition_key_range
        first, last = date.fromisoformat(window.start), date.fromisoformat(window.end)
        with warehouse.get_connection() as con:
            summaries = day_summaries(con, first, last)
            text = format_day_summary(con, first, last)
        held = held_lines(summaries)
        context.log.info(text)
        yield dg.MaterializeResult(
            metadata={
                "summary": dg.MetadataValue.md(f"```\n{text}\n```"),
                "rows_accepted": sum(s.n_accepted for s in summaries),
                "rows_quarantined": sum(s.n_quarantined for s in summaries),
                "rows_held": sum(s.n_held for s in summaries),
                "held_days": sorted({s.day.isoformat() for s in summaries if s.held}),
            }
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_NO_HELD_DAYS,
            passed=not held,
            severity=dg.AssetCheckSeverity.ERROR,
            description="\n".join(held[:20]) if held else f"No day held in {first}..{last}.",
            metadata={"held": held},
        )

    return daily_load_summary


def held_day_lines(result: dg.ExecuteInProcessResult) -> list[str]:
    """The run's held days, one line per source and day: `DAY SOURCE held by CHECK: REASON; ...`.

    Read from the failed data gates of the raw assets, else from daily_load_summary's gate; [] when
    no day was held or the run stopped before the gates (e.g. a failed step).
    """
    held: dict[tuple[str, str], dict[str, str]] = {}
    summary_lines: list[str] = []
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        if evaluation.asset_key == SUMMARY_KEY:
            summary_lines = list(evaluation.metadata["held"].value)
            continue
        source = next((name for name in SOURCES if raw_asset_key(name) == evaluation.asset_key), None)
        if source is None or HELD_DAYS not in evaluation.metadata:
            continue
        for day, message in evaluation.metadata[HELD_DAYS].value.items():
            held.setdefault((day, source), {})[evaluation.check_name] = " ".join(message.split())
    if not held:
        return summary_lines
    order = list(SOURCES)
    return [
        f"{day} {source} held by " + "; ".join(f"{check}: {message}" for check, message in sorted(checks.items()))
        for (day, source), checks in sorted(held.items(), key=lambda item: (item[0][0], order.index(item[0][1])))
    ]
