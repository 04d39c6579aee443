"""The command line as users and CI run it: `mlops demo generate` then `dagster job execute` (the whole chain CI
runs, data layer to rollout, is tests/test_ci_workflows.py's)."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mlops_core.settings import REPO_ROOT
from mlops_core.warm_dbt import SOCKET_DIR_ENV  # the session's warm dbt server, stopped by the session

BIN = Path(sys.executable).parent


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_")) or k == SOCKET_DIR_ENV}
    env["PYTHONWARNINGS"] = "default"  # a warning the code location emits must show in the output
    env["MLOPS_HOME"] = str(tmp_path / "home")
    env["DAGSTER_HOME"] = str(tmp_path / "home" / "dagster_home")
    return env


def test_generate_rejects_an_unknown_scenario(tmp_path):
    out = subprocess.run(
        [BIN / "mlops", "demo", "generate", "--start", "2026-01-01", "--days", "2", "--scenario", "nope"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "nope" in out.stderr and "baseline" in out.stderr


@pytest.mark.slow
def test_dagster_job_execute_runs_the_data_layer_on_a_generated_sample(tmp_path):
    env = _env(tmp_path)
    subprocess.run([BIN / "mlops", "prepare"], env=env, check=True, capture_output=True)
    # prepare makes the state the code location no longer makes when it loads, the admin token included
    assert (tmp_path / "home" / "admin_token").stat().st_mode & 0o777 == 0o600
    gen = subprocess.run(
        [
            BIN / "mlops",
            "demo",
            "generate",
            "--start",
            "2026-02-01",
            "--days",
            "4",
            "--rows-per-day",
            "200",
            "--seed",
            "3",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Wrote 12 files" in gen.stdout
    tags = {"dagster/asset_partition_range_start": "2026-02-01", "dagster/asset_partition_range_end": "2026-02-04"}
    run = subprocess.run(
        [
            BIN / "dagster",
            "job",
            "execute",
            "-m",
            "mlops_assets.definitions",
            "-j",
            "data_layer_job",
            "--tags",
            json.dumps(tags),
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RUN_SUCCESS" in run.stderr + run.stdout
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        days = con.execute(
            "SELECT count(*) FROM raw.load_log WHERE source = 'transactions' AND status = 'accepted'"
        ).fetchone()
        enriched = con.execute("SELECT count(*) FROM marts.transactions_enriched").fetchone()
        raw = con.execute("SELECT count(*) FROM raw.transactions").fetchone()
    assert days == (4,)
    assert enriched == raw and raw[0] > 0
    # The feature store builds from the same warehouse in its own job. Four days hold no
    # matured legitimate labels, so a one-day maturity keeps the training set non-empty.
    config = tmp_path / "features.yaml"
    config.write_text("ops:\n  training_set:\n    config:\n      label_maturity_days: 1\n")
    run = subprocess.run(
        [BIN / "dagster", "job", "execute", "-m", "mlops_assets.definitions", "-j", "feature_job", "-c", str(config)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "check_online_offline_parity' on 'online_features' passed" in run.stderr + run.stdout
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        rows, leaked = con.execute(
            "SELECT count(*), count(*) FILTER (labeled_at > TIMESTAMP '2026-02-05') FROM features.training_set"
        ).fetchone()
    assert rows > 0 and leaked == 0
    assert (tmp_path / "home" / "data" / "online_store.sqlite").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_run_ends_with_a_live_endpoint(tmp_path):
    """The README's main command, end to end: data, features, training, staged rollout, a live endpoint, then
    the churn project trained, scored and served beside fraud."""
    import httpx

    env = _env(tmp_path)
    port = _free_port()
    try:
        run = subprocess.run(
            [BIN / "mlops", "demo", "run", "--days", "180", "--rows-per-day", "600", "--port", str(port)],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        assert f"Live endpoint:     http://127.0.0.1:{port}" in run.stdout
        # The last thing a newcomer reads is the demo's own summary, not DuckDB's exit-time leak report.
        assert "nanobind" not in run.stdout + run.stderr, run.stderr[-2000:]
        # Every declared project after fraud, over the same data layer: churn trained through its own gates,
        # batch-scored, and answered online by the same endpoint.
        assert "churn: hist_gradient_boosting, every declared gate passed" in run.stdout
        assert "scored into project_churn.scores" in run.stdout
        shown = re.search(r"/v1/models/churn/predict .* -d '(\{.*\})'\n  -> (.*)\n", run.stdout)
        assert shown, run.stdout[-3000:]
        body, printed = json.loads(shown.group(1)), json.loads(shown.group(2))
        churn = httpx.post(f"http://127.0.0.1:{port}/v1/models/churn/predict", json=body, timeout=10)
        assert churn.status_code == 200, churn.text
        # The printed answer is the endpoint's own: the same account, version and score when asked again.
        assert churn.json() == printed and printed["account_id"] == body["account_id"]
        assert printed["model_version"] == "1" and 0.0 <= printed["score"] <= 1.0
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()
        # v1, or the version the demo's closed loop promoted: the demo's last lines name it.
        champion = ready["champion_version"]
        assert ready["ready"] is True and champion in ("1", "2", "3")
        assert f"v{champion}" in run.stdout
        with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
            body = (
                con.execute(
                    "select transaction_id, account_id, merchant_id, merchant_category, amount, currency, channel, country, "
                    "strftime(event_timestamp, '%Y-%m-%dT%H:%M:%S') as event_timestamp from marts.transactions_enriched "
                    # The newest: the online store refuses what is older than its allowed lateness.
                    "order by event_timestamp desc, transaction_id limit 1"
                )
                .df()
                .to_dict(orient="records")[0]
            )
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json=body, timeout=10).json()
        assert answer["transaction_id"] == body["transaction_id"] and answer["model_version"] == champion
        assert 0.0 <= answer["fraud_probability"] <= 1.0
    finally:
        stop = subprocess.run(
            [BIN / "mlops", "serve", "--stop", "--port", str(port)], env=env, capture_output=True, text=True
        )
    assert "stopped production server" in stop.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_demo_names_each_project_its_history_is_too_short_for_instead_of_failing(tmp_path, capfd):
    """90 days train fraud, but churn's weekly snapshots need 140: the demo says so and what to run, and runs
    none of churn's jobs (nothing reaches its registry or its schema)."""
    from mlops_cli.demo import _demo_projects
    from mlops_core.settings import Settings

    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    _demo_projects(settings, port=1, days=139)
    shown = capfd.readouterr().out
    assert "churn: not trained: its weekly snapshots need at least 140 days of history" in shown
    assert "this demo landed 139. Run `mlops demo run --days 180`" in shown
    assert not (tmp_path / "home" / "warehouse.duckdb").exists()


