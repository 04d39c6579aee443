"""The candidate's evaluation on the frozen test split, with the quality gates as blocking checks."""

import base64
import tempfile
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import TRAINING
from mlops_assets.training.models import EARLY_FRAUDS_THROUGH_TAG, TRAINED_THROUGH_TAG
from mlops_core import registry
from mlops_core.features.offline import TRAINING_SET_TABLE
from mlops_core.projects.catalog import fraud_project
from mlops_core.registry import BELOW_MINIMUMS_TAG, CBPE_REFERENCE_ARTIFACT
from mlops_core.releases import GATES_ARTIFACT
from mlops_core.training import gates as g
from mlops_core.training import in_batches, matrix
from mlops_core.training.candidates import Evaluation, TrainedModel, evaluate
from mlops_core.training.model_card import MODEL_CARD_ARTIFACT, ModelCard, render_markdown
from mlops_core.training.onnx_export import OnnxScorer
from mlops_core.training.report import markdown_tables, plots, render_html
from resources.registry import ModelRegistry
from resources.settings import SettingsResource

EVALUATION = dg.AssetKey("candidate_evaluation")


# The bounds' defaults are the fraud project's declared gates (projects/fraud/defs.yaml; a bound it leaves out
# is GateThresholds'); the config only describes them, and a run may still override them in the launchpad.
_GATE_DEFAULTS = fraud_project().gates


class GateConfig(dg.Config):
    """Bounds of the quality gates; each check reports its number against its bound."""

    min_auc_pr: float = Field(default=_GATE_DEFAULTS.min_auc_pr, description="Least AUC-PR on the test split.")
    min_recall: float = Field(default=_GATE_DEFAULTS.min_recall, description="Least recall at the operating threshold.")
    failing_champion_min_gain: float = Field(
        default=_GATE_DEFAULTS.failing_champion_min_gain,
        description="A candidate below the minimums replaces a champion below them on the same test rows when its "
        "AUC-PR is at least this many times the champion's (after a concept drift).",
    )
    max_auc_pr_regression: float = Field(
        default=_GATE_DEFAULTS.max_auc_pr_regression,
        description="Most AUC-PR the candidate may lose against the champion on the same test split.",
    )
    max_recall_gap: float = Field(
        default=_GATE_DEFAULTS.max_recall_gap,
        description="Largest recall difference between age bands (those with at least fairness_min_positives frauds).",
    )
    fairness_min_positives: int = Field(
        default=_GATE_DEFAULTS.fairness_min_positives,
        description="Age bands with fewer frauds in the test split are left out of the fairness gaps.",
    )
    fairness_significance: float = Field(
        default=_GATE_DEFAULTS.fairness_significance,
        description="A fairness gap fails only if its test (Bonferroni-adjusted) gives p below this.",
    )
    max_false_positive_rate_gap: float = Field(
        default=_GATE_DEFAULTS.max_false_positive_rate_gap,
        description="Largest false-positive-rate difference between age bands.",
    )
    max_p99_latency_ms: float = Field(
        default=_GATE_DEFAULTS.max_p99_latency_ms, description="Single-row ONNX scoring p99 SLO, ms."
    )
    max_flip_rate: float = Field(
        default=_GATE_DEFAULTS.max_flip_rate,
        description="Most decisions that may flip under 1% noise on numeric inputs.",
    )
    max_onnx_difference: float = Field(
        default=_GATE_DEFAULTS.max_onnx_difference, description="Largest |ONNX - native| probability."
    )
    max_calibration_error: float = Field(
        default=_GATE_DEFAULTS.max_calibration_error, description="Largest expected calibration error (10 bins)."
    )
    max_behaviour_drop: float = Field(
        default=_GATE_DEFAULTS.max_behaviour_drop,
        description="Largest relative fall of the mean score a directional expectation tolerates.",
    )

    def thresholds(self) -> g.GateThresholds:
        return g.GateThresholds(**self.model_dump())


