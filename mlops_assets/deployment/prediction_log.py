"""The endpoint's prediction log, copied into the warehouse for monitoring and late-label joins."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import DEPLOYMENT
from mlops_core.serving.prediction_log import read_predictions
from resources.serving import ServingEndpointResource

PREDICTION_LOG = dg.AssetKey("prediction_log")
TABLE = "serving.prediction_log"


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
        con.execute("create schema if not exists serving").fetchall()
        exists = con.execute(
            "select count(*) from information_schema.tables where table_schema = 'serving' and table_name = 'prediction_log'"
        ).fetchall()[0][0]
        newest = con.execute(f"select max(id) from {TABLE}").fetchall()[0][0] if exists else None
        new_rows = read_predictions(source, after_id=newest)
        con.register("new_predictions", new_rows)
        if not exists:
            con.execute(f"create table {TABLE} as select * from new_predictions").fetchall()
        elif len(new_rows):
            con.execute(f"insert into {TABLE} select * from new_predictions").fetchall()
        con.unregister("new_predictions")
        total, by_variant = con.execute(f"select count(*), to_json(histogram(variant)) from {TABLE}").fetchall()[0]
    return dg.MaterializeResult(
        metadata={
            "source": source,
            "table": TABLE,
            "new_rows": len(new_rows),
            "dagster/row_count": int(total),
            "rows_by_variant": by_variant,
        }
    )
