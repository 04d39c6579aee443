"""Tier 3: a real `mlops serve` process on 127.0.0.1.

Promote and rollback under concurrent load with zero failed requests; a restart resumes
the recorded plan; a bad canary is rolled back by the sensor and the rollback job, a good
one is left alone.
"""

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import httpx
import mlflow
import onnx
import pytest
from dagster_duckdb import DuckDBResource
from serving_world import ADMIN_TOKEN, free_port, running_endpoint, tiny_model_onnx, transaction

from mlops_assets.deployment.rollback import canary_rollback
from mlops_core import registry
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.server import ServingPaths
from resources.alerts import AlertResource
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource
from sensors.canary import RULES, canary_rollback_sensor

pytestmark = pytest.mark.slow


def test_swaps_under_load_fail_no_request(world):
    """Four client threads score without pause while the admin API promotes, canaries, shadows and
    rolls back; every request must succeed and be answered by a fully loaded known version."""
    with running_endpoint(world, free_port()) as (url, _):
        failures, answers, stop = [], [], threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                i = worker * 1_000_000
                while not stop.is_set():
                    i += 1
                    try:
                        response = http.post("/v1/predict", json=transaction(i))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    else:
                        answers.append(response.json()["model_version"])

        threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        changes = [
            {"canary_version": "2", "canary_share": 0.5},
            {"shadow_version": "3"},
            {"champion_version": "2"},
            {"champion_version": "1", "canary_version": "3", "canary_share": 0.2},
        ]
        with EndpointClient(url, ADMIN_TOKEN) as admin:
            for _ in range(2):
                for change in changes:
                    time.sleep(0.4)
                    admin.traffic("load test", **change)
                    time.sleep(0.4)
                    admin.rollback("load test")
            time.sleep(0.4)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == []
    assert len(answers) > 200
    assert set(answers) <= {"1", "2", "3"} and {"1", "2"} <= set(answers)


def test_killed_server_restarts_to_the_recorded_plan(world):
    port = free_port()
    with running_endpoint(world, port) as (url, pid):
        with EndpointClient(url, ADMIN_TOKEN) as admin:
            admin.traffic("mid-rollout", champion_version="1", canary_version="2", canary_share=0.3)
        os.killpg(pid, signal.SIGKILL)  # no shutdown hook runs: the plan must already be on disk
    with running_endpoint(world, port) as (url, _):
        with EndpointClient(url) as client:
            state = client.deployment()
            assert client.predict(transaction(42))["model_version"] in {"1", "2"}
    assert (state["champion_version"], state["canary_version"], state["canary_share"]) == ("1", "2", 0.3)
    # Leave the world as other tests expect it.
    ServingPaths.for_role(world.settings, "production").plan.unlink()


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["content-length"]))
        _Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Receiver.received = []
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{receiver.server_address[1]}/hook", _Receiver.received
    receiver.shutdown()
    receiver.server_close()


def _endpoint_resource(world, url: str) -> ServingEndpointResource:
    paths = ServingPaths.for_role(world.settings, "production")
    return ServingEndpointResource(
        url=url, admin_token=ADMIN_TOKEN, prediction_log_path=str(paths.predictions), plan_path=str(paths.plan)
    )


def _traffic(url: str, start: int, n: int) -> None:
    with EndpointClient(url) as client:
        for i in range(start, start + n):
            client.predict(transaction(i))  # an answer is sent after its log commit: the sensor sees it


def _tick(resource, registry_resource, cursor):
    with dg.build_sensor_context(
        cursor=cursor, resources={"serving_endpoint": resource, "model_registry": registry_resource}
    ) as context:
        result = canary_rollback_sensor(context)
        return result, context.cursor


