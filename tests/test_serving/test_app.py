"""Tier 1: the HTTP contract of every route, bad requests, admin auth, traffic changes, the log.

In-process (FastAPI TestClient) over a real registry, a real sqlite online store and a real
prediction log; the live-process tests are in test_live_endpoint.py.
"""

import json
import shutil

import pytest
from fastapi.testclient import TestClient
from serving_world import ADMIN_TOKEN, transaction

from mlops_core import registry
from mlops_core.features.online import OnlineFeatureService
from mlops_core.features.stores import SqliteOnlineStore
from mlops_core.serving.app import create_app
from mlops_core.serving.models import load_version
from mlops_core.serving.prediction_log import PredictionLog, read_predictions
from mlops_core.serving.service import ScoringService

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PREDICTION_KEYS = {"transaction_id", "fraud_probability", "is_fraud", "model_version", "variant", "request_id"}


def make_service(world, tmp_path, start=True):
    store_file = tmp_path / "online.sqlite"
    if not store_file.exists():
        shutil.copy(world.settings.online_store_path, store_file)
    client = world.client()
    service = ScoringService(
        features=OnlineFeatureService(SqliteOnlineStore(store_file)),
        loader=lambda version: load_version(client, version),
        prediction_log=PredictionLog(tmp_path / "predictions.sqlite"),
        plan_path=tmp_path / "plan.json",
        champion_alias=lambda: registry.alias_version(client, registry.CHAMPION),
    )
    if start:
        service.start()
    return service


@pytest.fixture
def service(world, tmp_path):
    service = make_service(world, tmp_path)
    yield service
    service.close()


@pytest.fixture(params=[True, False], ids=["fast scoring path", "fastapi routes"])
def http(service, request):
    with TestClient(create_app(service, ADMIN_TOKEN, fast_scoring=request.param)) as client:
        yield client


def test_predict_returns_the_contract(http):
    body = transaction(1)
    response = http.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == PREDICTION_KEYS
    assert answer["transaction_id"] == body["transaction_id"]
    assert 0.0 <= answer["fraud_probability"] <= 1.0
    assert answer["is_fraud"] == (answer["fraud_probability"] >= 0.5)
    assert answer["model_version"] == "1" and answer["variant"] == "champion"
    assert len(answer["request_id"]) == 32


def test_batch_answers_in_order(http):
    bodies = [transaction(i) for i in range(10, 15)]
    response = http.post("/v1/predict/batch", json={"transactions": bodies})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["transaction_id"] for p in predictions] == [b["transaction_id"] for b in bodies]
    assert all(set(p) == PREDICTION_KEYS for p in predictions)
    assert len({p["request_id"] for p in predictions}) == len(bodies)


def test_batch_scores_equal_single_scores(world, tmp_path):
    """Vectorized scoring of a batch equals one-by-one scoring (record off: same history for both)."""
    service = make_service(world, tmp_path)
    service.record_events = False
    bodies = [transaction(i) for i in range(20, 40)]
    batch = [r.fraud_probability for r in service.predict(bodies, route="batch")]
    single = [service.predict([b])[0].fraud_probability for b in bodies]
    service.close()
    assert batch == pytest.approx(single, abs=1e-6)


def test_health_ready_and_metrics(http):
    assert http.get("/health").json() == {"status": "alive"}
    ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["champion_version"] == "1"
    assert ready.json()["online_store"]["events"] > 0
    for i in range(3):
        assert http.post("/v1/predict", json=transaction(100 + i)).status_code == 200
    assert http.post("/v1/predict", json={**transaction(200), "amount": -5}).status_code == 422
    text = http.get("/metrics").text
    assert 'mlops_requests_total{route="predict",status="200",variant="champion"} 3.0' in text
    assert 'mlops_requests_total{route="predict",status="422",variant="none"} 1.0' in text
    assert 'mlops_request_latency_seconds_count{route="predict"} 3.0' in text
    assert 'mlops_fraud_score_count{variant="champion"} 3.0' in text
    assert 'mlops_model_loaded{variant="champion",version="1"} 1.0' in text


def test_not_ready_without_a_champion(world, tmp_path):
    service = make_service(world, tmp_path, start=False)
    with TestClient(create_app(service, ADMIN_TOKEN)) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 503
        response = http.post("/v1/predict", json=transaction(1))
        assert response.status_code == 503 and "no champion" in response.json()["detail"]
    service.close()


def _without(body, key):
    return {k: v for k, v in body.items() if k != key}


