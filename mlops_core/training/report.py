"""The evaluation report: plots and tables, as one self-contained HTML file and as markdown.

The HTML embeds its plots as base64 PNGs and its style inline, so the file opens in any
browser with no network and can be attached to an MLflow run as is. The same tables go
to Dagster metadata as markdown.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # loaded by the functions that build tables: the gate outcomes alone need no pandas
    import pandas as pd

METRIC_ORDER = (
    "auc_roc",
    "auc_pr",
    "precision",
    "recall",
    "f1",
    "false_positive_rate",
    "positive_rate",
    "log_loss",
    "brier",
    "expected_calibration_error",
    "n",
    "positives",
)


@dataclass(frozen=True)
class ScoredModel:
    """One model's scores on the frozen test set."""

    name: str
    y: np.ndarray
    p: np.ndarray
    threshold: float
    metrics: dict[str, float]


@dataclass(frozen=True)
class GateOutcome:
    name: str
    passed: bool
    detail: str


@dataclass
class EvaluationReport:
    title: str
    candidate: ScoredModel
    others: list[ScoredModel] = field(default_factory=list)
    segments: pd.DataFrame | None = None
    latency: dict[str, float] = field(default_factory=dict)
    gates: list[GateOutcome] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    generated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def models(self) -> list[ScoredModel]:
        return [self.candidate, *self.others]


def _pyplot():
    """matplotlib's pyplot, loaded on the first plot: the gates import this module, and so does the code
    location, which draws nothing."""
    import matplotlib

    # Plotting without a display: the report is rendered on servers and in CI.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _has_both_classes(y: np.ndarray) -> bool:
    return 0 < int(np.sum(y)) < len(y)


def plot_roc(models: list[ScoredModel]) -> bytes:
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for m in models:
        if _has_both_classes(m.y):
            fpr, tpr, _ = roc_curve(m.y, m.p)
            ax.plot(fpr, tpr, label=f"{m.name} (AUC {m.metrics.get('auc_roc', float('nan')):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title="ROC")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_pr(models: list[ScoredModel]) -> bytes:
    from sklearn.metrics import precision_recall_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for m in models:
        if _has_both_classes(m.y):
            precision, recall, _ = precision_recall_curve(m.y, m.p)
            ax.plot(recall, precision, label=f"{m.name} (AP {m.metrics.get('auc_pr', float('nan')):.3f})")
    if models:
        ax.axhline(float(np.mean(models[0].y)), color="grey", linestyle=":", linewidth=1, label="fraud rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def plot_calibration(models: list[ScoredModel], bins: int = 10) -> bytes:
    from sklearn.calibration import calibration_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for m in models:
        if _has_both_classes(m.y):
            observed, predicted = calibration_curve(m.y, m.p, n_bins=bins, strategy="quantile")
            ax.plot(predicted, observed, marker="o", markersize=3, label=m.name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed fraud rate", title="Calibration (quantile bins)")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def plot_score_distribution(model: ScoredModel) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    edges = np.linspace(0, 1, 41)
    for label, name in ((0, "legitimate"), (1, "fraud")):
        scores = model.p[model.y == label]
        if len(scores):
            ax.hist(scores, bins=edges, density=True, alpha=0.55, label=f"{name} (n={len(scores)})")
    ax.axvline(model.threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {model.threshold:.3f}")
    ax.set_yscale("log")
    ax.set(xlabel="fraud probability", ylabel="density (log)", title=f"Score distribution: {model.name}")
    ax.legend(fontsize=8)
    return _png(fig)


def plots(report: EvaluationReport) -> dict[str, bytes]:
    """The report's figures as PNG bytes, by file name."""
    return {
        "roc.png": plot_roc(report.models),
        "precision_recall.png": plot_pr(report.models),
        "calibration.png": plot_calibration(report.models),
        "score_distribution.png": plot_score_distribution(report.candidate),
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value.is_integer() and abs(value) >= 1:
            return f"{int(value):,}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value)


def metrics_table(report: EvaluationReport) -> pd.DataFrame:
    import pandas as pd

    rows = {m.name: {k: m.metrics.get(k, float("nan")) for k in METRIC_ORDER} for m in report.models}
    for m in report.models:
        rows[m.name]["threshold"] = m.threshold
    return pd.DataFrame(rows)


def markdown_cell(text: object) -> str:
    """A table cell's text with what would break the table escaped: pipes (`|ONNX - native|` split the gates
    table), backslashes before them, and line breaks."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _markdown(frame: pd.DataFrame, index_name: str = "") -> str:
    header = "| " + " | ".join(markdown_cell(c) for c in [index_name, *frame.columns]) + " |"
    rule = "|" + "---|" * (len(frame.columns) + 1)
    lines = [header, rule]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([markdown_cell(index), *(markdown_cell(_fmt(v)) for v in row.tolist())]) + " |")
    return "\n".join(lines)


def markdown_tables(report: EvaluationReport) -> dict[str, str]:
    """Tables for Dagster metadata (MetadataValue.md)."""
    import pandas as pd

    tables = {"metrics": _markdown(metrics_table(report), "metric")}
    if report.segments is not None and len(report.segments):
        segments = report.segments.set_index(["segment", "value"])
        segments.index = [f"{a}={b}" for a, b in segments.index]
        tables["segments"] = _markdown(segments, "segment")
    if report.gates:
        gates = pd.DataFrame(
            {
                "result": ["pass" if g.passed else "FAIL" for g in report.gates],
                "detail": [g.detail for g in report.gates],
            },
            index=[g.name for g in report.gates],
        )
        tables["gates"] = _markdown(gates, "gate")
    if report.latency:
        tables["latency"] = _markdown(pd.DataFrame({"value": report.latency}), "single-row ONNX scoring")
    return tables


TEMPLATE = "evaluation_report.html.j2"


def _table(frame: pd.DataFrame, index_name: str = "") -> dict[str, list]:
    """A frame as the template's table: header names and (index, formatted cells) rows."""
    return {
        "head": [index_name, *map(str, frame.columns)],
        "rows": [(str(index), [_fmt(v) for v in row.tolist()]) for index, row in frame.iterrows()],
    }


def render_html(report: EvaluationReport, figures: dict[str, bytes] | None = None) -> str:
    """The whole report as one HTML document with its plots embedded, from templates/evaluation_report.html.j2
    (shipped as package data; every value escaped)."""
    import jinja2
    import pandas as pd

    figures = figures if figures is not None else plots(report)
    segments = None
    if report.segments is not None and len(report.segments):
        frame = report.segments.set_index(["segment", "value"])
        frame.index = [f"{a} = {b}" for a, b in frame.index]
        segments = _table(frame, "segment")
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mlops_core.training", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template(TEMPLATE).render(
        title=report.title,
        generated_at=f"{report.generated_at:%Y-%m-%d %H:%M UTC}",
        verdict=all(g.passed for g in report.gates) if report.gates else None,
        facts=[(str(k), _fmt(v)) for k, v in report.facts.items()],
        gates=report.gates,
        metrics=_table(metrics_table(report), "metric"),
        latency=_table(pd.DataFrame({"value": report.latency}), "") if report.latency else None,
        images=[(name, base64.b64encode(png).decode()) for name, png in figures.items()],
        segments=segments,
    )