def champion_scorer(model_registry: ModelRegistry) -> tuple[str, OnnxScorer, float] | None:
    """The current champion's ONNX graph from the registry (bytes only, never unpickled)."""
    import mlflow

    champion = model_registry.champion()
    if champion is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{champion.model_name}/{champion.version}",
                dst_path=tmp,
                tracking_uri=model_registry.tracking_uri,
            )
        )
        model_bytes = next(local.rglob("*.onnx")).read_bytes()
    threshold = (
        champion.tags.get("threshold") or model_registry.client().get_run(champion.run_id).data.tags["threshold"]
    )
    return f"champion (version {champion.version})", OnnxScorer(model_bytes), float(threshold)


def champion_trained_through(model_registry: ModelRegistry) -> tuple[str | None, str | None]:
    """What the champion learnt from, from its run's tags: the newest mature event, and the newest verdict of
    the early frauds it learnt (None for a tag it does not carry: registered before it, or no early frauds)."""
    champion = model_registry.champion()
    if champion is None or not champion.run_id:
        return None, None
    tags = model_registry.client().get_run(champion.run_id).data.tags
    return tags.get(TRAINED_THROUGH_TAG), tags.get(EARLY_FRAUDS_THROUGH_TAG)


def champion_test_metrics(model_registry: ModelRegistry) -> dict[str, float] | None:
    """The champion's test metrics as its own evaluation recorded them (test_<name> on its run), or None."""
    champion = model_registry.champion()
    if champion is None or not champion.run_id:
        return None
    metrics = registry.run_metrics(model_registry.client(), champion.run_id)
    recorded = {k.removeprefix("test_"): float(v) for k, v in metrics.items() if k.startswith("test_")}
    return recorded if "auc_pr" in recorded else None


def model_card(candidate: TrainedModel, evaluation: Evaluation, windows, label_maturity_days: int) -> str:
    """The candidate's model card (mlops_core/training/model_card.py) as Markdown, from its evaluation."""
    project = fraud_project()
    return render_markdown(
        ModelCard(
            project=project.name,
            description=project.description,
            owner=project.owner,
            model_kind=candidate.kind,
            threshold=candidate.threshold,
            threshold_rule=str(evaluation.report.facts.get("threshold rule", "")),
            feature_count=len(candidate.feature_columns),
            top_features=tuple(candidate.feature_importance.items()),
            data_version=candidate.data_version,
            trained_through=candidate.trained_through,
            refit=candidate.evaluated_onnx is not None,
            label_maturity_days=label_maturity_days,
            windows=windows,
            report=evaluation.report,
            run_id=candidate.run_id,
        )
    )


def _check_results(evaluation: Evaluation):
    for name in g.GATES:
        outcome = evaluation.outcomes[name]
        yield dg.AssetCheckResult(
            check_name=name, asset_key=EVALUATION, passed=outcome.passed, description=outcome.detail
        )


