import numpy as np
import pytest

from mlops_core.training import matrix
from mlops_core.training.onnx_export import OnnxScorer, max_probability_difference, native_predict, to_onnx

PARITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=["xgboost_model", "logistic_model", "hist_gradient_boosting_model"])
def model_and_scorer(request):
    model = request.getfixturevalue(request.param)
    return model, OnnxScorer(to_onnx(model, len(matrix.FEATURE_COLUMNS)))


def test_onnx_matches_native_on_a_batch(model_and_scorer, splits):
    model, scorer = model_and_scorer
    X_test = splits["test"][0]
    assert scorer.predict(X_test).shape == (len(X_test),)
    assert max_probability_difference(model, scorer, X_test) <= PARITY_TOLERANCE


def test_onnx_matches_native_on_single_rows(model_and_scorer, splits):
    model, scorer = model_and_scorer
    X_test = splits["test"][0]
    for i in range(0, 50, 7):
        row = X_test[i : i + 1]
        assert scorer.predict(row).shape == (1,)
        assert max_probability_difference(model, scorer, row) <= PARITY_TOLERANCE
    np.testing.assert_allclose(scorer.predict(X_test[0]), native_predict(model, X_test[:1]), atol=PARITY_TOLERANCE)


def test_onnx_scores_are_probabilities_of_fraud(model_and_scorer, splits):
    _, scorer = model_and_scorer
    X_test, y_test = splits["test"]
    p = scorer.predict(X_test)
    assert p.dtype == np.float64 and np.all((p >= 0) & (p <= 1))
    assert p[y_test == 1].mean() > p[y_test == 0].mean()


def test_scorer_rejects_wrong_width(model_and_scorer):
    _, scorer = model_and_scorer
    with pytest.raises(ValueError, match="expected"):
        scorer.predict(np.zeros((1, 3), dtype=np.float32))


def test_to_onnx_rejects_other_models():
    with pytest.raises(TypeError):
        to_onnx(object(), 3)


@pytest.mark.parametrize("family", ["xgboost_model", "logistic_model", "hist_gradient_boosting_model"])
def test_the_same_model_exports_to_the_same_bytes(request, family):
    """The release file pins a version's ONNX sha256: an export must not differ by a random graph name."""
    import hashlib

    model = request.getfixturevalue(family)
    first, second = to_onnx(model, len(matrix.FEATURE_COLUMNS)), to_onnx(model, len(matrix.FEATURE_COLUMNS))
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()
