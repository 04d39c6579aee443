import numpy as np
import pytest
from synthetic_training_set import make_training_frame, split_matrices

from mlops_core.training import matrix, metrics, models
from mlops_core.training.onnx_export import native_predict


def test_xgboost_is_reproducible(splits, xgboost_model):
    (X_train, y_train), (X_val, y_val) = splits["train"], splits["validation"]
    again = models.train_xgboost(X_train, y_train, X_val, y_val, models.XGBoostParams())
    X_test = splits["test"][0]
    np.testing.assert_array_equal(native_predict(again, X_test), native_predict(xgboost_model, X_test))
    assert again.best_iteration == xgboost_model.best_iteration


def test_logistic_is_reproducible(splits, logistic_model):
    X_train, y_train = splits["train"]
    again = models.train_logistic(X_train, y_train, models.LogisticParams())
    X_test = splits["test"][0]
    np.testing.assert_array_equal(native_predict(again, X_test), native_predict(logistic_model, X_test))


def test_hist_gradient_boosting_is_reproducible(splits, hist_gradient_boosting_model):
    (X_train, y_train), (X_val, y_val) = splits["train"], splits["validation"]
    again = models.train_hist_gradient_boosting(X_train, y_train, X_val, y_val)
    X_test = splits["test"][0]
    np.testing.assert_array_equal(native_predict(again, X_test), native_predict(hist_gradient_boosting_model, X_test))
    assert again.n_iter_ == hist_gradient_boosting_model.n_iter_


def test_hist_gradient_boosting_stops_early_on_the_given_validation_split(splits):
    """Early stopping must judge the later days it is given, not a random share of the training rows: with the
    validation labels shuffled, only the base rate holds there, so it stops far sooner (with a random inner
    split instead, the two fits would be the same)."""
    (X_train, y_train), (X_val, y_val) = splits["train"], splits["validation"]
    noisy_val = np.random.default_rng(5).permutation(y_val)
    params = models.HistGradientBoostingParams(max_iter=300, n_iter_no_change=10)
    stopped = models.train_hist_gradient_boosting(X_train, y_train, X_val, noisy_val, params)
    learned = models.train_hist_gradient_boosting(X_train, y_train, X_val, y_val, params)
    assert stopped.n_iter_ < learned.n_iter_
    assert learned.n_iter_ - stopped.n_iter_ > params.n_iter_no_change, (stopped.n_iter_, learned.n_iter_)


def test_early_stopping_stops_on_noise_labels():
    split = split_matrices(make_training_frame(seed=3, shuffle_labels=True))
    (X_train, y_train), (X_val, y_val) = split["train"], split["validation"]
    params = models.XGBoostParams(n_estimators=400, early_stopping_rounds=10)
    model = models.train_xgboost(X_train, y_train, X_val, y_val, params)
    assert model.best_iteration < params.n_estimators - 1
    assert model.get_booster().num_boosted_rounds() <= model.best_iteration + 1 + params.early_stopping_rounds


def test_default_scale_pos_weight_balances_the_training_split(xgboost_model, splits):
    y_train = splits["train"][1]
    expected = (len(y_train) - y_train.sum()) / y_train.sum()
    assert xgboost_model.get_params()["scale_pos_weight"] == pytest.approx(expected)


@pytest.fixture(scope="module")
def fresh_holdout():
    """A larger sample from the same process, so AUC differences are not down to a handful of frauds."""
    frame = make_training_frame(n_rows=8000, seed=101)
    return matrix.encode(frame), matrix.labels(frame)


@pytest.mark.parametrize("model_fixture", ["xgboost_model", "logistic_model", "hist_gradient_boosting_model"])
def test_real_model_ranks_far_better_than_one_trained_on_shuffled_labels(request, fresh_holdout, model_fixture):
    X_holdout, y_holdout = fresh_holdout
    real = request.getfixturevalue(model_fixture)
    shuffled = split_matrices(make_training_frame(seed=11, shuffle_labels=True))
    (X_train, y_train), (X_val, y_val) = shuffled["train"], shuffled["validation"]
    if model_fixture == "xgboost_model":
        noise_model = models.train_xgboost(X_train, y_train, X_val, y_val)
    elif model_fixture == "hist_gradient_boosting_model":
        noise_model = models.train_hist_gradient_boosting(X_train, y_train, X_val, y_val)
    else:
        noise_model = models.train_logistic(X_train, y_train)
    real_auc = metrics.classification_metrics(y_holdout, native_predict(real, X_holdout), 0.5)["auc_roc"]
    noise_auc = metrics.classification_metrics(y_holdout, native_predict(noise_model, X_holdout), 0.5)["auc_roc"]
    assert real_auc > 0.8
    assert abs(noise_auc - 0.5) < 0.15
    assert real_auc - noise_auc > 0.2


def test_training_needs_both_classes(splits):
    X_train, y_train = splits["train"]
    with pytest.raises(ValueError, match="both"):
        models.train_logistic(X_train, np.zeros_like(y_train))