def test_demo_run_refuses_a_history_too_short_to_train_on(tmp_path):
    """--days 60 used to stop at the fairness gate every time, leaving no champion and no endpoint."""
    run = subprocess.run(
        [BIN / "mlops", "demo", "run", "--days", "60"], env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2
    assert "--days" in run.stderr and "at least 90" in run.stderr and "45-day label maturity" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "home" / "data").exists()  # refused before anything was written


def test_demo_run_refuses_a_port_held_by_a_foreign_server_and_wipes_nothing(tmp_path):
    """Run 2 of the issue: an endpoint left by another checkout answered the new demo with a 403."""
    import socket

    env = _env(tmp_path)
    kept = tmp_path / "home" / "data" / "landing" / "transactions" / "keep.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("state of an earlier run")
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        run = subprocess.run(
            [BIN / "mlops", "demo", "run", "--port", str(port)], env=env, capture_output=True, text=True, timeout=120
        )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"port {port} is in use" in run.stderr and "did not start" in run.stderr and "--port" in run.stderr
    assert "Traceback" not in run.stderr
    assert kept.read_text() == "state of an earlier run"


def test_claim_port_stops_the_endpoint_this_home_started(tmp_path):
    """Run 2 from the same checkout: the earlier demo's endpoint is stopped, not reported as foreign."""
    import socket
    import time

    from mlops_core.local_state import claim_port
    from mlops_core.serving.server import ServingPaths, describe_listener
    from mlops_core.settings import Settings

    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(120)",
        ],
        start_new_session=True,
    )
    try:
        for _ in range(100):
            if describe_listener("127.0.0.1", port) is not None:
                break
            time.sleep(0.05)
        paths = ServingPaths.for_role(settings, "production")
        paths.root.mkdir(parents=True)
        paths.pid_file(port).write_text(
            json.dumps({"pid": listener.pid, "host": "127.0.0.1", "port": port, "role": "production"})
        )
        assert claim_port(settings, port) == listener.pid
        assert listener.wait(timeout=20) is not None
        assert describe_listener("127.0.0.1", port) is None
    finally:
        if listener.poll() is None:
            listener.kill()


