"""Tier 2: the A/B verdict through the real assets and sensor, against a real endpoint process and registry.

A canary that passed its soak is held by champion_model (an A/B test starts, production unchanged); it answers
its share of accounts over HTTP; the log is copied into the warehouse; labels land. The daily ab_verdict asset
says "not yet decidable" before the labels matured, then "worse" (ab_verdict_sensor drains the canary and asks
for canary_rollback_job) or "better" (the sensor asks for promote_job, and champion_model promotes it as the
verdict's act). The labels are written by the test per arm, from the decisions the endpoint logged: the test
decides the outcome, the platform has to find it.

The warehouse's days are on the tests' partition calendar (June 2026) while the endpoint's clock is the serving
world's (November 2026): ab_verdict reads event days from marts.transactions_enriched, as in production.
"""

import dataclasses
import datetime as dt
import os
from unittest import mock

import dagster as dg
import pandas as pd
import pytest
from serving_world import free_port, running_endpoint, transaction

from mlops_assets.deployment.registry import champion_model
from mlops_assets.monitoring.ab_verdict import ab_verdict
from mlops_core import ab_tests, registry
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.prediction_log import copy_to_warehouse
from mlops_core.serving.server import ServingPaths
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource
from resources.settings import SettingsResource
from resources.warehouse import WarehouseResource
from sensors.ab_verdict import ab_verdict_sensor

pytestmark = pytest.mark.slow
D0 = dt.date(2026, 6, 1)
MATURITY = 7
AB = {"ab_test_required": "not worse", "ab_min_effect": 1.0, "ab_max_days": 30, "reason": "soak passed"}
HIGH_VALUE = {"name": "high_value", "feature": "amount_usd", "at_least": 100.0}


@pytest.fixture(scope="module")
def live(world, tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("ab") / "warehouse.duckdb"
    with WarehouseResource(database=str(warehouse)).get_connection() as con:
        con.execute("create schema if not exists marts")
        con.execute(
            "create table marts.transactions_enriched (transaction_id varchar, account_id varchar, amount double, "
            "event_date date, event_timestamp timestamp)"
        )
        # The warehouse's newest day before the canary starts: the A/B test counts from the next one.
        con.execute(
            "insert into marts.transactions_enriched values ('before', 'acct0000', 1.0, ?, ?)",
            [D0 - dt.timedelta(days=1), D0],
        )
        con.execute(
            "create table marts.label_events (transaction_id varchar, is_fraud boolean, labeled_at timestamp, landed_date date)"
        )
    with mock.patch.dict(os.environ, world.env()), running_endpoint(world, free_port()) as (url, _):
        paths = ServingPaths.for_role(world.settings, "production")
        resources = {
            "model_registry": ModelRegistry.for_settings(world.settings).model_copy(
                update={"releases_dir": str(warehouse.parent / "releases")}
            ),
            "settings": SettingsResource.of(dataclasses.replace(world.settings, label_maturity_days=MATURITY)),
            "warehouse": WarehouseResource(database=str(warehouse)),
            "serving_endpoint": ServingEndpointResource(
                url=url,
                admin_token=os.environ["MLOPS_ADMIN_TOKEN"],
                prediction_log_path=str(paths.predictions),
                plan_path=str(paths.plan),
            ),
        }
        yield url, resources


def _start_canary(world, url, resources, excluded=()):
    with resources["warehouse"].get_connection() as con:
        for alias, version in ((registry.CHAMPION, "1"), (registry.CHALLENGER, "2")):
            if registry.alias_version(world.client(), alias) != version:
                registry.move_alias(world.client(), con, alias, version, "test reset", {})
    with EndpointClient(url, admin_token=os.environ["MLOPS_ADMIN_TOKEN"]) as client:
        client.traffic(
            "canary for an A/B test",
            champion_version="1",
            canary_version="2",
            canary_share=0.5,
            canary_excluded=list(excluded),
        )


def _promote(resources, tags=None, **config):
    return dg.materialize(
        [champion_model],
        resources=resources,
        run_config={"ops": {"champion_model": {"config": {**AB, **config}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        tags=tags,
    )


def _materialized(result) -> bool:
    return any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)


def _serve(url, resources, first_id: int, count: int, first_day: dt.date, amounts=None) -> pd.DataFrame:
    """Send `count` transactions over HTTP, record them in the warehouse on three event days from `first_day`,
    copy the endpoint's log in. Returns the answers with account, amount and event day."""
    bodies = [transaction(first_id + i) for i in range(count)]
    if amounts is not None:
        bodies = [{**b, "amount": amounts(i)} for i, b in enumerate(bodies)]
    with EndpointClient(url) as client:
        answers = pd.DataFrame([client.predict(b) for b in bodies])
    answers["account_id"] = [b["account_id"] for b in bodies]
    answers["amount"] = [b["amount"] for b in bodies]
    answers["event_date"] = [first_day + dt.timedelta(days=i % 3) for i in range(count)]
    events = answers[["transaction_id", "account_id", "amount", "event_date"]].copy()
    events["event_timestamp"] = pd.to_datetime(events["event_date"])
    with resources["warehouse"].get_connection() as con:
        con.register("_events", events)
        con.execute("insert into marts.transactions_enriched select * from _events")
        copy_to_warehouse(con, resources["serving_endpoint"].prediction_log_path)
    return answers


def _label(resources, answers: pd.DataFrame, miss_rate: dict[str, float], landed: dt.date) -> None:
    """Every flagged transaction is a fraud (no false alarm); in each arm, `miss_rate` of its rows are frauds it
    did not flag: each arm's cost per transaction is 20 x its miss rate."""
    rows = []
    for variant, group in answers.groupby("variant"):
        unflagged = group[~group["is_fraud"]]
        misses = set(unflagged["transaction_id"].head(round(miss_rate[variant] * len(group))))
        for tx, flagged in zip(group["transaction_id"], group["is_fraud"]):
            rows.append((tx, bool(flagged) or tx in misses, dt.datetime.combine(landed, dt.time()), landed))
    labels = pd.DataFrame(rows, columns=["transaction_id", "is_fraud", "labeled_at", "landed_date"])
    with resources["warehouse"].get_connection() as con:
        con.register("_labels", labels)
        con.execute("insert into marts.label_events select * from _labels")


def _verdict(resources, day: dt.date):
    result = dg.materialize(
        [ab_verdict], resources=resources, partition_key=day.isoformat(), instance=dg.DagsterInstance.ephemeral()
    )
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("ab_verdict")[0].metadata.items()}
    (check,) = result.get_asset_check_evaluations()
    return metadata, check


def _tick(resources, cursor=None):
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"warehouse": resources["warehouse"], "serving_endpoint": resources["serving_endpoint"]},
    )
    return ab_verdict_sensor(context), context.cursor


