"""Fault: the Dagster Postgres restarts while a run is going.

A data_layer_job run re-ingests the last days of the history on the production instance (its
ingestion steps only: dbt would add a minute on 2 cores and writes nothing to Postgres that the
ingestion steps do not). A watcher stops the server (fast shutdown: sessions cut), keeps it
down for DOWN_S seconds and starts it again, at one of two moments: once Postgres holds the run's
first materialization (raw_accounts is writing its events, one after another), or once
raw_transactions has started (it reads and validates 14 days before it writes its next event). Afterwards the run record
must have a terminal status, its materializations must be each recorded once (all of them if it
succeeded), the warehouse must hold exactly what it held before, and a rerun must succeed.

Measured here (2 cores, shared): see docs/production.md, "Postgres restarted during a run".
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import dagster as dg
import duckdb
import pytest
from production_world import DAYS, START, partition_tags

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RERUN_DAYS = 14
RERUN_START = START + timedelta(days=DAYS - RERUN_DAYS)
INGESTION = [dg.AssetKey(f"raw_{source}") for source in ("accounts", "transactions", "labels")]
INGESTION_KEYS = {key.to_string() for key in INGESTION}  # as the event log spells them: '["raw_accounts"]'
DOWN_S = 2.0
# When to restart: an SQL count over the run's events that must be >= 1.
MOMENTS = {
    "while-events-are-written": "dagster_event_type = 'ASSET_MATERIALIZATION'",
    "while-a-step-computes": "dagster_event_type = 'STEP_START' AND step_key = 'raw_transactions'",
}
TABLES = ("raw.transactions", "raw.labels", "raw.accounts", "marts.transactions_enriched")


def _warehouse_counts(settings) -> dict[str, tuple]:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return {
            # constant table names; (rows, distinct rows): a day loaded twice would show in both
            table: con.execute(
                f"SELECT (SELECT count(*) FROM {table}), (SELECT count(*) FROM (SELECT DISTINCT * FROM {table}))"
            ).fetchone()
            for table in TABLES
        }


def _materialized(cursor, run_id: str) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        [run_id],
    )
    return sorted(cursor.fetchall())


class RestartWhenRunning(threading.Thread):
    """Restarts Postgres once a data_layer_job run other than `known_runs` has an event matching `moment`."""

    def __init__(self, production, known_runs: set[str], moment: str):
        super().__init__(daemon=True)
        self.production, self.known_runs, self.moment = production, known_runs, moment
        self.run_id: str | None = None
        self.materialized_before = 0
        self.outage_s: float | None = None
        self.restarted_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 300
            connection = self.production.dagster_db()
            try:
                with connection.cursor() as cursor:
                    while time.monotonic() < deadline:
                        cursor.execute("SELECT run_id FROM runs WHERE pipeline_name = 'data_layer_job'")
                        new = {row[0] for row in cursor.fetchall()} - self.known_runs
                        if new:
                            (self.run_id,) = new
                            cursor.execute(
                                f"SELECT count(*) FROM event_logs WHERE run_id = %s AND {MOMENTS[self.moment]}",
                                [self.run_id],
                            )
                            if cursor.fetchone()[0] >= 1:
                                self.materialized_before = len(_materialized(cursor, self.run_id))
                                break
                        time.sleep(0.05)
                    else:
                        raise TimeoutError(f"the run never reached {self.moment}")
            finally:
                connection.close()
            self.outage_s = self.production.postgres.restart(down_s=DOWN_S)
            self.restarted_at = time.monotonic()
        except BaseException as err:  # reported by the test, not lost in the thread
            self.error = err


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_postgres_restarted_during_a_run(production, caplog, moment: str):
    caplog.set_level(logging.WARNING)
    settings = production.settings
    before = _warehouse_counts(settings)
    with production.dagster_db() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id FROM runs")
        known = {row[0] for row in cursor.fetchall()}
        first_run = production.results["data_layer_job"].run_id
        wanted = {
            (key, partition)
            for key, partition in _materialized(cursor, first_run)
            # the rerun selects the ingestion steps only; daily_load_summary and the marts stay out
            if key in INGESTION_KEYS and partition is not None and partition >= RERUN_START.isoformat()
        }

    watcher = RestartWhenRunning(production, known, moment)
    watcher.start()
    started = time.monotonic()
    result = production.run("data_layer_job", tags=partition_tags(RERUN_START, RERUN_DAYS), asset_selection=INGESTION)
    finished = time.monotonic()
    watcher.join(timeout=60)
    assert watcher.error is None, watcher.error
    assert watcher.run_id == result.run_id
    # the restart happened inside the run: after the chosen event, before the run returned
    assert started < watcher.restarted_at < finished

    retries = [r for r in caplog.records if "Retrying failed database connection" in r.getMessage()]
    print(
        f"\nPostgres restart during data_layer_job ({moment}): outage {watcher.outage_s:.2f} s "
        f"(down {DOWN_S} s) after {watcher.materialized_before} materialization(s); run "
        f"{'succeeded' if result.success else 'FAILED'} in {finished - started:.1f} s; "
        f"{len(retries)} connection retries logged"
    )

    with production.dagster_db() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", [result.run_id])
        (status,) = cursor.fetchone()
        assert status == ("SUCCESS" if result.success else "FAILURE")
        recorded = _materialized(cursor, result.run_id)
        assert len(set(recorded)) == len(recorded), "a materialization recorded twice"
        assert set(recorded) <= wanted
        if result.success:
            assert set(recorded) == wanted, "a materialization lost"
        cursor.execute(
            # run-level events keep their pre-1.0 names in the event log
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type IN ('PIPELINE_SUCCESS', 'PIPELINE_FAILURE')",
            [result.run_id],
        )
        assert cursor.fetchone()[0] == 1

    assert _warehouse_counts(settings) == before

    rerun = production.run("data_layer_job", tags=partition_tags(RERUN_START, RERUN_DAYS), asset_selection=INGESTION)
    assert rerun.success
    with production.dagster_db() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status FROM runs WHERE run_id = %s", [rerun.run_id])
        assert cursor.fetchone() == ("SUCCESS",)
        assert set(_materialized(cursor, rerun.run_id)) == wanted
    assert _warehouse_counts(settings) == before
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(result.run_id).is_finished
