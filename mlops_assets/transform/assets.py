"""dbt models of the warehouse as assets; dbt tests become asset checks."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from mlops_assets.constants import WAREHOUSE
from mlops_assets.ingestion.assets import raw_asset_key
from mlops_assets.ingestion.summary import build_daily_load_summary
from mlops_assets.transform.project import dbt_project, ensure_manifest


class WarehouseTranslator(DagsterDbtTranslator):
    """dbt sources are the raw ingestion assets; every model sits in the warehouse group."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return raw_asset_key(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return WAREHOUSE


@dbt_assets(manifest=ensure_manifest(), project=dbt_project, dagster_dbt_translator=WarehouseTranslator())
def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """Staging views over accepted raw batches, and the enriched transactions and labels marts."""
    # dbt's unit tests check the SQL's logic on fixed fixtures, not the data: they run in CI
    # (tests/test_dbt_project.py builds the whole project), not on every materialization.
    yield from dbt.cli(["build", "--exclude-resource-type", "unit_test"], context=context).stream()


# The day summary runs after the marts, so its gate fails a run only once every accepted day is in.
marts = [key for key in warehouse_models.keys if key.path[0] == "marts"]
warehouse_assets = [warehouse_models, build_daily_load_summary(after=marts)]