def test_same_seed_same_demo_data_on_any_system_date(tmp_path, monkeypatch):
    """The demo's history is drawn for the platform's calendar (MLOPS_TODAY, fixed by default), not for
    the machine's date: two system dates give byte-identical landing zones, unless asked to follow them."""
    import hashlib

    from mlops_core import settings as settings_module
    from mlops_core.datagen.generator import DemoSpec, generate_landing
    from mlops_core.settings import Settings

    def landing_digest(system_date, environ) -> tuple[str, str]:
        monkeypatch.setattr(settings_module, "system_today", lambda: system_date)
        settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home"), **environ})
        first = settings.today - dt.timedelta(days=5)
        out = tmp_path / f"landing-{system_date}-{len(environ)}"
        generate_landing(DemoSpec(start=first, days=5, rows_per_day=40, seed=7), out)
        digest = hashlib.sha256()
        for path in sorted(out.rglob("*.parquet")):
            digest.update(path.relative_to(out).as_posix().encode() + path.read_bytes())
        return first.isoformat(), digest.hexdigest()

    fixed = [landing_digest(day, {}) for day in (dt.date(2026, 12, 1), dt.date(2031, 2, 15))]
    assert fixed[0] == fixed[1]
    assert fixed[0][0] == "2026-06-26"
    followed = [landing_digest(day, {"MLOPS_TODAY": "system"}) for day in (dt.date(2026, 12, 1), dt.date(2031, 2, 15))]
    assert followed[0] != followed[1] and followed[1][0] == "2031-02-10"


def test_recorded_settings_reach_later_commands_and_the_environment_wins(tmp_path):
    from mlops_core.settings import Settings, record_settings

    home = tmp_path / "home"
    record_settings(home, MLOPS_SERVING_URL="http://127.0.0.1:8123", MLOPS_PARTITIONS_START="2026-04-02")
    recorded = Settings.from_env({"MLOPS_HOME": str(home)})
    assert recorded.serving_url == "http://127.0.0.1:8123" and recorded.serving_port == 8123
    assert recorded.partitions_start == dt.date(2026, 4, 2) and recorded.last_complete_day == dt.date(2026, 6, 30)
    overridden = Settings.from_env({"MLOPS_HOME": str(home), "MLOPS_SERVING_URL": "http://127.0.0.1:9000"})
    assert overridden.serving_port == 9000
    with pytest.raises(ValueError, match="MLOPS_TODAY must be YYYY-MM-DD or 'system', got 'tomorrow'"):
        Settings.from_env({"MLOPS_HOME": str(home), "MLOPS_TODAY": "tomorrow"})
    with pytest.raises(ValueError, match=r"MLOPS_PARTITIONS_START \(2026-04-02\) must be before today \(2026-03-01"):
        Settings.from_env({"MLOPS_HOME": str(home), "MLOPS_TODAY": "2026-03-01"})


def test_missing_upstream_names_what_to_run_first(tmp_path):
    env = _env(tmp_path)
    train = subprocess.run([BIN / "mlops", "train"], env=env, capture_output=True, text=True, timeout=120)
    assert train.returncode == 1
    assert "marts.transactions_enriched" in train.stderr and "mlops ingest" in train.stderr
    assert "Catalog Error" not in train.stderr and "Traceback" not in train.stderr
    rollout = subprocess.run([BIN / "mlops", "rollout"], env=env, capture_output=True, text=True, timeout=120)
    assert rollout.returncode == 1
    assert "no challenger" in rollout.stderr and "mlops train" in rollout.stderr and "Traceback" not in rollout.stderr


