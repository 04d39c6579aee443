"""Models are never unpickled at serving time: the endpoint loads ONNX bytes only.

Statically, no module of the serving package, nor any mlops_core module it imports, imports
pickle, joblib, cloudpickle or an MLflow flavor loader. At run time, a real registered version
is loaded and scores through the service while every unpickling entry point raises.
"""

import ast
import pickle
import sys
from pathlib import Path

import pytest

from mlops_core.settings import REPO_ROOT

sys.path.insert(0, str(Path(__file__).parents[1] / "test_serving"))

FORBIDDEN_MODULES = {
    "pickle",
    "_pickle",
    "cloudpickle",
    "joblib",
    "dill",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "mlflow.xgboost",
    "mlflow.models",
}
FORBIDDEN_CALLS = {"load_model", "pyfunc", "loads", "Unpickler"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules imported, attribute names used) of one file."""
    tree = ast.parse(path.read_text())
    modules, attributes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
    return modules, attributes


def serving_modules() -> list[Path]:
    """The serving package and every mlops_core module it imports, transitively."""
    todo = sorted((REPO_ROOT / "mlops_core" / "serving").glob("*.py"))
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path)[0]:
            if module.startswith("mlops_core."):
                candidate = REPO_ROOT / Path(*module.split(".")).with_suffix(".py")
                if candidate.exists():
                    todo.append(candidate)
    return sorted(seen)


def test_serving_code_imports_no_unpickler():
    modules = serving_modules()
    assert REPO_ROOT / "mlops_core" / "serving" / "models.py" in modules and len(modules) > 8
    offenders = []
    for path in modules:
        imported, attributes = _imports(path)
        bad = {
            m
            for m in imported
            if m in FORBIDDEN_MODULES or m.split(".")[0] in {"pickle", "cloudpickle", "joblib", "dill"}
        }
        bad |= {f".{a}" for a in attributes & {"load_model", "pyfunc", "Unpickler"}}
        if bad:
            offenders.append(f"{path.relative_to(REPO_ROOT)}: {sorted(bad)}")
    assert offenders == []


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from serving_world import build_world

    return build_world(tmp_path_factory.mktemp("no-pickle"))


def test_a_registered_version_loads_and_scores_with_unpickling_disabled(world, monkeypatch, tmp_path):
    import joblib
    from serving_world import transaction

    from mlops_core.features.online import OnlineFeatureService
    from mlops_core.features.stores import SqliteOnlineStore
    from mlops_core.serving.models import load_version
    from mlops_core.serving.service import ScoringService

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[:1])
        raise AssertionError("unpickling at serving time")

    for target, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (joblib, "load")):
        monkeypatch.setattr(target, name, refuse)
    client = world.client()
    service = ScoringService(
        features=OnlineFeatureService(SqliteOnlineStore(world.settings.online_store_path)),
        loader=lambda version: load_version(client, version),
        prediction_log=None,
        plan_path=None,
        record_events=False,
    )
    service.apply(champion_version="1", reason="security test")
    (result,) = service.predict([transaction(5)])
    assert calls == []
    assert result.model_version == "1" and 0.0 <= result.fraud_probability <= 1.0
    # What it loaded is an ONNX graph: the bytes start like an ONNX ModelProto and parse as one.
    import onnx

    from mlops_core.serving.models import download_onnx

    graph, _ = download_onnx(client, "1")
    assert onnx.load_from_string(graph).graph.node
    assert calls == []