def test_a_worse_canary_is_held_then_drained_and_rolled_back_on_its_verdict(world, live):
    url, resources = live
    _, cursor = _tick(resources)  # what earlier tests ended is acted on before this canary starts
    _start_canary(world, url, resources)
    with resources["warehouse"].get_connection() as con:
        newest = con.execute("select max(event_date) from marts.transactions_enriched").fetchall()[0][0]
    held = _promote(resources)
    assert held.success and not _materialized(held)
    assert registry.alias_version(world.client(), registry.CHAMPION) == "1"  # production unchanged
    with resources["warehouse"].get_connection() as con:
        test = ab_tests.latest(con, registry.MODEL_NAME, "2")
    first_day = newest + dt.timedelta(days=1)  # the warehouse's newest day was answered before the canary
    assert (test.status, test.started_on, test.canary_share, test.champion_version) == (
        ab_tests.RUNNING,
        first_day,
        0.5,
        "1",
    )
    # A rerun of the rollout neither promotes nor restarts the test.
    assert not _materialized(_promote(resources))

    answers = _serve(url, resources, 20_000, 1400, first_day)
    assert set(answers["variant"]) == {"champion", "canary"}
    _label(resources, answers, {"champion": 0.10, "canary": 0.25}, landed=first_day + dt.timedelta(days=MATURITY + 2))

    # Before the labels matured: nothing to judge yet, the canary keeps answering.
    early, early_check = _verdict(resources, first_day + dt.timedelta(days=3))
    assert (early["verdict"], early["status"], early["canary_rows"]) == ("not yet decidable", ab_tests.RUNNING, 0)
    assert early_check.passed
    requests, cursor = _tick(resources, cursor)
    assert isinstance(requests, dg.SkipReason)

    late, check = _verdict(resources, first_day + dt.timedelta(days=MATURITY + 2))
    assert (late["verdict"], late["status"]) == ("worse", ab_tests.FAILED)
    # Exactly the misses the labels planted, at 20 each: every flagged row is a fraud, so no false alarm.
    arms = answers["variant"].value_counts()
    for variant, rate in (("canary", 0.25), ("champion", 0.10)):
        planted = round(rate * arms[variant])
        assert late[f"{variant}_cost_per_transaction"] == pytest.approx(20 * planted / arms[variant], abs=1e-12)
    assert late["cost_interval_low"] > 0 and not check.passed
    # The champion arm holds only the champion's own accounts: every canary answer and no other is in the canary arm.
    assert late["canary_rows"] == (answers["variant"] == "canary").sum()
    assert late["champion_rows"] == (answers["variant"] == "champion").sum()

    requests, cursor = _tick(resources, cursor)
    (request,) = requests
    assert request.job_name == "canary_rollback_job"
    config = request.run_config["ops"]["canary_rollback"]["config"]
    assert config["canary_version"] == "2" and config["reason"].startswith("A/B verdict worse")
    with EndpointClient(url) as client:
        assert client.deployment()["canary_version"] is None  # drained by the sensor at once
    again, _ = _tick(resources, cursor)
    assert isinstance(again, dg.SkipReason)  # acted once


