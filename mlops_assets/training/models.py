"""The fraud model candidate (XGBoost) and its logistic-regression baseline, tracked in MLflow."""

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import TRAINING
from mlops_assets.features.training_set import TRAINING_SET, latest_training_cutoff
from mlops_core import registry
from mlops_core.features.offline import TRAINING_SET_TABLE, data_version, read_training_set
from mlops_core.features.spec import spec_version
from mlops_core.settings import code_version
from mlops_core.training import in_batches, matrix
from mlops_core.training.candidates import DaskEngine, TrainedModel, fit, fit_from_warehouse, split
from mlops_core.training.in_batches import READ_MEMORY
from mlops_core.training.models import LogisticParams, XGBoostParams
from mlops_core.training.onnx_export import OnnxScorer
from mlops_core.warehouse import memory_limit
from resources.registry import ModelRegistry
from resources.settings import SettingsResource

MODEL_ARTIFACT = "model"
# MLflow run tag: the newest event the registered model learnt from (a champion is compared after it).
TRAINED_THROUGH_TAG = "trained_through"
EARLY_FRAUDS_THROUGH_TAG = "early_frauds_through"
FRAUD_MODEL_CANDIDATE = dg.AssetKey("fraud_model_candidate")
# Metadata of every candidate: the label cutoff of the training set it learnt from.
TRAINING_CUTOFF = "training_cutoff"


class XGBoostConfig(dg.Config):
    """Hyperparameters of the boosted-tree candidate."""

    n_estimators: int = Field(
        default=400, description="Most trees; early stopping on the validation split usually keeps fewer."
    )
    learning_rate: float = Field(default=0.1, description="Shrinkage per tree.")
    max_depth: int = Field(default=4, description="Depth of each tree.")
    min_child_weight: float = Field(default=1.0, description="Least hessian weight in a leaf.")
    subsample: float = Field(default=0.9, description="Share of rows sampled per tree (seeded).")
    colsample_bytree: float = Field(default=0.9, description="Share of columns sampled per tree (seeded).")
    reg_lambda: float = Field(default=1.0, description="L2 regularization of leaf weights.")
    early_stopping_rounds: int = Field(
        default=30, description="Stop after this many rounds without a better validation AUC-PR."
    )
    scale_pos_weight: float = Field(
        default=1.0,
        description="Weight of fraud rows. 1 keeps probabilities calibrated; the imbalance is handled by the cost-based threshold. "
        "0 means negatives/positives of the training split.",
    )
    seed: int = Field(default=7, description="Seed of row and column sampling: same data and config, same model.")
    false_negative_cost: float = Field(
        default=20.0, description="Cost of a missed fraud in false alarms; sets the operating threshold on validation."
    )
    refit_on_all_rows: bool = Field(
        default=True,
        description="After early stopping on validation, fit again with the trees it kept on train, validation and "
        "test, and register that model: the newest labelled days reach the served model at once. The test metrics "
        "and the quality gates stay those of the early-stopped model, which never saw the test rows.",
    )
    in_batches: bool | None = Field(
        default=None,
        description="Read the training rows from the warehouse in batches into XGBoost's quantized matrix instead "
        "of one pandas frame: memory follows the batch, not the training set. Default: in batches above "
        f"{in_batches.IN_BATCHES_ABOVE_ROWS:,} training rows.",
    )

    training_engine: Literal["in_process", "dask"] = Field(
        default="in_process",
        description="Where the candidate trains: in this process, or on a Dask cluster (xgboost.dask) with the "
        "training rows read from the warehouse in batches: a LocalCluster of dask_workers processes, or the cluster "
        "at MLOPS_DASK_SCHEDULER when it is set (docs/production.md).",
    )
    dask_workers: int = Field(default=2, ge=1, description="Workers of the LocalCluster the dask engine starts.")
    warehouse_memory: str = Field(
        default=READ_MEMORY,  # the field `in_batches` above hides the module's name in this class
        description="DuckDB's memory limit while the training rows are read in batches: their training order is a "
        "sort of every row, which spills to disk past the limit (a larger limit is faster and takes more memory).",
    )

    def params(self) -> XGBoostParams:
        return XGBoostParams(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            min_child_weight=self.min_child_weight,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            early_stopping_rounds=self.early_stopping_rounds,
            scale_pos_weight=None if self.scale_pos_weight == 0 else self.scale_pos_weight,
            seed=self.seed,
        )


class LogisticConfig(dg.Config):
    """Hyperparameters of the baseline."""

    C: float = Field(default=1.0, description="Inverse L2 regularization strength.")
    balanced: bool = Field(default=True, description="Weight classes inversely to their frequency.")
    max_iter: int = Field(default=1000, description="Solver iterations.")
    false_negative_cost: float = Field(
        default=20.0, description="Cost of a missed fraud in false alarms; sets the operating threshold on validation."
    )

    def params(self) -> LogisticParams:
        return LogisticParams(C=self.C, class_weight="balanced" if self.balanced else None, max_iter=self.max_iter)


def staging_folder(settings: SettingsResource) -> Path:
    """Where the dask engine stages the training batches: on the state volume, which every worker mounts."""
    folder = Path(settings.get().home) / "staging" / "dask"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_training_set(warehouse: DuckDBResource):
    """The training set in a fixed row order (read_training_set says why) and its data version."""
    with warehouse.get_connection() as con:
        return read_training_set(con), data_version(con, TRAINING_SET_TABLE)


