"""The asset graph of a snapshot project (churn is the first), built from its declaration alone.

Every key is prefixed by the project's name and every asset sits in the project's group, so the UI shows one
box per project beside the shared data layer, which stays shared: the graph reads the marts the declaration
names. Jobs, schedules and the retraining sensor belong to the project and carry its `mlops/project` tag, so a
trigger for one project never runs another's assets, and the run queue limits runs per project.

    <p>/snapshots ─> <p>/candidate_model ─> <p>/candidate_evaluation ─> <p>/registered_model ─> <p>/champion_model
         │                                   (the gates: blocking)        (batch shadow: blocking)       │
         ├──────────────────────────────> <p>/feature_drift ─> the project's retraining sensor          │
         └──────────────────────────────> <p>/batch_scores <───────────────────────────────────────────┘

The steps themselves are mlops_core.projects (no dagster); this module wires them.
"""

import base64
import dataclasses
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import PROJECT_TAG
from mlops_assets.deployment.registry import require_onnx
from mlops_core import registry
from mlops_core.projects import snapshots, training
from mlops_core.projects.declaration import ModelProject
from mlops_core.training.candidates import TrainedModel
from mlops_core.training.onnx_export import OnnxScorer
from resources.registry import ModelRegistry
from resources.settings import SettingsResource

MODEL_ARTIFACT = "model"
CHECK_ENOUGH_LABELS = "check_enough_labelled_snapshots"
CHECK_SHADOW = "check_batch_shadow_agreement"
CHECK_SCORES_COMPLETE = "check_scores_complete"
DRIFT_PSI = 0.25


def project_key(project: str, step: str) -> dg.AssetKey:
    """The key of one step of a project's graph: [project, step]."""
    return dg.AssetKey([project, step])


def _load_frame(warehouse: DuckDBResource, project: ModelProject):
    with warehouse.get_connection() as con:
        frame = snapshots.read_snapshots(con, project)
        version = snapshots.data_version(con, project)
    return frame, version


def _aliased_model(model_registry: ModelRegistry, project: ModelProject, alias: str):
    """(version, scorer, threshold) of the version `alias` names, or None; ONNX bytes only, never unpickled."""
    from mlops_core.serving.models import download_onnx

    client = model_registry.client()
    version = registry.alias_version(client, alias, project.registered_model)
    if version is None:
        return None
    model_bytes, threshold = download_onnx(client, version, project.registered_model)
    return version, OnnxScorer(model_bytes), threshold


