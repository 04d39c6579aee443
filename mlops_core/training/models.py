"""The two candidate fraud models: gradient-boosted trees and a logistic-regression baseline.

Both are seeded and single-threaded so the same data and parameters give the same model
bit for bit; the baseline exists so a tree model that is not clearly better is noticed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # loaded when a model is trained: the code location imports this module and trains nothing
    import xgboost
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


def _check_training_data(X: np.ndarray, y: np.ndarray, split: str) -> None:
    if len(X) != len(y):
        raise ValueError(f"{split}: {len(X)} feature rows but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise ValueError(f"{split}: needs both fraud and non-fraud rows, got only {np.unique(y).tolist()}")


def balancing_weight(y_train: np.ndarray) -> float:
    """Negatives over positives: the `scale_pos_weight` that makes both classes weigh the same."""
    positives = int(np.sum(y_train))
    return (len(y_train) - positives) / positives


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
    import xgboost

    _check_training_data(X_train, y_train, "train")
    _check_training_data(X_val, y_val, "validation")
    model = xgboost.XGBClassifier(
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        max_depth=params.max_depth,
        min_child_weight=params.min_child_weight,
        subsample=params.subsample,
        colsample_bytree=params.colsample_bytree,
        reg_lambda=params.reg_lambda,
        scale_pos_weight=params.scale_pos_weight if params.scale_pos_weight is not None else balancing_weight(y_train),
        early_stopping_rounds=params.early_stopping_rounds,
        eval_metric="aucpr",
        objective="binary:logistic",
        tree_method="hist",
        random_state=params.seed,
        n_jobs=params.n_jobs,
    )
    model.fit(X_train, y_train, eval_set=[(X_val, y_val)], verbose=False)
    return model


def train_logistic(X_train: np.ndarray, y_train: np.ndarray, params: LogisticParams = LogisticParams()) -> Pipeline:
    """Fit standardised logistic regression; scaling keeps amounts and one-hot flags comparable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    _check_training_data(X_train, y_train, "train")
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(C=params.C, class_weight=params.class_weight, max_iter=params.max_iter)),
        ]
    )
    return model.fit(X_train, y_train)
