"""Fit a candidate on the point-in-time training set and evaluate it on the frozen test split.

Glue between the matrix, models, ONNX export, metrics, gates and report modules; no
dagster, no MLflow. What leaves `fit` is a TrainedModel holding the ONNX bytes, never a
pickled estimator: evaluation and serving both score the exported graph.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops_core.splits import ALL_SPLITS, EARLY_SPLIT, SPLITS
from mlops_core.training import gates as g
from mlops_core.training import in_batches, matrix, metrics
from mlops_core.training.models import (
    LogisticParams,
    XGBoostParams,
    train_logistic,
    train_xgboost,
    train_xgboost_fixed,
)
from mlops_core.training.onnx_export import OnnxScorer, max_probability_difference, to_onnx
from mlops_core.training.report import EvaluationReport, ScoredModel

SEGMENT_COLUMNS = ("channel", "merchant_category", "country", "age_band")
# The rows a candidate learns from before its evaluation: the train split and the frauds confirmed inside the
# maturity window (EARLY_SPLIT), newer than the test split but never in it.
LEARNING_SPLITS = ("train", EARLY_SPLIT)
# From this many validation and test rows (about 670k training rows at the default 15%/15% shares) the first fit's
# leftovers are worth a full garbage collection before the refit: at 8.77M rows they are the refit's peak
# (hundreds of MB). Below it they are a few MB, and a full collection costs 0.2-0.3 s of CPU in a process that
# holds Dagster and MLflow (it walks every object they allocated): more than the whole fit of a small set.
COLLECT_BEFORE_REFIT_ROWS = 200_000


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
    # With a refit, `onnx` learnt from every split and this is the early-stopped model that learnt from
    # `train` only: the one whose test metrics are honest. None: `onnx` is that model.
    evaluated_onnx: bytes | None = None
    # The newest event_timestamp (ISO) of the mature rows the registered model learnt from: a champion is
    # compared with a challenger only on test rows after it.
    trained_through: str | None = None
    # The newest labeled_at (ISO) of the early frauds it learnt from (None: none). It also learnt every fraud
    # after `trained_through` confirmed by then, so those rows are left out of that comparison too.
    early_frauds_through: str | None = None

    def scorer(self) -> OnnxScorer:
        """The model that is registered and served."""
        return OnnxScorer(self.onnx)

    def evaluated_scorer(self) -> OnnxScorer:
        """The model the test split judges: it never saw those rows."""
        return OnnxScorer(self.evaluated_onnx or self.onnx)

    @property
    def refit(self) -> bool:
        return self.evaluated_onnx is not None


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
    refit: bool = False,
) -> TrainedModel:
    """Train on `train`, stop early and pick the threshold on `validation`; export to ONNX.

    With `refit`, that early-stopped model is kept for the test metrics, and the model that is registered is
    fitted again, with the same parameters and the number of trees early stopping chose, on every row:
    train, validation and test. The newest labelled days then reach the served model at once instead of
    weeks later (docs/monitoring.md, "Training on the newest labels")."""
    split(frame, "train")  # raises, naming it, when the train split is empty
    train, validation = frame[frame["split"].isin(LEARNING_SPLITS)], split(frame, "validation")
    X_train, y_train = matrix.encode(train), matrix.labels(train)
    X_val, y_val = matrix.encode(validation), matrix.labels(validation)
    if kind == "xgboost":
        model = train_xgboost(X_train, y_train, X_val, y_val, xgboost_params)
        params = xgboost_params.as_dict()
    elif kind == "logistic":
        model = train_logistic(X_train, y_train, logistic_params)
        params = logistic_params.as_dict()
    else:
        raise ValueError(f"unknown model kind {kind!r}: expected 'xgboost' or 'logistic'")
    del X_train, y_train
    mature = frame[frame["split"].isin(SPLITS if refit else ("train",))]
    early = frame[frame["split"] == EARLY_SPLIT]
    return _package(
        model,
        kind,
        params,
        data_version,
        X_val,
        y_val,
        matrix.encode(split(frame, "test")),
        false_negative_cost,
        refit_with=(lambda early_stopped: refit_on(frame, kind, early_stopped, xgboost_params, logistic_params))
        if refit
        else None,
        trained_through=str(pd.Timestamp(mature["event_timestamp"].max()).isoformat())
        if "event_timestamp" in mature
        else None,
        early_frauds_through=str(pd.Timestamp(early["labeled_at"].max()).isoformat())
        if len(early) and "labeled_at" in early
        else None,
    )


def fit_from_warehouse(
    con,
    table: str,
    data_version: str,
    xgboost_params: XGBoostParams = XGBoostParams(),
    false_negative_cost: float = 20.0,
    refit: bool = False,
    batch_rows: int = in_batches.BATCH_ROWS,
    dask: DaskEngine | None = None,
) -> tuple[TrainedModel, pd.DataFrame]:
    """`fit` of the XGBoost candidate with its training rows read from the warehouse table in batches
    (`in_batches`): the training split (and, with `refit`, every split) is never one pandas frame. Only the
    validation and test splits are read whole, for early stopping, the threshold and the ONNX parity.
    With `dask`, the batches train on a Dask cluster (`distributed`) instead of in this process.
    Returns the model and the validation rows (the MLflow input example comes from them)."""
    validation = in_batches.read_splits(con, table, ["validation"], in_batches.MODEL_COLUMNS)
    if validation.empty:
        raise ValueError("the training set has no rows in split 'validation'")
    X_val, y_val = matrix.encode(validation), matrix.labels(validation)
    X_test = matrix.encode(in_batches.read_splits(con, table, ["test"], in_batches.MODEL_COLUMNS))
    if len(X_test) == 0:
        raise ValueError("the training set has no rows in split 'test'")
    with contextlib.ExitStack() as stack:
        if dask is None:

            def train(X_v, y_v, params, splits):
                return in_batches.train_xgboost_in_batches(con, table, X_v, y_v, params, splits, batch_rows)

        else:
            from mlops_core.training import distributed

            client = stack.enter_context(distributed.dask_client(dask.workers, dask.scheduler))

            def train(X_v, y_v, params, splits):
                return distributed.train_xgboost_dask(
                    client, con, table, X_v, y_v, params, splits, batch_rows, dask.staging_dir
                )

        # Named as they are: a training set without early frauds learns from (and is checked as) 'train'.
        learning = LEARNING_SPLITS if in_batches.split_counts(con, table, [EARLY_SPLIT])[0] else ("train",)
        model = train(X_val, y_val, xgboost_params, learning)
        mature = SPLITS if refit else ("train",)

        def refit_in_batches(early_stopped):
            trees = int(early_stopped.best_iteration) + 1
            return train(None, None, dataclasses.replace(xgboost_params, n_estimators=trees), ALL_SPLITS)

        trained = _package(
            model,
            "xgboost",
            {**xgboost_params.as_dict(), **({"dask_workers": dask.workers} if dask else {})},
            data_version,
            X_val,
            y_val,
            X_test,
            false_negative_cost,
            refit_with=refit_in_batches if refit else None,
            trained_through=in_batches.newest_event(con, table, mature),
            early_frauds_through=in_batches.newest_label(con, table, (EARLY_SPLIT,)),
        )
    return trained, validation


@dataclass(frozen=True)
class DaskEngine:
    """Where `fit_from_warehouse` trains with Dask: a LocalCluster of `workers`, or the cluster at `scheduler`;
    the staged batches go under `staging_dir` (a folder every worker reads)."""

    workers: int = 2
    scheduler: str | None = None
    staging_dir: str | None = None


def _package(
    model,
    kind: str,
    params: dict[str, object],
    data_version: str,
    X_val: np.ndarray,
    y_val: np.ndarray,
    X_test: np.ndarray,
    false_negative_cost: float,
    refit_with,
    trained_through: str | None,
    early_frauds_through: str | None = None,
) -> TrainedModel:
    """What every fit ends with: the ONNX export, the threshold on validation, the refit (when `refit_with`
    is given: early-stopped model -> the model to register) and the parity of the registered model."""
    best = int(model.best_iteration) if kind == "xgboost" else None
    onnx_bytes = to_onnx(model, len(matrix.FEATURE_COLUMNS))
    scorer = OnnxScorer(onnx_bytes)
    p_val = scorer.predict(X_val)
    threshold = metrics.choose_threshold(y_val, p_val, false_negative_cost=false_negative_cost)
    evaluated_onnx = None
    if refit_with is not None:
        evaluated_onnx = onnx_bytes
        # Whatever of the first fit is left in reference cycles (its batch iterator, its matrices) goes before the
        # refit builds a matrix of every row: the refit is the peak of a batched fit.
        if len(X_val) + len(X_test) >= COLLECT_BEFORE_REFIT_ROWS:
            gc.collect()
        model = refit_with(model)
        onnx_bytes = to_onnx(model, len(matrix.FEATURE_COLUMNS))
        scorer = OnnxScorer(onnx_bytes)
    return TrainedModel(
        kind=kind,
        onnx=onnx_bytes,
        evaluated_onnx=evaluated_onnx,
        trained_through=trained_through,
        early_frauds_through=early_frauds_through,
        feature_columns=tuple(matrix.FEATURE_COLUMNS),
        threshold=float(threshold),
        params=params,
        validation_metrics=metrics.classification_metrics(y_val, p_val, threshold),
        # Split by split: stacking them first copies both (half a GB at 8.77M training rows).
        onnx_max_difference=max(max_probability_difference(model, scorer, X) for X in (X_val, X_test)),
        feature_importance=_importance(model, kind),
        data_version=data_version,
        best_iteration=best,
    )


def refit_on(
    frame: pd.DataFrame,
    kind: str,
    early_stopped,
    xgboost_params: XGBoostParams = XGBoostParams(),
    logistic_params: LogisticParams = LogisticParams(),
):
    """The same family and parameters fitted on every row of `frame`, with the trees early stopping kept."""
    X, y = matrix.encode(frame), matrix.labels(frame)
    if kind == "xgboost":
        trees = int(early_stopped.best_iteration) + 1
        return train_xgboost_fixed(X, y, dataclasses.replace(xgboost_params, n_estimators=trees))
    return train_logistic(X, y, logistic_params)


def _comparable(bound: pd.Timestamp, times: pd.Series) -> pd.Timestamp:
    if bound.tzinfo is not None and times.dt.tz is None:
        return bound.tz_convert("UTC").tz_localize(None)
    if bound.tzinfo is None and times.dt.tz is not None:
        return bound.tz_localize("UTC")
    return bound


def unseen_by(test: pd.DataFrame, trained_through: str | None, early_frauds_through: str | None = None) -> np.ndarray:
    """Which test rows a model never learnt from: those after `trained_through` (all of them when it is
    unknown), less the frauds after it confirmed by `early_frauds_through` (its early frauds: it learnt every
    fraud of its maturity window known at its cutoff, and the newest of their verdicts is that instant)."""
    if trained_through is None or "event_timestamp" not in test:
        return np.ones(len(test), dtype=bool)
    times = pd.to_datetime(test["event_timestamp"])
    unseen = times > _comparable(pd.Timestamp(trained_through), times)
    if early_frauds_through is not None and "labeled_at" in test:
        labeled = pd.to_datetime(test["labeled_at"])
        learnt = test["is_fraud"].astype(bool) & (labeled <= _comparable(pd.Timestamp(early_frauds_through), labeled))
        unseen &= ~learnt
    return unseen.to_numpy()


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
    champion_trained_through: str | None = None,
    champion_recorded: dict[str, float] | None = None,
    champion_early_frauds_through: str | None = None,
) -> Evaluation:
    """Score the candidate, the baseline and the champion on the same frozen test rows; apply the gates.

    The test metrics are the evaluated model's (with a refit, the one that never saw the test rows); latency,
    robustness, behaviour and ONNX parity are judged on the model that will be registered. The champion is
    compared only on test rows after `champion_trained_through`, the newest event it learnt from, so
    neither side is judged on rows it trained on. When none is left (a retraining on the champion's own data,
    to try other parameters), the candidate is compared with `champion_recorded`, the champion's test
    metrics from its own evaluation, when they are given."""
    X, y = matrix.encode(test), matrix.labels(test)
    scorer = candidate.scorer()
    p = candidate.evaluated_scorer().predict(X)
    test_metrics = metrics.classification_metrics(y, p, candidate.threshold)
    scored = ScoredModel(f"candidate ({candidate.kind})", y, p, candidate.threshold, test_metrics)
    others: list[ScoredModel] = []
    champion_metrics = candidate_on_window = None
    if champion is not None:
        name, champion_scorer, champion_threshold = champion
        unseen = unseen_by(test, champion_trained_through, champion_early_frauds_through)
        if unseen.all():
            window_y, window_X, window_p = y, X, p
        else:
            window_y, window_X, window_p = y[unseen], X[unseen], p[unseen]
            name = f"{name}, on the {int(unseen.sum())} test rows after its training data"
        if window_y.any() and not window_y.all():
            p_champion = champion_scorer.predict(window_X)
            champion_metrics = metrics.classification_metrics(window_y, p_champion, champion_threshold)
            candidate_on_window = metrics.classification_metrics(window_y, window_p, candidate.threshold)
            others.append(ScoredModel(name, window_y, p_champion, champion_threshold, champion_metrics))
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
            g.minimum_quality(test_metrics, thresholds, champion_metrics, candidate_on_window),
            g.no_regression(candidate_on_window or test_metrics, champion_metrics, thresholds)
            if champion is None or champion_metrics is not None
            else g.no_regression(test_metrics, champion_recorded, thresholds)
            if champion_recorded
            else g.GateOutcome(
                g.GATE_NO_REGRESSION,
                False,
                f"No test rows after the champion's training data ({champion_trained_through}) hold both classes: "
                "the candidate cannot be compared on rows neither learnt from. More days must land first.",
            ),
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
