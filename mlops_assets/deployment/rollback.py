"""Rolling a bad canary back: traffic drained, aliases restored, the event recorded and alerted."""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import DEPLOYMENT
from mlops_core import registry
from resources.alerts import AlertResource
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource

ROLLBACK = dg.AssetKey("canary_rollback")


class RollbackConfig(dg.Config):
    canary_version: str = Field(description="The registry version that was canary.")
    reason: str = Field(description="Why it is rolled back (audit history and alert).")
    evidence: str = Field(default="{}", description="JSON of the canary windows that broke the rules.")
    actor: str = Field(default="canary_rollback_sensor", description="Who or what rolls back (audit history).")


@dg.asset(
    key=ROLLBACK,
    group_name=DEPLOYMENT,
    kinds={"python"},
)
def canary_rollback(
    config: RollbackConfig,
    warehouse: DuckDBResource,
    serving_endpoint: ServingEndpointResource,
    model_registry: ModelRegistry,
    alerts: AlertResource,
):
    """Each materialization is one rollback: the canary drained from the endpoint (if the sensor has not
    already), the challenger alias taken off that version (a champion that moved to it is moved back),
    the version tagged, the alias history written and an alert sent. Safe to run twice."""
    endpoint = serving_endpoint
    with endpoint.client() as client:
        before = client.deployment()
        drained_now = before.get("canary_version") == config.canary_version
        if drained_now:
            client.rollback(config.reason)
        after = client.deployment()
    changes = []
    with warehouse.get_connection() as con:
        evidence = json.loads(config.evidence or "{}")
        challenger, champion = model_registry.challenger(), model_registry.champion()
        if challenger is not None and challenger.version == config.canary_version:
            changes.append(
                model_registry.remove_alias(con, registry.CHALLENGER, config.reason, evidence, actor=config.actor)
            )
        if champion is not None and champion.version == config.canary_version:
            changes.append(model_registry.rollback_champion(con, config.reason, actor=config.actor))
    model_registry.client().set_model_version_tag(
        registry.MODEL_NAME, config.canary_version, "rolled_back", config.reason[:500]
    )
    delivered = alerts.send(
        f"Canary rollback: {registry.MODEL_NAME} version {config.canary_version}",
        config.reason,
        {
            "champion serving": after.get("champion_version"),
            "endpoint": endpoint.url,
            "aliases changed": ", ".join(f"{c.alias} {c.from_version}->{c.to_version}" for c in changes) or "none",
        },
    )
    return dg.MaterializeResult(
        metadata={
            "version": config.canary_version,
            "reason": config.reason,
            "drained_by_this_run": drained_now,
            "champion_serving": after.get("champion_version"),
            "traffic_split": f"champion {after.get('champion_version')} 100%",
            "aliases_changed": [f"{c.alias}: {c.from_version} -> {c.to_version}" for c in changes],
            "alert_delivered": delivered,
            "evidence": dg.MetadataValue.json(evidence),
        }
    )