def test_a_better_canary_is_promoted_as_the_verdicts_act_and_an_excluded_segment_is_left_out(world, live):
    url, resources = live
    _, cursor = _tick(resources)  # what earlier tests ended is acted on before this canary starts
    _start_canary(world, url, resources, excluded=[HIGH_VALUE])
    assert not _materialized(_promote(resources))
    with resources["warehouse"].get_connection() as con:
        test = ab_tests.latest(con, registry.MODEL_NAME, "2")
    assert test.status == ab_tests.RUNNING and test.excluded == [HIGH_VALUE]
    first_day = test.started_on
    # Every 10th transaction is high-value (>= 100 USD): the canary never answers it, and the verdict leaves
    # it out of both arms.
    answers = _serve(url, resources, 40_000, 1600, first_day, amounts=lambda i: 150.0 if i % 10 == 0 else 20.0 + i % 50)
    high = answers["amount"] >= 100
    assert not (answers.loc[high, "variant"] == "canary").any()
    compared = answers[~high]
    _label(resources, compared, {"champion": 0.10, "canary": 0.02}, landed=first_day + dt.timedelta(days=MATURITY + 2))

    metadata, check = _verdict(resources, first_day + dt.timedelta(days=MATURITY + 2))
    assert (metadata["verdict"], metadata["status"]) == ("better", ab_tests.PASSED) and check.passed
    assert metadata["excluded_rows"] == high.sum()
    assert metadata["canary_rows"] == (compared["variant"] == "canary").sum()
    assert registry.alias_version(world.client(), registry.CHAMPION) == "1"  # the sensor promotes, not the verdict

    (request,), _ = _tick(resources, cursor)
    assert request.job_name == "promote_job"
    promoted = _promote(resources, **request.run_config["ops"]["champion_model"]["config"])
    assert promoted.success and _materialized(promoted)
    assert registry.alias_version(world.client(), registry.CHAMPION) == "2"
    with resources["warehouse"].get_connection() as con:
        last = registry.history(con).iloc[-1]
    assert (last["alias"], last["to_version"], last["actor"]) == ("champion", "2", "ab_verdict")
    assert last["reason"].startswith("A/B verdict better")


def test_a_retraining_for_a_degraded_champion_goes_to_production_without_waiting_for_a_verdict(world, live):
    """rollout.ab_test.unless_champion_degraded: the run performance_sensor launched is promoted after its canary,
    and the alias history says why no A/B test ran."""
    url, resources = live
    _, cursor = _tick(resources)
    _start_canary(world, url, resources)
    assert not _materialized(_promote(resources))  # a drift-triggered rollout of it is held for a verdict
    urgent = _promote(resources, tags={"mlops/trigger": "performance_sensor"})
    assert urgent.success and _materialized(urgent)
    assert registry.alias_version(world.client(), registry.CHAMPION) == "2"
    with resources["warehouse"].get_connection() as con:
        last = registry.history(con).iloc[-1]
        test = ab_tests.latest(con, registry.MODEL_NAME, "2")
    assert last["reason"].endswith("(no A/B test: launched by performance_sensor because the champion degraded)")
    # The test that was running ends with the promotion: its end can never roll the new champion back.
    assert test.status == ab_tests.SUPERSEDED and "version 2 was promoted" in test.reason
    with resources["warehouse"].get_connection() as con:
        assert ab_tests.running(con, registry.MODEL_NAME) == []
