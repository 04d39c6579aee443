"""The GitOps record: a release file written on promotion and on rollback, committed to a branch of a git
remote (a local bare repository), refused by the loader when its ONNX hash does not match, and a promotion
undone when its release cannot be recorded."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_cli.release import release
from mlops_core import registry, releases
from mlops_core.serving.models import ModelLoadError, download_onnx, load_version
from resources.registry import ModelRegistry

BRANCH = "mlops/releases"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def bare_remote(tmp_path) -> Path:
    remote = tmp_path / "gitops.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    return remote


def _registry(world, releases_dir: Path, remote: Path | str) -> ModelRegistry:
    return ModelRegistry.for_settings(world.settings).model_copy(
        update={"releases_dir": str(releases_dir), "releases_git_remote": str(remote)}
    )


def _reset(world) -> None:
    """Back to the world's aliases (champion 1, challenger 2) for the next test."""
    with world.duckdb() as con:
        for alias, version in ((registry.CHAMPION, "1"), (registry.CHALLENGER, "2")):
            if registry.alias_version(world.client(), alias) != version:
                registry.move_alias(world.client(), con, alias, version, "test reset", {})


def test_promotion_and_rollback_write_the_release_file_and_push_a_commit_each(world, tmp_path, bare_remote):
    model_registry = _registry(world, tmp_path / "gitops", bare_remote)
    client = world.client()
    try:
        with world.duckdb() as con:
            model_registry.promote_challenger(con, reason="canary passed", metrics={}, actor="rollout_job")
        promoted = releases.read(tmp_path / "gitops", registry.MODEL_NAME)
        onnx_2, _ = download_onnx(client, "2")
        assert (promoted.version, promoted.previous_version, promoted.action) == ("2", "1", "promote")
        assert promoted.onnx_sha256 == releases.sha256(onnx_2) and promoted.actor == "rollout_job"
        assert promoted.reason == "canary passed" and promoted.model_card.endswith("/model_card.md")
        # Versions 1 and 2 are the same seed: same graph, so the hash alone does not tell them apart; 3 differs.
        assert releases.sha256(download_onnx(client, "3")[0]) != promoted.onnx_sha256

        with world.duckdb() as con:
            model_registry.rollback_champion(con, reason="worse on matured labels", actor="oncall")
        rolled = releases.read(tmp_path / "gitops", registry.MODEL_NAME)
        assert (rolled.version, rolled.previous_version, rolled.action, rolled.actor) == (
            "1",
            "2",
            "rollback",
            "oncall",
        )

        # The remote's branch holds one commit per change, the newest one with the file as written.
        log = _git(bare_remote, "log", "--format=%s", BRANCH).splitlines()
        assert log == [
            f"{registry.MODEL_NAME}: rollback to version 1 (was 2)",
            f"{registry.MODEL_NAME}: promote to version 2 (was 1)",
        ]
        shown = _git(bare_remote, "show", f"{BRANCH}:{registry.MODEL_NAME}.yaml")
        assert releases.Release.from_yaml(shown) == rolled
    finally:
        _reset(world)


def test_a_second_clone_continues_the_branch_instead_of_forking_it(world, tmp_path, bare_remote):
    """Two platform instances (or a wiped releases dir) write to one branch: each commit builds on the last."""
    try:
        for n, releases_dir in enumerate((tmp_path / "a", tmp_path / "b")):
            with world.duckdb() as con:
                _registry(world, releases_dir, bare_remote).promote_challenger(
                    con, reason=f"promotion {n}", metrics={}, actor="test"
                )
            _reset(world)
        assert len(_git(bare_remote, "log", "--format=%H", BRANCH).splitlines()) == 2
    finally:
        _reset(world)


def test_a_release_that_cannot_be_pushed_undoes_the_promotion(world, tmp_path):
    model_registry = _registry(world, tmp_path / "gitops", tmp_path / "no-such-remote.git")
    try:
        with world.duckdb() as con, pytest.raises(registry.RegistryError, match="release file could not be written"):
            model_registry.promote_challenger(con, reason="canary passed", metrics={}, actor="rollout_job")
        assert registry.alias_version(world.client(), registry.CHAMPION) == "1"
        with world.duckdb() as con:
            last = registry.history(con).iloc[-1]
        assert (last["alias"], last["from_version"], last["to_version"], last["actor"]) == (
            "champion",
            "2",
            "1",
            "release_record",
        )
        assert "promote undone" in last["reason"]
    finally:
        _reset(world)


def test_the_loader_refuses_a_version_whose_onnx_does_not_match_its_release(world, tmp_path):
    client = world.client()
    onnx_1, _ = download_onnx(client, "1")
    good = releases.sha256(onnx_1)
    # One hex digit off at the very end: a prefix match would let it through.
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    for sha, refused in ((good, False), (bad, True)):
        release = releases.Release(
            registered_model=registry.MODEL_NAME,
            version="1",
            onnx_sha256=sha,
            data_version=None,
            code_version=None,
            trained_through=None,
            run_id=None,
            model_card=None,
        )
        releases.write(tmp_path, release)
        if refused:
            with pytest.raises(ModelLoadError, match=f"sha256 {bad}.*hashes to {good}: refusing"):
                load_version(client, "1", releases_dir=tmp_path)
        else:
            assert load_version(client, "1", releases_dir=tmp_path).version == "1"
    # A version the release does not name (a canary) is not judged by it.
    assert load_version(client, "3", releases_dir=tmp_path).version == "3"


def test_release_diff_shows_what_promoting_the_challenger_would_change(world, tmp_path, monkeypatch):
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_RELEASES_DIR", str(tmp_path))
    releases.write(
        tmp_path,
        releases.release_of(
            world.client(), registry.MODEL_NAME, "1", action="promote", previous_version=None, actor="t", reason="t"
        ),
    )
    with world.duckdb() as con:
        registry.move_alias(world.client(), con, registry.CHALLENGER, "3", "test: a different graph", {})
    try:
        result = CliRunner().invoke(release, ["diff"])
        assert result.exit_code == 0, result.output
        assert "(now: version 1)" in result.output and "promotion of version 3" in result.output
        assert "  version:\n    - 1\n    + 3" in result.output and "onnx_sha256:" in result.output
        assert "actor" not in result.output  # who and why always change: not a difference to review
    finally:
        _reset(world)


def test_one_homes_releases_never_follow_a_process_into_the_next_home(tmp_path, monkeypatch):
    """Settings.export() publishes paths to children; the releases dir is derived from MLOPS_HOME instead, so a
    second home built in the same process (a simulation after another, a test after another) gets its own."""
    from mlops_core.settings import Settings

    monkeypatch.delenv("MLOPS_RELEASES_DIR", raising=False)
    first = Settings.from_env({"MLOPS_HOME": str(tmp_path / "a")})
    assert first.releases_dir == tmp_path / "a" / "releases"
    assert "MLOPS_RELEASES_DIR" not in first.environment()
    exported = {**os.environ, **first.environment()}  # what a child of the first home's process sees
    second = Settings.from_env({**exported, "MLOPS_HOME": str(tmp_path / "b")})
    assert second.releases_dir == tmp_path / "b" / "releases"
    # Set by the caller, it is kept: production points it at the GitOps clone.
    assert Settings.from_env(
        {"MLOPS_HOME": str(tmp_path / "b"), "MLOPS_RELEASES_DIR": "/srv/gitops"}
    ).releases_dir == Path("/srv/gitops")
