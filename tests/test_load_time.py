"""Loading the code location imports no library that only a run needs.

`dagster definitions validate`, the UI and every run process import mlops_assets.definitions
first; each of these libraries costs from a tenth of a second to over a second there. They are
imported inside the functions that train, evaluate, plot or test, so a top-level import of one
fails here, whatever the machine's speed.
"""

import json
import subprocess
import sys

# mlflow cost about a second of every load (a sixth of importing the definitions) until the registry,
# serving and model modules imported it inside the functions that call MLflow.
RUN_TIME_ONLY = (
    "mlflow",
    "sklearn",
    "xgboost",
    "matplotlib",
    "scipy.stats",
    "scipy.signal",
    "scipy.spatial",
    "evidently",
    "onnx",
    "onnxruntime",
    "onnxmltools",
    "skl2onnx",
    "statsmodels",
)

LOAD = f"""
import json, sys
import dagster as dg
from mlops_assets.definitions import defs
dg.Definitions.validate_loadable(defs)
print(json.dumps(sorted(name for name in {list(RUN_TIME_ONLY)!r} if name in sys.modules)))
"""


def test_loading_the_code_location_imports_no_run_time_library():
    # A fresh interpreter: this one has imported whatever earlier tests needed.
    done = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], (
        f"loading mlops_assets.definitions imported {loaded}: import them inside the functions that use them "
        "(`python -X importtime -c 'import mlops_assets.definitions'` shows which module pulled them in)"
    )


# `mlops --help`, `mlops serve` and every other command load the CLI's command groups first. The project
# commands once imported the project catalog at module level, and with it pandas and numpy: 0.57 s of
# start-up for every command, `mlops serve --help` included (benchmarks/RESULTS.md, start-up).
CLI_LOAD = """
import json, sys
from mlops_cli.main import main
print(json.dumps(sorted(name for name in ("pandas", "numpy", "pyarrow", "dagster", "duckdb") if name in sys.modules)))
"""


def test_loading_the_cli_imports_no_data_library():
    done = subprocess.run([sys.executable, "-c", CLI_LOAD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing mlops_cli.main imported {loaded}: import them inside the commands that use them"


def test_bootstrap_byte_compiles_every_package_of_the_project():
    """scripts/bootstrap.sh compiles the repo's packages (an editable install gets no bytecode from uv, and with
    PYTHONDONTWRITEBYTECODE every process compiled them again). A package added and left off its list would
    silently be compiled from source in every process again. The Dockerfile's list is held to the same packages
    (tests/test_production/test_k8s_specs.py)."""
    import tomllib

    from mlops_core.settings import REPO_ROOT

    line = next(
        line for line in (REPO_ROOT / "scripts" / "bootstrap.sh").read_text().splitlines() if "compileall" in line
    )
    compiled = set(line.split())
    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    top_level = {package.split(".")[0] for package in packages}
    assert {"mlops_assets", "mlops_core", "mlops_cli", "resources", "sensors"} <= top_level
    assert top_level <= compiled, f"bootstrap.sh does not compile {sorted(top_level - compiled)}"
