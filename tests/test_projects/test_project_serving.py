"""One `mlops serve` serves every project (tier 2 and 3): the multi-project routes over churn's real registry
and published features, online equal to the batch scores, bad project names and bodies, a canary and a
rollback per project, the memory budget's LRU eviction, /metrics labelled by project, and a real server
process rolling churn back under load with zero failed requests."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from churn_world import churn_world, ensure_trained, run_job
from server_process import stop_process_group, wait_healthy
from sklearn.linear_model import LogisticRegression
from starlette.testclient import TestClient

from mlops_core.projects.catalog import declared_project
from mlops_core.serving import server
from mlops_core.serving.app import create_app
from mlops_core.serving.models import SESSION_OVERHEAD_BYTES, LoadedModel
from mlops_core.serving.plan import TrafficPlan
from mlops_core.serving.projects import ProjectModels, UnknownProject, features_path, publish_features
from mlops_core.training.onnx_export import OnnxScorer, to_onnx

ADMIN = "project-admin-token-0123456789"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Churn trained twice (versions 1 and 2), scored and published; an app over the real registry."""
    with churn_world(tmp_path_factory.mktemp("churn-serving")) as (settings, defs, instance):
        ensure_trained(settings, defs, instance)
        assert run_job(defs, instance, "churn_training_job").success  # version 2, same data
        assert run_job(defs, instance, "churn_scoring_job").success
        service = server.build_service(settings)
        projects = server.build_projects(settings, metrics_registry=service.metrics.registry)
        app = create_app(service, admin_token=ADMIN, projects=projects)
        with TestClient(app) as client:
            yield settings, client, projects
        service.close()


def _scores(settings) -> pd.DataFrame:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return con.execute(
            "SELECT account_id, score, decision, model_version, snapshot_date FROM project_churn.scores "
            "WHERE snapshot_date = (SELECT max(snapshot_date) FROM project_churn.scores) ORDER BY account_id"
        ).df()


def test_models_lists_every_project_with_its_versions(served):
    settings, client, _ = served
    listed = {m["project"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(listed) == {"fraud", "churn"}
    assert listed["churn"]["registered_model"] == "churn_predictor"
    assert listed["churn"]["champion_version"] == "2"
    assert listed["fraud"]["registered_model"] == "fraud_detector"


def test_online_equals_the_batch_scores_for_every_account_of_the_snapshot(served):
    settings, client, _ = served
    batch = _scores(settings)
    requests = [{"account_id": a} for a in batch["account_id"]]
    answers = client.post("/v1/models/churn/predict/batch", json={"requests": requests}).json()["predictions"]
    assert [a["account_id"] for a in answers] == list(batch["account_id"])
    online = np.array([a["score"] for a in answers])
    # The same ONNX graph on the same float32 features: equal, not close.
    assert np.array_equal(online.astype(np.float32), batch["score"].to_numpy().astype(np.float32))
    assert [a["decision"] for a in answers] == list(batch["decision"])
    assert {a["model_version"] for a in answers} == {"2"} == set(batch["model_version"])
    one = client.post("/v1/models/churn/predict", json={"account_id": batch["account_id"].iloc[3]})
    assert one.status_code == 200
    assert one.json()["score"] == answers[3]["score"]
    assert one.json()["features_as_of"] == str(batch["snapshot_date"].iloc[0])[:10]


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/v1/models/churnx/predict", {"account_id": "a"}, 404, "no project named 'churnx'"),
        ("/v1/models/chur/predict", {"account_id": "a"}, 404, "served projects: ['churn']"),
        ("/v1/models/churn/predict", {"account_id": "no-such-account"}, 404, "no features for account_id"),
        ("/v1/models/churn/predict", {"account": "a"}, 422, "account_id"),
        ("/v1/models/churn/predict", {"account_id": "a", "amount": 3}, 422, "amount"),
        ("/v1/models/churn/predict", {"account_id": ""}, 422, "account_id"),
        ("/v1/models/churn/predict/batch", {"requests": []}, 422, "1 to 1000 requests"),
        ("/v1/models/churn/predict/batch", [{"account_id": "a"}], 422, "a batch is"),
        ("/v1/models/churn/predict/batch", {"requests": [{"account_id": "a"}, {"acct": 1}]}, 422, "requests.1"),
    ],
)
def test_bad_project_names_and_bodies_are_refused_naming_the_problem(served, path, body, status, expected):
    _, client, _ = served
    answer = client.post(path, json=body)
    assert answer.status_code == status, answer.text
    assert expected in answer.text


def test_fraud_keeps_its_contract_under_the_project_route(served):
    _, client, _ = served
    body = {
        "transaction_id": "t1",
        "account_id": "a1",
        "merchant_id": "m1",
        "merchant_category": "grocery",
        "amount": 10.0,
        "currency": "USD",
        "channel": "online",
        "country": "US",
        "event_timestamp": "2026-06-01T10:00:00+00:00",
    }
    # No fraud champion in this world: both routes answer the same 503, naming why.
    legacy, routed = client.post("/v1/predict", json=body), client.post("/v1/models/fraud/predict", json=body)
    assert legacy.status_code == routed.status_code == 503
    assert legacy.json()["error"] == routed.json()["error"] == "not ready"
    bad = client.post("/v1/models/fraud/predict", json={**body, "amount": -1})
    assert bad.status_code == 422 and "amount" in bad.text


