"""Late-arriving fraud labels: when each verdict becomes known, and a queue that lands them.

Fraud is confirmed by a chargeback (days to weeks later) or a customer report (within
three days). A legitimate transaction gets is_fraud=false only when it has matured:
MATURITY_DAYS after the event with no dispute. Until then it has no label at all.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

from mlops_core.contracts import LABEL_SOURCES, LABELS
from mlops_core.datagen.world import SECONDS_PER_DAY

MATURITY_DAYS = 45
CUSTOMER_REPORT_SHARE = 0.25
CUSTOMER_REPORT_MIN_S = 30 * 60
CUSTOMER_REPORT_MAX_DAYS = 3
CHARGEBACK_MEDIAN_DAYS = 10.0
CHARGEBACK_SIGMA = 0.6
CHARGEBACK_MIN_DAYS = 1

CHARGEBACK, CUSTOMER_REPORT, MATURITY = (LABEL_SOURCES.index(s) for s in ("chargeback", "customer_report", "maturity"))
TIMESTAMP = pa.timestamp("ns", tz="UTC")


def label_times(
    rng: np.random.Generator, event_s: np.ndarray, is_fraud: np.ndarray, maturity_days: int = MATURITY_DAYS
) -> tuple[np.ndarray, np.ndarray]:
    """When each transaction's label becomes known (epoch seconds) and its label_source code.

    maturity_days is the dispute window: a legitimate label lands then, and every fraud is
    confirmed at least 3 days earlier (chargebacks are clipped to maturity_days - 3)."""
    if maturity_days < CUSTOMER_REPORT_MAX_DAYS + 1:
        raise ValueError(
            f"maturity_days must be >= {CUSTOMER_REPORT_MAX_DAYS + 1} (after the customer-report window), got {maturity_days}"
        )
    n = len(event_s)
    reported = rng.random(n) < CUSTOMER_REPORT_SHARE
    report_delay = rng.integers(CUSTOMER_REPORT_MIN_S, CUSTOMER_REPORT_MAX_DAYS * SECONDS_PER_DAY, n)
    chargeback_days = np.clip(
        rng.lognormal(np.log(CHARGEBACK_MEDIAN_DAYS), CHARGEBACK_SIGMA, n),
        CHARGEBACK_MIN_DAYS,
        max(CHARGEBACK_MIN_DAYS, maturity_days - 3),
    )
    fraud_delay = np.where(reported, report_delay, (chargeback_days * SECONDS_PER_DAY).astype(np.int64))
    delay = np.where(is_fraud, fraud_delay, maturity_days * SECONDS_PER_DAY)
    source = np.where(is_fraud, np.where(reported, CUSTOMER_REPORT, CHARGEBACK), MATURITY).astype(np.int8)
    return event_s + delay, source


class LabelQueue:
    """Labels waiting for the day they become known; those after the window never land."""

    def __init__(self, start_s: int, days: int) -> None:
        self._start_s = start_s
        self._days = days
        self._pending: dict[int, list[tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]]] = defaultdict(list)

    def add(self, transaction_id: pa.Array, is_fraud: np.ndarray, labeled_s: np.ndarray, source: np.ndarray) -> None:
        day = (labeled_s - self._start_s) // SECONDS_PER_DAY
        for target in np.unique(day[day < self._days]):
            mask = day == target
            self._pending[int(target)].append(
                (transaction_id.filter(pa.array(mask)), is_fraud[mask], labeled_s[mask], source[mask])
            )

    def pop(self, day_index: int) -> pa.Table:
        """The labels that become known on day_index, in order of labeled_at."""
        chunks = self._pending.pop(day_index, [])
        ids = pa.concat_arrays([c[0] for c in chunks]) if chunks else pa.array([], pa.string())
        is_fraud = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, dtype=bool)
        labeled_s = np.concatenate([c[2] for c in chunks]) if chunks else np.zeros(0, dtype=np.int64)
        source = np.concatenate([c[3] for c in chunks]) if chunks else np.zeros(0, dtype=np.int8)
        order = np.argsort(labeled_s, kind="stable")
        columns = {
            "transaction_id": ids.take(pa.array(order)),
            "is_fraud": pa.array(is_fraud[order]),
            "labeled_at": pa.array(labeled_s[order] * 1_000_000_000, TIMESTAMP),
            "label_source": pa.array(LABEL_SOURCES).take(pa.array(source[order])),
        }
        return pa.table({name: columns[name] for name in LABELS.columns})
