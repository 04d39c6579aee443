"""The staging smoke test's latency gate judges the server's own processing time, not the client's clock.

A real uvicorn server in this process (`mlops serve`'s settings) and the replay the staging
asset runs. A slow network or a busy client (delay added outside the app, in the client's
transport) must not fail the gate; a slow model (delay inside the app) must, naming the
measured p99 and the bound.
"""

import time

import httpx
import pytest
from serving_world import ADMIN_TOKEN, inprocess_server, make_service, transaction

from mlops_core.serving.app import create_app
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.models import LoadedModel
from mlops_core.serving.replay import replay

SLO_MS = 50.0
DELAY_S = 0.06  # above the SLO on its own
TRANSACTIONS = [transaction(3000 + i) for i in range(12)]


class _SlowNetwork(httpx.HTTPTransport):
    """Every request waits DELAY_S on the client side before it is sent: the app never sees it."""

    def handle_request(self, request):
        time.sleep(DELAY_S)
        return super().handle_request(request)


class _SlowScorer:
    def __init__(self, scorer):
        self.scorer = scorer

    def predict(self, X):
        time.sleep(DELAY_S)
        return self.scorer.predict(X)


@pytest.fixture
def service(world, tmp_path):
    service = make_service(world, tmp_path)
    yield service
    service.close()


def test_a_slow_client_side_does_not_fail_the_gate(service):
    with inprocess_server(create_app(service, ADMIN_TOKEN)) as (url, _):
        with EndpointClient(url, transport=_SlowNetwork()) as client:
            result = replay(client, TRANSACTIONS, warmup=3, requests=20)
    assert result.errors == [] and result.contract_violations == []
    assert len(result.server_ms) == len(result.latencies_ms) == 20 and result.without_server_timing == 0
    assert result.percentile(99) > DELAY_S * 1000 > SLO_MS  # the client's clock would have failed it
    assert result.server_percentile(99) < SLO_MS
    assert result.latency_problem(SLO_MS) is None


def test_a_slow_model_fails_the_gate_naming_measured_and_bound(service):
    champion = service.deployment.champion
    service.loader = lambda version: LoadedModel(
        version="7", scorer=_SlowScorer(champion.scorer), threshold=champion.threshold
    )
    service.apply(champion_version="7", reason="a slow challenger")
    with inprocess_server(create_app(service, ADMIN_TOKEN)) as (url, _):
        with EndpointClient(url) as client:
            result = replay(client, TRANSACTIONS, warmup=2, requests=10)
    assert result.errors == [] and result.versions == {"7"}
    problem = result.latency_problem(SLO_MS)
    measured = result.server_percentile(99)
    assert measured >= DELAY_S * 1000
    assert problem is not None and problem.startswith(f"server p99 {measured:.1f} ms over the {SLO_MS:g} ms SLO"), (
        problem
    )
    assert "10 requests after 2 warm-up" in problem


def test_warm_up_requests_are_checked_but_not_timed(service):
    with inprocess_server(create_app(service, ADMIN_TOKEN)) as (url, _):
        with EndpointClient(url) as client:
            result = replay(client, TRANSACTIONS, warmup=5, requests=30)
    summary = result.summary()
    assert (summary["requests"], summary["warmup_requests"], summary["timed_requests"]) == (35, 5, 30)
    assert summary["server_p99_ms"] <= summary["client_p99_ms"]  # the client's clock holds the server's time and more


def test_without_server_timing_the_gate_cannot_pass():
    """An endpoint that does not report its time (a foreign or older server) is not judged as fast."""
    from mlops_core.serving.replay import ReplayResult

    result = ReplayResult(sent=10, latencies_ms=[1.0] * 10, without_server_timing=10)
    assert "cannot be judged" in result.latency_problem(SLO_MS)