def test_a_churn_canary_and_rollback_touch_churn_only_and_survive_a_restart(served):
    settings, client, projects = served
    auth = {"Authorization": f"Bearer {ADMIN}"}
    fraud_before = client.get("/deployment").json()
    answer = client.post(
        "/admin/models/churn/traffic",
        json={"champion_version": "1", "canary_version": "2", "canary_share": 0.5, "reason": "test canary"},
        headers=auth,
    )
    assert answer.status_code == 200, answer.text
    accounts = list(_scores(settings)["account_id"])
    answers = client.post(
        "/v1/models/churn/predict/batch", json={"requests": [{"account_id": a} for a in accounts]}
    ).json()["predictions"]
    variants = {a["account_id"]: a["variant"] for a in answers}
    assert 0.3 < sum(v == "canary" for v in variants.values()) / len(variants) < 0.7
    again = client.post(
        "/v1/models/churn/predict/batch", json={"requests": [{"account_id": a} for a in accounts]}
    ).json()["predictions"]
    assert {a["account_id"]: a["variant"] for a in again} == variants  # sticky per account
    assert client.get("/deployment").json() == fraud_before
    plan = TrafficPlan.load(projects.plan_path("churn"))
    assert (plan.champion_version, plan.canary_version, plan.canary_share) == ("1", "2", 0.5)
    # A fresh server on the same home resumes the plan, lazily, on the first request.
    restarted = server.build_projects(settings)
    assert restarted.predict("churn", [{"account_id": accounts[0]}])[0]["variant"] == variants[accounts[0]]
    rolled = client.post("/admin/models/churn/rollback", json={"reason": "test rollback"}, headers=auth)
    assert rolled.status_code == 200 and rolled.json()["champion_version"] == "2"
    assert {
        a["model_version"]
        for a in client.post(
            "/v1/models/churn/predict/batch", json={"requests": [{"account_id": a} for a in accounts[:50]]}
        ).json()["predictions"]
    } == {"2"}
    assert client.post("/admin/models/churn/rollback", json={"reason": "x"}).status_code == 401
    assert (
        client.post(
            "/admin/models/churn/traffic", json={"champion_version": "99", "reason": "x"}, headers=auth
        ).status_code
        == 409
    )


def test_metrics_are_labelled_by_project(served):
    settings, client, _ = served
    account = _scores(settings)["account_id"].iloc[0]
    assert client.post("/v1/models/churn/predict", json={"account_id": account}).status_code == 200
    client.post("/v1/models/nope/predict", json={"account_id": account})
    text = client.get("/metrics").text
    assert 'mlops_project_predictions_total{project="churn",route="predict"' in text
    assert 'mlops_project_model_loaded{project="churn"' in text
    assert 'route="/v1/models/{project}/predict",status="200"' in text
    assert 'route="/v1/models/{project}/predict",status="404"' in text
    assert "nope" not in text  # a client's made-up project never becomes a label


# --- the memory budget, on synthetic projects (a unit test: the loader is a stand-in) ----------------------


def _tiny_onnx(n_features: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, n_features)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=200) > 0).astype(int)
    from sklearn.pipeline import Pipeline

    return to_onnx(Pipeline([("classify", LogisticRegression().fit(X, y))]), n_features)


def test_models_load_lazily_and_the_least_recently_used_project_is_evicted_past_the_budget(tmp_path):
    churn = declared_project("churn")
    names = ["alpha", "beta", "gamma"]
    projects = [churn.model_copy(update={"name": n, "registered_model": f"{n}_model"}) for n in names]
    features = churn.feature_names()
    onnx_bytes = _tiny_onnx(len(features), 0)
    loads = []

    def loader(project, version):
        loads.append((project.name, version))
        return LoadedModel(version, OnnxScorer(onnx_bytes), 0.5, size_bytes=len(onnx_bytes))

    for project in projects:
        frame = pd.DataFrame({"account_id": [f"a{i}" for i in range(100)], "snapshot_date": "2026-06-29"})
        for f in features:
            frame[f] = np.arange(100, dtype=float)
        publish_features(frame, tmp_path, project)
    per_project = len(onnx_bytes) + SESSION_OVERHEAD_BYTES + 100 * len(features) * 4 + 100 * 100
    models = ProjectModels(projects, loader, lambda p: "1", tmp_path, None, memory_budget_bytes=int(per_project * 2.5))
    assert loads == [] and models.loaded_bytes() == 0  # nothing loads at start
    for name in ("alpha", "beta"):
        models.predict(name, [{"account_id": "a1"}])
    assert models.evictions == 0 and [n for n, _ in loads] == ["alpha", "beta"]
    models.predict("alpha", [{"account_id": "a1"}])  # alpha is now the most recent
    models.predict("gamma", [{"account_id": "a1"}])  # over budget: beta, the least recent, goes
    assert models.evictions == 1
    assert models.loaded_bytes() <= int(per_project * 2.5)
    assert {d["project"]: d["loaded"] for d in models.describe()} == {"alpha": True, "beta": False, "gamma": True}
    models.predict("beta", [{"account_id": "a1"}])  # loads again on demand
    assert [n for n, _ in loads] == ["alpha", "beta", "gamma", "beta"]
    with pytest.raises(UnknownProject):
        models.predict("alph", [{"account_id": "a1"}])
    assert features_path(tmp_path, "alpha").is_file()


