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
