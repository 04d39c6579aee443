"""The model registry as assets: the challenger alias, the explicit promote step, and the alias history."""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import DEPLOYMENT
from mlops_assets.training.evaluation import EVALUATION
from mlops_assets.training.models import MODEL_ARTIFACT
from mlops_core import registry
from mlops_core.training.candidates import TrainedModel
from resources.registry import ModelRegistry

ALIAS_HISTORY = dg.AssetKey("model_alias_history")
CHALLENGER = dg.AssetKey("registered_challenger")


@dg.asset(
    key=CHALLENGER,
    group_name=DEPLOYMENT,
    deps=[EVALUATION],
    kinds={"mlflow"},
)
def registered_challenger(
    context: dg.AssetExecutionContext,
    fraud_model_candidate: TrainedModel,
    warehouse: DuckDBResource,
    model_registry: ModelRegistry,
):
    """The candidate registered in the MLflow model registry with the `challenger` alias. Runs only
    after every blocking gate on candidate_evaluation passed. All or nothing: a version whose alias
    could not be set is deleted again (MLflow calls are retried first; see mlops_core.registry)."""
    client = model_registry.client()
    require_onnx(client, fraud_model_candidate)
    test_metrics = registry.run_metrics(client, fraud_model_candidate.run_id)
    with warehouse.get_connection() as con:
        change = model_registry.register(
            con,
            registry.CHALLENGER,
            fraud_model_candidate.run_id,
            MODEL_ARTIFACT,
            reason="passed every quality gate",
            metrics=test_metrics,
            tags={
                "threshold": repr(fraud_model_candidate.threshold),
                "data_version": fraud_model_candidate.data_version,
                # Labels known after this were never seen in training: label_volume counts them.
                "training_cutoff": _training_cutoff(context) or "",
            },
            model_uri=fraud_model_candidate.model_uri,
        )
    return dg.MaterializeResult(
        metadata={
            "model": registry.MODEL_NAME,
            "version": change.to_version,
            "alias": registry.CHALLENGER,
            "previous_challenger": change.from_version,
            "mlflow_run_id": fraud_model_candidate.run_id,
            "test_auc_pr": test_metrics.get("test_auc_pr"),
        }
    )


def require_onnx(client, trained: TrainedModel) -> None:
    """Register only a model whose ONNX graph is in the artifact store: serving loads nothing else."""
    if not trained.model_uri:
        raise dg.Failure(f"MLflow run {trained.run_id} logged no model: nothing to register")
    files = registry.artifact_files(client, trained.model_uri)
    if not any(path.endswith(".onnx") for path in files):
        raise dg.Failure(f"{trained.model_uri} holds no .onnx file ({sorted(files)}): nothing to register")


def _training_cutoff(context: dg.AssetExecutionContext) -> str | None:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    cutoff = event.asset_materialization.metadata.get("cutoff") if event and event.asset_materialization else None
    return None if cutoff is None else str(cutoff.value)


class PromoteConfig(dg.Config):
    """Why the challenger becomes champion; recorded in the alias history."""

    reason: str = Field(
        default="promoted by hand from the Dagster UI", description="Why this promotion happens (audit history)."
    )
    actor: str = Field(default="dagster", description="Who or what promotes (audit history).")


@dg.asset(
    group_name=DEPLOYMENT,
    deps=[CHALLENGER, dg.AssetKey("canary_endpoint")],
    kinds={"mlflow"},
)
def champion_model(config: PromoteConfig, warehouse: DuckDBResource, model_registry: ModelRegistry):
    """The `champion` alias moved to the current challenger, after its canary passed (rollout_job) or by
    hand (promote_job). The previous champion stays recorded for rollback."""
    challenger = model_registry.challenger()
    metrics = registry.run_metrics(model_registry.client(), challenger.run_id) if challenger else {}
    with warehouse.get_connection() as con:
        change = model_registry.promote_challenger(con, reason=config.reason, metrics=metrics, actor=config.actor)
    return dg.MaterializeResult(
        metadata={
            "model": registry.MODEL_NAME,
            "champion_version": change.to_version,
            "previous_champion": change.from_version,
        }
    )


@dg.asset(key=ALIAS_HISTORY, group_name=DEPLOYMENT, deps=[CHALLENGER, dg.AssetKey("champion_model")], kinds={"duckdb"})
def model_alias_history(warehouse: DuckDBResource, model_registry: ModelRegistry):
    """Every alias move (what, from which version to which, why, when, by whom, metrics then), from
    registry.alias_history; MLflow keeps no such history."""
    with warehouse.get_connection() as con:
        frame = model_registry.history(con)
    recent = frame.tail(20)
    lines = ["| when | alias | from | to | reason | actor |", "|---|---|---|---|---|---|"]
    for row in recent.itertuples():
        lines.append(
            f"| {row.changed_at} | {row.alias} | {row.from_version or '-'} | {row.to_version or '-'} | {row.reason} | {row.actor} |"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "table": registry.HISTORY_TABLE,
            "recent_changes": dg.MetadataValue.md("\n".join(lines)),
            "latest": dg.MetadataValue.json(
                json.loads(recent.tail(1).to_json(orient="records", date_format="iso")) if len(recent) else []
            ),
        }
    )
