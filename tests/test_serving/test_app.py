"""Tier 1: the HTTP contract of every route, bad requests, admin auth, traffic changes, the log.

In-process (FastAPI TestClient) over a real registry, a real sqlite online store and a real
prediction log; the live-process tests are in test_live_endpoint.py.
"""

import datetime as dt
import json
import os
import sqlite3
import time

import pytest
from fastapi.testclient import TestClient
from serving_world import ADMIN_TOKEN, CLOCK_NOW, NOW, make_service, transaction

from mlops_core import registry
from mlops_core.features.online import EventRecord, OnlineFeatureService
from mlops_core.features.stores import SqliteOnlineStore
from mlops_core.serving.app import create_app
from mlops_core.serving.limits import EventTimeBounds
from mlops_core.serving.plan import HISTORY_LIMIT, TrafficPlan
from mlops_core.serving.prediction_log import read_predictions

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PREDICTION_KEYS = {"transaction_id", "fraud_probability", "is_fraud", "model_version", "variant", "request_id"}


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
    health = http.get("/health").json()
    assert health["status"] == "alive" and health["pid"] == os.getpid()
    ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["champion_version"] == "1"
    assert ready.json()["online_store"]["events"] > 0
    for i in range(3):
        assert http.post("/v1/predict", json=transaction(100 + i)).status_code == 200
    assert http.post("/v1/predict", json={**transaction(200), "amount": -5}).status_code == 422
    text = http.get("/metrics").text
    assert 'mlops_http_requests_total{route="/v1/predict",status="200"} 3.0' in text
    assert 'mlops_http_requests_total{route="/v1/predict",status="422"} 1.0' in text
    assert 'mlops_predictions_total{route="predict",variant="champion"} 3.0' in text
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
    "unknown category": (
        lambda b: json.dumps({**b, "merchant_category": "spaceships"}),
        "application/json",
        422,
        ["merchant_category"],
    ),
    "unknown currency": (lambda b: json.dumps({**b, "currency": "XXX"}), "application/json", 422, ["currency"]),
    "bad timestamp": (
        lambda b: json.dumps({**b, "event_timestamp": "yesterday"}),
        "application/json",
        422,
        ["event_timestamp"],
    ),
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
    [
        ("/admin/traffic", {"canary_version": "2", "canary_share": 0.5}),
        ("/admin/rollback", {"reason": "test"}),
        ("/admin/reload", {}),
    ],
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
    response = http.post(
        "/admin/traffic", json={"canary_version": "2", "canary_share": 0.5, "reason": "canary"}, headers=ADMIN
    )
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


HIGH_VALUE = {"name": "high_value", "feature": "amount_usd", "at_least": 100.0}


