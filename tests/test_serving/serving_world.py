"""A small serving world for the endpoint tests: a registry with real ONNX versions, an online
store with history, and a real `mlops serve` process on 127.0.0.1.

Version 1 and 2 are the same sound model (2 is a retrain on the same data with the same
seed, as a scheduled retrain without new data gives); version 3 is a bad one, trained on
coin-flip labels, whose scores sit near 0.3 and which flags almost every request.

Transactions happen within a day after NOW, which lies in the past of the machine's clock:
a live endpoint bounds event times by its wall clock (limits.EventTimeBounds), in-process
services here get a fixed clock (`CLOCK`).
"""

import contextlib
import datetime as dt
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import duckdb
import mlflow
import numpy as np
import onnx
import xgboost

from mlops_core import registry
from mlops_core.features.online import EventRecord, OnlineFeatureService
from mlops_core.features.stores import SqliteOnlineStore
from mlops_core.serving import server
from mlops_core.serving.limits import EventTimeBounds, ServingLimits
from mlops_core.serving.models import load_version
from mlops_core.serving.prediction_log import PredictionLog
from mlops_core.serving.service import ScoringService
from mlops_core.settings import Settings
from mlops_core.training.matrix import FEATURE_COLUMNS
from mlops_core.training.onnx_export import to_onnx

ADMIN_TOKEN = "test-admin-token-0123456789"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
DAY_SECONDS = 86_400
# The in-process services' "now": every transaction(i) is at most a day after NOW.
CLOCK_NOW = NOW + dt.timedelta(days=1)
ACCOUNTS = [f"acct{i:04d}" for i in range(400)]


def tiny_model_onnx(seed: int, coin_flip_labels: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.gamma(1.0, 3.0, size=(3000, len(FEATURE_COLUMNS))).astype(np.float32)
    y = (X[:, 0] + X[:, 1] + rng.normal(0, 1, len(X))) > 14 if not coin_flip_labels else rng.random(len(X)) < 0.5
    model = xgboost.XGBClassifier(n_estimators=15, max_depth=3, random_state=seed, n_jobs=1).fit(X, y.astype(int))
    return to_onnx(model, len(FEATURE_COLUMNS))


def transaction(i: int, account: str | None = None, when: dt.datetime | None = None) -> dict:
    rng = np.random.default_rng(i)
    return {
        "transaction_id": f"t{i:07d}",
        "account_id": account or ACCOUNTS[i % len(ACCOUNTS)],
        "merchant_id": f"m{i % 97:03d}",
        "merchant_category": ["grocery", "travel", "jewelry", "retail"][i % 4],
        "amount": round(float(rng.gamma(2.0, 30.0)) + 0.01, 2),
        "currency": "USD",
        "channel": "online" if i % 3 else "in_store",
        "country": "US" if i % 5 else "GB",
        "event_timestamp": (when or NOW + dt.timedelta(seconds=i % DAY_SECONDS)).isoformat(),
    }


@dataclass
class World:
    home: Path
    settings: Settings
    tracking_uri: str

    def env(self) -> dict[str, str]:
        """Every location spelled out: loading the code location exports the session's paths into
        os.environ, and a server started with those would read another home."""
        s = self.settings
        return {
            "MLOPS_HOME": str(self.home),
            "MLOPS_DATA_DIR": str(s.data_dir),
            "MLOPS_DUCKDB_PATH": str(s.duckdb_path),
            "DAGSTER_HOME": str(s.dagster_home),
            "MLOPS_REPORTS_DIR": str(s.reports_dir),
            "MLOPS_MLFLOW_DIR": str(s.mlflow_dir),
            "MLOPS_MLFLOW_TRACKING_URI": "",
            "MLOPS_ONLINE_STORE": "sqlite",
            "MLOPS_ADMIN_TOKEN": ADMIN_TOKEN,
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(self.tracking_uri)

    def duckdb(self):
        return duckdb.connect(str(self.settings.duckdb_path))


def build_world(home: Path) -> World:
    settings = Settings.from_env({"MLOPS_HOME": str(home)})
    settings.ensure_dirs()
    registry.seed_sqlite_store(settings.mlflow_dir / "mlflow.db")
    uri = registry.tracking_uri_for(settings.mlflow_dir)
    client = mlflow.MlflowClient(uri)
    experiment = registry.ensure_experiment(client, "serving-tests", registry.artifact_root_for(settings.mlflow_dir))
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        for seed, bad, threshold in ((1, False, 0.5), (1, False, 0.5), (3, True, 0.1)):
            with mlflow.start_run(experiment_id=experiment) as run:
                info = mlflow.onnx.log_model(
                    onnx.load_from_string(tiny_model_onnx(seed, bad)),
                    name="model",
                    pip_requirements=mlflow.onnx.get_default_pip_requirements(),  # as the platform logs them
                )
            registry.register_version(
                client, run.info.run_id, "model", tags={"threshold": repr(threshold)}, model_uri=info.model_uri
            )
    finally:
        mlflow.set_tracking_uri(previous_uri)
    with duckdb.connect(str(settings.duckdb_path)) as con:
        registry.move_alias(client, con, registry.CHAMPION, "1", "test world", {})
        registry.move_alias(client, con, registry.CHALLENGER, "2", "test world", {})
    store = SqliteOnlineStore(settings.online_store_path)
    history = []
    for k, account in enumerate(ACCOUNTS):
        for j in range(5):
            ts = NOW - dt.timedelta(hours=3 * j + 1, minutes=k % 60)
            history.append(
                EventRecord(account, int(ts.timestamp() * 1e6), f"h{k}-{j}", 20.0 + j * 7, f"m{j:03d}", "US")
            )
    store.record_events(history)
    store.close()
    return World(home, settings, uri)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_service(
    world: World, home: Path, start: bool = True, clock=lambda: CLOCK_NOW, bounds: EventTimeBounds = EventTimeBounds()
) -> ScoringService:
    """An in-process service over the world's registry, a copy of its online store and a log in `home`."""
    home.mkdir(parents=True, exist_ok=True)
    store_file = home / "online.sqlite"
    if not store_file.exists():
        shutil.copy(world.settings.online_store_path, store_file)
    client = world.client()
    service = ScoringService(
        features=OnlineFeatureService(SqliteOnlineStore(store_file)),
        loader=lambda version: load_version(client, version),
        prediction_log=PredictionLog(home / "predictions.sqlite"),
        plan_path=home / "plan.json",
        champion_alias=lambda: registry.alias_version(client, registry.CHAMPION),
        event_bounds=bounds,
        clock=clock,
    )
    if start:
        service.start()
    return service


@contextlib.contextmanager
def inprocess_server(app, limits: ServingLimits = ServingLimits()):
    """The app under uvicorn with `mlops serve`'s settings (server.uvicorn_config), in a thread of
    this process on a free loopback port; stopped on exit."""
    import uvicorn

    port = free_port()
    runner = uvicorn.Server(server.uvicorn_config(app, "127.0.0.1", port, limits))
    thread = threading.Thread(target=runner.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        runner.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def running_endpoint(world: World, port: int, role: str = "production", model_version: str | None = None):
    """`mlops serve --detach` in the world's home; stopped by its PID on exit."""
    with mock.patch.dict(os.environ, world.env()):
        pid = server.start_detached(world.settings, port=port, role=role, model_version=model_version, timeout=90)
        try:
            yield f"http://127.0.0.1:{port}", pid
        finally:
            server.stop(world.settings, port, role)
