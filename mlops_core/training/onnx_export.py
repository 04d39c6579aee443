"""Export trained models to ONNX and score them with onnxruntime.

Serving loads only ONNX bytes: a model file is never unpickled, so a registry artifact
cannot run code. Parity helpers compare the export with the native model it came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

# Loaded where used: xgboost and scikit-learn only to export, onnxruntime only to score (the code
# location and serving import this module; the code location scores nothing).
if TYPE_CHECKING:
    import onnxruntime
    import xgboost
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    NativeModel = xgboost.XGBClassifier | Pipeline | HistGradientBoostingClassifier

INPUT_NAME = "features"


def to_onnx(model: NativeModel, n_features: int) -> bytes:
    """Serialize a trained model as an ONNX graph taking float32 [batch, n_features]."""
    import xgboost
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(model, xgboost.XGBClassifier):
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        proto = convert_xgboost(model, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))])
    elif isinstance(model, Pipeline):
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        # zipmap=False: probabilities as a plain [batch, 2] tensor rather than a list of dicts.
        proto = convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={id(model.steps[-1][1]): {"zipmap": False}},
        )
    elif isinstance(model, HistGradientBoostingClassifier):
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        proto = convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={id(model): {"zipmap": False}},
        )
    else:
        raise TypeError(
            f"cannot export {type(model).__name__}: expected XGBClassifier, HistGradientBoostingClassifier "
            "or a scikit-learn Pipeline"
        )
    # The converters name the graph with a fresh uuid4: the same model exported twice hashed differently, so a
    # re-run's version 1 could not match its release file (and "same inputs, same model" was false on the bytes).
    proto.graph.name = type(model).__name__
    return proto.SerializeToString()


class OnnxScorer:
    """P(fraud) from an ONNX model held as bytes, single-threaded for predictable latency."""

    def __init__(self, model_bytes: bytes):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread each: single-row calls gain nothing from more, and on a small host
        # extra onnxruntime threads fight the web server for the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        self.n_features = self._session.get_inputs()[0].shape[1]
        self._probability_output = _probability_output(self._session)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """P(fraud) per row of X (float32 [rows, n_features], or one row as a 1-d array)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[np.newaxis, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected [rows, {self.n_features}] features, got shape {X.shape}")
        (probabilities,) = self._session.run([self._probability_output], {self._input_name: X})
        return probabilities[:, 1].astype(np.float64)


def _probability_output(session: onnxruntime.InferenceSession) -> str:
    """The output holding class probabilities: the float tensor [batch, 2].

    Both converters also emit an int64 `label` output; matching on type and shape rather
    than name keeps this independent of converter naming.
    """
    candidates = [
        output.name
        for output in session.get_outputs()
        if output.type == "tensor(float)" and len(output.shape) == 2 and output.shape[1] == 2
    ]
    if len(candidates) != 1:
        described = [(o.name, o.type, o.shape) for o in session.get_outputs()]
        raise ValueError(f"expected exactly one float [batch, 2] probability output, found outputs {described}")
    return candidates[0]


def native_predict(model: NativeModel, X: np.ndarray) -> np.ndarray:
    """P(fraud) from the in-memory model, the reference the ONNX export is checked against."""
    return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)


def max_probability_difference(model: NativeModel, scorer: OnnxScorer, X: np.ndarray) -> float:
    """Largest absolute difference in P(fraud) between the native model and its ONNX export."""
    return float(np.max(np.abs(native_predict(model, X) - scorer.predict(X))))
