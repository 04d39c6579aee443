"""Train, judge and score any declared snapshot project: its family, its features, its gates.

The same steps as fraud's pipeline, read from the declaration instead of written for one model:
split the labelled snapshots by date (train, then validation, then test: a model is always judged on
snapshots later than any it learnt from), fit the declared family, export it to ONNX, pick the operating
threshold by the declared cost of a missed positive, and apply the declared gates on the test snapshots.

The baseline is the best single feature: on the training snapshots, each feature (and its negation) is
ranked by average precision, and the best one's rank is the baseline's score (for churn it is recency or
frequency, the rule a retention team would use without a model). A model that does not beat it on the test
snapshots has learnt nothing worth deploying, and the `gate_beats_baseline` gate stops it.

No dagster, no MLflow here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mlops_core.projects.snapshots import LABEL, SNAPSHOT_DATE, longest_window_days
from mlops_core.training import gates as g
from mlops_core.training import metrics
from mlops_core.training.candidates import TrainedModel
from mlops_core.training.onnx_export import OnnxScorer, max_probability_difference, to_onnx
from mlops_core.training.report import EvaluationReport, GateOutcome, ScoredModel

if TYPE_CHECKING:
    import pandas as pd

    from mlops_core.projects.declaration import ModelProject

GATE_BEATS_BASELINE = "gate_beats_baseline"
# The gates a snapshot project passes; the event-grain gates on latency, fairness and behaviour are fraud's.
PROJECT_GATES = (g.GATE_MINIMUMS, GATE_BEATS_BASELINE, g.GATE_NO_REGRESSION, g.GATE_ONNX_PARITY, g.GATE_CALIBRATION)
PROJECT_GATE_DESCRIPTIONS = {
    **{name: g.GATE_DESCRIPTIONS[name] for name in PROJECT_GATES if name in g.GATE_DESCRIPTIONS},
    GATE_BEATS_BASELINE: "AUC-PR beats the best single-feature rule's on the same test snapshots.",
}
MIN_LABELLED_DATES = 3


def min_history_days(project: ModelProject) -> int:
    """Days of landed history a snapshot project needs before it can train at all: its longest window full
    before the first snapshot, the wait for the calendar's next snapshot day (at most snapshot_days - 1), then
    MIN_LABELLED_DATES snapshots whose horizon has passed. (A model that also passes its gates usually
    needs more snapshots than that.)"""
    every = project.entity.snapshot_days or 1
    horizon = project.label.horizon_days or project.label.maturity_days or 0
    return longest_window_days(project.features.windowed) + MIN_LABELLED_DATES * every - 1 + horizon


def thresholds(project: ModelProject) -> g.GateThresholds:
    return g.GateThresholds(**project.gates.model_dump())


def assign_splits(frame: pd.DataFrame, validation_share: float = 0.2, test_share: float = 0.2) -> pd.DataFrame:
    """The labelled snapshots with a `split` column: the latest dates are test, the ones before validation,
    the rest train; every date is in exactly one split (a snapshot date never straddles two)."""
    labelled = frame[frame[LABEL].notna()].copy()
    dates = sorted(labelled[SNAPSHOT_DATE].unique())
    if len(dates) < MIN_LABELLED_DATES:
        raise ValueError(
            f"{len(dates)} snapshot dates have a known label; training needs at least {MIN_LABELLED_DATES} "
            "(train, validation and test each need one): land more history"
        )
    n_test = max(1, round(len(dates) * test_share))
    n_validation = max(1, round(len(dates) * validation_share))
    n_train = len(dates) - n_test - n_validation
    if n_train < 1:
        n_train, n_validation = 1, len(dates) - n_test - 1
    by_date = {d: "train" for d in dates[:n_train]}
    by_date.update({d: "validation" for d in dates[n_train : n_train + n_validation]})
    by_date.update({d: "test" for d in dates[n_train + n_validation :]})
    labelled["split"] = labelled[SNAPSHOT_DATE].map(by_date)
    labelled[LABEL] = labelled[LABEL].astype(bool)
    return labelled


def encode(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"the snapshot table is missing feature columns {missing}")
    return frame[features].to_numpy(dtype=np.float32, na_value=np.nan)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return frame[LABEL].astype(bool).to_numpy(dtype=np.int8)


def _part(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    part = frame[frame["split"] == name]
    if part.empty:
        raise ValueError(f"no snapshots in split {name!r}")
    return part


def _fit_native(project: ModelProject, X_train, y_train, X_val, y_val):
    from mlops_core.training import models

    model = project.model
    params = model.hyperparameters.model_dump()
    if model.family == "xgboost":
        native = models.train_xgboost(X_train, y_train, X_val, y_val, models.XGBoostParams(**params))
        return native, int(native.best_iteration), np.asarray(native.feature_importances_, dtype=float)
    if model.family == "hist_gradient_boosting":
        native = models.train_hist_gradient_boosting(
            X_train, y_train, X_val, y_val, models.HistGradientBoostingParams(**params)
        )
        # The estimator has no importances of its own: the drop in validation AUC-PR when a feature is shuffled.
        from sklearn.inspection import permutation_importance

        shuffled = permutation_importance(
            native, X_val, y_val, scoring="average_precision", n_repeats=3, random_state=0, n_jobs=1
        )
        return native, int(native.n_iter_), np.asarray(shuffled.importances_mean, dtype=float)
    native = models.train_logistic(X_train, y_train, models.LogisticParams(**params))
    return native, None, np.abs(np.asarray(native.steps[-1][1].coef_[0], dtype=float))


def fit_candidate(project: ModelProject, frame: pd.DataFrame, data_version: str) -> TrainedModel:
    """Fit the declared family on train, stop early and pick the threshold on validation, export to ONNX."""
    features = project.feature_names()
    train, validation, test = _part(frame, "train"), _part(frame, "validation"), _part(frame, "test")
    X_train, y_train = encode(train, features), labels(train)
    X_val, y_val = encode(validation, features), labels(validation)
    native, best, importance = _fit_native(project, X_train, y_train, X_val, y_val)
    onnx_bytes = to_onnx(native, len(features))
    scorer = OnnxScorer(onnx_bytes)
    p_val = scorer.predict(X_val)
    threshold = metrics.choose_threshold(y_val, p_val, false_negative_cost=project.model.false_negative_cost)
    return TrainedModel(
        kind=project.model.family,
        onnx=onnx_bytes,
        feature_columns=tuple(features),
        threshold=float(threshold),
        params=project.model.hyperparameters.model_dump(),
        validation_metrics=metrics.classification_metrics(y_val, p_val, threshold),
        onnx_max_difference=float(
            max_probability_difference(native, scorer, np.vstack([X_val, encode(test, features)]))
        ),
        feature_importance=dict(sorted(zip(features, map(float, importance)), key=lambda kv: -kv[1])),
        data_version=data_version,
        best_iteration=best,
    )


@dataclass(frozen=True)
class BaselineRule:
    """Score = the rank of one feature (negated when low values mean positive), chosen on train."""

    feature: str
    sign: float
    train_auc_pr: float

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        import pandas as pd

        values = pd.Series(self.sign * frame[self.feature].to_numpy(dtype=float, na_value=np.nan))
        # Ranks in [0, 1]: a probability-shaped score the metrics and plots take as they are.
        return values.rank(pct=True, method="average").fillna(0.0).to_numpy()


def baseline_rule(frame: pd.DataFrame, features: list[str]) -> BaselineRule:
    train = _part(frame, "train")
    y = labels(train)
    best: BaselineRule | None = None
    for feature in features:
        for sign in (1.0, -1.0):
            rule = BaselineRule(feature, sign, 0.0)
            auc_pr = metrics.classification_metrics(y, rule.score(train), 0.5)["auc_pr"]
            if best is None or auc_pr > best.train_auc_pr:
                best = BaselineRule(feature, sign, auc_pr)
    assert best is not None
    return best


@dataclass
class ProjectEvaluation:
    report: EvaluationReport
    outcomes: dict[str, GateOutcome] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes.values())


def beats_baseline(candidate: dict[str, float], baseline: dict[str, float], rule: BaselineRule) -> GateOutcome:
    margin = candidate["auc_pr"] - baseline["auc_pr"]
    return GateOutcome(
        GATE_BEATS_BASELINE,
        bool(margin > 0),
        f"AUC-PR {candidate['auc_pr']:.4f} vs {baseline['auc_pr']:.4f} for the rule "
        f"'{'low' if rule.sign < 0 else 'high'} {rule.feature}' on the same test snapshots: margin {margin:+.4f}",
    )


def evaluate(
    project: ModelProject,
    candidate: TrainedModel,
    frame: pd.DataFrame,
    champion: tuple[str, OnnxScorer, float] | None = None,
) -> ProjectEvaluation:
    """Score the candidate, the baseline rule and the champion on the same test snapshots; apply the gates."""
    features = list(candidate.feature_columns)
    test = _part(frame, "test")
    X, y = encode(test, features), labels(test)
    p = candidate.scorer().predict(X)
    test_metrics = metrics.classification_metrics(y, p, candidate.threshold)
    rule = baseline_rule(frame, features)
    validation = _part(frame, "validation")
    rule_threshold = metrics.choose_threshold(
        labels(validation), rule.score(validation), false_negative_cost=project.model.false_negative_cost
    )
    p_rule = rule.score(test)
    baseline_metrics = metrics.classification_metrics(y, p_rule, rule_threshold)
    others = [ScoredModel(f"baseline (rule: {rule.feature})", y, p_rule, rule_threshold, baseline_metrics)]
    champion_metrics = None
    if champion is not None:
        name, champion_scorer, champion_threshold = champion
        p_champion = champion_scorer.predict(X)
        champion_metrics = metrics.classification_metrics(y, p_champion, champion_threshold)
        others.insert(0, ScoredModel(name, y, p_champion, champion_threshold, champion_metrics))
    t = thresholds(project)
    outcomes = {
        o.name: o
        for o in (
            g.minimum_quality(test_metrics, t),
            beats_baseline(test_metrics, baseline_metrics, rule),
            g.no_regression(test_metrics, champion_metrics, t),
            g.onnx_parity(candidate.onnx_max_difference, t),
            g.calibration(test_metrics, t),
        )
    }
    test_dates = sorted(test[SNAPSHOT_DATE].unique())
    report = EvaluationReport(
        title=f"{project.name} model evaluation: candidate ({candidate.kind})",
        candidate=ScoredModel(f"candidate ({candidate.kind})", y, p, candidate.threshold, test_metrics),
        others=others,
        gates=list(outcomes.values()),
        facts={
            "project": project.name,
            "registered model": project.registered_model,
            "data_version": candidate.data_version,
            "label": f"{project.label.column} = {project.label.positive_class} within {project.label.horizon_days} days",
            "threshold rule": f"minimum expected cost on validation: a missed positive costs "
            f"{project.model.false_negative_cost:g} false alarms",
            "threshold": candidate.threshold,
            "test snapshots": f"{_day(test_dates[0])} .. {_day(test_dates[-1])} ({len(test_dates)} dates)",
            "test rows": len(test),
            "test positives": int(y.sum()),
            "baseline rule": f"{'low' if rule.sign < 0 else 'high'} {rule.feature}",
            "mlflow run": candidate.run_id or "-",
        },
    )
    return ProjectEvaluation(report, outcomes, test_metrics, baseline_metrics)


def _day(value: object) -> str:
    return str(value.date() if isinstance(value, dt.datetime) else value)[:10]


def score_latest(frame: pd.DataFrame, features: list[str], scorer: OnnxScorer, threshold: float) -> pd.DataFrame:
    """Scores of the latest snapshot date's population: key columns, score, decision."""
    latest = frame[frame[SNAPSHOT_DATE] == frame[SNAPSHOT_DATE].max()].copy()
    latest["score"] = scorer.predict(encode(latest, features)).astype(float)
    latest["decision"] = latest["score"] >= threshold
    return latest
