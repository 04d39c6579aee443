"""The layers import in one direction: mlops_core (pure data, features, ML and serving code) imports no
Dagster and nothing above it; the code location (mlops_assets, resources, sensors) never imports the
command line; the command line (mlops_cli) sits on top. See docs/architecture.md."""

import ast
from pathlib import Path

import pytest

from mlops_core.settings import REPO_ROOT

ABOVE_CORE = (
    "dagster",
    "dagster_dbt",
    "dagster_duckdb",
    "dagster_mlflow",
    "dagster_k8s",
    "dagster_postgres",
    "mlops_assets",
    "mlops_cli",
    "resources",
    "sensors",
)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def modules(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("mlops_core"), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_mlops_core_imports_no_dagster_and_nothing_above_it(path):
    # Function-level imports count too: ast.walk sees every import in the module.
    assert not imported_roots(path) & set(ABOVE_CORE), (
        f"{path} imports {sorted(imported_roots(path) & set(ABOVE_CORE))}"
    )


@pytest.mark.parametrize("package", ["mlops_assets", "resources", "sensors"])
def test_the_code_location_never_imports_the_command_line(package):
    offenders = {str(p.relative_to(REPO_ROOT)) for p in modules(package) if "mlops_cli" in imported_roots(p)}
    assert not offenders


def test_the_rule_catches_a_violation(tmp_path):
    """The scan sees a function-level `from dagster import ...` (a near miss a grep for '^import' would not)."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from dagster import asset\n    return asset\n")
    assert "dagster" in imported_roots(sample)


# The code location runs no SQL itself: data access is a named function of mlops_core taking a DuckDB
# connection, and an asset resolves inputs, calls the core and returns metadata. A justified exception
# is listed here by module path with its reason; there is none today (dbt runs its SQL through dbt).
SQL_CALLS = {"execute", "executemany", "sql"}
SQL_EXCEPTIONS: dict[str, str] = {}


def sql_calls(path: Path) -> list[str]:
    """'file:line: .execute(' for each SQL call in the module at `path`."""
    return [
        f"{path.name}:{node.lineno}: .{node.func.attr}("
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS
    ]


def test_no_asset_module_runs_sql():
    found = [
        f"{path.parent.relative_to(REPO_ROOT)}/{call}"
        for path in modules("mlops_assets")
        if str(path.relative_to(REPO_ROOT)) not in SQL_EXCEPTIONS
        for call in sql_calls(path)
    ]
    assert not found, "SQL belongs in mlops_core (warehouse, monitoring, features modules): " + "; ".join(found)
    assert all((REPO_ROOT / path).exists() for path in SQL_EXCEPTIONS), "an exception names a module that is gone"


def test_the_sql_rule_catches_a_call(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(warehouse):\n    with warehouse.get_connection() as con:\n        con.execute('select 1')\n"
    )
    assert sql_calls(sample) == ["sample.py:3: .execute("]