BAD_REQUESTS = {
    "missing field": (lambda b: json.dumps(_without(b, "amount")), "application/json", 422, ["amount"]),
    "wrong type": (lambda b: json.dumps({**b, "amount": "12.50"}), "application/json", 422, ["amount"]),
    "negative amount": (lambda b: json.dumps({**b, "amount": -3.0}), "application/json", 422, ["amount"]),
    "unknown category": (lambda b: json.dumps({**b, "merchant_category": "spaceships"}), "application/json", 422, ["merchant_category"]),
    "unknown currency": (lambda b: json.dumps({**b, "currency": "XXX"}), "application/json", 422, ["currency"]),
    "bad timestamp": (lambda b: json.dumps({**b, "event_timestamp": "yesterday"}), "application/json", 422, ["event_timestamp"]),
    "unexpected field": (lambda b: json.dumps({**b, "is_fraud": True}), "application/json", 422, ["is_fraud"]),
    "malformed json": (lambda b: '{"transaction_id": "t1", ', "application/json", 422, ["body"]),
    "oversized body": (lambda b: json.dumps({**b, "merchant_id": "x" * 1_100_000}), "application/json", 413, None),
    "wrong content type": (lambda b: json.dumps(b), "text/plain", 415, None),
    "no content type": (lambda b: json.dumps(b), "", 415, None),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_get_a_clear_4xx_and_serving_continues(http, case):
    make_body, content_type, status, fields = BAD_REQUESTS[case]
    headers = {"content-type": content_type} if content_type else {}
    response = http.post("/v1/predict", content=make_body(transaction(7)), headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    if fields is not None:
        assert payload["fields"] == fields
        assert payload["detail"][0]["problem"]
    else:
        assert payload["detail"]
    assert http.post("/v1/predict", json=transaction(8)).status_code == 200


def test_batch_limits(http):
    assert http.post("/v1/predict/batch", json={"transactions": []}).status_code == 422
    too_many = [transaction(i) for i in range(1001)]
    response = http.post("/v1/predict/batch", json={"transactions": too_many})
    assert response.status_code == 422 and response.json()["fields"] == ["transactions"]


@pytest.mark.parametrize(
    "route,body",
    [("/admin/traffic", {"canary_version": "2", "canary_share": 0.5}), ("/admin/rollback", {"reason": "test"}), ("/admin/reload", {})],
)
def test_admin_routes_need_the_token(http, route, body):
    assert http.post(route, json=body).status_code == 401
    assert http.post(route, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert http.post(route, json=body, headers={"Authorization": ADMIN_TOKEN}).status_code == 401  # no scheme
    assert http.get("/deployment").json()["canary_version"] is None  # nothing changed


def test_admin_routes_disabled_without_a_configured_token(service):
    with TestClient(create_app(service, admin_token=None)) as http:
        response = http.post("/admin/rollback", json={"reason": "x"}, headers={"Authorization": "Bearer anything"})
        assert response.status_code == 503 and "MLOPS_ADMIN_TOKEN" in response.json()["error"]


def test_canary_is_sticky_by_account_and_honours_the_share(http):
    response = http.post("/admin/traffic", json={"canary_version": "2", "canary_share": 0.5, "reason": "canary"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    first = {}
    for i in range(400):
        body = transaction(1000 + i)
        first[body["account_id"]] = http.post("/v1/predict", json=body).json()["variant"]
    for i in range(400):
        body = transaction(5000 + i)
        answer = http.post("/v1/predict", json=body).json()
        assert answer["variant"] == first[body["account_id"]]
        assert answer["model_version"] == ("2" if answer["variant"] == "canary" else "1")
    share = sum(v == "canary" for v in first.values()) / len(first)
    assert 0.4 < share < 0.6


def test_shadow_scores_every_request_but_only_the_champion_answers(http, service):
    http.post("/admin/traffic", json={"shadow_version": "2", "reason": "shadow"}, headers=ADMIN).raise_for_status()
    answers = [http.post("/v1/predict", json=transaction(300 + i)).json() for i in range(20)]
    assert {a["model_version"] for a in answers} == {"1"}
    service.prediction_log.flush()
    log = read_predictions(service.prediction_log.path)
    shadow = log[log["variant"] == "shadow"]
    assert len(shadow) == 20 and set(shadow["served"]) == {0} and set(shadow["model_version"]) == {"2"}
    assert set(shadow["request_id"]) == {a["request_id"] for a in answers}


def test_rollback_drains_then_restores_the_previous_champion(http):
    http.post("/admin/traffic", json={"champion_version": "2", "reason": "promote"}, headers=ADMIN).raise_for_status()
    assert http.post("/v1/predict", json=transaction(1)).json()["model_version"] == "2"
    http.post("/admin/traffic", json={"canary_version": "3", "canary_share": 1.0, "reason": "bad canary"}, headers=ADMIN).raise_for_status()
    assert http.post("/v1/predict", json=transaction(2)).json()["model_version"] == "3"
    drained = http.post("/admin/rollback", json={"reason": "drain"}, headers=ADMIN).json()
    assert drained["canary_version"] is None and drained["champion_version"] == "2"
    restored = http.post("/admin/rollback", json={"reason": "back"}, headers=ADMIN).json()
    assert restored["champion_version"] == "1" and restored["previous_champion_version"] == "2"
    assert http.post("/v1/predict", json=transaction(3)).json()["model_version"] == "1"


def test_unknown_version_is_refused_and_nothing_changes(http):
    response = http.post("/admin/traffic", json={"canary_version": "99", "canary_share": 0.5}, headers=ADMIN)
    assert response.status_code == 409 and "99" in response.json()["detail"]
    assert http.get("/deployment").json()["canary_version"] is None


def test_prediction_log_is_durable_and_holds_the_served_features(world, tmp_path):
    service = make_service(world, tmp_path)
    results = [service.predict([transaction(600 + i)])[0] for i in range(25)]
    service.close()  # drains the writer, as a SIGTERM'd server does
    log = read_predictions(tmp_path / "predictions.sqlite")
    assert list(log["request_id"]) == [r.request_id for r in results]
    assert list(log["score"]) == pytest.approx([r.fraud_probability for r in results])
    features = json.loads(log["features"].iloc[0])
    assert len(features) == 31 and features["txn_count_30d"] >= 1  # the account's history from the store
    assert (log["latency_ms"] > 0).all() and set(log["variant"]) == {"champion"}
    # A restarted service appends to the same log.
    again = make_service(world, tmp_path)
    again.predict([transaction(700)])
    again.close()
    assert len(read_predictions(tmp_path / "predictions.sqlite")) == 26


def test_scored_transactions_enter_the_account_history(http):
    body = transaction(800, account="acct0001")
    first = http.post("/v1/predict", json=body)
    later = {**transaction(801, account="acct0001"), "event_timestamp": "2026-11-20T13:00:00+00:00"}
    http.post("/v1/predict", json=later)
    service = http.app.state.service
    service.prediction_log.flush()
    log = read_predictions(service.prediction_log.path)
    counts = [json.loads(f)["txn_count_24h"] for f in log["features"]]
    assert first.status_code == 200 and counts[1] == counts[0] + 1


def test_recorded_plan_is_resumed_after_restart(world, tmp_path):
    service = make_service(world, tmp_path)
    service.apply(canary_version="2", canary_share=0.3, shadow_version="3", reason="mid-rollout")
    service.close()
    resumed = make_service(world, tmp_path)
    state = resumed.deployment.describe()
    resumed.close()
    assert (state["champion_version"], state["canary_version"], state["canary_share"], state["shadow_version"]) == ("1", "2", 0.3, "3")


def test_reload_serves_the_registry_champion_and_keeps_the_old_one(http, world):
    with world.duckdb() as con:
        registry.move_alias(world.client(), con, registry.CHAMPION, "2", "test: reload", {})
    try:
        response = http.post("/admin/reload", json={}, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert (response.json()["champion_version"], response.json()["previous_champion_version"]) == ("2", "1")
        assert http.post("/v1/predict", json=transaction(31)).json()["model_version"] == "2"
    finally:
        with world.duckdb() as con:
            registry.move_alias(world.client(), con, registry.CHAMPION, "1", "test: restore", {})


def test_deployment_route_describes_the_traffic(http):
    http.post("/admin/traffic", json={"canary_version": "2", "canary_share": 0.25, "reason": "describe me"}, headers=ADMIN).raise_for_status()
    described = http.get("/deployment").json()
    assert set(described) == {"champion_version", "canary_version", "canary_share", "shadow_version", "previous_champion_version", "reason", "changed_at"}
    assert (described["champion_version"], described["canary_version"], described["canary_share"], described["reason"]) == ("1", "2", 0.25, "describe me")


class _BrokenScorer:
    def predict(self, X):
        raise RuntimeError("graph exploded")


def test_a_failing_canary_never_fails_the_caller(http, service):
    from mlops_core.serving.models import LoadedModel

    real_loader = service.loader
    service.loader = lambda v: LoadedModel(version="9", scorer=_BrokenScorer(), threshold=0.5) if v == "9" else real_loader(v)
    http.post("/admin/traffic", json={"canary_version": "9", "canary_share": 1.0}, headers=ADMIN).raise_for_status()
    answer = http.post("/v1/predict", json=transaction(77))
    assert answer.status_code == 200
    assert (answer.json()["model_version"], answer.json()["variant"]) == ("1", "champion")
    service.prediction_log.flush()
    log = read_predictions(service.prediction_log.path)
    errors = log[log["status"] == "error"]
    assert list(errors["variant"]) == ["canary"] and list(errors["model_version"]) == ["9"]
    assert "graph exploded" in errors["error"].iloc[0]
    assert 'mlops_model_errors_total{variant="canary"} 1.0' in http.get("/metrics").text


def test_registered_versions_load_with_mlflow_pyfunc(world, service):
    """What `mlflow models serve` does: a version registered from the logged model loads as pyfunc
    and gives the endpoint's probabilities."""
    import mlflow
    import numpy as np

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(world.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}")
    finally:
        mlflow.set_tracking_uri(previous)
    X = np.random.default_rng(0).gamma(1.0, 3.0, size=(5, 49)).astype(np.float32)
    via_pyfunc = model.predict(X)["probabilities"][:, 1]
    assert via_pyfunc == pytest.approx(service.deployment.champion.score(X), abs=1e-6)
