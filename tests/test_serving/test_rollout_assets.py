"""Tier 2: the rollout assets against a real endpoint process, registry and warehouse.

A sound challenger goes staging -> shadow -> canary -> champion -> production; a bad one
is stopped by the canary check, drained, and the champion keeps serving.
"""

import os
from unittest import mock

import dagster as dg
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource
from serving_world import free_port, running_endpoint, transaction

from mlops_assets.deployment.registry import champion_model
from mlops_assets.deployment.rollout import canary_endpoint, production_endpoint, shadow_endpoint, staging_endpoint
from mlops_core import registry
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.server import ServingPaths
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource
from resources.settings import SettingsResource

pytestmark = pytest.mark.slow
STAGES = [staging_endpoint, shadow_endpoint, canary_endpoint, champion_model, production_endpoint]
RUN_CONFIG = {
    "ops": {
        "staging_endpoint": {"config": {"requests": 60}},
        "shadow_endpoint": {"config": {"replay_requests": 150, "min_requests": 100}},
        "canary_endpoint": {"config": {"replay_requests": 300, "share": 0.5}},
        "champion_model": {"config": {"reason": "rollout test"}},
    }
}


@pytest.fixture(scope="module")
def live(world):
    frame = pd.DataFrame([transaction(i) for i in range(400)])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"]).dt.tz_convert("UTC").dt.tz_localize(None)
    with world.duckdb() as con:
        con.execute("create schema if not exists marts")
        con.execute("create or replace table marts.transactions_enriched as select * from frame")
    with mock.patch.dict(os.environ, world.env()), running_endpoint(world, free_port()) as (url, _):
        paths = ServingPaths.for_role(world.settings, "production")
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
        yield url, resources


def _rollout(resources, shadow_agreement: float = 0.9):
    config = {"ops": {**RUN_CONFIG["ops"]}}
    config["ops"]["shadow_endpoint"] = {
        "config": {**RUN_CONFIG["ops"]["shadow_endpoint"]["config"], "min_decision_agreement": shadow_agreement}
    }
    return dg.materialize(STAGES, run_config=config, resources=resources, raise_on_error=False)


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _metadata(result, key):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return event.materialization.metadata


def test_a_sound_challenger_rolls_out_stage_by_stage(world, live):
    url, resources = live
    # Version 2 is the sound one; the bad-challenger test, in whatever order it ran, pointed the alias at 3.
    with world.duckdb() as con:
        registry.move_alias(world.client(), con, registry.CHALLENGER, "2", "test: the sound challenger", {})
    result = _rollout(resources)
    assert result.success
    staging = _metadata(result, "staging_endpoint")
    assert staging["errors"].value == 0
    # Judged on the server's own time of 1,000 timed requests after 50 warm-up; the client's clock is recorded beside it.
    assert (staging["timed_requests"].value, staging["warmup_requests"].value) == (1000, 50)
    assert 0 < staging["server_p99_ms"].value < 50 and staging["server_p99_ms"].value <= staging["client_p99_ms"].value
    assert _metadata(result, "shadow_endpoint")["decision_agreement"].value == 1.0
    assert _metadata(result, "canary_endpoint")["canary_requests"].value >= 50
    assert _metadata(result, "production_endpoint")["traffic_split"].value == "champion 2 100%"
    assert registry.alias_version(world.client(), registry.CHAMPION) == "2"
    with EndpointClient(url) as client:
        deployment = client.deployment()
        assert client.predict(transaction(9999))["model_version"] == "2"
    assert (deployment["champion_version"], deployment["previous_champion_version"], deployment["canary_version"]) == (
        "2",
        "1",
        None,
    )


def test_a_bad_challenger_is_stopped_by_shadow_or_canary_and_drained(world, live):
    url, resources = live
    client = world.client()
    champion_before = registry.alias_version(client, registry.CHAMPION)
    with world.duckdb() as con:
        registry.move_alias(client, con, registry.CHALLENGER, "3", "test: a bad challenger", {})
    # Shadow agreement alone stops it ...
    result = _rollout(resources)
    assert not result.success and _checks(result)["shadow_agreement_within_bounds"] is False
    with EndpointClient(url) as endpoint:
        assert endpoint.deployment()["shadow_version"] is None
    # ... and with that gate opened, the canary check does.
    result = _rollout(resources, shadow_agreement=0.0)
    assert not result.success
    checks = _checks(result)
    assert checks["shadow_agreement_within_bounds"] is True and checks["canary_healthy"] is False
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "champion_model" not in materialized and "production_endpoint" not in materialized
    assert _metadata(result, "canary_endpoint")["drained_after_failing"].value is True
    assert registry.alias_version(client, registry.CHAMPION) == champion_before
    with EndpointClient(url) as endpoint:
        deployment = endpoint.deployment()
        assert endpoint.predict(transaction(8888))["model_version"] == champion_before
    assert deployment["canary_version"] is None and deployment["shadow_version"] is None


def test_prediction_log_asset_copies_each_logged_prediction_once(world, live):
    from mlops_assets.deployment.prediction_log import TABLE, prediction_log
    from mlops_core.serving.prediction_log import read_predictions

    url, resources = live
    with EndpointClient(url) as client:
        for i in range(30):
            client.predict(transaction(20_000 + i))
    resources = {k: resources[k] for k in ("warehouse", "serving_endpoint")}
    first = dg.materialize([prediction_log], resources=resources)
    with EndpointClient(url) as client:
        client.predict(transaction(20_100))  # answered, so already in the log
    second = dg.materialize([prediction_log], resources=resources)
    assert first.success and second.success
    assert _metadata(second, "prediction_log")["new_rows"].value >= 1
    source = read_predictions(resources["serving_endpoint"].prediction_log_path)
    with world.duckdb() as con:
        copied = con.execute(f"select count(*), count(distinct id) from {TABLE}").fetchone()
        newest = con.execute(f"select transaction_id from {TABLE} order by id desc limit 1").fetchone()[0]
    assert copied == (len(source), len(source))
    assert newest == "t0020100"


def test_production_with_the_endpoint_down_records_the_plan_and_keeps_its_history(world, live, tmp_path):
    from mlops_core.serving.plan import TrafficPlan

    _, resources = live
    plan_path = tmp_path / "plan.json"
    earlier = TrafficPlan(champion_version="1", reason="an earlier rollout")
    earlier.followed_by(TrafficPlan(champion_version="1", reason="a restart")).save(plan_path)
    down = {
        "model_registry": resources["model_registry"],
        "warehouse": resources["warehouse"],
        "serving_endpoint": ServingEndpointResource(
            url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
            admin_token="unused",
            prediction_log_path=str(tmp_path / "predictions.sqlite"),
            plan_path=str(plan_path),
        ),
    }
    result = dg.materialize([production_endpoint], resources=down)
    assert result.success and _metadata(result, "production_endpoint")["endpoint_running"].value is False
    champion = registry.alias_version(world.client(), registry.CHAMPION)
    plan = TrafficPlan.load(plan_path)
    assert plan.champion_version == champion and plan.reason == f"production: champion version {champion}"
    # The replaced plan is appended to the history it had, as a running endpoint does.
    assert [entry["reason"] for entry in plan.history] == ["an earlier rollout", "a restart"]
