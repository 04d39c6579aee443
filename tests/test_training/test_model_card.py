"""The model card: built from the evaluation's own numbers, with limits derived from them (tier 1)."""

import numpy as np
import pandas as pd

from mlops_core.training.model_card import MIN_SEGMENT_FRAUDS, ModelCard, render_markdown, split_windows
from mlops_core.training.report import EvaluationReport, GateOutcome, ScoredModel


def _report(gates: list[GateOutcome]) -> EvaluationReport:
    y = np.array([0, 1, 0, 1])
    candidate = ScoredModel(
        "candidate (xgboost)", y, np.array([0.1, 0.9, 0.2, 0.7]), 0.5, {"auc_pr": 0.73126, "recall": 0.5}
    )
    champion = ScoredModel("champion v3", y, np.array([0.1, 0.4, 0.2, 0.7]), 0.5, {"auc_pr": 0.7301, "recall": 0.5})
    segments = pd.DataFrame(
        [
            ["channel", "online", 900, 40, 0.8, 0.01, 0.5, 0.6],
            ["channel", "in_store", 100, MIN_SEGMENT_FRAUDS - 1, 0.3, 0.02, 0.2, 0.3],
            ["age_band", "18-24", 50, MIN_SEGMENT_FRAUDS, 0.5, 0.02, 0.2, 0.3],
        ],
        columns=["segment", "value", "n", "positives", "recall", "false_positive_rate", "precision", "auc_pr"],
    )
    return EvaluationReport(title="t", candidate=candidate, others=[champion], segments=segments, gates=gates)


def _card(gates, refit=True) -> ModelCard:
    frame = pd.DataFrame(
        {
            "split": ["train", "train", "validation", "test", "test"],
            "is_fraud": [0, 1, 0, 1, 1],
            "event_timestamp": pd.to_datetime(
                ["2026-01-01 10:00", "2026-01-09 00:00", "2026-01-20 00:00", "2026-01-25 00:00", "2026-01-31 23:59"]
            ),
        }
    )
    return ModelCard(
        project="fraud",
        description="Card fraud.",
        owner="fraud-ml@example.com",
        model_kind="xgboost",
        threshold=0.0421,
        threshold_rule="minimum expected cost on validation",
        feature_count=31,
        top_features=(("txn_count_1h", 0.31), ("is_foreign", 0.2)),
        data_version="abc123",
        trained_through="2026-01-31T23:59:00",
        refit=refit,
        label_maturity_days=45,
        windows=split_windows(frame),
        report=_report(gates),
        run_id="run1",
    )


def test_the_card_carries_the_evaluations_numbers_and_windows():
    text = render_markdown(_card([GateOutcome("gate_minimum_quality", True, "AUC-PR 0.7313 (min 0.2)")]))
    assert "| candidate (xgboost) | 0.7313 |" in text
    assert "| champion v3 | 0.7301 |" in text  # a neighbour 0.001 away stays distinguishable
    assert "| train | 2 | 1 | 2026-01-01 10:00:00 | 2026-01-09 00:00:00 |" in text
    assert "| test | 2 | 2 | 2026-01-25 00:00:00 | 2026-01-31 23:59:00 |" in text
    assert "threshold 0.0421" in text and "`abc123`" in text and "txn_count_1h 0.310" in text
    assert "**all passed**" in text and "MLflow run `run1`" in text


def test_known_limits_name_the_thin_segments_and_what_was_not_assessed():
    gates = [
        GateOutcome("gate_minimum_quality", True, "ok"),
        GateOutcome("gate_fairness_age_band", True, "not assessed: fewer than two age bands have >= 10 frauds"),
        GateOutcome("gate_latency_slo", False, "p99 7.1 ms (SLO 5.0 ms)"),
    ]
    card = _card(gates)
    limits = card.known_limits()
    thin = [x for x in limits if x.startswith("Segment ")]
    # 9 frauds is below the bar, 10 is not.
    assert thin == [
        f"Segment channel=in_store: {MIN_SEGMENT_FRAUDS - 1} frauds in 100 test rows, fewer than 10: "
        "its recall and precision are not reliable."
    ]
    assert any(x.startswith("gate_fairness_age_band: not assessed") for x in limits)
    assert any("refitted" in x for x in limits) and any("45 days" in x for x in limits)
    text = render_markdown(card)
    assert "**stopped**" in text and "| gate_latency_slo | FAIL | p99 7.1 ms (SLO 5.0 ms) |" in text
    assert not any("refitted" in x for x in _card(gates, refit=False).known_limits())