def snapshot_project_definitions(project: ModelProject, folder: Path) -> dg.Definitions:
    """Assets, checks, jobs, schedules and the retraining sensor of one snapshot project."""
    name = project.name
    group = name
    tags = {PROJECT_TAG: name}
    owners = [project.owner]
    features = project.feature_names()
    marts = [dg.AssetKey(mart.split(".")) for mart in project.marts]

    @dg.asset(
        key=project_key(name, "snapshots"),
        group_name=group,
        deps=marts,
        owners=owners,
        tags=tags,
        kinds={"duckdb", "sql"},
        description=f"{project.entity.name} snapshots every {project.entity.snapshot_days} days from "
        f"{snapshots.SNAPSHOT_SQL}, with the declared features as of each snapshot and the label once its "
        f"{project.label.horizon_days}-day horizon has passed.",
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_ENOUGH_LABELS,
                asset=project_key(name, "snapshots"),
                blocking=True,
                description="Enough labelled snapshot dates, with both outcomes, to train, validate and test.",
            )
        ],
    )
    def project_snapshots(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            try:
                built = snapshots.build_snapshots(con, project, folder)
            except snapshots.SnapshotError as error:
                raise dg.Failure(description=str(error)) from error
        negatives = built.labelled_rows - built.positives
        enough = built.labelled_dates >= training.MIN_LABELLED_DATES and built.positives > 0 and negatives > 0
        yield dg.MaterializeResult(
            metadata={
                "table": built.table,
                "dagster/row_count": built.rows,
                "labelled_rows": built.labelled_rows,
                "positives": built.positives,
                "positive_rate": built.positives / built.labelled_rows if built.labelled_rows else float("nan"),
                "first_snapshot": str(built.first_snapshot),
                "last_snapshot": str(built.last_snapshot),
                "labels_known_until": str(built.data_end),
                "features": dg.MetadataValue.json(features),
            }
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_ENOUGH_LABELS,
            passed=bool(enough),
            description=f"{built.labelled_dates} labelled snapshot dates (need {training.MIN_LABELLED_DATES}), "
            f"{built.positives} positive and {negatives} negative labelled rows",
        )

    @dg.asset(
        key=project_key(name, "candidate_model"),
        group_name=group,
        deps=[project_key(name, "snapshots")],
        owners=owners,
        tags=tags,
        kinds={project.model.family.replace("_", ""), "mlflow", "onnx"},
        description=f"{project.model.family} on the labelled snapshots (train dates), early-stopped on the "
        "validation dates, exported to ONNX and logged to MLflow.",
    )
    def candidate_model(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, model_registry: ModelRegistry
    ) -> TrainedModel:
        import mlflow

        frame, version = _load_frame(warehouse, project)
        frame = training.assign_splits(frame)
        trained = training.fit_candidate(project, frame, version)
        example = training.encode(frame[frame["split"] == "validation"].head(5), features)
        # The project's own MLflow experiment, named after it: its runs never mix with another project's.
        with model_registry.model_run(f"{name}-{trained.kind}-candidate", experiment=name) as run:
            mlflow.log_params({**trained.params, "threshold": trained.threshold})
            mlflow.log_metrics({f"validation_{k}": float(v) for k, v in trained.validation_metrics.items() if v == v})
            mlflow.log_metric("onnx_max_probability_difference", trained.onnx_max_difference)
            mlflow.set_tags(
                {
                    "project": name,
                    "model_kind": trained.kind,
                    "data_version": version,
                    "threshold": repr(trained.threshold),
                }
            )
            mlflow.log_dict({"feature_columns": features}, "features.json")
            mlflow.log_dict(trained.feature_importance, "feature_importance.json")
            model_uri = registry.log_onnx_model(
                trained.onnx, MODEL_ARTIFACT, example, OnnxScorer(trained.onnx).predict(example)
            )
        trained = dataclasses.replace(trained, run_id=run.info.run_id, model_uri=model_uri)
        context.add_output_metadata(
            {
                "mlflow_run_id": trained.run_id,
                "model_uri": trained.model_uri,
                "data_version": version,
                "threshold": trained.threshold,
                "best_iteration": trained.best_iteration,
                "validation_auc_pr": trained.validation_metrics.get("auc_pr"),
                "train_rows": int((frame["split"] == "train").sum()),
                "top_features": dg.MetadataValue.md(
                    "| feature | importance |\n|---|---:|\n"
                    + "\n".join(f"| {k} | {v:.4f} |" for k, v in list(trained.feature_importance.items())[:10])
                ),
            }
        )
        return trained

    @dg.asset(
        key=project_key(name, "candidate_evaluation"),
        group_name=group,
        owners=owners,
        tags=tags,
        ins={"candidate_model": dg.AssetIn(project_key(name, "candidate_model"))},
        kinds={"mlflow", "html"},
        description="Candidate vs champion vs the best single-feature rule on the same test snapshots; the "
        "declared gates as blocking checks.",
        check_specs=[
            dg.AssetCheckSpec(
                gate,
                asset=project_key(name, "candidate_evaluation"),
                blocking=True,
                description=training.PROJECT_GATE_DESCRIPTIONS[gate],
            )
            for gate in training.PROJECT_GATES
        ],
    )
    def candidate_evaluation(
        candidate_model: TrainedModel,
        warehouse: DuckDBResource,
        model_registry: ModelRegistry,
        settings: SettingsResource,
    ):
        from mlops_core.training.report import markdown_tables, plots, render_html

        frame, _ = _load_frame(warehouse, project)
        frame = training.assign_splits(frame)
        champion = _aliased_model(model_registry, project, registry.CHAMPION)
        evaluation = training.evaluate(
            project,
            candidate_model,
            frame,
            champion=None if champion is None else (f"champion (version {champion[0]})", champion[1], champion[2]),
        )
        figures = plots(evaluation.report)
        reports_dir = settings.get().reports_dir / name
        reports_dir.mkdir(parents=True, exist_ok=True)
        path = reports_dir / f"evaluation-{candidate_model.run_id}.html"
        path.write_text(render_html(evaluation.report, figures))
        client = model_registry.client()
        client.log_artifact(candidate_model.run_id, str(path), "evaluation")
        for metric, value in evaluation.test_metrics.items():
            if value == value:
                client.log_metric(candidate_model.run_id, f"test_{metric}", float(value))
        for metric, value in evaluation.baseline_metrics.items():
            if value == value:
                client.log_metric(candidate_model.run_id, f"baseline_test_{metric}", float(value))
        tables = markdown_tables(evaluation.report)
        failed = [n for n, o in evaluation.outcomes.items() if not o.passed]
        yield dg.MaterializeResult(
            metadata={
                "report_file": dg.MetadataValue.path(str(path)),
                "verdict": "all gates pass" if not failed else "stopped: " + ", ".join(failed),
                "metrics": dg.MetadataValue.md(tables["metrics"]),
                "gates": dg.MetadataValue.md(tables["gates"]),
                "plots": dg.MetadataValue.md(
                    "\n\n".join(
                        f"![{n}](data:image/png;base64,{base64.b64encode(png).decode()})" for n, png in figures.items()
                    )
                ),
                "test_auc_pr": evaluation.test_metrics["auc_pr"],
                "baseline_test_auc_pr": evaluation.baseline_metrics["auc_pr"],
                "mlflow_run_id": candidate_model.run_id,
            }
        )
        for gate in training.PROJECT_GATES:
            outcome = evaluation.outcomes[gate]
            yield dg.AssetCheckResult(check_name=gate, passed=outcome.passed, description=outcome.detail)

    @dg.asset(
        key=project_key(name, "registered_model"),
        group_name=group,
        owners=owners,
        tags=tags,
        ins={"candidate_model": dg.AssetIn(project_key(name, "candidate_model"))},
        deps=[project_key(name, "candidate_evaluation")],
        kinds={"mlflow"},
        description=f"The candidate registered as a new version of {project.registered_model!r} with the "
        "`challenger` alias, after every gate passed; the batch shadow check compares it with the champion.",
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_SHADOW,
                asset=project_key(name, "registered_model"),
                blocking=True,
                description="On the latest snapshot, the challenger's decisions agree with the champion's at "
                f"least {project.rollout.shadow.min_decision_agreement:.0%} of the time (rollout.shadow).",
            )
        ],
    )
    def registered_model(candidate_model: TrainedModel, warehouse: DuckDBResource, model_registry: ModelRegistry):
        client = model_registry.client()
        require_onnx(client, candidate_model)  # serving loads nothing but the ONNX graph, as for fraud
        test_metrics = registry.run_metrics(client, candidate_model.run_id)
        with warehouse.get_connection() as con:
            change = model_registry.register(
                con,
                registry.CHALLENGER,
                candidate_model.run_id,
                MODEL_ARTIFACT,
                reason="passed every quality gate",
                metrics=test_metrics,
                tags={"threshold": repr(candidate_model.threshold), "data_version": candidate_model.data_version},
                model_uri=candidate_model.model_uri,
                project=project.registered_model,
            )
        frame, _ = _load_frame(warehouse, project)
        champion = _aliased_model(model_registry, project, registry.CHAMPION)
        if champion is None:
            agreement, detail = 1.0, "no champion yet: the first version has nothing to shadow"
        else:
            latest = training.score_latest(frame, features, candidate_model.scorer(), candidate_model.threshold)
            champion_decisions = champion[1].predict(training.encode(latest, features)) >= champion[2]
            agreement = float((latest["decision"].to_numpy() == champion_decisions).mean())
            detail = (
                f"decisions agree on {agreement:.1%} of {len(latest)} snapshot rows with champion version "
                f"{champion[0]} (min {project.rollout.shadow.min_decision_agreement:.0%})"
            )
        yield dg.MaterializeResult(
            metadata={
                "model": project.registered_model,
                "version": change.to_version,
                "alias": registry.CHALLENGER,
                "previous_challenger": change.from_version,
                "mlflow_run_id": candidate_model.run_id,
                "test_auc_pr": test_metrics.get("test_auc_pr"),
            }
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_SHADOW,
            passed=agreement >= project.rollout.shadow.min_decision_agreement,
            description=detail,
        )

    @dg.asset(
        key=project_key(name, "champion_model"),
        group_name=group,
        owners=owners,
        tags=tags,
        deps=[project_key(name, "registered_model")],
        kinds={"mlflow"},
        description=f"The `champion` alias of {project.registered_model!r} moved to the challenger; the previous "
        "champion stays in the alias history for rollback.",
    )
    def champion_model(warehouse: DuckDBResource, model_registry: ModelRegistry):
        client = model_registry.client()
        challenger = registry.alias_version(client, registry.CHALLENGER, project.registered_model)
        if challenger is None:
            raise dg.Failure(f"no challenger of {project.registered_model!r} to promote: run the training job first")
        if challenger == registry.alias_version(client, registry.CHAMPION, project.registered_model):
            return dg.MaterializeResult(
                metadata={"model": project.registered_model, "champion_version": challenger, "changed": False}
            )
        with warehouse.get_connection() as con:
            change = model_registry.promote_challenger(
                con,
                reason="passed the gates and the batch shadow",
                metrics={},
                project=project.registered_model,
            )
            history = model_registry.history(con, project.registered_model)
        return dg.MaterializeResult(
            metadata={
                "model": project.registered_model,
                "champion_version": change.to_version,
                "previous_champion": change.from_version,
                "changed": True,
                "alias_moves": len(history),
            }
        )

    @dg.asset(
        key=project_key(name, "batch_scores"),
        group_name=group,
        owners=owners,
        tags=tags,
        deps=[project_key(name, "snapshots"), project_key(name, "champion_model")],
        kinds={"duckdb", "onnx"},
        description=f"The champion's scores of the latest snapshot's population, in {snapshots.scores_table(project)} "
        "(rewritten per snapshot date: re-running a date replaces it).",
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_SCORES_COMPLETE,
                asset=project_key(name, "batch_scores"),
                blocking=True,
                description="Exactly one score per row of the latest snapshot.",
            )
        ],
    )
    def batch_scores(warehouse: DuckDBResource, model_registry: ModelRegistry):
        champion = _aliased_model(model_registry, project, registry.CHAMPION)
        if champion is None:
            raise dg.Failure(
                description=f"no {registry.CHAMPION!r} alias on {project.registered_model!r}: nothing to score with; "
                f"run {name}_training_job first"
            )
        version, scorer, threshold = champion
        frame, _ = _load_frame(warehouse, project)
        scored = training.score_latest(frame, features, scorer, threshold)
        scored["model_version"] = str(version)
        snapshot_date = scored[snapshots.SNAPSHOT_DATE].iloc[0]
        table = snapshots.scores_table(project)
        with warehouse.get_connection() as con:
            written = snapshots.write_scores(con, project, scored)
        yield dg.MaterializeResult(
            metadata={
                "table": table,
                "snapshot_date": str(snapshot_date)[:10],
                "dagster/row_count": int(written[0]),
                "flagged": int(scored["decision"].sum()),
                "flagged_share": float(scored["decision"].mean()),
                "model_version": str(version),
            }
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_SCORES_COMPLETE,
            passed=bool(written[0] == written[1] == len(scored)),
            description=f"{written[0]} scores for {written[1]} distinct {project.entity.key}s; the snapshot has {len(scored)} rows",
        )

    @dg.asset(
        key=project_key(name, "feature_drift"),
        group_name=group,
        owners=owners,
        tags=tags,
        deps=[project_key(name, "snapshots")],
        kinds={"duckdb"},
        description=f"PSI of each feature on the latest snapshot against the training dates; drifted when "
        f"more than {project.monitoring.drift_share:.0%} of the features reach PSI {DRIFT_PSI}.",
    )
    def feature_drift(warehouse: DuckDBResource):
        from mlops_core.monitoring.psi import psi_on_edges

        frame, _ = _load_frame(warehouse, project)
        reference = training.assign_splits(frame)
        reference = reference[reference["split"] == "train"]
        latest = frame[frame[snapshots.SNAPSHOT_DATE] == frame[snapshots.SNAPSHOT_DATE].max()]
        psi = {
            feature: psi_on_edges(
                reference[feature].to_numpy(dtype=float), latest[feature].to_numpy(dtype=float), bins=10
            )
            for feature in features
        }
        drifted = sorted(f for f, value in psi.items() if value >= DRIFT_PSI)
        share = len(drifted) / len(features)
        return dg.MaterializeResult(
            metadata={
                "drifted": share > project.monitoring.drift_share,
                "drifted_share": share,
                "drifted_features": dg.MetadataValue.json(drifted),
                "psi": dg.MetadataValue.json({k: round(v, 6) for k, v in psi.items()}),
                "latest_snapshot": str(latest[snapshots.SNAPSHOT_DATE].iloc[0])[:10],
            }
        )

    @dg.asset(
        key=project_key(name, "online_features"),
        group_name=group,
        owners=owners,
        tags=tags,
        deps=[project_key(name, "snapshots")],
        kinds={"parquet"},
        description="The latest snapshot's features, published for `mlops serve` (POST /v1/models/"
        f"{name}/predict): the online route scores exactly what the batch scores scored.",
    )
    def online_features(warehouse: DuckDBResource, settings: SettingsResource):
        from mlops_core.serving.projects import features_root, publish_features

        frame, _ = _load_frame(warehouse, project)
        latest = frame[frame[snapshots.SNAPSHOT_DATE] == frame[snapshots.SNAPSHOT_DATE].max()]
        published = latest[[project.entity.key, snapshots.SNAPSHOT_DATE, *features]].copy()
        published[snapshots.SNAPSHOT_DATE] = published[snapshots.SNAPSHOT_DATE].astype(str).str[:10]
        path = publish_features(published, features_root(settings.get().data_dir), project)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": len(published),
                "snapshot_date": str(published[snapshots.SNAPSHOT_DATE].iloc[0]) if len(published) else "",
            }
        )

    training_job = dg.define_asset_job(
        f"{name}_training_job",
        selection=dg.AssetSelection.assets(
            project_key(name, "snapshots"),
            project_key(name, "candidate_model"),
            project_key(name, "candidate_evaluation"),
            project_key(name, "registered_model"),
            project_key(name, "champion_model"),
        ),
        tags={**tags, "mlops/warehouse": "duckdb"},
        description=f"{name}: snapshots, candidate, gates, registration with the batch shadow, promotion.",
    )
    scoring_job = dg.define_asset_job(
        f"{name}_scoring_job",
        selection=dg.AssetSelection.assets(
            project_key(name, "snapshots"),
            project_key(name, "batch_scores"),
            project_key(name, "online_features"),
            project_key(name, "feature_drift"),
        ),
        tags={**tags, "mlops/warehouse": "duckdb"},
        description=f"{name}: the latest snapshot scored by the champion, and its feature drift.",
    )
    schedules = []
    if project.serving.batch_schedule and project.serving.mode in ("batch", "both"):
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_batch_scoring", cron_schedule=project.serving.batch_schedule, job=scoring_job
            )
        )
    if project.monitoring.retrain_schedule:
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_scheduled_retraining", cron_schedule=project.monitoring.retrain_schedule, job=training_job
            )
        )
    sensors = []
    if "feature_drift" in project.monitoring.retrain_on:
        sensors.append(_drift_sensor(project, training_job))
    return dg.Definitions(
        assets=[
            project_snapshots,
            candidate_model,
            candidate_evaluation,
            registered_model,
            champion_model,
            batch_scores,
            online_features,
            feature_drift,
        ],
        jobs=[training_job, scoring_job],
        schedules=schedules,
        sensors=sensors,
    )


