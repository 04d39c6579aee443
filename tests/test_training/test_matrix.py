import numpy as np
import pandas as pd
import pytest

from mlops_core.features import spec
from mlops_core.training import matrix


def test_feature_columns_are_numeric_in_spec_order_then_one_hot_in_category_order():
    numeric = spec.numeric_features()
    expected_one_hot = [f"{name}={c}" for name, cats in spec.categorical_features().items() for c in cats]
    assert list(matrix.FEATURE_COLUMNS) == numeric + expected_one_hot
    assert len(set(matrix.FEATURE_COLUMNS)) == len(matrix.FEATURE_COLUMNS)
    assert [matrix.FEATURE_COLUMNS[i] for i in matrix.NUMERIC_COLUMN_INDEXES] == numeric


def test_encode_copies_numeric_values_and_sets_exactly_one_flag_per_categorical(training_frame):
    frame = training_frame.head(200)
    X = matrix.encode(frame)
    assert X.dtype == np.float32 and X.shape == (200, len(matrix.FEATURE_COLUMNS))
    for i, name in enumerate(spec.numeric_features()):
        np.testing.assert_array_equal(X[:, i], frame[name].to_numpy(dtype=np.float32))
    for name, categories in spec.categorical_features().items():
        block = X[:, [matrix.FEATURE_COLUMNS.index(f"{name}={c}") for c in categories]]
        np.testing.assert_array_equal(block.sum(axis=1), 1.0)
        np.testing.assert_array_equal(np.array(categories)[block.argmax(axis=1)], frame[name].to_numpy())


def test_unknown_and_missing_categories_map_to_the_unknown_column(training_frame):
    frame = training_frame.head(3).copy()
    frame["merchant_category"] = ["no_such_category", None, "travel"]
    X = matrix.encode(frame)
    unknown = matrix.FEATURE_COLUMNS.index("merchant_category=unknown")
    travel = matrix.FEATURE_COLUMNS.index("merchant_category=travel")
    assert X[:, unknown].tolist() == [1.0, 1.0, 0.0]
    assert X[:, travel].tolist() == [0.0, 0.0, 1.0]


def test_encode_accepts_pandas_category_dtype(training_frame):
    frame = training_frame.head(50)
    as_category = frame.assign(age_band=frame["age_band"].astype("category"))
    np.testing.assert_array_equal(matrix.encode(as_category), matrix.encode(frame))


def test_encode_rows_equals_encode(training_frame):
    frame = training_frame.head(100).copy()
    frame.loc[frame.index[0], "age_band"] = "centenarian"
    frame.loc[frame.index[1], "amount_usd"] = np.nan
    rows = frame.to_dict(orient="records")
    np.testing.assert_array_equal(matrix.encode_rows(rows), matrix.encode(frame))
    np.testing.assert_array_equal(matrix.encode_rows(rows[:1]), matrix.encode(frame.head(1)))


def test_missing_columns_are_named():
    frame = pd.DataFrame({"amount_usd": [1.0]})
    with pytest.raises(ValueError, match="merchant_category"):
        matrix.encode(frame)
    with pytest.raises(ValueError, match="age_band"):
        matrix.encode_rows([{"amount_usd": 1.0}])
    with pytest.raises(ValueError, match="is_fraud"):
        matrix.labels(frame)


def test_labels_are_integers_and_reject_missing():
    frame = pd.DataFrame({"is_fraud": [True, False, True]})
    labels = matrix.labels(frame)
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="label"):
        matrix.labels(pd.DataFrame({"is_fraud": [True, None]}))