@pytest.mark.parametrize("canary,rolled_back", [("3", True), ("2", False)], ids=["bad canary", "good canary"])
def test_canary_sensor_rolls_back_only_a_bad_canary(world, webhook, canary, rolled_back):
    webhook_url, alerts = webhook
    with running_endpoint(world, free_port()) as (url, _):
        resource = _endpoint_resource(world, url)
        client = world.client()
        with world.duckdb() as con:
            registry.move_alias(client, con, registry.CHALLENGER, canary, "test: rollout of this version", {})
        with EndpointClient(url, ADMIN_TOKEN) as admin:
            admin.traffic("canary under test", champion_version="1", canary_version=canary, canary_share=0.5)
        cursor = None
        outcomes = []
        for tick in range(RULES.consecutive):
            _traffic(url, 10_000 * (tick + 1) + int(canary) * 100_000, 2 * RULES.min_requests + 40)
            result, cursor = _tick(resource, ModelRegistry.for_settings(world.settings), cursor)
            outcomes.append(result)
        with EndpointClient(url) as c:
            deployment = c.deployment()
        if not rolled_back:
            assert all(isinstance(r, dg.SkipReason) for r in outcomes), outcomes
            assert "0/2 bad windows" in outcomes[-1].skip_message
            assert deployment["canary_version"] == canary
            return
        assert isinstance(outcomes[0], dg.SkipReason) and "1/2 bad windows" in outcomes[0].skip_message
        request = outcomes[-1]
        assert isinstance(request, dg.RunRequest), outcomes
        assert (
            deployment["canary_version"] is None and deployment["champion_version"] == "1"
        )  # drained by the sensor itself
        # Nothing new to judge on the next tick: no second request.
        again, _ = _tick(resource, ModelRegistry.for_settings(world.settings), cursor)
        assert isinstance(again, dg.SkipReason)

        result = dg.materialize(
            [canary_rollback],
            run_config=request.run_config,
            resources={
                "model_registry": ModelRegistry.for_settings(world.settings),
                "warehouse": DuckDBResource(database=str(world.settings.duckdb_path)),
                "serving_endpoint": resource,
                "alerts": AlertResource(webhook_url=webhook_url),
            },
        )
        assert result.success
    assert registry.alias_version(client, registry.CHALLENGER) is None
    assert registry.alias_version(client, registry.CHAMPION) == "1"
    assert (
        client.get_model_version(registry.MODEL_NAME, canary)
        .tags["rolled_back"]
        .startswith(f"canary {canary} broke the rules")
    )
    with world.duckdb() as con:
        last = registry.history(con).iloc[-1]
    assert (last["alias"], last["from_version"], last["to_version"]) == ("challenger", canary, None)
    assert "consecutive windows" in last["reason"]
    assert len(alerts) == 1 and f"version {canary}" in alerts[0]["text"]


def _register_bad_model(world) -> tuple[str, str]:
    """Another version of the coin-flip model (threshold 0.1: flags almost every request): (version, run id)."""
    client = world.client()
    experiment = client.get_experiment_by_name("serving-tests").experiment_id
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            info = mlflow.onnx.log_model(onnx.load_from_string(tiny_model_onnx(3, True)), name="model")
        # Registered while the fluent API points at this store: registration resolves the logged model there.
        version = registry.register_version(
            client, run.info.run_id, "model", tags={"threshold": "0.1"}, model_uri=info.model_uri
        )
        return version, run.info.run_id
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize(
    "offline_like_live,rolled_back", [(True, False), (False, True)], ids=["as offline", "unlike offline"]
)
def test_canary_sensor_judges_a_canary_against_its_own_test_split_too(world, offline_like_live, rolled_back):
    """A canary far from the champion is left alone when it scores and flags as it did on its own test split (after a
    drift, a model that learnt the new pattern must differ from a blind champion), and rolled back when it is
    unlike both."""
    canary, run_id = _register_bad_model(world)
    with running_endpoint(world, free_port()) as (url, _):
        resource = _endpoint_resource(world, url)
        model_registry = ModelRegistry.for_settings(world.settings)
        with world.duckdb() as con:
            registry.move_alias(world.client(), con, registry.CHALLENGER, canary, "test: rollout of this version", {})
        try:
            with EndpointClient(url, ADMIN_TOKEN) as admin:
                # Its "test split": the model's own scores of other transactions, served alone for a moment.
                admin.traffic("offline run of the canary", champion_version=canary)
            with EndpointClient(url) as scorer:
                own = [scorer.predict(transaction(900_000 + i))["fraud_probability"] for i in range(300)]
            offline = own if offline_like_live else [0.001] * len(own)
            world.client().log_dict(
                run_id,
                {"score": offline, "is_fraud": [0] * len(offline), "threshold": 0.1},
                registry.CBPE_REFERENCE_ARTIFACT,
            )
            with EndpointClient(url, ADMIN_TOKEN) as admin:
                admin.traffic("canary under test", champion_version="1", canary_version=canary, canary_share=0.5)
            cursor, outcomes = None, []
            for tick in range(RULES.consecutive):
                _traffic(url, 10_000 * (tick + 1) + int(canary) * 100_000, 2 * RULES.min_requests + 40)
                result, cursor = _tick(resource, model_registry, cursor)
                outcomes.append(result)
            expected = json.loads(cursor)["expected"]
            assert expected["rows"] == 300 and expected["flag_rate"] == (1.0 if offline_like_live else 0.0)
            if rolled_back:
                assert isinstance(outcomes[-1], dg.RunRequest), outcomes
                reason = outcomes[-1].run_config["ops"]["canary_rollback"]["config"]["reason"]
                assert "around its own test split's 0.000" in reason and "vs its own test split" in reason
            else:
                assert all(isinstance(r, dg.SkipReason) for r in outcomes), [
                    getattr(r, "skip_message", r) for r in outcomes
                ]
                assert "0/2 bad windows" in outcomes[-1].skip_message
        finally:
            with EndpointClient(url, ADMIN_TOKEN) as admin:
                admin.traffic("test over", champion_version="1")
            with world.duckdb() as con:
                registry.move_alias(world.client(), con, registry.CHALLENGER, "2", "test over", {})
