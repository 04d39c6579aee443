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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
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
