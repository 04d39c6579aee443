"""What each reliability case measured, collected for the results table in docs/reliability.md.

Cases call `record(...)` after their assertions passed; the folder's conftest prints every
row as a markdown table at the end of the session, and writes them as JSON lines to
$MLOPS_RELIABILITY_RESULTS when that is set.
"""

import json
import os

ROWS: list[dict[str, str]] = []


def record(section: str, case: str, what: str, expected: str, observed: str, test: str) -> None:
    row = {"section": section, "case": case, "what": what, "expected": expected, "observed": observed, "test": test}
    ROWS.append(row)
    path = os.environ.get("MLOPS_RELIABILITY_RESULTS")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def markdown() -> str:
    lines = ["| section | case | what was done | expected | measured | test |", "|---|---|---|---|---|---|"]
    for r in ROWS:
        cells = [
            r[k].replace("|", "\\|").replace("\n", " ")
            for k in ("section", "case", "what", "expected", "observed", "test")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
