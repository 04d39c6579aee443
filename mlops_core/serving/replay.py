"""Real transactions from the warehouse sent to an endpoint: staging smoke tests and rollout soaks."""

import time
from dataclasses import dataclass, field

import duckdb
import numpy as np

from mlops_core.serving.client import EndpointClient, EndpointError
from mlops_core.serving.schemas import Prediction

RAW_FIELDS = ("transaction_id", "account_id", "merchant_id", "merchant_category", "amount", "currency", "channel", "country", "event_timestamp")


def recent_transactions(con: duckdb.DuckDBPyConnection, limit: int) -> list[dict[str, object]]:
    """The newest `limit` transactions of the warehouse as request bodies, oldest first."""
    frame = con.execute(
        f"select {', '.join(RAW_FIELDS)} from marts.transactions_enriched order by event_timestamp desc, transaction_id limit ?",
        [int(limit)],
    ).df()
    frame = frame.iloc[::-1]
    rows = frame.to_dict(orient="records")
    for row in rows:
        ts = row["event_timestamp"]
        row["event_timestamp"] = ts.isoformat() if hasattr(ts, "isoformat") else str(ts)
        row["amount"] = float(row["amount"])
    return rows


@dataclass
class ReplayResult:
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    contract_violations: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.sent,
            "errors": len(self.errors),
            "contract_violations": len(self.contract_violations),
            "p50_ms": round(self.percentile(50), 3),
            "p99_ms": round(self.percentile(99), 3),
            "model_versions": sorted(self.versions),
            "first_error": self.errors[0] if self.errors else None,
            "first_contract_violation": self.contract_violations[0] if self.contract_violations else None,
        }


def replay(client: EndpointClient, transactions: list[dict[str, object]]) -> ReplayResult:
    """Send each transaction as one /v1/predict request, in order; check every answer against the contract."""
    result = ReplayResult()
    for tx in transactions:
        started = time.perf_counter()
        try:
            answer = client.predict(tx)
        except EndpointError as exc:
            result.errors.append(str(exc))
            continue
        finally:
            result.sent += 1
        result.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        problem = contract_problem(tx, answer)
        if problem:
            result.contract_violations.append(problem)
        else:
            result.versions.add(answer["model_version"])
    return result


def contract_problem(request: dict[str, object], answer: dict[str, object]) -> str | None:
    try:
        parsed = Prediction.model_validate(answer)
    except Exception as exc:
        return f"{request['transaction_id']}: response does not match the contract: {exc}"
    if parsed.transaction_id != request["transaction_id"]:
        return f"{request['transaction_id']}: answered for {parsed.transaction_id}"
    if not 0.0 <= parsed.fraud_probability <= 1.0:
        return f"{request['transaction_id']}: fraud_probability {parsed.fraud_probability} outside [0, 1]"
    return None
