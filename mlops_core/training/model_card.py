"""A model card for every evaluated candidate: what it is for, what it learnt from, how it did, what it
passed, and where it is known to be weak. No dagster here.

The card follows the sections of Mitchell et al., "Model Cards for Model Reporting" (2019), cut to what this
platform measures: intended use, data (window and versions), metrics overall and by segment, the gates, and
the known limits. It is built from the same numbers as the evaluation report, so the two cannot disagree,
rendered as Markdown, logged to the candidate's MLflow run (`model_card.md`: every registered version has
one) and linked from the release file.

Known limits are derived, not written by hand: a segment with too few frauds to judge, a fairness gap that was
not assessed, a model served after a refit (its test metrics are the early-stopped model's), the label
maturity that keeps the newest days out of training, and what estimated performance cannot see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from mlops_core.splits import ALL_SPLITS
from mlops_core.training.report import EvaluationReport

MODEL_CARD_ARTIFACT = "model_card.md"
# Metrics of a segment with fewer frauds than this in the test split are noise, and the card says so.
MIN_SEGMENT_FRAUDS = 10


@dataclass(frozen=True)
class SplitWindow:
    name: str
    rows: int
    frauds: int
    first_event: str
    last_event: str


@dataclass(frozen=True)
class ModelCard:
    project: str
    description: str
    owner: str
    model_kind: str
    threshold: float
    threshold_rule: str
    feature_count: int
    top_features: tuple[tuple[str, float], ...]
    data_version: str
    trained_through: str | None
    refit: bool
    label_maturity_days: int
    windows: tuple[SplitWindow, ...]
    report: EvaluationReport
    run_id: str | None = None
    extra_limits: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.report.gates)

    def known_limits(self) -> list[str]:
        limits = list(self.extra_limits)
        limits.append(
            f"Labels mature {self.label_maturity_days} days after a transaction: the newest "
            f"{self.label_maturity_days} days of traffic are not learnt from, so a new fraud pattern is missed until "
            "its labels mature."
        )
        if self.refit:
            limits.append(
                "The served model was refitted on every split after evaluation; the test metrics are those of the "
                "early-stopped model that never saw the test split, the served one learnt it too."
            )
        limits.append(
            "Estimated performance (CBPE) assumes the relation between features and fraud holds: it cannot see a "
            "concept drift, which only matured labels reveal."
        )
        segments = self.report.segments
        if segments is not None and not segments.empty:
            few = segments[segments["positives"] < MIN_SEGMENT_FRAUDS]
            for row in few.itertuples(index=False):
                limits.append(
                    f"Segment {row.segment}={row.value}: {int(row.positives)} frauds in {int(row.n)} test rows, "
                    f"fewer than {MIN_SEGMENT_FRAUDS}: its recall and precision are not reliable."
                )
        for gate in self.report.gates:
            if gate.passed and "not assessed" in gate.detail:
                limits.append(f"{gate.name}: {gate.detail}.")
        return limits


def split_windows(frame: pd.DataFrame, label_column: str = "is_fraud", time_column: str = "event_timestamp"):
    """One SplitWindow per split of the training set, oldest split first."""
    windows = []
    for name in ALL_SPLITS:
        part = frame[frame["split"] == name]
        if part.empty:
            continue
        times = pd.to_datetime(part[time_column])
        windows.append(SplitWindow(name, len(part), int(part[label_column].sum()), str(times.min()), str(times.max())))
    return tuple(windows)


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(card: ModelCard) -> str:
    report = card.report
    metric_names = ("auc_pr", "auc_roc", "precision", "recall", "false_positive_rate", "expected_calibration_error")
    metrics = _table(
        ["model", *metric_names],
        [[m.name, *(_number(m.metrics.get(k)) for k in metric_names)] for m in report.models],
    )
    windows = _table(
        ["split", "rows", "frauds", "first event", "last event"],
        [[w.name, f"{w.rows:,}", f"{w.frauds:,}", w.first_event, w.last_event] for w in card.windows],
    )
    sections = [
        f"# Model card: {card.project} ({card.model_kind})",
        f"Verdict of the gates: **{'all passed' if card.passed else 'stopped'}**"
        + (f" · MLflow run `{card.run_id}`" if card.run_id else ""),
        "## Intended use",
        f"{card.description.strip()}\n\nOwner: {card.owner}. Every request is scored; a score at or above the "
        f"threshold {card.threshold:.4f} flags the transaction for review ({card.threshold_rule}). Not for "
        "decisions without a review step, and not for traffic unlike the training data (another market, "
        "another product) without a new evaluation.",
        "## Data",
        f"Training set version `{card.data_version}`; the served model learnt events through "
        f"{card.trained_through or 'the end of the test split'}.\n\n{windows}",
        "## Model",
        f"{card.feature_count} features; the 5 it uses most (gain share): "
        + ", ".join(f"{name} {share:.3f}" for name, share in card.top_features[:5])
        + ("; refitted on every split after evaluation." if card.refit else "."),
        "## Metrics on the test split",
        metrics,
    ]
    if report.segments is not None and not report.segments.empty:
        segment_rows = [
            [
                r.segment,
                r.value,
                f"{int(r.n):,}",
                int(r.positives),
                _number(r.recall),
                _number(r.precision),
                _number(r.false_positive_rate),
            ]
            for r in report.segments.itertuples(index=False)
        ]
        sections += [
            "## By segment",
            _table(["segment", "value", "rows", "frauds", "recall", "precision", "false positive rate"], segment_rows),
        ]
    sections += [
        "## Gates",
        _table(
            ["gate", "result", "detail"], [[g.name, "pass" if g.passed else "FAIL", g.detail] for g in report.gates]
        ),
        "## Known limits",
        "\n".join(f"- {limit}" for limit in card.known_limits()),
    ]
    return "\n\n".join(sections) + "\n"
