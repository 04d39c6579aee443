"""`mlops features source` shows the generated compute_features (and, with --offline, its SQL twin)
without a debugger or a print in the code, and without loading Dagster."""

import ast
import subprocess
import sys

from click.testing import CliRunner

from mlops_cli.main import main
from mlops_core.features.offline import point_in_time_features_sql
from mlops_core.features.online import ONLINE_SOURCE
from mlops_core.features.spec import FEATURE_NAMES


def test_source_prints_the_generated_compute_features():
    result = CliRunner().invoke(main, ["features", "source"])
    assert result.exit_code == 0, result.output
    assert result.output == ONLINE_SOURCE
    (function,) = ast.parse(result.output).body
    assert isinstance(function, ast.FunctionDef) and function.name == "compute_features"
    assert all(repr(name) in result.output for name in FEATURE_NAMES)


def test_source_writes_a_file_and_shows_the_offline_twin(tmp_path):
    target = tmp_path / "compute_features.py"
    result = CliRunner().invoke(main, ["features", "source", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text() == ONLINE_SOURCE
    offline = CliRunner().invoke(main, ["features", "source", "--offline"])
    assert offline.exit_code == 0, offline.output
    assert offline.output.strip() == point_in_time_features_sql().strip()


def test_source_loads_no_dagster():
    code = (
        "import sys; from mlops_cli.main import main; "
        "main(['features', 'source'], standalone_mode=False); "
        "assert 'dagster' not in sys.modules, 'dagster imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ONLINE_SOURCE