def test_a_plan_change_or_rollback_as_the_first_call_loads_the_project_instead_of_deadlocking(tmp_path):
    """After a restart or an eviction, the first call for a project may be an admin one: apply and rollback
    load it under the project's loading lock, which loading takes too. With a plain Lock that thread waited on
    itself for ever (random test order found it). Each call runs in a thread that must finish."""
    import threading

    churn = declared_project("churn")
    projects = [churn.model_copy(update={"name": n, "registered_model": f"{n}_model"}) for n in ("alpha", "beta")]
    features = churn.feature_names()
    onnx_bytes = _tiny_onnx(len(features), 1)
    for project in projects:
        frame = pd.DataFrame({"account_id": ["a1", "a2"], "snapshot_date": "2026-06-29"})
        for f in features:
            frame[f] = [1.0, 2.0]
        publish_features(frame, tmp_path, project)

    def loader(project, version):
        return LoadedModel(version, OnnxScorer(onnx_bytes), 0.5, size_bytes=len(onnx_bytes))

    models = ProjectModels(projects, loader, lambda p: "1", tmp_path, tmp_path / "plans", memory_budget_bytes=1 << 30)
    outcomes = {}

    def call(label, fn):
        worker = threading.Thread(target=lambda: outcomes.__setitem__(label, fn()), daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), f"{label} never returned: deadlocked"

    assert not models.is_loaded("alpha") and not models.is_loaded("beta")
    call("apply", lambda: models.apply("alpha", "2", reason="first call after a restart"))
    assert outcomes["apply"]["champion_version"] == "2" and models.is_loaded("alpha")
    call("rollback", lambda: models.rollback("alpha", reason="back"))
    assert outcomes["rollback"]["champion_version"] == "1"
    # A project whose plan (a previous champion) is on disk but not loaded: rollback is its first call.
    call("apply beta", lambda: models.apply("beta", "3", reason="v3"))
    models._loaded.clear()  # as after a restart: plans on disk, nothing loaded
    call("rollback beta", lambda: models.rollback("beta", reason="first call after a restart"))
    assert outcomes["rollback beta"]["champion_version"] == "1"


# --- a real `mlops serve` ---------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_rolls_churn_back_under_load_with_zero_failed_requests(served, tmp_path):
    import httpx

    settings, _, _ = served
    port = _free_port()
    env = {
        **os.environ,
        "MLOPS_HOME": str(settings.home),
        "MLOPS_DATA_DIR": str(settings.data_dir),
        "MLOPS_DUCKDB_PATH": str(settings.duckdb_path),
        "MLOPS_MLFLOW_DIR": str(settings.mlflow_dir),
        "DAGSTER_HOME": str(settings.dagster_home),
        "MLOPS_ADMIN_TOKEN": ADMIN,
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlops"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, f"{url}/health", log, 90, "mlops serve")
        accounts = list(_scores(settings)["account_id"])
        failures, answered, stop = [], [0], threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(timeout=10) as http:
                i = worker
                while not stop.is_set() and answered[0] < 20_000:
                    response = http.post(
                        f"{url}/v1/models/churn/predict", json={"account_id": accounts[i % len(accounts)]}
                    )
                    if response.status_code != 200:
                        failures.append((response.status_code, response.text[:200]))
                    answered[0] += 1
                    i += 4

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        auth = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(timeout=30) as admin:
            time.sleep(1.0)
            steps = [
                ("traffic", {"champion_version": "2", "canary_version": "1", "canary_share": 0.3, "reason": "canary"}),
                ("traffic", {"champion_version": "1", "reason": "promote 1"}),
                ("rollback", {"reason": "roll back to 2"}),
            ]
            for route, body in steps:
                response = admin.post(f"{url}/admin/models/churn/{route}", json=body, headers=auth)
                assert response.status_code == 200, response.text
                time.sleep(1.0)
            final = admin.get(f"{url}/v1/models").json()["models"]
        stop.set()
        for t in threads:
            t.join(30)
        assert answered[0] > 200
        assert failures == []
        assert {m["project"]: m["champion_version"] for m in final}["churn"] == "2"
    finally:
        stop_process_group(process)
