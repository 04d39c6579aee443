"""Registered models as the endpoint holds them: ONNX bytes, the decision threshold, the version.

A LoadedModel is complete before anyone sees it (session built, threshold parsed), so
swapping one in is a single reference assignment: no request meets a half-loaded model.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mlflow import MlflowClient

from mlops_core import registry
from mlops_core.training.matrix import FEATURE_COLUMNS
from mlops_core.training.onnx_export import OnnxScorer

# An onnxruntime session's own memory beyond its graph (measured: benchmarks/projects_at_scale.py).
SESSION_OVERHEAD_BYTES = 2 * 1024 * 1024


class ModelLoadError(RuntimeError):
    """A registered version could not be turned into a scorer (missing artifact, bad graph, no threshold)."""


@dataclass(frozen=True)
class LoadedModel:
    version: str
    scorer: OnnxScorer
    threshold: float
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # The ONNX graph's size: with SESSION_OVERHEAD_BYTES, what the serving memory budget counts per model.
    size_bytes: int = 0

    @property
    def nbytes(self) -> int:
        return self.size_bytes + SESSION_OVERHEAD_BYTES

    def score(self, X: np.ndarray) -> np.ndarray:
        return self.scorer.predict(X)

    @classmethod
    def from_bytes(cls, version: str, model_bytes: bytes, threshold: float) -> LoadedModel:
        scorer = OnnxScorer(model_bytes)
        if scorer.n_features != len(FEATURE_COLUMNS):
            raise ModelLoadError(
                f"model version {version} takes {scorer.n_features} features, the serving matrix has {len(FEATURE_COLUMNS)}"
            )
        return cls(version=str(version), scorer=scorer, threshold=float(threshold), size_bytes=len(model_bytes))


def download_onnx(client: MlflowClient, version: str, model_name: str = registry.MODEL_NAME) -> tuple[bytes, float]:
    """The ONNX graph (bytes only, never unpickled) and the threshold recorded for `version`."""
    import mlflow  # here, not at the top: the code location imports this module and needs no mlflow to load

    try:
        details = client.get_model_version(model_name, str(version))
    except mlflow.exceptions.MlflowException as exc:
        raise ModelLoadError(
            f"{model_name!r} version {version} is not in the registry at {client.tracking_uri}: {exc}"
        ) from exc
    threshold = details.tags.get("threshold") or client.get_run(details.run_id).data.tags.get("threshold")
    if threshold is None:
        raise ModelLoadError(f"{model_name!r} version {version} has no 'threshold' tag on the version or its run")
    return onnx_bytes(client, version, model_name), float(threshold)


def onnx_bytes(client: MlflowClient, version: str, model_name: str = registry.MODEL_NAME) -> bytes:
    """The ONNX graph of `version` as the registry stores it (what a release file hashes)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        # `models:/` URIs resolve against the process-wide tracking/registry URI, not the
        # client's: point it at the client's store (a no-op inside a Dagster run, which set it).
        if mlflow.get_tracking_uri() != client.tracking_uri:
            mlflow.set_tracking_uri(client.tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}", dst_path=tmp))
        graphs = sorted(local.rglob("*.onnx"))
        if not graphs:
            raise ModelLoadError(f"{model_name!r} version {version} has no .onnx file in its artifacts")
        return graphs[0].read_bytes()


def load_version(
    client: MlflowClient, version: str, model_name: str = registry.MODEL_NAME, releases_dir: Path | None = None
) -> LoadedModel:
    """Download and load `version`. With `releases_dir`, a version its release file names must hash to the
    release's ONNX sha256, or it is refused (mlops_core/releases.py)."""
    from mlops_core.releases import ReleaseMismatch, verify

    model_bytes, threshold = download_onnx(client, version, model_name)
    try:
        verify(releases_dir, model_name, str(version), model_bytes)
    except ReleaseMismatch as exc:
        raise ModelLoadError(str(exc)) from exc
    try:
        return LoadedModel.from_bytes(str(version), model_bytes, threshold)
    except ModelLoadError:
        raise
    except Exception as exc:  # onnxruntime raises its own types for a corrupt graph
        raise ModelLoadError(f"{model_name!r} version {version}: the ONNX graph does not load: {exc}") from exc


def load_alias(client: MlflowClient, alias: str, model_name: str = registry.MODEL_NAME) -> LoadedModel | None:
    version = registry.alias_version(client, alias, model_name)
    return None if version is None else load_version(client, version, model_name)
