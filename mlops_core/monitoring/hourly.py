"""The champion's served traffic judged hour by hour, from the prediction log, before any label arrives.

The daily monitoring assets judge a whole day once it has landed; this watch judges each completed hour of
the champion's served requests against the same hour of the day in the champion's earlier traffic (its
reference for that hour). Traffic at 22:00 is not traffic at 14:00: against one all-day reference, an
ordinary night hour of the simulation scored a PSI of 0.60 and a flag rate three times the day's, a false
alarm every night. The reference of an hour of the day grows with every judged hour that was not flagged
(a flagged hour is kept out, so a lasting shift keeps being flagged), and an hour is judged once its
reference holds `reference_requests` requests: a new champion is watched from its second or third day.

- **score shift**: the hour's scores binned on fixed probability edges (sparse bins merged); flagged when a
  chi-square test rejects "same distribution" at `confidence` *and* the PSI is at least `min_score_psi`. An hour
  holds tens to hundreds of requests, where a fixed PSI bound alone (0.25) raised false alarms on sampling
  noise, and a test alone flagged shifts too small to matter on the busiest hours;
- **flag rate**: the share flagged as fraud, by a two-sided Fisher exact test against the reference's at
  `confidence`, and at least `min_flag_rate_ratio` times higher or lower;
- **error rate**: the share of the champion's requests that failed, above `max_error_rate`.

An hour is complete once the log holds a later event; hours with fewer than `min_requests` requests are
reported but not judged. Hours follow the transactions' own event times: in production they are the
clock's, in the simulation the simulated calendar's. Pure: no dagster, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlops_core.monitoring.psi import psi_of_shares
from mlops_core.serving.analysis import SCORE_EDGES


@dataclass(frozen=True)
class HourlyRules:
    reference_requests: int = 150  # per hour of the day
    min_requests: int = 50
    confidence: float = 0.999
    min_score_psi: float = 0.1
    min_flag_rate_ratio: float = 1.5
    max_error_rate: float = 0.02

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.reference_requests < 1 or self.min_requests < 1:
            raise ValueError("reference_requests and min_requests must be >= 1")


@dataclass(frozen=True)
class ScoreReference:
    """The champion's first served requests, as counts per fixed score bin and a flag rate."""

    version: str
    counts: tuple[int, ...]
    flagged: int

    @property
    def requests(self) -> int:
        return int(sum(self.counts))

    @property
    def flag_rate(self) -> float:
        return self.flagged / self.requests if self.requests else math.nan

    @classmethod
    def of(cls, version: str, scores: np.ndarray, decisions: np.ndarray) -> ScoreReference:
        return cls(version, tuple(int(c) for c in bin_counts(scores)), int(np.sum(decisions)))

    def plus(self, rows: pd.DataFrame) -> ScoreReference:
        """This reference with the ok requests of `rows` added."""
        ok = rows[rows["status"] == "ok"]
        counts = np.array(self.counts, dtype=int) if self.counts else np.zeros(len(SCORE_EDGES) - 1, dtype=int)
        counts = counts + bin_counts(ok["score"].to_numpy(float))
        return ScoreReference(
            self.version, tuple(int(c) for c in counts), self.flagged + int(ok["decision"].astype(bool).sum())
        )


@dataclass
class HourVerdict:
    hour: str  # ISO start of the hour (UTC)
    requests: int
    errors: int
    judged: bool
    score_psi: float | None = None
    score_p_value: float | None = None
    flag_rate: float | None = None
    reference_flag_rate: float | None = None
    flag_p_value: float | None = None
    error_rate: float | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.violations)

    def as_dict(self) -> dict:
        return asdict(self)


def bin_counts(scores: np.ndarray) -> np.ndarray:
    edges = np.array(SCORE_EDGES, dtype=float)
    edges[0], edges[-1] = -np.inf, np.inf
    return np.histogram(np.asarray(scores, dtype=float), edges)[0]