@pytest.mark.slow
def test_a_gate_that_stops_the_demo_is_named_with_its_number_bound_and_next_step(tmp_path):
    """Ten transactions a day hold almost no fraud: training must stop at a quality gate, and the user sees
    which gate, what it measured against which bound and what to do next; exit 1, no traceback."""
    import httpx

    port = _free_port()
    run = subprocess.run(
        [BIN / "mlops", "demo", "run", "--days", "90", "--rows-per-day", "10", "--port", str(port)],
        env=_env(tmp_path),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Data layer loaded" in run.stdout
    assert "Training (feature checks and model quality gates) stopped the run:" in run.stderr
    assert "gate_minimum_quality (AUC-PR" in run.stderr and "(min 0.2)" in run.stderr
    assert "What to do next:" in run.stderr and "--rows-per-day" in run.stderr
    assert "Traceback" not in run.stderr and "DagsterAssetCheckFailedError" not in run.stderr
    # The endpoint was never started: nothing is left listening.
    assert not list((tmp_path / "home" / "data").rglob("server-*.pid"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.slow
def test_ingest_ends_with_a_per_day_summary_naming_the_held_day(tmp_path):
    """A held day used to end `mlops ingest` in a DagsterAssetCheckFailedError traceback, naming nothing."""
    import pyarrow.parquet as pq

    env = _env(tmp_path)
    gen = subprocess.run(
        [BIN / "mlops", "demo", "generate", "--start", "2026-03-01", "--days", "4", "--rows-per-day", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gen.returncode == 0, gen.stderr
    # Day 3's transactions lose a column: that day is held, day 4 must still load.
    (bad,) = (tmp_path / "home" / "data" / "landing" / "transactions" / "date=2026-03-03").glob("*.parquet")
    pq.write_table(pq.read_table(bad).drop_columns(["merchant_category"]), bad)
    run = subprocess.run(
        [BIN / "mlops", "ingest", "--start", "2026-03-01", "--end", "2026-03-04"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "DagsterAssetCheckFailedError" not in run.stderr
    rows = {line.split()[0]: line for line in run.stdout.splitlines() if re.match(r"\s+2026-03-0\d\s+\d+", line)}
    assert sorted(rows) == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    assert rows["2026-03-03"].endswith("held: transactions")
    assert "2026-03-03 transactions held by check_schema" in run.stdout and "merchant_category" in run.stdout
    # The next day's transactions were not blocked by the held day.
    assert "transactions" not in rows["2026-03-04"] and int(rows["2026-03-04"].split()[1]) > 100
    assert "mlops ingest --start DAY" in run.stderr
    # Nothing after the summary: DuckDB 2.0's nanobind printed ~40 lines of "leaked instances" as the command
    # exited, while pandera's type caches outlived finalization (mlops_core/contracts.py).
    assert "nanobind" not in run.stdout + run.stderr, run.stderr[-2000:]


def test_allowed_lateness_setting_reaches_the_online_store_resource(tmp_path):
    from mlops_core.settings import Settings
    from resources.environment import build_resources

    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_ONLINE_ALLOWED_LATENESS_DAYS": "3"})
    assert settings.online_allowed_lateness_days == 3
    saved = dict(os.environ)
    try:
        assert build_resources(settings)["online_store"].allowed_lateness_days == 3
    finally:  # build_resources exports the home's paths; later tests must not inherit them
        os.environ.clear()
        os.environ.update(saved)
    with pytest.raises(ValueError, match="MLOPS_ONLINE_ALLOWED_LATENESS_DAYS must be in 0..365, got 400"):
        Settings.from_env({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_ONLINE_ALLOWED_LATENESS_DAYS": "400"})


def test_a_fresh_start_leaves_no_sensor_cursor_behind(tmp_path):
    """`make demo` run twice: the second run's fresh Dagster instance numbers its events from the start
    again, and the first run's sensor cursors made its sensors skip every verdict (no retraining)."""
    from mlops_cli.simulation.loop import sensor_cursor_file
    from mlops_core.local_state import reset_local_state
    from mlops_core.settings import Settings

    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    cursors = sensor_cursor_file(settings)
    legacy = settings.home / "simulation" / "sensor_cursors.json"
    for path in (cursors, legacy):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"retraining_sensor": "{\\"feature_drift\\": 999}"}')
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reset_local_state(settings, port)
    assert not cursors.exists() and not legacy.exists()
    assert cursors.is_relative_to(settings.dagster_home)


def test_a_fresh_start_forgets_the_release_files_of_the_registry_it_removes_but_not_a_deploy_repo(tmp_path):
    """`make demo` run twice: the first run's release file named version 1 with its graph's hash, and the second
    run's endpoint refused its own version 1 (another graph under the same number). A releases directory
    outside MLOPS_HOME is a user's deploy repository: left alone."""
    import socket

    from mlops_core.local_state import reset_local_state
    from mlops_core.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inside = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    release = inside.releases_dir / "fraud_detector.yaml"
    release.parent.mkdir(parents=True)
    release.write_text("version: '1'\nonnx_sha256: 48231a2d\n")
    reset_local_state(inside, port)
    assert not release.exists()

    repo = tmp_path / "deploy" / "releases"
    outside = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home2"), "MLOPS_RELEASES_DIR": str(repo)})
    kept = repo / "fraud_detector.yaml"
    kept.parent.mkdir(parents=True)
    kept.write_text("version: '3'\n")
    reset_local_state(outside, port)
    assert kept.read_text() == "version: '3'\n"
