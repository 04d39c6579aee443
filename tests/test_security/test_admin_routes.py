"""Every mutating HTTP route needs the admin token.

The routes come from the app itself (FastAPI's route table and the fast ASGI scoring path),
so a new POST/PUT/PATCH/DELETE route without the guard fails here. Only scoring is open.
"""

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from mlops_core.features.online import OnlineFeatureService
from mlops_core.features.stores import SqliteOnlineStore
from mlops_core.serving.app import FastScoring, create_app
from mlops_core.serving.service import ScoringService

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
FAST_SCORING = {"/v1/predict", "/v1/predict/batch"}
# Scoring is public by design: fraud's routes and every project's (the project routes' own admin twins,
# /admin/models/{project}/..., are guarded like the rest).
SCORING = {*FAST_SCORING, "/v1/models/{project}/predict", "/v1/models/{project}/predict/batch"}
TOKEN = "the-right-token-0123456789"


def _app(tmp_path, token):
    service = ScoringService(
        features=OnlineFeatureService(SqliteOnlineStore(tmp_path / "store.sqlite")),
        loader=lambda version: (_ for _ in ()).throw(RuntimeError("no models in this test")),
        prediction_log=None,
        plan_path=tmp_path / "plan.json",
    )
    return create_app(service, admin_token=token)


def mutating_routes(app) -> list[tuple[str, str]]:
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods & MUTATING
    }
    routes |= {("POST", path) for path in FastScoring.ROUTES}
    return sorted(routes)


def test_the_fast_path_serves_only_scoring():
    """FastScoring answers before FastAPI (and its guards) sees the request: it must hold nothing else."""
    assert set(FastScoring.ROUTES) == FAST_SCORING


@pytest.fixture
def client(tmp_path):
    with TestClient(_app(tmp_path, TOKEN)) as test_client:
        yield test_client


def test_every_mutating_route_but_scoring_refuses_a_missing_or_wrong_token(client):
    guarded = [(m, p) for m, p in mutating_routes(client.app) if p not in SCORING]
    assert len(guarded) >= 3, guarded  # traffic, rollback, reload at least
    for method, path in guarded:
        missing = client.request(method, path, json={"reason": "security test"})
        wrong = client.request(
            method, path, json={"reason": "security test"}, headers={"Authorization": "Bearer not-the-token"}
        )
        not_bearer = client.request(
            method, path, json={"reason": "security test"}, headers={"Authorization": f"Basic {TOKEN}"}
        )
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", (
            method,
            path,
            missing.text,
        )
        assert wrong.status_code == 403, (method, path, wrong.text)
        assert not_bearer.status_code == 401, (method, path, not_bearer.text)
    # The right token gets past the guard (the request itself may then fail: no model is loaded here).
    right = client.post(
        "/admin/rollback", json={"reason": "security test"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert right.status_code not in (401, 403)


def test_admin_routes_are_off_without_a_configured_token(tmp_path):
    with TestClient(_app(tmp_path, None)) as client:
        for method, path in mutating_routes(client.app):
            if path in SCORING:
                continue
            response = client.request(method, path, json={"reason": "x"}, headers={"Authorization": "Bearer anything"})
            assert response.status_code == 503 and "MLOPS_ADMIN_TOKEN" in response.text, (method, path)


NEAR_MISSES = {
    "all but the last character": TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y"),
    "the token plus a suffix": TOKEN + "0",
    "the token cut short": TOKEN[:-1],
    "only the first character": TOKEN[:1],
    "the token in another case": TOKEN.upper(),
    "the token twice": TOKEN + TOKEN,
}


@pytest.mark.parametrize("near_miss", NEAR_MISSES, ids=list(NEAR_MISSES))
def test_a_near_miss_of_the_token_is_refused(tmp_path, near_miss):
    """What a comparison of prefixes, of lengths or without case would let through: each gets 403 on every admin route."""
    token = NEAR_MISSES[near_miss]
    assert token != TOKEN
    with TestClient(_app(tmp_path, TOKEN)) as client:
        for method, path in mutating_routes(client.app):
            if path in SCORING:
                continue
            response = client.request(
                method, path, json={"reason": "security test"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 403, (near_miss, method, path, response.text)
        right = client.post(
            "/admin/rollback", json={"reason": "security test"}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert right.status_code not in (401, 403)
