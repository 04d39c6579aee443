"""Session fixtures: one synthetic training set and the models of each family trained on it."""

import numpy as np
import pandas as pd
import pytest
from synthetic_training_set import make_training_frame, split_matrices

from mlops_core.training import models


@pytest.fixture(scope="session")
def training_frame() -> pd.DataFrame:
    return make_training_frame()


@pytest.fixture(scope="session")
def splits(training_frame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return split_matrices(training_frame)


@pytest.fixture(scope="session")
def xgboost_model(splits):
    (X_train, y_train), (X_val, y_val) = splits["train"], splits["validation"]
    return models.train_xgboost(X_train, y_train, X_val, y_val, models.XGBoostParams())


@pytest.fixture(scope="session")
def logistic_model(splits):
    X_train, y_train = splits["train"]
    return models.train_logistic(X_train, y_train, models.LogisticParams())


@pytest.fixture(scope="session")
def hist_gradient_boosting_model(splits):
    (X_train, y_train), (X_val, y_val) = splits["train"], splits["validation"]
    return models.train_hist_gradient_boosting(X_train, y_train, X_val, y_val, models.HistGradientBoostingParams())
