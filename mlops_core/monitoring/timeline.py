"""The closed-loop simulation's day-by-day record: what was served, what a frozen model would have done,
what the monitors saw and what the platform did. Pure: no dagster, no I/O besides the files it writes."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

ROLLING_DAYS = 7


@dataclass
class DayScores:
    """One day's ground truth and the two models' scores and decisions on the same transactions."""

    is_fraud: np.ndarray
    served_score: np.ndarray
    served_decision: np.ndarray
    frozen_score: np.ndarray
    frozen_decision: np.ndarray


@dataclass
class DayRecord:
    day: str
    index: int  # 0-based simulated day; negative for none
    affected: bool  # the scenario applies from this day on
    champion: str | None  # the version serving at the end of the day
    transactions: int
    frauds: int
    served_recall: float
    frozen_recall: float
    served_auc_pr_7d: float  # pooled over the last ROLLING_DAYS days
    frozen_auc_pr_7d: float
    data_layer: str  # "ok" or what stopped it
    drift_share: float | None
    prediction_psi: float | None
    recent_recall: float | None  # the platform's own view: recall on frauds confirmed so far
    triggers: list[str] = field(default_factory=list)
    retraining: str = ""  # outcome of a retraining run launched that day
    promoted: str | None = None  # new champion version
    seconds: float = 0.0
    landing_to_champion_seconds: float | None = None
    monitoring: str = "ok"  # "ok" or what failed in monitoring_job
    # Wall seconds of each phase of the day: land, data_layer, serve, monitoring, sensors (retraining and rollout included).
    phases: dict[str, float] = field(default_factory=dict)


def recall(is_fraud: np.ndarray, decision: np.ndarray) -> float:
    positives = is_fraud.astype(bool)
    return float(decision[positives].mean()) if positives.any() else math.nan


def pooled_auc_pr(days: list[DayScores], served: bool) -> float:
    """Average precision over the pooled days (a day holds a few dozen frauds: too few alone)."""
    from sklearn.metrics import average_precision_score

    if not days:
        return math.nan
    y = np.concatenate([d.is_fraud for d in days])
    p = np.concatenate([d.served_score if served else d.frozen_score for d in days])
    return float(average_precision_score(y, p)) if y.any() and not y.all() else math.nan


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "  -  " if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


HEADER = (
    f"{'day':10s} {'#':>3s} {'champ':>5s} {'recall':>6s} {'frozen':>6s} {'AP7d':>5s} {'frzAP':>5s} "
    f"{'drift':>5s} {'PSI':>5s} {'live-r':>6s}  events"
)


def format_line(record: DayRecord) -> str:
    events = []
    if record.data_layer != "ok":
        events.append(f"data blocked: {record.data_layer}")
    if record.monitoring != "ok":
        events.append(f"monitoring failed: {record.monitoring}")
    events += [f"trigger: {t}" for t in record.triggers]
    if record.retraining:
        events.append(record.retraining)
    if record.promoted:
        timing = (
            f" ({record.landing_to_champion_seconds:.0f} s from landing)" if record.landing_to_champion_seconds else ""
        )
        events.append(f"PROMOTED v{record.promoted}{timing}")
    marker = "*" if record.affected else " "
    return (
        f"{record.day:10s} {record.index:3d}{marker}{(record.champion or '-'):>5s} {_fmt(record.served_recall):>6s} "
        f"{_fmt(record.frozen_recall):>6s} {_fmt(record.served_auc_pr_7d):>5s} {_fmt(record.frozen_auc_pr_7d):>5s} "
        f"{_fmt(record.drift_share, '{:.0%}'):>5s} {_fmt(record.prediction_psi):>5s} {_fmt(record.recent_recall):>6s}  "
        + "; ".join(e[:160] for e in events)
    )


def write_timeline(records: list[DayRecord], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    as_json = directory / "timeline.json"
    as_json.write_text(json.dumps([asdict(r) for r in records], indent=1, default=str))
    as_csv = directory / "timeline.csv"
    with as_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(DayRecord)])
        writer.writeheader()
        for r in records:
            row = asdict(r)
            row["triggers"] = " | ".join(r.triggers)
            row["phases"] = json.dumps({k: round(v, 2) for k, v in r.phases.items()})
            writer.writerow(row)
    return as_json, as_csv


def plot_timeline(records: list[DayRecord], path: Path, title: str) -> Path:
    """The live metric with automation against the frozen first champion, promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.index for r in records]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    top.plot(x, [r.served_auc_pr_7d for r in records], label="served, with the closed loop", color="#1f77b4", lw=2)
    top.plot(x, [r.frozen_auc_pr_7d for r in records], label="frozen first champion", color="#d62728", lw=2, ls="--")
    top.set_ylabel(f"AUC-PR, last {ROLLING_DAYS} days (ground truth)")
    top.set_ylim(0, 1)
    affected = [r.index for r in records if r.affected]
    for ax in (top, bottom):
        if affected:
            ax.axvline(min(affected), color="grey", ls=":", lw=1.5)
        for r in records:
            if r.promoted:
                ax.axvline(r.index, color="#2ca02c", lw=1, alpha=0.7)
    if affected:
        top.text(min(affected) + 0.3, 0.95, "scenario starts", color="grey", va="top")
    top.plot([], [], color="#2ca02c", label="new champion promoted")
    top.legend(loc="lower left")
    top.set_title(title)
    bottom.plot(
        x,
        [r.drift_share if r.drift_share is not None else math.nan for r in records],
        label="share of features drifted",
        color="#9467bd",
    )
    bottom.plot(
        x,
        [r.recent_recall if r.recent_recall is not None else math.nan for r in records],
        label="live recall (confirmed frauds)",
        color="#ff7f0e",
    )
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel("simulated day")
    bottom.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
