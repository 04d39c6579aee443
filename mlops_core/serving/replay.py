"""Real transactions from the warehouse sent to an endpoint: staging smoke tests and rollout soaks."""

import time
from dataclasses import dataclass, field

import duckdb
import numpy as np

from mlops_core.serving.client import EndpointClient, EndpointError
from mlops_core.serving.schemas import Prediction

RAW_FIELDS = (
    "transaction_id",
    "account_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "channel",
    "country",
    "event_timestamp",
)


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
    """What a replay saw. Latency is kept twice: `server_ms`, the server's own processing time of each
    timed request (its Server-Timing header), which is what a gate judges; and `latencies_ms`, the
    client's wall clock, which also holds the client's own work and any wait for a CPU on a busy
    machine, and is informational."""

    sent: int = 0
    warmup: int = 0
    errors: list[str] = field(default_factory=list)
    contract_violations: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    without_server_timing: int = 0
    versions: set[str] = field(default_factory=set)

    def percentile(self, q: float) -> float:
        """Client wall clock, ms (informational)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def server_percentile(self, q: float) -> float:
        """The server's own processing time, ms."""
        return float(np.percentile(self.server_ms, q)) if self.server_ms else float("nan")

    def latency_problem(self, slo_p99_ms: float) -> str | None:
        """Why the server-side p99 breaks the SLO (measured vs bound), or None if it holds."""
        if not self.server_ms:
            return f"no timed request reported its server time (Server-Timing): latency against the {slo_p99_ms:g} ms SLO cannot be judged"
        p99 = self.server_percentile(99)
        if p99 <= slo_p99_ms:
            return None
        return (
            f"server p99 {p99:.1f} ms over the {slo_p99_ms:g} ms SLO (server processing time of {len(self.server_ms)} requests "
            f"after {self.warmup} warm-up; client wall clock p99 {self.percentile(99):.1f} ms, informational)"
        )

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.sent,
            "warmup_requests": self.warmup,
            "timed_requests": len(self.server_ms),
            "errors": len(self.errors),
            "contract_violations": len(self.contract_violations),
            "server_p50_ms": round(self.server_percentile(50), 3),
            "server_p99_ms": round(self.server_percentile(99), 3),
            "client_p50_ms": round(self.percentile(50), 3),
            "client_p99_ms": round(self.percentile(99), 3),
            "without_server_timing": self.without_server_timing,
            "model_versions": sorted(self.versions),
            "first_error": self.errors[0] if self.errors else None,
            "first_contract_violation": self.contract_violations[0] if self.contract_violations else None,
        }


def replay(
    client: EndpointClient, transactions: list[dict[str, object]], warmup: int = 0, requests: int | None = None
) -> ReplayResult:
    """Send transactions one /v1/predict request at a time, in order, cycling through them: `warmup`
    requests first (checked, not timed), then `requests` timed ones (default: each transaction once).
    Every answer is checked against the contract."""
    result = ReplayResult(warmup=warmup if transactions else 0)
    total = warmup + (len(transactions) if requests is None else requests) if transactions else 0
    for i in range(total):
        tx = transactions[i % len(transactions)]
        started = time.perf_counter()
        try:
            answer, server_ms = client.predict_timed(tx)
        except EndpointError as exc:
            result.errors.append(str(exc))
            continue
        finally:
            result.sent += 1
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        if i >= warmup:
            result.latencies_ms.append(elapsed_ms)
            if server_ms is None:
                result.without_server_timing += 1
            else:
                result.server_ms.append(server_ms)
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