def test_an_excluded_segment_stays_on_the_champion_and_the_rest_keeps_its_buckets(http, service):
    """A request in the segment is answered by the champion even when its account is a canary account; a request
    just under the bound (99.99) is routed by its bucket as before. The rule survives a restart of the plan."""
    response = http.post(
        "/admin/traffic",
        json={"canary_version": "2", "canary_share": 1.0, "reason": "canary", "canary_excluded": [HIGH_VALUE]},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    assert response.json()["canary_excluded"] == [HIGH_VALUE]
    answers = {}
    for i, amount in enumerate((100.0, 99.99, 250.0, 5.0, 100.01)):
        body = {**transaction(2000 + i), "amount": amount}
        answers[amount] = http.post("/v1/predict", json=body).json()
    assert {a: answers[a]["variant"] for a in answers} == {
        100.0: "champion",
        99.99: "canary",
        250.0: "champion",
        5.0: "canary",
        100.01: "champion",
    }
    assert answers[100.0]["model_version"] == "1" and answers[99.99]["model_version"] == "2"
    assert TrafficPlan.load(service.plan_path).canary_excluded == [HIGH_VALUE]


def test_an_exclusion_on_a_feature_the_endpoint_does_not_compute_is_refused(http):
    typo = {**HIGH_VALUE, "feature": "amount_sum_30"}  # the real name is amount_sum_30d
    response = http.post(
        "/admin/traffic",
        json={"canary_version": "2", "canary_share": 0.5, "reason": "canary", "canary_excluded": [typo]},
        headers=ADMIN,
    )
    assert response.status_code >= 400 and "amount_sum_30" in response.text
    assert http.get("/deployment").json()["canary_version"] is None  # nothing changed


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
    http.post(
        "/admin/traffic", json={"canary_version": "3", "canary_share": 1.0, "reason": "bad canary"}, headers=ADMIN
    ).raise_for_status()
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
    assert (state["champion_version"], state["canary_version"], state["canary_share"], state["shadow_version"]) == (
        "1",
        "2",
        0.3,
        "3",
    )


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
    http.post(
        "/admin/traffic", json={"canary_version": "2", "canary_share": 0.25, "reason": "describe me"}, headers=ADMIN
    ).raise_for_status()
    described = http.get("/deployment").json()
    assert set(described) == {
        "champion_version",
        "canary_version",
        "canary_share",
        "shadow_version",
        "previous_champion_version",
        "canary_excluded",
        "reason",
        "changed_at",
    }
    assert (
        described["champion_version"],
        described["canary_version"],
        described["canary_share"],
        described["reason"],
    ) == ("1", "2", 0.25, "describe me")


class _BrokenScorer:
    def predict(self, X):
        raise RuntimeError("graph exploded")


def test_a_failing_canary_never_fails_the_caller(http, service):
    from mlops_core.serving.models import LoadedModel

    real_loader = service.loader
    service.loader = lambda v: (
        LoadedModel(version="9", scorer=_BrokenScorer(), threshold=0.5) if v == "9" else real_loader(v)
    )
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


# ---- event times -------------------------------------------------------------------------

TIMESTAMP_CASES = {
    # value -> text the problem must contain
    "year 1 east of UTC": ("0001-01-01T00:30:00+01:00", "years 1-9999"),
    "year 9999 west of UTC": ("9999-12-31T23:30:00-05:00", "years 1-9999"),
    "year 2999": ("2999-01-01T00:00:00+00:00", "MLOPS_MAX_EVENT_FUTURE_SKEW_HOURS"),
    "two days ahead of the clock": (
        (CLOCK_NOW + dt.timedelta(days=2)).isoformat(),
        (CLOCK_NOW + dt.timedelta(hours=24)).isoformat(),
    ),
    "before 2000": ("1999-12-31T23:59:59+00:00", "MLOPS_EVENT_TIME_MIN"),
}


@pytest.mark.parametrize("case", TIMESTAMP_CASES, ids=list(TIMESTAMP_CASES))
def test_an_event_time_out_of_bounds_is_a_422_naming_the_field_and_the_bound(http, service, case):
    """Never a 500, and the online store's freshness watermark and the log do not move."""
    value, named = TIMESTAMP_CASES[case]
    watermark, events = service.features.store.status().watermark_us, service.features.store.status().events
    written = service.prediction_log.written
    response = http.post("/v1/predict", json={**transaction(11), "event_timestamp": value})
    assert response.status_code == 422, response.text
    assert response.json()["fields"] == ["event_timestamp"]
    assert named in response.json()["detail"][0]["problem"]
    batch = http.post(
        "/v1/predict/batch", json={"transactions": [transaction(12), {**transaction(13), "event_timestamp": value}]}
    )
    assert batch.status_code == 422 and batch.json()["fields"] == ["transactions.1.event_timestamp"], batch.text
    status = service.features.store.status()
    assert (status.watermark_us, status.events, service.prediction_log.written) == (watermark, events, written)
    assert http.post("/v1/predict", json=transaction(14)).status_code == 200


def test_the_bounds_follow_the_injected_clock(world, tmp_path):
    """The same transaction is in the future of one clock and accepted by a later one; lateness is opt-in."""
    body = transaction(21)  # NOW + 21 s
    early = make_service(world, tmp_path / "early", clock=lambda: NOW - dt.timedelta(days=2))
    strict = make_service(
        world,
        tmp_path / "strict",
        clock=lambda: NOW + dt.timedelta(days=9),
        bounds=EventTimeBounds(max_lateness=dt.timedelta(days=7)),
    )
    lenient = make_service(world, tmp_path / "lenient", clock=lambda: NOW + dt.timedelta(days=9))
    try:
        for service, status, named in (
            (early, 422, "in the future"),
            (strict, 422, "MLOPS_MAX_EVENT_LATENESS_DAYS"),
            (lenient, 200, None),
        ):
            with TestClient(create_app(service, ADMIN_TOKEN)) as http:
                response = http.post("/v1/predict", json=body)
            assert response.status_code == status, response.text
            if named:
                assert named in response.json()["detail"][0]["problem"]
    finally:
        for service in (early, strict, lenient):
            service.close()


def test_a_transaction_older_than_the_store_keeps_whole_windows_for_is_a_422(world, tmp_path):
    """A store rebuilt with one day of allowed lateness cannot score a transaction two days behind its
    watermark on a whole 30-day window (TooLateError): the caller gets a 422 naming the field and the bound."""
    service = make_service(world, tmp_path)
    store = SqliteOnlineStore(tmp_path / "rebuilt.sqlite")
    now_us = int(NOW.timestamp() * 1_000_000)
    store.rebuild(
        [EventRecord("acct0001", now_us, "h-rebuilt", 20.0, "m001", "US")],
        [],
        offline_watermark_us=now_us,
        allowed_lateness_us=86_400 * 1_000_000,
    )
    service.features.store.close()
    service.features = OnlineFeatureService(store)
    late = {**transaction(16), "event_timestamp": (NOW - dt.timedelta(days=2)).isoformat()}
    try:
        with TestClient(create_app(service, ADMIN_TOKEN)) as http:
            response = http.post("/v1/predict/batch", json={"transactions": [transaction(15), late]})
            assert http.post("/v1/predict", json=transaction(17)).status_code == 200
    finally:
        service.close()
    assert response.status_code == 422, response.text
    assert response.json()["fields"] == ["transactions.1.event_timestamp"]
    problem = response.json()["detail"][0]["problem"]
    assert (NOW - dt.timedelta(days=1)).isoformat() in problem and "score older transactions offline" in problem


def test_the_servers_clock_follows_a_pinned_calendar_into_the_future(tmp_path):
    """`mlops serve` bounds event times by the machine's clock, but never before the end of a pinned
    MLOPS_TODAY: a demo pinned after the machine's date is still served."""
    from mlops_core.serving.server import serving_clock
    from mlops_core.settings import Settings

    def clock_of(today: str):
        return serving_clock(Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_TODAY": today}))()

    machine = dt.datetime.now(dt.UTC)
    assert clock_of("2099-01-01") == dt.datetime(2099, 1, 2, tzinfo=dt.UTC)
    for today in ("2026-01-01", "system"):  # a pinned day in the machine's past: its clock
        assert machine <= clock_of(today) <= machine + dt.timedelta(minutes=5)


# ---- metrics and timing ------------------------------------------------------------------


def _metric(text: str, line_start: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return values[0] if values else 0.0


def test_every_status_is_counted_and_requests_apart_from_transactions(http):
    batch = [transaction(i) for i in range(40, 45)]
    answers = {
        200: [http.post("/v1/predict/batch", json={"transactions": batch})],
        404: [http.get("/no/such/route"), http.get("/wp-login.php")],
        413: [
            http.post(
                "/v1/predict", content=b"{" + b" " * 1_100_000 + b"}", headers={"content-type": "application/json"}
            )
        ],
        415: [http.post("/v1/predict", content=b"{}", headers={"content-type": "text/plain"})],
        422: [
            http.post(
                "/v1/predict/batch", json={"transactions": [transaction(1), {**transaction(2), "currency": "XXX"}]}
            )
        ],
        401: [http.post("/admin/rollback", json={"reason": "x"})],
        403: [http.post("/admin/rollback", json={"reason": "x"}, headers={"Authorization": "Bearer wrong"})],
        409: [http.post("/admin/traffic", json={"canary_version": "99", "canary_share": 0.5}, headers=ADMIN)],
    }
    for status, responses in answers.items():
        assert [r.status_code for r in responses] == [status] * len(responses)
    text = http.get("/metrics").text
    assert _metric(text, 'mlops_http_requests_total{route="/v1/predict/batch",status="200"}') == 1
    assert _metric(text, 'mlops_predictions_total{route="batch",variant="champion"}') == 5
    assert _metric(text, 'mlops_http_requests_total{route="/v1/predict/batch",status="422"}') == 1
    assert _metric(text, 'mlops_http_requests_total{route="other",status="404"}') == 2  # unknown paths share one label
    for route, status in (
        ("/v1/predict", 413),
        ("/v1/predict", 415),
        ("/admin/rollback", 401),
        ("/admin/rollback", 403),
        ("/admin/traffic", 409),
    ):
        assert _metric(text, f'mlops_http_requests_total{{route="{route}",status="{status}"}}') == 1, (route, status)


def test_an_unexpected_error_is_a_counted_500_and_serving_continues(http, service, monkeypatch):
    real = service.features.get_online_features

    def broken(rows):
        raise RuntimeError("store exploded")

    monkeypatch.setattr(service.features, "get_online_features", broken)
    response = http.post("/v1/predict", json=transaction(51))
    assert response.status_code == 500 and response.json()["error"] == "internal error"
    assert "store exploded" not in response.text  # the traceback goes to the server log, not the caller
    monkeypatch.setattr(service.features, "get_online_features", real)
    assert http.post("/v1/predict", json=transaction(52)).status_code == 200
    text = http.get("/metrics").text
    assert _metric(text, 'mlops_http_requests_total{route="/v1/predict",status="500"}') == 1
    assert _metric(text, 'mlops_http_requests_total{route="/v1/predict",status="200"}') == 1


def test_every_response_carries_the_server_processing_time(http):
    responses = [
        http.post("/v1/predict", json=transaction(61)),
        http.post("/v1/predict", json={}),
        http.get("/health"),
        http.get("/nowhere"),
    ]
    for response in responses:
        name, _, duration = response.headers["server-timing"].partition(";dur=")
        assert name == "app" and 0.0 < float(duration) < 10_000, response.headers["server-timing"]


# ---- the prediction log ------------------------------------------------------------------


def _logged(path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return {row[0] for row in con.execute("select transaction_id from predictions where served = 1")}


def test_every_answered_request_is_in_the_log_when_answered(http, service):
    """Read straight after each answer, no flush: an answer means a committed row, for all 300."""
    answered = []
    for i in range(300):
        response = http.post("/v1/predict", json=transaction(2000 + i))
        assert response.status_code == 200
        answered.append(response.json()["transaction_id"])
        if i % 50 == 49:
            assert set(answered) <= _logged(service.prediction_log.path), f"after {i + 1} answers"
    logged = _logged(service.prediction_log.path)
    assert len(logged) == len(answered) == 300 and logged == set(answered)
    assert service.status()["prediction_log"]["written"] == 300


def test_requests_that_arrive_together_commit_together(service):
    """Group commit: 40 requests scored in one loop iteration wait for one commit, not 40."""
    import asyncio

    log = service.prediction_log
    batches, written = log.batches, log.written

    async def burst():
        return await asyncio.gather(*(service.predict_async([transaction(8000 + i)]) for i in range(40)))

    results = asyncio.run(burst())
    assert len(results) == 40 and log.written - written == 40
    assert log.batches - batches == 1
    assert _logged(log.path) >= {r[0].transaction_id for r in results}


def test_the_log_is_checkpointed_outside_the_commits(tmp_path):
    """Commits only append to the WAL (no automatic checkpoint and its fsync inside a commit a request
    waits for); the checkpoint thread copies the WAL into the database file."""
    from mlops_core.serving.prediction_log import PredictionLog, PredictionRecord

    log = PredictionLog(tmp_path / "p.sqlite", checkpoint_interval=0.1)
    try:
        assert log._con.execute("pragma wal_autocheckpoint").fetchone() == (0,)
        empty = (tmp_path / "p.sqlite").stat().st_size
        for i in range(100):
            log.append(
                [PredictionRecord(0.0, "r", f"t{i}", "a", "e", "1", "champion", 1, "ok", 0.1, 0, 1.0, "{}" * 500)]
            ).wait()
        deadline = time.monotonic() + 10
        while (tmp_path / "p.sqlite").stat().st_size <= empty:
            assert time.monotonic() < deadline, "no checkpoint copied the WAL into the database file"
            time.sleep(0.05)
        assert log.last_error is None and log.written == 100
    finally:
        log.close()


class _FailingConnection:
    """A sqlite connection whose writes fail, as on a full or read-only disk."""

    def __init__(self, real):
        self.real = real
        self.in_transaction = False

    def execute(self, sql, *args):
        raise sqlite3.OperationalError("disk I/O error")

    def executemany(self, sql, *args):
        raise sqlite3.OperationalError("disk I/O error")

    def close(self):
        self.real.close()


def test_a_request_whose_log_write_fails_is_refused_not_answered(http, service):
    log = service.prediction_log
    log._con = _FailingConnection(log._con)
    response = http.post("/v1/predict", json=transaction(71))
    assert response.status_code == 503 and response.json()["error"] == "prediction log unavailable", response.text
    assert "disk I/O error" in response.json()["detail"]
    assert log.failures == 1 and log.written == 0
    text = http.get("/metrics").text
    assert _metric(text, 'mlops_http_requests_total{route="/v1/predict",status="503"}') == 1
    assert _metric(text, 'mlops_predictions_total{route="predict",variant="champion"}') == 0
    log._con = log._con.real
    assert http.post("/v1/predict", json=transaction(72)).status_code == 200


# ---- the traffic plan --------------------------------------------------------------------


def test_a_restart_resumes_the_plan_unchanged_and_changes_keep_their_history(world, tmp_path):
    service = make_service(world, tmp_path)  # the registry champion: the first change
    service.apply(canary_version="2", canary_share=0.3, reason="canary of 2")
    service.close()
    plan_file = tmp_path / "plan.json"
    recorded = plan_file.read_bytes()
    before = TrafficPlan.load(plan_file)
    for _ in range(2):  # two restarts
        resumed = make_service(world, tmp_path)
        described = resumed.deployment.describe()
        resumed.close()
        assert plan_file.read_bytes() == recorded
        assert (described["reason"], described["changed_at"], described["canary_version"]) == (
            "canary of 2",
            before.changed_at,
            "2",
        )
    assert [h["reason"] for h in before.history] == ["start: registry champion is version 1"]
    again = make_service(world, tmp_path)
    again.rollback("drain the canary")
    again.close()
    after = TrafficPlan.load(plan_file)
    assert after.reason == "rollback (drain): drain the canary" and after.canary_version is None
    assert [h["reason"] for h in after.history] == ["start: registry champion is version 1", "canary of 2"]
    assert after.history[-1] == before.change()


def test_the_plan_history_is_bounded(tmp_path):
    plan = TrafficPlan(champion_version="1", reason="change 0")
    for i in range(1, HISTORY_LIMIT + 20):
        plan = plan.followed_by(TrafficPlan(champion_version="1", reason=f"change {i}"))
    plan.save(tmp_path / "plan.json")
    loaded = TrafficPlan.load(tmp_path / "plan.json")
    assert len(loaded.history) == HISTORY_LIMIT and loaded.history[0]["reason"] == "change 19"
    assert (
        loaded.history[-1]["reason"] == f"change {HISTORY_LIMIT + 18}"
        and loaded.reason == f"change {HISTORY_LIMIT + 19}"
    )


def test_a_plan_written_before_histories_loads(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(
        json.dumps(
            {
                "champion_version": "3",
                "canary_version": None,
                "canary_share": 0.0,
                "shadow_version": None,
                "previous_champion_version": "2",
                "reason": "old",
                "changed_at": "2026-11-01T00:00:00+00:00",
            }
        )
    )
    plan = TrafficPlan.load(path)
    assert (plan.champion_version, plan.history) == ("3", ())
