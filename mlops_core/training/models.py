"""The model families: gradient-boosted trees (XGBoost, or scikit-learn's HistGradientBoosting) and a
logistic-regression baseline.

All are seeded and single-threaded so the same data and parameters give the same model
bit for bit; the baseline exists so a tree model that is not clearly better is noticed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # loaded when a model is trained: the code location imports this module and trains nothing
    import xgboost
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline


@dataclass(frozen=True)
class XGBoostParams:
    """Hyper-parameters of the boosted-tree model; `n_estimators` is an upper bound that
    early stopping on the validation split usually cuts short."""

    n_estimators: int = 400
    learning_rate: float = 0.1
    max_depth: int = 4
    min_child_weight: float = 1.0
    subsample: float = 0.9
    colsample_bytree: float = 0.9
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 30
    # None: negatives / positives of the training split, so ~1% fraud still weighs in.
    scale_pos_weight: float | None = None
    seed: int = 7
    # More threads change the floating-point summation order, and with it the model.
    n_jobs: int = 1

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class LogisticParams:
    """Hyper-parameters of the logistic-regression baseline."""

    C: float = 1.0
    class_weight: str | None = "balanced"
    max_iter: int = 1000

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class HistGradientBoostingParams:
    """Hyper-parameters of scikit-learn's histogram gradient boosting; like XGBoostParams, `max_iter` is an
    upper bound that early stopping on the validation split (the later days, not a random share) cuts short."""

    max_iter: int = 300
    learning_rate: float = 0.1
    max_depth: int | None = None
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    # "balanced": both classes weigh the same, so ~1% positives still weigh in (as scale_pos_weight does).
    class_weight: str | None = "balanced"
    n_iter_no_change: int = 30
    random_state: int = 7

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_training_data(X: np.ndarray, y: np.ndarray, split: str) -> None:
    if len(X) != len(y):
        raise ValueError(f"{split}: {len(X)} feature rows but {len(y)} labels")
    check_both_classes(len(y), int(np.sum(y)), split)


def check_both_classes(rows: int, positives: int, split: str) -> None:
    if positives == 0 or positives == rows:
        raise ValueError(f"{split}: needs both fraud and non-fraud rows, got only {[1] if positives else [0]}")


def balancing_weight(y_train: np.ndarray) -> float:
    """Negatives over positives: the `scale_pos_weight` that makes both classes weigh the same."""
    return balancing_weight_of(len(y_train), int(np.sum(y_train)))


def balancing_weight_of(rows: int, positives: int) -> float:
    """`balancing_weight` from the counts alone (training in batches never holds every label at once)."""
    return (rows - positives) / positives


def positive_weight(params: XGBoostParams, rows: int, positives: int) -> float:
    """The `scale_pos_weight` a fit uses: the configured one, else the balancing weight of its rows."""
    return params.scale_pos_weight if params.scale_pos_weight is not None else balancing_weight_of(rows, positives)


def train_xgboost(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    params: XGBoostParams = XGBoostParams(),
) -> xgboost.XGBClassifier:
    """Fit boosted trees, stopping when validation average precision stops improving.

    The validation split lies after the training split in time, so stopping on it picks the
    number of trees that generalises forward. The returned model's `best_iteration` is the
    last tree kept; `predict_proba` and the ONNX export both use trees up to it.
    """
    check_training_data(X_train, y_train, "train")
    check_training_data(X_val, y_val, "validation")
    model = _xgboost_classifier(
        params, y_train, early_stopping_rounds=params.early_stopping_rounds, eval_metric="aucpr"
    )
    model.fit(X_train, y_train, eval_set=[(X_val, y_val)], verbose=False)
    return model


def train_xgboost_fixed(X: np.ndarray, y: np.ndarray, params: XGBoostParams) -> xgboost.XGBClassifier:
    """Fit exactly `params.n_estimators` trees, no early stopping: the refit on every labelled row, whose tree
    count an early-stopped fit already chose (there is no later split left to stop on)."""
    check_training_data(X, y, "refit")
    return _xgboost_classifier(params, y).fit(X, y, verbose=False)


def _xgboost_classifier(params: XGBoostParams, y_train: np.ndarray, **extra) -> xgboost.XGBClassifier:
    return xgboost_classifier(params, positive_weight(params, len(y_train), int(np.sum(y_train))), **extra)


def xgboost_classifier(params: XGBoostParams, scale_pos_weight: float, **extra) -> xgboost.XGBClassifier:
    """The classifier every fit builds, in memory or in batches: the same parameters, seed and threads;
    `extra` adds early stopping."""
    import xgboost

    return xgboost.XGBClassifier(
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        max_depth=params.max_depth,
        min_child_weight=params.min_child_weight,
        subsample=params.subsample,
        colsample_bytree=params.colsample_bytree,
        reg_lambda=params.reg_lambda,
        scale_pos_weight=scale_pos_weight,
        objective="binary:logistic",
        tree_method="hist",
        random_state=params.seed,
        n_jobs=params.n_jobs,
        **extra,
    )


def train_logistic(X_train: np.ndarray, y_train: np.ndarray, params: LogisticParams = LogisticParams()) -> Pipeline:
    """Fit standardised logistic regression; scaling keeps amounts and one-hot flags comparable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    check_training_data(X_train, y_train, "train")
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(C=params.C, class_weight=params.class_weight, max_iter=params.max_iter)),
        ]
    )
    return model.fit(X_train, y_train)


def train_hist_gradient_boosting(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    params: HistGradientBoostingParams = HistGradientBoostingParams(),
) -> HistGradientBoostingClassifier:
    """Fit histogram gradient boosting, stopping when the loss on the validation split stops improving.

    The validation split is given, not drawn: a random share of the training rows would let early stopping
    look at days the model trains on, where the later split tells how it generalises forward in time.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    check_training_data(X_train, y_train, "train")
    check_training_data(X_val, y_val, "validation")
    model = HistGradientBoostingClassifier(
        max_iter=params.max_iter,
        learning_rate=params.learning_rate,
        max_depth=params.max_depth,
        max_leaf_nodes=params.max_leaf_nodes,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        class_weight=params.class_weight,
        early_stopping=True,
        n_iter_no_change=params.n_iter_no_change,
        scoring="loss",
        random_state=params.random_state,
    )
    return model.fit(X_train, y_train, X_val=X_val, y_val=y_val)
