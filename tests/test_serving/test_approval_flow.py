"""The optional human approval through the real champion_model asset: a challenger waits, production unchanged;
approved it is promoted as the approver's act; rejected the challenger is removed; a wrong version is refused."""

import dagster as dg

from mlops_assets.deployment.registry import champion_model
from mlops_core import approvals, registry
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource
from resources.warehouse import WarehouseResource


def _materialize(world, tmp_path, **config):
    return dg.materialize(
        [champion_model],
        resources={
            "model_registry": ModelRegistry.for_settings(world.settings).model_copy(
                update={"releases_dir": str(tmp_path / "releases")}
            ),
            "warehouse": WarehouseResource(database=str(world.settings.duckdb_path)),
            # Never called: no A/B test is required here.
            "serving_endpoint": ServingEndpointResource(
                url="http://127.0.0.1:9",
                prediction_log_path=str(tmp_path / "none.db"),
                plan_path=str(tmp_path / "plan.json"),
            ),
        },
        run_config={"ops": {"champion_model": {"config": {"require_approval": True, **config}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _materialized(result) -> bool:
    return any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events)


def _reset(world):
    with world.duckdb() as con:
        for alias, version in ((registry.CHAMPION, "1"), (registry.CHALLENGER, "2")):
            if registry.alias_version(world.client(), alias) != version:
                registry.move_alias(world.client(), con, alias, version, "test reset", {})


def test_a_challenger_waits_then_is_promoted_as_the_approvers_act(world, tmp_path):
    client = world.client()
    try:
        waiting = _materialize(world, tmp_path)
        assert waiting.success and not _materialized(waiting)
        assert registry.alias_version(client, registry.CHAMPION) == "1"  # production as it was
        with world.duckdb() as con:
            pending = approvals.latest(con, registry.MODEL_NAME, "2")
        assert pending.status == approvals.PENDING and pending.evidence["model_card"].endswith("/model_card.md")
        # A rerun of the rollout neither promotes nor asks twice.
        assert not _materialized(_materialize(world, tmp_path))
        # A decision about another version is refused, and changes nothing.
        wrong = _materialize(world, tmp_path, decision="approve", decision_version="3", actor="alice", reason="ok")
        assert not wrong.success and registry.alias_version(client, registry.CHAMPION) == "1"

        approved = _materialize(
            world,
            tmp_path,
            decision="approve",
            decision_version="2",
            actor="alice",
            reason="recall up on matured labels",
        )
        assert approved.success and _materialized(approved)
        assert registry.alias_version(client, registry.CHAMPION) == "2"
        with world.duckdb() as con:
            last = registry.history(con).iloc[-1]
        assert (last["alias"], last["to_version"], last["actor"]) == ("champion", "2", "alice")
        assert last["reason"] == "approved by alice: recall up on matured labels"
    finally:
        _reset(world)


def test_a_rejected_challenger_is_removed_and_production_is_unchanged(world, tmp_path):
    client = world.client()
    with world.duckdb() as con:
        registry.move_alias(client, con, registry.CHALLENGER, "3", "test: another candidate", {})
    try:
        assert not _materialized(_materialize(world, tmp_path))
        rejected = _materialize(
            world, tmp_path, decision="reject", decision_version="3", actor="bob", reason="flags 9% of traffic"
        )
        assert rejected.success and not _materialized(rejected)
        assert registry.alias_version(client, registry.CHALLENGER) is None
        assert registry.alias_version(client, registry.CHAMPION) == "1"
        with world.duckdb() as con:
            last = registry.history(con).iloc[-1]
            decided = approvals.latest(con, registry.MODEL_NAME, "3")
        assert (last["alias"], last["from_version"], last["to_version"], last["actor"]) == (
            "challenger",
            "3",
            None,
            "bob",
        )
        assert decided.status == approvals.REJECTED and decided.reason == "flags 9% of traffic"
    finally:
        _reset(world)


def test_without_approval_nothing_changes(world, tmp_path):
    try:
        result = _materialize(world, tmp_path, require_approval=False, reason="canary passed", actor="rollout_job")
        assert result.success and _materialized(result)
        assert registry.alias_version(world.client(), registry.CHAMPION) == "2"
    finally:
        _reset(world)
