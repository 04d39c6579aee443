"""Fault: the serving process is SIGKILLed, under load and in the middle of a rollout.

Under load: four clients score without pause; once hundreds are answered the server's process
group gets SIGKILL, and every request that was answered must be in the prediction log (the
endpoint answers only after the request's log commit).

Mid-rollout: a real `mlops serve` process, the real rollout assets and registry. The rollout
runs in a thread; when the endpoint reports the canary, the process is killed (no shutdown
hook runs). The rollout fails at the canary check without moving an alias; the restarted
endpoint resumes the recorded plan, whose champion is the registry's; requests answered just
before the kill are in the prediction log; and rerunning the rollout completes.
"""

import os
import signal
import threading
import time
from unittest import mock

import dagster as dg
import httpx
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource
from reliability_results import record
from serving_world import build_world, free_port, running_endpoint, transaction

from mlops_assets.deployment.registry import champion_model
from mlops_assets.deployment.rollout import canary_endpoint, production_endpoint, shadow_endpoint, staging_endpoint
from mlops_core import registry
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.plan import TrafficPlan
from mlops_core.serving.prediction_log import read_predictions
from mlops_core.serving.server import ServingPaths
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource
from resources.settings import SettingsResource

pytestmark = pytest.mark.slow
STAGES = [staging_endpoint, shadow_endpoint, canary_endpoint, champion_model, production_endpoint]


def _config(canary: dict) -> dict:
    return {
        "ops": {
            "staging_endpoint": {"config": {"requests": 60}},
            "shadow_endpoint": {"config": {"replay_requests": 150, "min_requests": 100}},
            "canary_endpoint": {"config": {"share": 0.5, **canary}},
            "champion_model": {"config": {"reason": "reliability test"}},
        }
    }


def test_serving_killed_mid_canary_restarts_to_the_recorded_plan_and_the_rollout_completes(tmp_path):
    world = build_world(tmp_path / "world")
    frame = pd.DataFrame([transaction(i) for i in range(400)])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"]).dt.tz_convert("UTC").dt.tz_localize(None)
    with world.duckdb() as con:
        con.execute("create schema if not exists marts")
        con.execute("create or replace table marts.transactions_enriched as select * from frame")
    port = free_port()
    paths = ServingPaths.for_role(world.settings, "production")
    url = f"http://127.0.0.1:{port}"
    with mock.patch.dict(os.environ, world.env()):
        resources = {
            "model_registry": ModelRegistry.for_settings(world.settings),
            "settings": SettingsResource.of(world.settings),
            "warehouse": DuckDBResource(database=str(world.settings.duckdb_path)),
            "serving_endpoint": ServingEndpointResource(
                url=url,
                admin_token=os.environ["MLOPS_ADMIN_TOKEN"],
                prediction_log_path=str(paths.predictions),
                plan_path=str(paths.plan),
            ),
        }
        client = world.client()
        with running_endpoint(world, port) as (_, pid):
            outcome = {}
            # The canary soaks on real traffic for a while; the kill lands inside that wait.
            rollout = threading.Thread(
                target=lambda: outcome.update(
                    result=dg.materialize(
                        STAGES,
                        run_config=_config({"wait_seconds": 6.0, "min_requests": 50}),
                        resources=resources,
                        raise_on_error=False,
                    )
                )
            )
            rollout.start()
            deadline = time.monotonic() + 120
            with EndpointClient(url) as endpoint:
                while endpoint.deployment()["canary_version"] is None:
                    assert time.monotonic() < deadline and rollout.is_alive(), (
                        "the rollout never reached the canary stage"
                    )
                    time.sleep(0.05)
                answered = [endpoint.predict(transaction(50_000 + i))["transaction_id"] for i in range(40)]
            # No pause: an answer is sent after its log commit, so the kill right after it loses nothing.
            plan_at_kill = TrafficPlan.load(paths.plan)
            os.killpg(pid, signal.SIGKILL)
            rollout.join(timeout=120)
        result = outcome["result"]
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert not result.success and checks["canary_healthy"] is False
        assert "champion_model" not in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert (plan_at_kill.champion_version, plan_at_kill.canary_version) == ("1", "2")
        assert registry.alias_version(client, registry.CHAMPION) == "1"

        with running_endpoint(world, port) as (_, _):
            with EndpointClient(url) as endpoint:
                restarted = endpoint.deployment()
                served = endpoint.predict(transaction(60_000))["model_version"]
            logged = {p["transaction_id"] for p in read_predictions(paths.predictions).to_dict("records")}
            assert (
                restarted["champion_version"]
                == registry.alias_version(client, registry.CHAMPION)
                == plan_at_kill.champion_version
            )
            assert (restarted["canary_version"], restarted["canary_share"]) == ("2", 0.5)
            assert served in {"1", "2"}
            assert set(answered) <= logged, "a request answered before the kill is missing from the prediction log"

            rerun = dg.materialize(
                STAGES, run_config=_config({"replay_requests": 300}), resources=resources, raise_on_error=False
            )
            assert rerun.success
            with EndpointClient(url) as endpoint:
                final = endpoint.deployment()
                final_answer = endpoint.predict(transaction(70_000))["model_version"]
        assert registry.alias_version(client, registry.CHAMPION) == "2" == final["champion_version"] == final_answer
        assert final["canary_version"] is None and final["previous_champion_version"] == "1"
        assert TrafficPlan.load(paths.plan).champion_version == "2"
    record(
        "faults",
        "serving process killed mid-rollout",
        what="rollout_job's stages against a live `mlops serve`; SIGKILL of the server's process group while the canary "
        "(version 2, 50%) soaks; restart; rerun the rollout",
        expected="the run fails at canary_healthy with no alias moved; the restarted endpoint resumes the recorded plan, its "
        "champion equal to the registry's; answered requests logged; the rerun completes",
        observed=f"run failed at canary_healthy, champion alias 1; restarted endpoint: champion {restarted['champion_version']}, canary "
        f"{restarted['canary_version']} at {restarted['canary_share']}; {len(answered)}/{len(answered)} answered requests in the log; "
        f"rerun succeeded: champion 2 in registry, endpoint and plan, previous 1",
        test="test_fault_serving_killed.py::test_serving_killed_mid_canary_restarts_to_the_recorded_plan_and_the_rollout_completes",
    )


