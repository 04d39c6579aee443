"""The closed-loop simulation's day-by-day record: what was served, what a frozen model and the oracle would
have done, what the monitors saw and what the platform did, and the summary of the days after the drift.
Pure: no dagster, no I/O besides the files it writes."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

ROLLING_DAYS = 7


@dataclass
class DayScores:
    """One day's ground truth and the models' scores and decisions on the same transactions (the oracle's
    are None before its first fit, or when the simulation runs without it)."""

    is_fraud: np.ndarray
    served_score: np.ndarray
    served_decision: np.ndarray
    frozen_score: np.ndarray
    frozen_decision: np.ndarray
    oracle_score: np.ndarray | None = None
    oracle_decision: np.ndarray | None = None


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
    oracle_recall: float | None = None
    oracle_auc_pr_7d: float | None = None
    # The day's own AUC-PR (a few dozen frauds: noisy alone, meant to be averaged over weeks).
    served_auc_pr: float | None = None
    frozen_auc_pr: float | None = None
    oracle_auc_pr: float | None = None
    # champion_watch_sensor's hours of the champion's traffic judged that day, and the ISO hours it flagged.
    hours_judged: int = 0
    hours_flagged: list[str] = field(default_factory=list)
    # The running A/B test's verdict that day (ab_verdict): "" when none ran.
    ab_test: str = ""


def recall(is_fraud: np.ndarray, decision: np.ndarray) -> float:
    positives = is_fraud.astype(bool)
    return float(decision[positives].mean()) if positives.any() else math.nan


MODELS = ("served", "frozen", "oracle")


def pooled_auc_pr(days: list[DayScores], model: str) -> float:
    """Average precision of `model` ("served", "frozen" or "oracle") over the pooled days (a day holds a few
    dozen frauds: too few alone); days the model did not score are left out."""
    from sklearn.metrics import average_precision_score

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: expected one of {MODELS}")
    scored = [d for d in days if getattr(d, f"{model}_score") is not None]
    if not scored:
        return math.nan
    y = np.concatenate([d.is_fraud for d in scored])
    p = np.concatenate([getattr(d, f"{model}_score") for d in scored])
    return float(average_precision_score(y, p)) if y.any() and not y.all() else math.nan


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "  -  " if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


HEADER = (
    f"{'day':10s} {'#':>3s} {'champ':>5s} {'recall':>6s} {'frozen':>6s} {'AP7d':>5s} {'frzAP':>5s} {'orcAP':>5s} "
    f"{'drift':>5s} {'PSI':>5s} {'live-r':>6s}  events"
)


def format_line(record: DayRecord) -> str:
    events = []
    if record.data_layer != "ok":
        events.append(f"data blocked: {record.data_layer}")
    if record.monitoring != "ok":
        events.append(f"monitoring failed: {record.monitoring}")
    if record.hours_flagged:
        events.append(f"hours flagged: {', '.join(h[11:16] for h in record.hours_flagged)}")
    if record.ab_test:
        events.append(record.ab_test)
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
        f"{_fmt(record.oracle_auc_pr_7d):>5s} "
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
            row["hours_flagged"] = " ".join(r.hours_flagged)
            row["phases"] = json.dumps({k: round(v, 2) for k, v in r.phases.items()})
            writer.writerow(row)
    return as_json, as_csv


def plot_timeline(records: list[DayRecord], path: Path, title: str) -> Path:
    """The live metric with automation against the frozen first champion and the oracle, promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.index for r in records]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    top.plot(x, [r.served_auc_pr_7d for r in records], label="served, with the closed loop", color="#1f77b4", lw=2)
    top.plot(x, [r.frozen_auc_pr_7d for r in records], label="frozen first champion", color="#d62728", lw=2, ls="--")
    oracle = [math.nan if r.oracle_auc_pr_7d is None else r.oracle_auc_pr_7d for r in records]
    if not all(math.isnan(v) for v in oracle):
        top.plot(x, oracle, label="oracle: retrained daily on every known label", color="#7f7f7f", lw=1.5, ls="-.")
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


