"""The A/B verdict on matured labels: is the canary catching more fraud, at what cost, than the champion on
the same days? No dagster here.

The canary answers a sticky share of accounts, the champion the rest, so the two arms are independent
samples of the same traffic. Each answered transaction whose label has matured costs what the business says a
decision costs: a missed fraud `cost_of_miss` (20), a false alarm `cost_of_false_alarm` (1), the same rule the
training threshold minimises. The verdict compares the mean cost per transaction of the two arms:

- the difference (canary - champion) with a Welch 95% interval;
- the sample size each arm needs to detect a `min_effect` relative change of the champion's cost with 80%
  power (the usual two-sample formula on the champion's cost variance);
- the verdict: `better` or `worse` when the interval excludes 0 and both arms have that many rows; `not worse`
  when it lies below +not_worse_margin x the champion's cost (the business's tolerance, 10%); else `not yet
  decidable`. The margin is its own rule, not min_effect: a large effect to detect buys a quick verdict, and
  must not also buy a lax definition of "not worse" (a canary whose cost was 28% higher passed as "not worse"
  in the simulation when the margin was the 100% effect it was sized for).

Recall and precision are reported per arm with their difference and a Newcombe (Wilson) interval: the cost
is the one number the decision follows, the rest explain it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mlops_core.serving.routing import SegmentRule, excluded_by, in_canary

BETTER, WORSE, NOT_WORSE, UNDECIDED = "better", "worse", "not worse", "not yet decidable"


@dataclass(frozen=True)
class ABRules:
    cost_of_miss: float = 20.0
    cost_of_false_alarm: float = 1.0
    min_effect: float = 0.1
    not_worse_margin: float = 0.1
    confidence: float = 0.95
    power: float = 0.8


@dataclass(frozen=True)
class Arm:
    rows: int
    frauds: int
    flagged: int
    caught: int
    recall: float
    precision: float
    cost_per_transaction: float
    cost_variance: float


@dataclass(frozen=True)
class ABVerdict:
    champion: Arm
    canary: Arm
    cost_difference: float
    cost_interval: tuple[float, float]
    recall_difference: float
    recall_interval: tuple[float, float]
    required_rows_per_arm: int
    verdict: str
    detail: str

    def as_metadata(self) -> dict[str, object]:
        out = asdict(self)
        out["cost_interval"] = list(self.cost_interval)
        out["recall_interval"] = list(self.recall_interval)
        return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def arm(decisions: np.ndarray, labels: np.ndarray, rules: ABRules) -> Arm:
    decisions, labels = np.asarray(decisions, dtype=int), np.asarray(labels, dtype=int)
    cost = np.where((labels == 1) & (decisions == 0), rules.cost_of_miss, 0.0) + np.where(
        (labels == 0) & (decisions == 1), rules.cost_of_false_alarm, 0.0
    )
    caught = int(((labels == 1) & (decisions == 1)).sum())
    return Arm(
        rows=len(labels),
        frauds=int(labels.sum()),
        flagged=int(decisions.sum()),
        caught=caught,
        recall=_ratio(caught, labels.sum()),
        precision=_ratio(caught, decisions.sum()),
        cost_per_transaction=float(cost.mean()) if len(cost) else float("nan"),
        cost_variance=float(cost.var(ddof=1)) if len(cost) > 1 else float("nan"),
    )


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _newcombe(a: Arm, b: Arm, z: float) -> tuple[float, tuple[float, float]]:
    """Difference of the recalls b - a with Newcombe's hybrid score interval (method 10)."""
    if not a.frauds or not b.frauds:
        return float("nan"), (float("nan"), float("nan"))
    pa, pb = a.caught / a.frauds, b.caught / b.frauds
    la, ua = _wilson(a.caught, a.frauds, z)
    lb, ub = _wilson(b.caught, b.frauds, z)
    difference = pb - pa
    low = difference - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = difference + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return difference, (low, high)


def required_rows(champion_variance: float, champion_cost: float, rules: ABRules) -> int:
    """Rows per arm to detect a change of min_effect x the champion's cost (two-sided, at the rules' power)."""
    from scipy.stats import norm  # the declaration imports ABRules while the code location loads: scipy waits

    delta = rules.min_effect * champion_cost
    if not delta or math.isnan(champion_variance) or math.isnan(delta):
        return 0
    z = norm.ppf(1 - (1 - rules.confidence) / 2) + norm.ppf(rules.power)
    return math.ceil(2 * z * z * champion_variance / (delta * delta))


