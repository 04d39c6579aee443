"""The endpoint's prediction log, copied into the warehouse for monitoring and late-label joins."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import DEPLOYMENT
from mlops_core.serving.prediction_log import WAREHOUSE_TABLE, copy_to_warehouse
from resources.serving import ServingEndpointResource

PREDICTION_LOG = dg.AssetKey("prediction_log")
TABLE = WAREHOUSE_TABLE


@dg.asset(
    key=PREDICTION_LOG,
    group_name=DEPLOYMENT,
    kinds={"duckdb", "sqlite"},
)
def prediction_log(warehouse: DuckDBResource, serving_endpoint: ServingEndpointResource):
    """Every scored request (request and transaction id, features, score, decision, version, variant,
    latency) appended to serving.prediction_log from the endpoint's durable log, rows after the newest
    already copied. Re-running copies nothing twice."""
    source = serving_endpoint.prediction_log_path
    with warehouse.get_connection() as con:
        copy = copy_to_warehouse(con, source)
    return dg.MaterializeResult(
        metadata={
            "source": source,
            "table": TABLE,
            "new_rows": copy.new_rows,
            "dagster/row_count": copy.total_rows,
            "rows_by_variant": copy.rows_by_variant,
        }
    )