# -- the summary of the days after the drift ---------------------------------------------------------
RECOVERY_TOLERANCE = 0.10  # recovered: the platform's 7-day AUC-PR within 10% of the oracle's


@dataclass(frozen=True)
class LoopSummary:
    """The platform against the oracle and the frozen model over `window` days from the drift."""

    first_day: int
    last_day: int
    mean_auc_pr: dict[str, float]  # per model: the mean of its daily AUC-PR over the window
    gap_to_oracle: float  # (oracle - platform) / oracle
    recovered_on: int | None  # see recovery_day
    worst_7d_vs_frozen: float | None  # min(platform 7d - frozen 7d) from the first promotion after the drift on
    triggers: int  # retraining runs the sensors launched (held triggers are in the timeline, not here)
    promoted: int
    rolled_back: int
    stopped_by_gate: dict[str, int]
    first_promotion: int | None
    # Hours from the drift day's midnight to the end of the first hour champion_watch_sensor flagged on or
    # after it; None: nothing flagged in the window.
    hours_to_hourly_detection: float | None = None
    # The first day from the drift whose monitoring made a sensor launch a retraining.
    first_trigger_day: int | None = None
    # Hours flagged before the window (the drift): false alarms, when nothing changed before it.
    hours_flagged_before: int = 0
    hours_judged: int = 0

    @property
    def days_to_recover(self) -> int | None:
        return None if self.recovered_on is None else self.recovered_on - self.first_day

    def lines(self) -> list[str]:
        mean = self.mean_auc_pr
        stopped = ", ".join(f"{gate} {n}" for gate, n in sorted(self.stopped_by_gate.items())) or "none"
        return [
            f"Days {self.first_day}-{self.last_day} (from the drift): mean daily AUC-PR platform {_fmt(mean['served'], '{:.3f}')}, "
            f"oracle {_fmt(mean['oracle'], '{:.3f}')}, frozen {_fmt(mean['frozen'], '{:.3f}')}; "
            f"platform's gap to the oracle {_fmt(self.gap_to_oracle, '{:.1%}')}",
            "Recovered (7-day AUC-PR within 10% of the oracle's, or above it, from then to the window's end) "
            + (
                f"on day {self.recovered_on}, {self.days_to_recover} days after the drift"
                if self.recovered_on is not None
                else "not within the window"
            ),
            f"Triggers fired {self.triggers}, models promoted {self.promoted}, rolled back {self.rolled_back}, "
            f"stopped by a gate: {stopped}",
            "Worst 7-day AUC-PR against the frozen model after the first promotion: "
            + (_fmt(self.worst_7d_vs_frozen, "{:+.3f}") if self.worst_7d_vs_frozen is not None else "no promotion"),
            "Hourly watch of the champion's traffic: "
            + (
                f"first flagged hour ends {self.hours_to_hourly_detection:.0f} h after the drift began"
                if self.hours_to_hourly_detection is not None
                else "no hour flagged from the drift on"
            )
            + f" ({self.hours_judged} hours judged in the window; {self.hours_flagged_before} flagged before it)"
            + (
                f"; first retraining launched on day {self.first_trigger_day}"
                if self.first_trigger_day is not None
                else ""
            ),
        ]


