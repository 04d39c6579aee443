"""Turn feature-store rows into the float32 matrix every model is trained and served on.

The column layout is fixed by the feature spec alone, so a model, its ONNX export and the
serving path agree on it without storing anything: the numeric features in spec order, then
one column `<feature>=<category>` per category of each categorical feature, in spec order.
A category value the spec does not list (including a missing one) is encoded as the
feature's "unknown" category, which every categorical feature declares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mlops_core.features import spec

LABEL_COLUMN = "is_fraud"
UNKNOWN_CATEGORY = "unknown"

NUMERIC_FEATURES: tuple[str, ...] = tuple(spec.numeric_features())
CATEGORICAL_FEATURES: dict[str, tuple[str, ...]] = spec.categorical_features()
INPUT_FEATURES: tuple[str, ...] = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)

FEATURE_COLUMNS: tuple[str, ...] = (
    *NUMERIC_FEATURES,
    *(f"{name}={category}" for name, categories in CATEGORICAL_FEATURES.items() for category in categories),
)
# The numeric columns come first, so their indexes are 0..n-1; the robustness metrics
# perturb only these and leave the one-hot columns valid.
NUMERIC_COLUMN_INDEXES: tuple[int, ...] = tuple(range(len(NUMERIC_FEATURES)))


def _one_hot_layout() -> dict[str, tuple[int, dict[str, int], int]]:
    """Per categorical feature: first column, category -> column offset, unknown offset."""
    layout = {}
    start = len(NUMERIC_FEATURES)
    for name, categories in CATEGORICAL_FEATURES.items():
        if UNKNOWN_CATEGORY not in categories:
            raise ValueError(f"categorical feature {name!r} has no {UNKNOWN_CATEGORY!r} category")
        offsets = {category: i for i, category in enumerate(categories)}
        layout[name] = (start, offsets, offsets[UNKNOWN_CATEGORY])
        start += len(categories)
    return layout


_ONE_HOT = _one_hot_layout()


def _require(columns: object, what: str) -> None:
    missing = [name for name in INPUT_FEATURES if name not in columns]
    if missing:
        raise ValueError(f"{what} is missing feature columns: {missing}")


def encode(frame: pd.DataFrame) -> np.ndarray:
    """The model matrix (rows x len(FEATURE_COLUMNS), float32) of a feature-store frame.

    Columns other than the features are ignored; missing numeric values stay NaN, which
    xgboost treats as missing.
    """
    _require(frame.columns, "frame")
    matrix = np.zeros((len(frame), len(FEATURE_COLUMNS)), dtype=np.float32)
    for i, name in enumerate(NUMERIC_FEATURES):
        matrix[:, i] = pd.to_numeric(frame[name]).to_numpy(dtype=np.float64, na_value=np.nan)
    rows = np.arange(len(frame))
    for name, (start, offsets, unknown) in _ONE_HOT.items():
        codes = pd.Categorical(frame[name].astype(object), categories=list(offsets)).codes
        # Categorical gives -1 for a value outside the categories (and for a missing one).
        codes = np.where(codes < 0, unknown, codes)
        matrix[rows, start + codes] = 1.0
    return matrix


def _as_float(value: object) -> float:
    return math.nan if value is None else float(value)


def encode_rows(rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """Same as `encode(pandas.DataFrame(rows))` without pandas: the serving path for one row."""
    matrix = np.zeros((len(rows), len(FEATURE_COLUMNS)), dtype=np.float32)
    for r, row in enumerate(rows):
        _require(row, f"row {r}")
        matrix[r, : len(NUMERIC_FEATURES)] = [_as_float(row[name]) for name in NUMERIC_FEATURES]
        for name, (start, offsets, unknown) in _ONE_HOT.items():
            value = row[name]
            matrix[r, start + (offsets.get(value, unknown) if isinstance(value, str) else unknown)] = 1.0
    return matrix


def labels(frame: pd.DataFrame) -> np.ndarray:
    """The 0/1 fraud label of each row (int64); a missing label is an error, not a negative."""
    if LABEL_COLUMN not in frame.columns:
        raise ValueError(f"frame is missing the label column: [{LABEL_COLUMN!r}]")
    label = frame[LABEL_COLUMN]
    if label.isna().any():
        raise ValueError(f"{int(label.isna().sum())} rows have no {LABEL_COLUMN!r} label")
    return label.astype(bool).to_numpy(dtype=np.int64)
