"""README lists the landing contract; it must not drift from the pandera models."""

import re

from mlops_core.contracts import SOURCES
from mlops_core.settings import REPO_ROOT


def _section(text: str, source: str) -> str:
    start = text.index(f"**{source}**:")
    end = text.index("\n\n", text.index("| column |", start) + 1)
    return text[start:end]


def test_readme_tables_match_the_contract():
    readme = (REPO_ROOT / "README.md").read_text()
    for name, contract in SOURCES.items():
        section = _section(readme, name)
        listed = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
        assert listed == contract.columns, f"README table for {name}"
        for column, spec in contract.schema.columns.items():
            row = next(line for line in section.splitlines() if line.startswith(f"| `{column}` |"))
            for check in spec.checks:
                allowed = check.statistics.get("allowed_values")
                if allowed:
                    assert re.findall(r"`([^`]+)`", row.split("|")[3]) == list(allowed), f"{name}.{column}"


def test_feature_store_doc_lists_the_spec():
    from mlops_core.features.spec import describe

    doc = (REPO_ROOT / "docs" / "feature_store.md").read_text()
    listed = re.findall(r"^\| `(\w+)` \| (\w+) \| (\w+) \| ([^|]+) \| ([^|]+) \|$", doc, flags=re.M)
    assert [(n, k, d, h.strip(), str(v).strip()) for n, k, d, h, v in listed] == [
        (r["name"], r["kind"], r["dtype"], r["definition"], str(r["default"])) for r in describe()
    ]