def _nanmean(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


_CHECK_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


def _stopped_by(outcome: str) -> list[list[str]]:
    """Per retraining run stopped in a day's outcomes, the checks that stopped it: each outcome reads
    'retraining <id> stopped by <check> (<what it measured>), <check> (...)'."""
    found = []
    for part in outcome.split("; "):
        if " stopped by " in part:
            failures = part.split(" stopped by ", 1)[1]
            found.append(_outer_names(failures))
    return found


def _outer_names(failures: str) -> list[str]:
    """The check names at parenthesis depth 0 of 'a (x (y)), b (z)'."""
    depth, outer = 0, []
    for char in failures:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0:
            outer.append(char)
    names = (piece.strip() for piece in "".join(outer).split(","))
    return [name for name in names if _CHECK_NAME.fullmatch(name)]


def _close_to_oracle(r: DayRecord) -> bool | None:
    if r.oracle_auc_pr_7d is None or math.isnan(r.oracle_auc_pr_7d) or math.isnan(r.served_auc_pr_7d):
        return None
    return r.served_auc_pr_7d >= (1 - RECOVERY_TOLERANCE) * r.oracle_auc_pr_7d


def recovery_day(days: list[DayRecord]) -> int | None:
    """The first day from which the platform's 7-day AUC-PR stays within RECOVERY_TOLERANCE of the oracle's
    (or above it) to the end of the window; None when the last judged day is out of that band. Days the
    oracle did not score say nothing either way.

    "Back within the band once" is not enough: right after a drift both models miss the new pattern alike,
    so their 7-day windows meet again near zero (0.01 against 0.01 on day 36 of seed 23, 2026-12-05) days
    before either has learnt anything, and the platform fell out again once the oracle started to learn."""
    recovered = None
    for r in days:
        close = _close_to_oracle(r)
        if close is False:
            recovered = None
        elif close and recovered is None:
            recovered = r.index
    return recovered


def summarize(records: list[DayRecord], first_day: int, window: int = 30) -> LoopSummary:
    """The issue-17 figures for days [first_day, first_day + window) of a timeline."""
    days = [r for r in records if first_day <= r.index < first_day + window]
    if not days:
        raise ValueError(f"no simulated day in [{first_day}, {first_day + window})")
    mean = {m: _nanmean([getattr(r, f"{m}_auc_pr") for r in days]) for m in MODELS}
    gap = (
        (mean["oracle"] - mean["served"]) / mean["oracle"]
        if mean["oracle"] and not math.isnan(mean["oracle"])
        else math.nan
    )
    recovered = recovery_day(days)
    first_promotion = next((r.index for r in days if r.promoted), None)
    worst = None
    if first_promotion is not None:
        # The 7-day windows that hold only days served after the promotion.
        after = [r for r in days if r.index >= first_promotion + ROLLING_DAYS]
        diffs = [r.served_auc_pr_7d - r.frozen_auc_pr_7d for r in after]
        diffs = [d for d in diffs if not math.isnan(d)]
        worst = min(diffs) if diffs else None
    stopped: dict[str, int] = {}
    rolled_back = 0
    for r in days:
        for checks in _stopped_by(r.retraining):
            gates = [c for c in checks if c.startswith("gate_")]
            for gate in gates:
                stopped[gate] = stopped.get(gate, 0) + 1
            # Stopped past the offline gates (staging, shadow, canary): the rollout was rolled back.
            rolled_back += not gates
        # A canary rolled back after its rollout (on an A/B verdict): a run of its own.
        rolled_back += sum(1 for part in r.retraining.split("; ") if part.startswith("canary rollback "))
    drift_start = dt.datetime.fromisoformat(days[0].day) if _is_iso_day(days[0].day) else None
    flagged = sorted(h for r in days for h in r.hours_flagged)
    to_detection = None
    if flagged and drift_start is not None:
        end = dt.datetime.fromisoformat(flagged[0]) + dt.timedelta(hours=1)
        to_detection = (end - drift_start).total_seconds() / 3600
    return LoopSummary(
        first_day=first_day,
        last_day=days[-1].index,
        mean_auc_pr=mean,
        gap_to_oracle=gap,
        recovered_on=recovered,
        worst_7d_vs_frozen=worst,
        triggers=sum(1 for r in days for part in r.retraining.split("; ") if part.startswith("retraining ")),
        promoted=sum(1 for r in days if r.promoted),
        rolled_back=rolled_back,
        stopped_by_gate=stopped,
        first_promotion=first_promotion,
        hours_to_hourly_detection=to_detection,
        first_trigger_day=next(
            (r.index for r in days for part in r.retraining.split("; ") if part.startswith("retraining ")), None
        ),
        hours_flagged_before=sum(len(r.hours_flagged) for r in records if r.index < first_day),
        hours_judged=sum(r.hours_judged for r in days),
    )


def _is_iso_day(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
        return True
    except ValueError:
        return False