def merge_sparse_bins(reference: np.ndarray, current: np.ndarray, min_expected: float = 5.0):
    """Adjacent bins merged, left to right, until each expects at least `min_expected` current requests
    under the reference's shares (a leftover tail joins the last bin). The chi-square approximation needs
    it: with 9 of 3000 reference scores in a bin, one request of an hour of 120 landing there alone
    read as a shift at p < 0.001."""
    reference, current = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    expected = reference / reference.sum() * current.sum()
    merged_ref, merged_cur, acc_ref, acc_cur, acc_exp = [], [], 0.0, 0.0, 0.0
    for r, c, e in zip(reference, current, expected):
        acc_ref, acc_cur, acc_exp = acc_ref + r, acc_cur + c, acc_exp + e
        if acc_exp >= min_expected:
            merged_ref.append(acc_ref)
            merged_cur.append(acc_cur)
            acc_ref = acc_cur = acc_exp = 0.0
    if acc_ref or acc_cur:
        if merged_ref:
            merged_ref[-1] += acc_ref
            merged_cur[-1] += acc_cur
        else:
            merged_ref, merged_cur = [acc_ref], [acc_cur]
    return np.array(merged_ref), np.array(merged_cur)


def score_shift(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(PSI, p-value) of the current bin counts against the reference's, on bins merged until each expects
    five requests: the p-value of a chi-square test of homogeneity on the two rows of counts."""
    from scipy.stats import chi2_contingency

    reference, current = merge_sparse_bins(reference, current)
    psi = psi_of_shares(reference / reference.sum(), current / current.sum())
    if len(reference) < 2:
        return psi, 1.0
    return psi, float(chi2_contingency(np.vstack([reference, current]), correction=False).pvalue)


def flag_rate_p_value(flagged: int, requests: int, reference_flagged: int, reference_requests: int) -> float:
    """Two-sided Fisher exact test that the hour and the reference flag at the same rate: the reference is a
    sample too (0 flags in 3000 does not make one flag in 120 a shift)."""
    from scipy.stats import fisher_exact

    table = [[flagged, requests - flagged], [reference_flagged, reference_requests - reference_flagged]]
    return float(fisher_exact(table, alternative="two-sided").pvalue)


def judge_hour(hour: str, rows: pd.DataFrame, reference: ScoreReference, rules: HourlyRules) -> HourVerdict:
    """One hour of the champion's requests (columns status, score, decision) against its reference."""
    errors = int((rows["status"] != "ok").sum())
    ok = rows[rows["status"] == "ok"]
    verdict = HourVerdict(hour=hour, requests=len(rows), errors=errors, judged=len(rows) >= rules.min_requests)
    if not verdict.judged:
        return verdict
    alpha = 1 - rules.confidence
    verdict.error_rate = errors / len(rows)
    if verdict.error_rate > rules.max_error_rate:
        verdict.violations.append(f"error rate {verdict.error_rate:.1%} > {rules.max_error_rate:.1%}")
    if len(ok):
        psi, p = score_shift(np.array(reference.counts), bin_counts(ok["score"].to_numpy(float)))
        verdict.score_psi, verdict.score_p_value = psi, p
        if p < alpha and psi >= rules.min_score_psi:
            verdict.violations.append(f"score shift: PSI {psi:.2f} >= {rules.min_score_psi} (p={p:.1e})")
        flagged = int(ok["decision"].astype(bool).sum())
        rate, ref_rate = flagged / len(ok), reference.flag_rate
        verdict.flag_rate, verdict.reference_flag_rate = rate, ref_rate
        verdict.flag_p_value = flag_rate_p_value(flagged, len(ok), reference.flagged, reference.requests)
        ratio = (rate / ref_rate) if ref_rate > 0 else math.inf
        if verdict.flag_p_value < alpha and (
            ratio >= rules.min_flag_rate_ratio or ratio <= 1 / rules.min_flag_rate_ratio
        ):
            verdict.violations.append(
                f"flag rate {rate:.2%} vs {ref_rate:.2%} at reference (p={verdict.flag_p_value:.1e})"
            )
    return verdict


def hour_of(event_timestamps: pd.Series) -> pd.Series:
    """The ISO start of each event's UTC hour."""
    times = pd.to_datetime(event_timestamps, format="ISO8601", utc=True)
    return times.dt.floor("h").dt.strftime("%Y-%m-%dT%H:00:00")


def complete_hours(
    rows: pd.DataFrame, newest_event: str | None, after_hour: str | None
) -> list[tuple[str, pd.DataFrame]]:
    """The hours of `rows` (champion requests with an `hour` column) strictly before the hour of
    `newest_event` and after `after_hour`, oldest first."""
    if rows.empty or newest_event is None:
        return []
    newest_hour = hour_of(pd.Series([newest_event])).iloc[0]
    hours = sorted(h for h in rows["hour"].unique() if h < newest_hour and (after_hour is None or h > after_hour))
    return [(h, rows[rows["hour"] == h]) for h in hours]
