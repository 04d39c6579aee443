"""Helpers shared by the registry tests (a unique module name, so it never clashes with another conftest)."""

import socket
from pathlib import Path

import onnx
from mlflow import MlflowClient
from onnx import TensorProto, helper


def tiny_onnx_bytes() -> bytes:
    """An Identity graph: enough to be a real ONNX artifact, fast to build."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def log_model_run(client: MlflowClient, experiment_id: str, tmp_path: Path, name: str) -> str:
    """One finished run holding model/model.onnx; returns its run id."""
    model_dir = tmp_path / f"onnx-{name}"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(tiny_onnx_bytes())
    run = client.create_run(experiment_id, run_name=name)
    client.log_artifact(run.info.run_id, str(model_dir / "model.onnx"), artifact_path="model")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