WORKERS = 4
ANSWERED_BEFORE_KILL = 400


def test_every_answered_request_is_in_the_log_after_a_kill_under_load(tmp_path):
    world = build_world(tmp_path / "world")
    port = free_port()
    paths = ServingPaths.for_role(world.settings, "production")
    answered: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def score(worker: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for i in range(1, 100_000):
                if stop.is_set():
                    return
                try:
                    response = http.post("/v1/predict", json=transaction(7_000_000 + worker * 100_000 + i))
                except httpx.HTTPError:
                    return  # the server is gone; this request was never answered
                if response.status_code == 200:
                    answered.append(response.json()["transaction_id"])
                else:
                    refused.append(response.status_code)

    with running_endpoint(world, port) as (url, pid):
        clients = [threading.Thread(target=score, args=(w, url)) for w in range(WORKERS)]
        started = time.monotonic()
        for client in clients:
            client.start()
        while len(answered) < ANSWERED_BEFORE_KILL:
            assert time.monotonic() - started < 120 and all(c.is_alive() for c in clients), (len(answered), refused)
            time.sleep(0.005)
        os.killpg(pid, signal.SIGKILL)  # mid-stream: requests are in flight on every connection
        rate = len(answered) / (time.monotonic() - started)
        for client in clients:
            client.join(timeout=30)
        stop.set()
    logged = read_predictions(paths.predictions)
    served = logged[logged["served"] == 1]["transaction_id"]
    missing = set(answered) - set(served)
    assert refused == []
    assert len(answered) >= ANSWERED_BEFORE_KILL and len(set(answered)) == len(answered)
    assert missing == set(), f"{len(missing)} of {len(answered)} answered requests are not in the log"
    assert served.is_unique
    in_flight = len(served) - len(answered)  # logged, then the process died before the answer left
    assert 0 <= in_flight <= WORKERS
    record(
        "faults",
        "serving process killed under load",
        what=f"{WORKERS} clients score without pause on keep-alive connections to a live `mlops serve` ({rate:.0f} answers/s); "
        f"SIGKILL of the server's process group once {ANSWERED_BEFORE_KILL} are answered; the prediction log read afterwards",
        expected="every answered request in the log (an answer is sent after its log commit); at most one logged-but-unanswered request per connection",
        observed=f"{len(answered)} answered, {len(answered) - len(missing)} of them in the log, {len(missing)} missing; "
        f"{in_flight} logged whose answer the kill cut off",
        test="test_fault_serving_killed.py::test_every_answered_request_is_in_the_log_after_a_kill_under_load",
    )