def log_to_mlflow(model_registry: ModelRegistry, trained: TrainedModel, frame) -> TrainedModel:
    """A nested MLflow run under the Dagster run's: params, metrics, versions, ONNX model, importances."""
    import mlflow

    example = matrix.encode(split(frame, "validation").head(5))
    with model_registry.model_run(f"{trained.kind}-candidate") as run:
        mlflow.log_params({**trained.params, "threshold": trained.threshold})
        mlflow.log_metrics(
            {f"validation_{k}": float(v) for k, v in trained.validation_metrics.items() if np.isfinite(v)}
        )
        mlflow.log_metric("onnx_max_probability_difference", trained.onnx_max_difference)
        mlflow.set_tags(
            {
                "model_kind": trained.kind,
                "data_version": trained.data_version,
                "feature_spec_version": spec_version(),
                "code_version": code_version(),
                "threshold": repr(trained.threshold),
                "refit_on_all_rows": str(trained.refit).lower(),
                **({TRAINED_THROUGH_TAG: trained.trained_through} if trained.trained_through else {}),
                **({EARLY_FRAUDS_THROUGH_TAG: trained.early_frauds_through} if trained.early_frauds_through else {}),
            }
        )
        mlflow.log_dict({"feature_columns": list(trained.feature_columns)}, "features.json")
        mlflow.log_dict(trained.feature_importance, "feature_importance.json")
        model_uri = registry.log_onnx_model(
            trained.onnx, MODEL_ARTIFACT, example, OnnxScorer(trained.onnx).predict(example)
        )
    return dataclasses.replace(trained, run_id=run.info.run_id, model_uri=model_uri)


def _metadata(trained: TrainedModel) -> dict:
    top = list(trained.feature_importance.items())[:10]
    return {
        "mlflow_run_id": trained.run_id,
        "model_uri": trained.model_uri,
        "data_version": trained.data_version,
        "threshold": trained.threshold,
        "best_iteration": trained.best_iteration,
        "refit_on_all_rows": trained.refit,
        "trained_through": trained.trained_through or "-",
        "early_frauds_through": trained.early_frauds_through or "-",
        "validation_auc_pr": trained.validation_metrics.get("auc_pr"),
        "validation_recall": trained.validation_metrics.get("recall"),
        "onnx_max_probability_difference": trained.onnx_max_difference,
        "top_features": dg.MetadataValue.md(
            "| feature | importance |\n|---|---:|\n" + "\n".join(f"| {k} | {v:.4f} |" for k, v in top)
        ),
        "params": dg.MetadataValue.json(json.loads(json.dumps(trained.params, default=str))),
    }


@dg.asset(
    group_name=TRAINING,
    deps=[TRAINING_SET],
    kinds={"xgboost", "mlflow", "onnx"},
)
def fraud_model_candidate(
    context: dg.AssetExecutionContext,
    config: XGBoostConfig,
    warehouse: DuckDBResource,
    model_registry: ModelRegistry,
    settings: SettingsResource,
) -> TrainedModel:
    """XGBoost trained on the point-in-time training set, early-stopped on the validation split, exported to ONNX.
    A large training set is read from the warehouse in batches (`in_batches`), never as one frame."""
    dask = (
        DaskEngine(
            workers=config.dask_workers,
            scheduler=os.environ.get("MLOPS_DASK_SCHEDULER") or None,
            staging_dir=str(staging_folder(settings)),
        )
        if config.training_engine == "dask"
        else None
    )
    with warehouse.get_connection() as con:
        train_rows, _ = in_batches.split_counts(con, TRAINING_SET_TABLE, ["train"])
        batched = config.in_batches if config.in_batches is not None else train_rows > in_batches.IN_BATCHES_ABOVE_ROWS
        # Dask workers read the rows as the batches stage them: the dask engine always trains in batches.
        batched = batched or dask is not None
        if batched:
            # The batches are read in the training order: DuckDB's sort spills past the limit instead of growing.
            with memory_limit(con, config.warehouse_memory):
                trained, frame = fit_from_warehouse(
                    con,
                    TRAINING_SET_TABLE,
                    data_version(con, TRAINING_SET_TABLE),
                    xgboost_params=config.params(),
                    false_negative_cost=config.false_negative_cost,
                    refit=config.refit_on_all_rows,
                    dask=dask,
                )
    if not batched:
        frame, version = load_training_set(warehouse)
        trained = fit(
            frame,
            "xgboost",
            version,
            xgboost_params=config.params(),
            false_negative_cost=config.false_negative_cost,
            refit=config.refit_on_all_rows,
        )
    trained = log_to_mlflow(model_registry, trained, frame)
    context.add_output_metadata(
        {
            **_metadata(trained),
            "trained_in_batches": batched,
            "train_rows": train_rows,
            # The labels this candidate learnt from, whatever its gates decide: label_volume counts new
            # evidence from here, so a candidate stopped by a gate is not retrained on the same labels.
            TRAINING_CUTOFF: latest_training_cutoff(context.instance) or "-",
            "training_engine": config.training_engine,
            "dask_cluster": (dask.scheduler or f"LocalCluster, {dask.workers} worker(s)") if dask else "-",
        }
    )
    return trained


@dg.asset(
    group_name=TRAINING,
    deps=[TRAINING_SET],
    kinds={"scikitlearn", "mlflow", "onnx"},
)
def baseline_model(
    context: dg.AssetExecutionContext, config: LogisticConfig, warehouse: DuckDBResource, model_registry: ModelRegistry
) -> TrainedModel:
    """Standardised logistic regression on the same training set: the bar any candidate must clear."""
    frame, version = load_training_set(warehouse)
    trained = log_to_mlflow(
        model_registry,
        fit(
            frame, "logistic", version, logistic_params=config.params(), false_negative_cost=config.false_negative_cost
        ),
        frame,
    )
    context.add_output_metadata(_metadata(trained))
    return trained