@dg.asset(
    key=EVALUATION,
    group_name=TRAINING,
    kinds={"mlflow", "html"},
    check_specs=[
        dg.AssetCheckSpec(name, asset=EVALUATION, blocking=True, description=g.GATE_DESCRIPTIONS[name])
        for name in g.GATES
    ],
)
def candidate_evaluation(
    config: GateConfig,
    fraud_model_candidate: TrainedModel,
    baseline_model: TrainedModel,
    warehouse: DuckDBResource,
    model_registry: ModelRegistry,
    settings: SettingsResource,
):
    """Candidate vs champion vs baseline on the same frozen test split: metrics, segments, plots, latency,
    and the quality gates. Writes a self-contained HTML report and logs it to the candidate's MLflow run."""
    # Only the test split as a frame, and the splits' counts from DuckDB: the training rows never load here.
    with warehouse.get_connection() as con:
        test = in_batches.read_splits(con, TRAINING_SET_TABLE, ["test"])
        windows = in_batches.split_windows_in(con, TRAINING_SET_TABLE)
    if test.empty:
        raise ValueError("the training set has no rows in split 'test'")
    client = model_registry.client()
    trained_through, early_frauds_through = champion_trained_through(model_registry)
    evaluation = evaluate(
        fraud_model_candidate,
        test,
        config.thresholds(),
        baseline=baseline_model,
        champion=champion_scorer(model_registry),
        champion_trained_through=trained_through,
        champion_recorded=champion_test_metrics(model_registry),
        champion_early_frauds_through=early_frauds_through,
    )
    figures = plots(evaluation.report)
    page = render_html(evaluation.report, figures)
    reports_dir = settings.get().reports_dir
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"evaluation-{fraud_model_candidate.run_id}.html"
    path.write_text(page)
    # Written beside and renamed: a full disk must not leave a truncated report as the latest one.
    latest = reports_dir / "evaluation-latest.html"
    partial = latest.with_suffix(".html.partial")
    partial.write_text(page)
    partial.replace(latest)
    client.log_artifact(fraud_model_candidate.run_id, str(path), "evaluation")
    # The test split as the model that never saw it scored it: estimated_performance calibrates on it once this
    # candidate is the champion (CBPE's reference, mlops_core/monitoring/cbpe.py).
    client.log_dict(
        fraud_model_candidate.run_id,
        {
            "score": [
                round(float(x), 7) for x in fraud_model_candidate.evaluated_scorer().predict(matrix.encode(test))
            ],
            "is_fraud": [int(x) for x in matrix.labels(test)],
            "threshold": fraud_model_candidate.threshold,
        },
        CBPE_REFERENCE_ARTIFACT,
    )
    card = model_card(fraud_model_candidate, evaluation, windows, settings.get().label_maturity_days)
    card_path = reports_dir / f"model-card-{fraud_model_candidate.run_id}.md"
    card_path.write_text(card)
    client.log_text(fraud_model_candidate.run_id, card, MODEL_CARD_ARTIFACT)
    # The gates' verdicts travel with the version: its release file quotes them (mlops_core/releases.py).
    client.log_dict(
        fraud_model_candidate.run_id,
        {name: {"passed": o.passed, "detail": o.detail} for name, o in evaluation.outcomes.items()},
        GATES_ARTIFACT,
    )
    artifact = f"evaluation/{path.name}"
    experiment_id = client.get_run(fraud_model_candidate.run_id).info.experiment_id
    report_url = registry.artifact_page_url(client.tracking_uri, experiment_id, fraud_model_candidate.run_id, artifact)
    for name, value in evaluation.test_metrics.items():
        if value == value:  # NaN (a split without one class) is not a metric
            client.log_metric(fraud_model_candidate.run_id, f"test_{name}", float(value))
    # Passed only as better than a failing champion: once promoted, concept_drift asks for a retraining at every
    # cool-down until a champion reaches the minimums on its own (the new pattern's labels keep arriving).
    below = not g.meets_minimums(evaluation.test_metrics, config.thresholds())
    client.set_tag(fraud_model_candidate.run_id, BELOW_MINIMUMS_TAG, str(below).lower())
    tables = markdown_tables(evaluation.report)
    plot_md = "\n\n".join(
        f"![{n}](data:image/png;base64,{base64.b64encode(png).decode()})" for n, png in figures.items()
    )
    yield dg.MaterializeResult(
        metadata={
            # A link a browser opens from the UI (the MLflow UI's page of the logged report); the file beside it.
            "report": dg.MetadataValue.url(report_url),
            "report_file": dg.MetadataValue.path(str(path)),
            "model_card": dg.MetadataValue.md(card),
            "model_card_file": dg.MetadataValue.path(str(card_path)),
            "verdict": "all gates pass"
            if evaluation.passed
            else "stopped: " + ", ".join(n for n, o in evaluation.outcomes.items() if not o.passed),
            "metrics": dg.MetadataValue.md(tables["metrics"]),
            "segments": dg.MetadataValue.md(tables.get("segments", "")),
            "gates": dg.MetadataValue.md(tables["gates"]),
            "plots": dg.MetadataValue.md(plot_md),
            "latency_p50_ms": evaluation.report.latency["p50_ms"],
            "latency_p99_ms": evaluation.report.latency["p99_ms"],
            "test_auc_pr": evaluation.test_metrics["auc_pr"],
            "mlflow_run_id": fraud_model_candidate.run_id,
        }
    )
    yield from _check_results(evaluation)
