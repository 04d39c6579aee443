"""Rollout analysis over the prediction log: shadow agreement and canary health.

Pure functions of a predictions frame (prediction_log.read_predictions), shared by the
rollout assets, their checks and the canary rollback sensor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # frames arrive from the caller; the rules alone (project declarations) need no pandas
    import pandas as pd

from mlops_core.monitoring.psi import psi_of_shares, psi_on_edges
from mlops_core.serving.routing import CANARY, CHAMPION, SHADOW

# Fixed probability bins for score shift: two sound models that both score a transaction
# near 0.002 land in one bin, while quantile bins would split them and call it a shift.
SCORE_EDGES = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


@dataclass(frozen=True)
class ShadowAgreement:
    requests: int
    decision_agreement: float
    mean_abs_score_difference: float
    score_rank_correlation: float
    champion_flag_rate: float
    shadow_flag_rate: float

    def as_metadata(self) -> dict[str, float | int]:
        return asdict(self)


def shadow_agreement(frame: pd.DataFrame) -> ShadowAgreement:
    """Champion answers paired with the shadow's score of the same request."""
    served = frame[(frame["served"] == 1) & (frame["status"] == "ok")]
    shadow = frame[(frame["variant"] == SHADOW) & (frame["status"] == "ok")]
    pairs = served.merge(shadow, on="request_id", suffixes=("_served", "_shadow"))
    if pairs.empty:
        return ShadowAgreement(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
    rank = pairs["score_served"].rank().corr(pairs["score_shadow"].rank()) if len(pairs) > 2 else float("nan")
    return ShadowAgreement(
        requests=len(pairs),
        decision_agreement=float((pairs["decision_served"] == pairs["decision_shadow"]).mean()),
        mean_abs_score_difference=float((pairs["score_served"] - pairs["score_shadow"]).abs().mean()),
        score_rank_correlation=float(rank),
        champion_flag_rate=float(pairs["decision_served"].mean()),
        shadow_flag_rate=float(pairs["decision_shadow"].mean()),
    )


@dataclass(frozen=True)
class CanaryRules:
    """When a canary is unhealthy. Each window with fewer than `min_requests` canary requests is not judged."""

    min_requests: int = 50
    max_error_rate: float = 0.01
    max_p99_latency_ms: float = 50.0
    max_score_psi: float = 0.25
    # The canary's flag rate may differ from the champion's by this factor (plus a small floor).
    max_decision_rate_ratio: float = 3.0
    decision_rate_floor: float = 0.01
    consecutive: int = 2


def score_shares(scores: np.ndarray) -> tuple[float, ...]:
    """Shares of `scores` in the SCORE_EDGES bins (outer edges open)."""
    scores = np.asarray(scores, dtype=float)
    edges = np.array(SCORE_EDGES, dtype=float)
    edges[0], edges[-1] = -np.inf, np.inf
    return tuple(float(x) for x in np.histogram(scores, edges)[0] / max(len(scores), 1))


@dataclass(frozen=True)
class OfflineExpectation:
    """How a candidate behaved offline: its flag rate and score shares (SCORE_EDGES bins) on its test split, the
    newest labelled traffic, as the evaluation logged them (registry.CBPE_REFERENCE_ARTIFACT).

    A canary is compared with the champion and with this. After a concept drift the champion is blind: a
    candidate that learnt the new pattern flags more than it and scores differently, and that is the point of
    it. A canary that behaves unlike both the model it replaces and the model it was measured to be offline
    is broken (skew, a bad artifact, a wrong threshold); one that behaves like either is not."""

    flag_rate: float
    shares: tuple[float, ...]
    rows: int

    @classmethod
    def from_reference(cls, reference: dict) -> OfflineExpectation | None:
        """From the logged {"score": [...], "threshold": t} of the evaluation; None when it holds no scores."""
        scores = np.asarray(reference.get("score") or [], dtype=float)
        if not len(scores) or "threshold" not in reference:
            return None
        return cls(float(np.mean(scores >= float(reference["threshold"]))), score_shares(scores), len(scores))

    def as_dict(self) -> dict[str, object]:
        return {"flag_rate": self.flag_rate, "shares": list(self.shares), "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict) -> OfflineExpectation:
        return cls(float(data["flag_rate"]), tuple(float(x) for x in data["shares"]), int(data["rows"]))


@dataclass(frozen=True)
class CanaryWindow:
    canary_requests: int
    champion_requests: int
    error_rate: float
    p99_latency_ms: float
    score_psi: float
    canary_flag_rate: float
    champion_flag_rate: float
    violations: tuple[str, ...] = field(default_factory=tuple)
    # Against the candidate's own offline behaviour (NaN without an OfflineExpectation).
    score_psi_vs_offline: float = float("nan")
    offline_flag_rate: float = float("nan")

    @property
    def judged(self) -> bool:
        return not np.isnan(self.error_rate)

    def as_metadata(self) -> dict[str, object]:
        out = asdict(self)
        out["violations"] = list(self.violations)
        return out


def _rate_band(rate: float, rules: CanaryRules) -> tuple[float, float]:
    return (
        max(rate / rules.max_decision_rate_ratio - rules.decision_rate_floor, 0.0),
        rate * rules.max_decision_rate_ratio + rules.decision_rate_floor,
    )


def canary_window(frame: pd.DataFrame, rules: CanaryRules, expected: OfflineExpectation | None = None) -> CanaryWindow:
    """Canary vs champion over one window of the log, with the rules it breaks.

    Score shift and flag rate break a rule only when the canary is outside the bound around the champion and,
    when `expected` is given, also outside the same bound around its own offline behaviour. Errors and
    latency are judged alone."""
    canary_all = frame[frame["variant"] == CANARY]
    canary_ok = canary_all[(canary_all["status"] == "ok") & (canary_all["served"] == 1)]
    champion = frame[(frame["variant"] == CHAMPION) & (frame["status"] == "ok")]
    n = len(canary_all)
    if n < rules.min_requests or champion.empty:
        nan = float("nan")
        return CanaryWindow(n, len(champion), nan, nan, nan, nan, nan)
    error_rate = float((canary_all["status"] == "error").mean())
    p99 = float(np.percentile(canary_ok["latency_ms"], 99)) if len(canary_ok) else float("nan")
    canary_scores = canary_ok["score"].to_numpy()
    shift = (
        psi_on_edges(champion["score"].to_numpy(), canary_scores, edges=SCORE_EDGES) if len(canary_ok) else float("nan")
    )
    offline_shift = offline_rate = float("nan")
    if expected is not None and len(canary_ok):
        offline_shift = psi_of_shares(np.asarray(expected.shares), np.asarray(score_shares(canary_scores)))
        offline_rate = expected.flag_rate
    canary_rate = float(canary_ok["decision"].mean()) if len(canary_ok) else float("nan")
    champion_rate = float(champion["decision"].mean())
    violations = []
    if error_rate > rules.max_error_rate:
        violations.append(f"error rate {error_rate:.3f} > {rules.max_error_rate}")
    if p99 > rules.max_p99_latency_ms:
        violations.append(f"p99 latency {p99:.1f} ms > {rules.max_p99_latency_ms} ms")
    # NaN compares False: without an expectation the champion's bound alone decides.
    if shift > rules.max_score_psi and not offline_shift <= rules.max_score_psi:
        violations.append(
            f"score PSI vs champion {shift:.3f} > {rules.max_score_psi}"
            + (f" and vs its own test split {offline_shift:.3f}" if expected is not None else "")
        )
    low, high = _rate_band(champion_rate, rules)
    outside_champion = canary_rate > high or canary_rate < low
    outside_offline = True
    if expected is not None:
        offline_low, offline_high = _rate_band(offline_rate, rules)
        outside_offline = canary_rate > offline_high or canary_rate < offline_low
    if outside_champion and outside_offline:
        violations.append(
            f"flag rate {canary_rate:.3f} outside [{low:.3f}, {high:.3f}] around the champion's {champion_rate:.3f}"
            + (
                f" and [{offline_low:.3f}, {offline_high:.3f}] around its own test split's {offline_rate:.3f}"
                if expected is not None
                else ""
            )
        )
    return CanaryWindow(
        n,
        len(champion),
        error_rate,
        p99,
        shift,
        canary_rate,
        champion_rate,
        tuple(violations),
        offline_shift,
        offline_rate,
    )