def _drift_sensor(project: ModelProject, training_job) -> dg.SensorDefinition:
    """Retrain this project (and only it) when its feature_drift says drifted; the cursor is the storage id of
    the last verdict read, so each verdict triggers at most once."""
    drift = project_key(project.name, "feature_drift")

    @dg.sensor(
        name=f"{project.name}_drift_retraining",
        job=training_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Retrains {project.name} when {drift.to_user_string()} reports drift.",
    )
    def drift_retraining(context: dg.SensorEvaluationContext):
        seen = int(context.cursor) if context.cursor else None
        # Every verdict since the last tick, oldest first: a drift followed by a calm day still retrains once.
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=drift, after_storage_id=seen), limit=1000, ascending=True
        ).records
        if not records:
            return dg.SkipReason(f"no new verdict of {drift.to_user_string()} since the last tick")
        context.update_cursor(str(records[-1].storage_id))
        drifted = [
            r
            for r in records
            if r.asset_materialization is not None
            and "drifted" in r.asset_materialization.metadata
            and bool(r.asset_materialization.metadata["drifted"].value)
        ]
        if not drifted:
            return dg.SkipReason(f"{len(records)} new verdicts, none drifted")
        return dg.RunRequest(
            run_key=f"{project.name}-drift-{drifted[-1].storage_id}",
            tags={PROJECT_TAG: project.name, "mlops/trigger": f"{project.name}_drift_retraining"},
        )

    return drift_retraining
