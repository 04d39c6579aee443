"""Fit a candidate on the point-in-time training set and evaluate it on the frozen test split.

Glue between the matrix, models, ONNX export, metrics, gates and report modules; no
dagster, no MLflow. What leaves `fit` is a TrainedModel holding the ONNX bytes, never a
pickled estimator: evaluation and serving both score the exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops_core.training import gates as g
from mlops_core.training import matrix, metrics
from mlops_core.training.models import LogisticParams, XGBoostParams, train_logistic, train_xgboost
from mlops_core.training.onnx_export import OnnxScorer, max_probability_difference, to_onnx
from mlops_core.training.report import EvaluationReport, ScoredModel

SEGMENT_COLUMNS = ("channel", "merchant_category", "country", "age_band")


@dataclass(frozen=True)
class TrainedModel:
    """A fitted candidate as it travels between assets: ONNX bytes plus what was learnt about it."""

    kind: str
    onnx: bytes
    feature_columns: tuple[str, ...]
    threshold: float
    params: dict[str, object]
    validation_metrics: dict[str, float]
    onnx_max_difference: float
    feature_importance: dict[str, float]
    data_version: str
    best_iteration: int | None = None
    run_id: str | None = None
    model_uri: str | None = None

    def scorer(self) -> OnnxScorer:
        return OnnxScorer(self.onnx)


def split(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    part = frame[frame["split"] == name]
    if part.empty:
        raise ValueError(f"the training set has no rows in split {name!r}")
    return part


def _importance(model, kind: str) -> dict[str, float]:
    if kind == "xgboost":
        values = np.asarray(model.feature_importances_, dtype=float)
    else:
        values = np.abs(np.asarray(model.steps[-1][1].coef_[0], dtype=float))
    return {c: float(v) for c, v in sorted(zip(matrix.FEATURE_COLUMNS, values), key=lambda cv: -cv[1])}


def fit(
    frame: pd.DataFrame,
    kind: str,
    data_version: str,
    xgboost_params: XGBoostParams = XGBoostParams(),
    logistic_params: LogisticParams = LogisticParams(),
    false_negative_cost: float = 20.0,
) -> TrainedModel:
    """Train on `train`, stop early and pick the threshold on `validation`; export to ONNX."""
    train, validation = split(frame, "train"), split(frame, "validation")
    X_train, y_train = matrix.encode(train), matrix.labels(train)
    X_val, y_val = matrix.encode(validation), matrix.labels(validation)
    if kind == "xgboost":
        model = train_xgboost(X_train, y_train, X_val, y_val, xgboost_params)
        params, best = xgboost_params.as_dict(), int(model.best_iteration)
    elif kind == "logistic":
        model = train_logistic(X_train, y_train, logistic_params)
        params, best = logistic_params.as_dict(), None
    else:
        raise ValueError(f"unknown model kind {kind!r}: expected 'xgboost' or 'logistic'")
    onnx_bytes = to_onnx(model, len(matrix.FEATURE_COLUMNS))
    scorer = OnnxScorer(onnx_bytes)
    p_val = scorer.predict(X_val)
    threshold = metrics.choose_threshold(y_val, p_val, false_negative_cost=false_negative_cost)
    return TrainedModel(
        kind=kind,
        onnx=onnx_bytes,
        feature_columns=tuple(matrix.FEATURE_COLUMNS),
        threshold=float(threshold),
        params=params,
        validation_metrics=metrics.classification_metrics(y_val, p_val, threshold),
        onnx_max_difference=float(
            max_probability_difference(model, scorer, np.vstack([X_val, matrix.encode(split(frame, "test"))]))
        ),
        feature_importance=_importance(model, kind),
        data_version=data_version,
        best_iteration=best,
    )


@dataclass
class Evaluation:
    report: EvaluationReport
    outcomes: dict[str, g.GateOutcome] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes.values())


def behavioural_results(
    scorer: OnnxScorer, test: pd.DataFrame, sample: int = 500, seed: int = 0
) -> list[tuple[str, float, float]]:
    rows = test[~test["is_fraud"].astype(bool)].sample(
        n=min(sample, int((~test["is_fraud"].astype(bool)).sum())), random_state=seed
    )
    before = float(np.mean(scorer.predict(matrix.encode(rows))))
    results = []
    for expectation in g.EXPECTATIONS:
        changed = rows.copy()
        changed[expectation.feature] = expectation.change(changed[expectation.feature].to_numpy())
        results.append((expectation.description, before, float(np.mean(scorer.predict(matrix.encode(changed))))))
    return results


def evaluate(
    candidate: TrainedModel,
    test: pd.DataFrame,
    thresholds: g.GateThresholds,
    baseline: TrainedModel | None = None,
    champion: tuple[str, OnnxScorer, float] | None = None,
    latency_calls: int = 1000,
) -> Evaluation:
    """Score the candidate, the baseline and the champion on the same frozen test rows; apply the gates."""
    X, y = matrix.encode(test), matrix.labels(test)
    scorer = candidate.scorer()
    p = scorer.predict(X)
    test_metrics = metrics.classification_metrics(y, p, candidate.threshold)
    scored = ScoredModel(f"candidate ({candidate.kind})", y, p, candidate.threshold, test_metrics)
    others: list[ScoredModel] = []
    champion_metrics = None
    if champion is not None:
        name, champion_scorer, champion_threshold = champion
        p_champion = champion_scorer.predict(X)
        champion_metrics = metrics.classification_metrics(y, p_champion, champion_threshold)
        others.append(ScoredModel(name, y, p_champion, champion_threshold, champion_metrics))
    if baseline is not None:
        p_base = baseline.scorer().predict(X)
        others.append(
            ScoredModel(
                f"baseline ({baseline.kind})",
                y,
                p_base,
                baseline.threshold,
                metrics.classification_metrics(y, p_base, baseline.threshold),
            )
        )
    segments = metrics.segment_metrics(y, p, candidate.threshold, test[list(SEGMENT_COLUMNS)].reset_index(drop=True))
    gaps = metrics.fairness_gaps(
        y,
        p,
        candidate.threshold,
        test["age_band"].reset_index(drop=True),
        min_positives=thresholds.fairness_min_positives,
    )
    latency = metrics.latency_percentiles(scorer.predict, X, n_calls=latency_calls)
    flip_rate = metrics.decision_flip_rate(scorer.predict, X, candidate.threshold, relative_noise=0.01, seed=0)
    outcomes = {
        o.name: o
        for o in (
            g.minimum_quality(test_metrics, thresholds),
            g.no_regression(test_metrics, champion_metrics, thresholds),
            g.fairness(gaps, thresholds),
            g.latency(latency, thresholds),
            g.robustness(flip_rate, thresholds),
            g.behavioural(behavioural_results(scorer, test), thresholds.max_behaviour_drop),
            g.onnx_parity(candidate.onnx_max_difference, thresholds),
            g.calibration(test_metrics, thresholds),
        )
    }
    report = EvaluationReport(
        title=f"Fraud model evaluation: candidate ({candidate.kind})",
        candidate=scored,
        others=others,
        segments=segments,
        latency=latency,
        gates=list(outcomes.values()),
        facts={
            "data_version": candidate.data_version,
            "threshold rule": "minimum expected cost on validation: a missed fraud costs 20 false alarms",
            "threshold": candidate.threshold,
            "test rows": len(test),
            "test frauds": int(y.sum()),
            "mlflow run": candidate.run_id or "-",
            "decision flip rate (1% noise)": flip_rate,
            "recall gap across age bands": gaps["recall_gap"],
        },
    )
    return Evaluation(report=report, outcomes=outcomes, test_metrics=test_metrics)