def ab_verdict(
    champion_decisions: np.ndarray,
    champion_labels: np.ndarray,
    canary_decisions: np.ndarray,
    canary_labels: np.ndarray,
    rules: ABRules | None = None,
) -> ABVerdict:
    from scipy.stats import norm

    rules = rules or ABRules()
    a, b = arm(champion_decisions, champion_labels, rules), arm(canary_decisions, canary_labels, rules)
    z = float(norm.ppf(1 - (1 - rules.confidence) / 2))
    difference = b.cost_per_transaction - a.cost_per_transaction
    if a.rows > 1 and b.rows > 1:
        half = z * math.sqrt(a.cost_variance / a.rows + b.cost_variance / b.rows)
        interval = (difference - half, difference + half)
    else:
        interval = (float("nan"), float("nan"))
    recall_difference, recall_interval = _newcombe(a, b, z)
    needed = required_rows(a.cost_variance, a.cost_per_transaction, rules)
    margin = rules.not_worse_margin * a.cost_per_transaction
    enough = needed > 0 and min(a.rows, b.rows) >= needed
    if not enough or math.isnan(interval[0]):
        verdict = UNDECIDED
    elif interval[1] < 0:
        verdict = BETTER
    elif interval[0] > 0:
        verdict = WORSE
    elif interval[1] < margin:
        verdict = NOT_WORSE
    else:
        verdict = UNDECIDED
    detail = (
        f"cost per transaction canary {b.cost_per_transaction:.4f} vs champion {a.cost_per_transaction:.4f}: "
        f"difference {difference:+.4f} ({rules.confidence:.0%} interval {interval[0]:+.4f} to {interval[1]:+.4f}); "
        f"recall {b.recall:.3f} vs {a.recall:.3f}; {min(a.rows, b.rows)} labelled rows in the smaller arm, {needed} "
        f"needed per arm to detect a {rules.min_effect:.0%} change"
    )
    return ABVerdict(a, b, difference, interval, recall_difference, recall_interval, needed, verdict, detail)


def meets(verdict: str, required: str) -> bool:
    """Whether a verdict lets the canary be promoted: "better" needs better; "not worse" takes either."""
    return verdict == BETTER or (required == NOT_WORSE and verdict == NOT_WORSE)


@dataclass(frozen=True)
class Arms:
    """The two arms of a test, read from the logged answers joined to their matured labels."""

    champion: pd.DataFrame
    canary: pd.DataFrame
    excluded_rows: int  # answers in a segment kept on the champion, left out of both arms
    unlabelled_rows: int  # matured answers without any label, left out


def split_arms(
    answers: pd.DataFrame,
    champion_version: str,
    canary_version: str,
    canary_share: float,
    excluded: tuple[SegmentRule, ...] = (),
) -> Arms:
    """The canary arm is what the canary answered (its sticky accounts); the champion arm is what the champion
    answered for the other accounts only, so the two are independent samples of the same traffic: a canary
    account the champion answered (a segment kept on it, or before the canary began) is in neither. A request
    in an excluded segment is left out of both arms, so the arms compare like with like.

    `answers`: transaction_id, account_id, decision, model_version, variant, features (JSON or dict) and
    is_fraud (NaN where no label is known)."""
    frame = answers.copy()
    features = frame["features"].map(lambda f: json.loads(f) if isinstance(f, str) else (f or {}))
    in_segment = features.map(lambda f: excluded_by(excluded, f) is not None) if excluded else False
    frame["in_segment"] = in_segment
    canary_account = frame["account_id"].astype(str).map(lambda a: in_canary(a, canary_share))
    version = frame["model_version"].astype(str)
    canary = frame[(frame["variant"] == "canary") & (version == str(canary_version)) & ~frame["in_segment"]]
    champion = frame[
        (frame["variant"] == "champion") & (version == str(champion_version)) & ~canary_account & ~frame["in_segment"]
    ]
    unlabelled = int(canary["is_fraud"].isna().sum() + champion["is_fraud"].isna().sum())
    return Arms(
        champion=champion[champion["is_fraud"].notna()],
        canary=canary[canary["is_fraud"].notna()],
        excluded_rows=int(frame["in_segment"].sum()),
        unlabelled_rows=unlabelled,
    )


def verdict_of(arms: Arms, rules: ABRules) -> ABVerdict:
    return ab_verdict(
        arms.champion["decision"].astype(int).to_numpy(),
        arms.champion["is_fraud"].astype(int).to_numpy(),
        arms.canary["decision"].astype(int).to_numpy(),
        arms.canary["is_fraud"].astype(int).to_numpy(),
        rules,
    )
