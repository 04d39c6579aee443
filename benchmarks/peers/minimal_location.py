"""The floor of a Dagster code location: one asset, no resources (benchmarks/startup.py)."""

import dagster as dg


@dg.asset
def one_asset() -> int:
    return 1


defs = dg.Definitions(assets=[one_asset])
