"""Fault: the serving process is SIGKILLed in the middle of a rollout, during the canary stage.

A real `mlops serve` process, the real rollout assets and registry. The rollout runs in a
thread; when the endpoint reports the canary, the process is killed (no shutdown hook runs).
The rollout fails at the canary check without moving an alias; the restarted endpoint
resumes the recorded plan, whose champion is the registry's; requests answered before the
kill are in the prediction log; and rerunning the rollout completes.
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

from mlops_assets.deployment.rollout import canary_endpoint, production_endpoint, shadow_endpoint, staging_endpoint
from mlops_assets.training.registry import champion_model
from mlops_core import registry
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.plan import TrafficPlan
from mlops_core.serving.prediction_log import read_predictions
from mlops_core.serving.server import ServingPaths
from resources.mlflow import mlflow_resource
from resources.serving import ServingEndpointResource

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
            "mlflow": mlflow_resource(world.settings),
            "warehouse": DuckDBResource(database=str(world.settings.duckdb_path)),
            "serving_endpoint": ServingEndpointResource(
                url=url, admin_token=os.environ["MLOPS_ADMIN_TOKEN"], prediction_log_path=str(paths.predictions), plan_path=str(paths.plan)
            ),
        }
        client = world.client()
        with running_endpoint(world, port) as (_, pid):
            outcome = {}
            # The canary soaks on real traffic for a while; the kill lands inside that wait.
            rollout = threading.Thread(
                target=lambda: outcome.update(result=dg.materialize(
                    STAGES, run_config=_config({"wait_seconds": 6.0, "min_requests": 50}), resources=resources, raise_on_error=False
                ))
            )
            rollout.start()
            deadline = time.monotonic() + 120
            with EndpointClient(url) as endpoint:
                while endpoint.deployment()["canary_version"] is None:
                    assert time.monotonic() < deadline and rollout.is_alive(), "the rollout never reached the canary stage"
                    time.sleep(0.05)
                answered = [endpoint.predict(transaction(50_000 + i))["transaction_id"] for i in range(40)]
            time.sleep(0.3)  # the log commits every 50 ms; what was committed must survive the kill
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
            assert restarted["champion_version"] == registry.alias_version(client, registry.CHAMPION) == plan_at_kill.champion_version
            assert (restarted["canary_version"], restarted["canary_share"]) == ("2", 0.5)
            assert served in {"1", "2"}
            assert set(answered) <= logged, "a request answered before the kill is missing from the prediction log"

            rerun = dg.materialize(STAGES, run_config=_config({"replay_requests": 300}), resources=resources, raise_on_error=False)
            assert rerun.success
            with EndpointClient(url) as endpoint:
                final = endpoint.deployment()
                final_answer = endpoint.predict(transaction(70_000))["model_version"]
        assert registry.alias_version(client, registry.CHAMPION) == "2" == final["champion_version"] == final_answer
        assert final["canary_version"] is None and final["previous_champion_version"] == "1"
        assert TrafficPlan.load(paths.plan).champion_version == "2"
    record(
        "faults", "serving process killed mid-rollout",
        what="rollout_job's stages against a live `mlops serve`; SIGKILL of the server's process group while the canary "
        "(version 2, 50%) soaks; restart; rerun the rollout",
        expected="the run fails at canary_healthy with no alias moved; the restarted endpoint resumes the recorded plan, its "
        "champion equal to the registry's; answered requests logged; the rerun completes",
        observed=f"run failed at canary_healthy, champion alias 1; restarted endpoint: champion {restarted['champion_version']}, canary "
        f"{restarted['canary_version']} at {restarted['canary_share']}; {len(answered)}/{len(answered)} answered requests in the log; "
        f"rerun succeeded: champion 2 in registry, endpoint and plan, previous 1",
        test="test_fault_serving_killed.py::test_serving_killed_mid_canary_restarts_to_the_recorded_plan_and_the_rollout_completes",
    )
