"""Issue 17's goals from finished `mlops simulate` runs: the platform against the oracle (retrained every day on
every known label, no gates) and the frozen first champion, over the 30 days from the drift.

    for seed in 7 11 23; do
        MLOPS_HOME=/tmp/sim-$seed .venv/bin/mlops simulate --days 60 --scenario concept_drift --drift-day 30 --seed $seed
    done
    MLOPS_HOME=/tmp/sim-baseline .venv/bin/mlops simulate --days 60 --scenario baseline --drift-day 30
    MLOPS_HOME=/tmp/sim-bad .venv/bin/mlops simulate --days 37 --scenario bad_nulls --drift-day 30 --no-oracle
    .venv/bin/python benchmarks/loop_vs_oracle.py /tmp/sim-7 /tmp/sim-11 /tmp/sim-23 --baseline /tmp/sim-baseline --bad-data /tmp/sim-bad

The summaries are recomputed from each run's timeline.json (mlops_core.monitoring.timeline.summarize), one
row of results.json per concept-drift run (ours: the platform's mean daily AUC-PR; peer: the oracle's), one
for the baseline run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from results import record, row  # noqa: E402

from mlops_core.monitoring.timeline import DayRecord, summarize  # noqa: E402

LABEL_MATURITY_DAYS = 7
DRIFT_DAY = 30


def load(home: Path) -> list[DayRecord]:
    names = {f.name for f in dataclasses.fields(DayRecord)}
    raw = json.loads((home / "reports" / "simulation" / "timeline.json").read_text())
    return [DayRecord(**{k: v for k, v in r.items() if k in names}) for r in raw]


def concept_drift_row(home: Path) -> dict:
    records = load(home)
    summary = summarize(records, DRIFT_DAY)
    for line in summary.lines():
        print(f"  {line}")
    recover_ok = summary.days_to_recover is not None and summary.days_to_recover <= LABEL_MATURITY_DAYS + 3
    never_worse = summary.worst_7d_vs_frozen is not None and summary.worst_7d_vs_frozen >= 0
    within = summary.gap_to_oracle <= 0.05
    return row(
        f"loop_concept_drift_vs_oracle_{home.name}",
        ours=summary.mean_auc_pr["served"],
        peer=summary.mean_auc_pr["oracle"],
        peer_name="the oracle: retrained daily on every known label, same features, family and parameters, no gates",
        ratio="ours/peer",
        meaning="the platform's mean daily AUC-PR over days 30-59 as a share of the oracle's",
        unit="mean daily AUC-PR, days 30-59",
        goal="within 5% of the oracle; recovery within label maturity + 3 days; no 7-day window worse than "
        "the frozen model after the first promotion following the drift",
        met=within and recover_ok and never_worse,
        details={
            "gap_to_oracle": summary.gap_to_oracle,
            "frozen_mean_auc_pr": summary.mean_auc_pr["frozen"],
            "days_to_recover": summary.days_to_recover,
            "first_promotion": summary.first_promotion,
            "worst_7d_vs_frozen": summary.worst_7d_vs_frozen,
            "retrainings": summary.triggers,
            "promoted": summary.promoted,
            "rolled_back": summary.rolled_back,
            "stopped_by_gate": summary.stopped_by_gate,
            "hours_to_hourly_detection": summary.hours_to_hourly_detection,
            "goals": {"within_5pct": within, "recovery": recover_ok, "never_worse_than_frozen": never_worse},
        },
    )


def baseline_row(home: Path) -> dict:
    records = load(home)
    launched = [r for r in records if "retraining " in r.retraining]
    promotions = [r for r in records if r.promoted]
    worse = [r for r in promotions if _promoted_worse(records, r)]
    reasons = [t for r in records for t in r.triggers if not t.split(" ", 1)[-1].startswith("held")]
    print(f"  baseline: {len(launched)} retraining runs, promotions on days {[r.index for r in promotions]}")
    for t in reasons:
        print(f"    {t[:160]}")
    return row(
        f"loop_baseline_triggers_{home.name}",
        ours=float(len(launched)),
        peer=None,
        peer_name=None,
        ratio="ours/peer",
        unit="retraining runs over 60 plain days",
        goal="at most 1 retraining trigger and no promotion of a worse model",
        met=len(launched) <= 1 and not worse,
        details={
            "triggers": reasons,
            "promoted_days": [r.index for r in promotions],
            "promoted_worse_days": [r.index for r in worse],
            "hours_flagged": sum(len(r.hours_flagged) for r in records),
            "hours_judged": sum(r.hours_judged for r in records),
        },
    )


def bad_data_row(home: Path) -> dict:
    """A bad-data scenario (`--scenario bad_*`): every affected day held by the data gates, nothing retrained on
    it and nothing promoted from its first day on."""
    records = load(home)
    affected = [r for r in records if r.affected]
    held = [r for r in affected if r.data_layer != "ok"]
    promotions = [r for r in affected if r.promoted]
    launched = [r for r in affected if "retraining " in r.retraining]
    print(
        f"  bad data: {len(held)} of {len(affected)} affected days held, {len(launched)} retraining runs, "
        f"promotions on days {[r.index for r in promotions]}"
    )
    return row(
        f"loop_bad_data_promotions_{home.name}",
        ours=float(len(promotions)),
        peer=None,
        peer_name=None,
        ratio="ours/peer",
        unit="models promoted from the first bad day on",
        goal="the bad-data scenario promotes nothing",
        met=not promotions,
        details={
            "affected_days": [r.index for r in affected],
            "held_days": [r.index for r in held],
            "retraining_days": [r.index for r in launched],
            "promoted_days": [r.index for r in promotions],
        },
    )


def _promoted_worse(records: list[DayRecord], promoted: DayRecord) -> bool:
    """The first 7-day window served wholly by the promoted model is worse than the frozen model's."""
    after = [r for r in records if r.index == promoted.index + 7]
    return bool(after) and after[0].served_auc_pr_7d < after[0].frozen_auc_pr_7d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("homes", nargs="*", type=Path, help="MLOPS_HOMEs of finished concept-drift runs")
    parser.add_argument("--baseline", type=Path, action="append", default=[])
    parser.add_argument("--bad-data", type=Path, action="append", default=[], help="a finished bad_* run")
    args = parser.parse_args()
    rows = []
    for home in args.homes:
        print(home)
        rows.append(concept_drift_row(home))
    for home in args.baseline:
        print(home)
        rows.append(baseline_row(home))
    for home in args.bad_data:
        print(home)
        rows.append(bad_data_row(home))
    record(rows)


if __name__ == "__main__":
    main()
