"""The README's command blocks marked `<!-- readme-test: NAME -->` run verbatim on a fresh MLOPS_HOME:
the Dagster CLI snippet failed on a fresh checkout until an `mlops` command had created DAGSTER_HOME."""

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


def readme_blocks() -> dict[str, str]:
    text = (REPO_ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- readme-test: ([\w-]+) -->\n```bash\n(.*?)```", text, flags=re.S))


def test_the_readme_marks_its_dagster_cli_block():
    blocks = readme_blocks()
    assert "dagster-cli" in blocks
    assert "dagster job execute" in blocks["dagster-cli"]


@pytest.mark.slow
def test_readme_dagster_cli_block_runs_verbatim_on_a_fresh_home(tmp_path):
    # A fresh checkout: nothing of a demo exists, and no MLOPS_/DAGSTER_ variable is set but MLOPS_HOME,
    # which only moves the default ./.mlops out of the repo.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_")) or k == SOCKET_DIR_ENV}
    env["MLOPS_HOME"] = str(tmp_path / "fresh")
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_blocks()["dagster-cli"]],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "RUN_SUCCESS" in run.stdout + run.stderr
    assert "BetaWarning" not in run.stderr and "PreviewWarning" not in run.stderr
    with duckdb.connect(str(tmp_path / "fresh" / "warehouse.duckdb"), read_only=True) as con:
        days = con.execute(
            "SELECT count(DISTINCT partition_date) FROM raw.load_log WHERE source = 'transactions'"
        ).fetchone()[0]
        enriched = con.execute("SELECT count(*) FROM marts.transactions_enriched").fetchone()[0]
    assert days == 30 and enriched > 30 * 200
    # The runs are on the instance the UI shows.
    assert (
        any((tmp_path / "fresh" / "dagster_home").rglob("*.db"))
        or (tmp_path / "fresh" / "dagster_home" / "history").exists()
    )


# The packages whose environment variables are settings a user may set (tests and benchmarks set their own).
SETTING_PACKAGES = ("mlops_core", "mlops_assets", "mlops_cli", "resources", "sensors")


def settings_read_by_the_code() -> set[str]:
    """Every MLOPS_* name quoted in the platform's source: read from the environment or named in an error."""
    names: set[str] = set()
    for package in SETTING_PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            names.update(re.findall(r"[\"'(](MLOPS_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    return names


def test_every_setting_the_code_reads_is_in_the_readme_table():
    table = {
        name
        for line in (REPO_ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`(MLOPS_[A-Z0-9_]+)`", line.split("|")[1])
    }
    read = settings_read_by_the_code()
    # the scan itself works: names read in settings.py, limits.py and the serving limits' errors are found
    assert {"MLOPS_HOME", "MLOPS_TODAY", "MLOPS_SERVE_MAX_CONNECTIONS", "MLOPS_EVENT_TIME_MIN"} <= read
    assert sorted(read - table) == [], "settings the code reads but README.md's table does not list"
    assert sorted(table - read) == [], "settings README.md lists but no code reads"
