"""The scoring service behind the HTTP app: features, routing, scoring, logging, traffic changes.

Framework-free so it is tested without a server and reused by the benchmark. The app
(app.py) only parses, authenticates and serialises.
"""

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from mlops_core.features.online import OnlineFeatureService, TooLateError
from mlops_core.serving.limits import EventTimeBounds, wall_clock
from mlops_core.serving.models import LoadedModel
from mlops_core.serving.plan import TrafficPlan
from mlops_core.serving.prediction_log import Commit, PredictionLog, PredictionRecord, features_json
from mlops_core.serving.routing import CANARY, CHAMPION, SHADOW, Deployment, SegmentRule
from mlops_core.training.matrix import encode_rows

log = logging.getLogger(__name__)
# The *_created series double the /metrics text and no dashboard here reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SCORE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


class NotReady(RuntimeError):
    """No champion is loaded: the endpoint cannot answer."""


class TrafficError(ValueError):
    """A traffic change that cannot be applied (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class FieldProblem:
    """One refused field of one transaction of a request (row 0 for a single prediction)."""

    row: int
    field: str
    problem: str
    found: object


class InvalidTransactions(ValueError):
    """Transactions that parse but that the service refuses (an event time out of bounds): a 422."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"transaction {p.row}: {p.field} {p.problem}" for p in problems))


class ServiceMetrics:
    """Prometheus metrics in a registry of their own (one per service, so tests don't collide).

    Requests and transactions are separate counters: a batch is one HTTP request and many
    answered transactions.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = Counter(
            "mlops_http_requests",
            "HTTP requests by route and status: every answer, the server's own refusals (400, 408, 431, 503) included.",
            ["route", "status"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "mlops_predictions",
            "Transactions answered, by route and variant (a batch counts each of its transactions).",
            ["route", "variant"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_request_latency_seconds",
            "Scoring requests: parsed request to answer (the prediction log commit included), by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            "mlops_fraud_score",
            "P(fraud) returned or shadowed, by variant.",
            ["variant"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "mlops_model_loaded",
            "1 for each model version loaded, by variant.",
            ["variant", "version"],
            registry=self.registry,
        )
        self.canary_share = Gauge(
            "mlops_canary_share", "Share of accounts routed to the canary.", registry=self.registry
        )
        self.model_errors = Counter(
            "mlops_model_errors", "Scoring failures of a model, by variant.", ["variant"], registry=self.registry
        )
        # labels() costs a lock and a dict lookup per call; the hot path reuses the children.
        self.answered = {
            (route, variant): self.predictions.labels(route, variant)
            for route in ("predict", "batch")
            for variant in (CHAMPION, CANARY)
        }
        self.latency_of = {route: self.latency.labels(route) for route in ("predict", "batch")}
        self.scores_of = {variant: self.scores.labels(variant) for variant in (CHAMPION, CANARY, SHADOW)}
        self._http_of: dict[tuple[str, int], object] = {}

    def count_http(self, route: str, status: int) -> None:
        child = self._http_of.get((route, status))
        if child is None:
            child = self._http_of[(route, status)] = self.http.labels(route, str(status))
        child.inc()

    def show(self, deployment: Deployment) -> None:
        self.model_info.clear()
        for variant, model in (
            (CHAMPION, deployment.champion),
            (CANARY, deployment.canary),
            (SHADOW, deployment.shadow),
            ("previous", deployment.previous),
        ):
            if model is not None:
                self.model_info.labels(variant, model.version).set(1)
        self.canary_share.set(deployment.canary_share if deployment.canary is not None else 0.0)


@dataclass(frozen=True)
class ScoredRequest:
    transaction_id: str
    fraud_probability: float
    is_fraud: bool
    model_version: str
    variant: str
    request_id: str

    def as_dict(self) -> dict[str, object]:
        return {
            "transaction_id": self.transaction_id,
            "fraud_probability": self.fraud_probability,
            "is_fraud": self.is_fraud,
            "model_version": self.model_version,
            "variant": self.variant,
            "request_id": self.request_id,
        }


class ScoringService:
    """Scores raw transactions with the current Deployment and keeps the traffic plan.

    `loader(version)` turns a registry version into a LoadedModel; `record_events` makes
    each scored transaction part of the account's online history (off for a staging copy,
    which must not write production state).
    """

    def __init__(
        self,
        features: OnlineFeatureService,
        loader: Callable[[str], LoadedModel],
        prediction_log: PredictionLog | None,
        plan_path: Path | None,
        record_events: bool = True,
        champion_alias: Callable[[], str | None] | None = None,
        event_bounds: EventTimeBounds = EventTimeBounds(),
        clock: Callable[[], dt.datetime] = wall_clock,
    ) -> None:
        self.features = features
        self.loader = loader
        self.prediction_log = prediction_log
        self.plan_path = plan_path
        self.record_events = record_events
        self.champion_alias = champion_alias
        self.event_bounds = event_bounds
        # "now" of the event-time bounds: injected, so tests and a simulated calendar are deterministic.
        self.clock = clock
        self.metrics = ServiceMetrics()
        self.deployment = Deployment(champion=None, reason="nothing loaded yet")
        self.plan: TrafficPlan | None = None  # what plan_path holds: resumed at start, extended by each change
        self.started_at = time.time()
        # Traffic changes are serialised; scoring never takes this lock.
        self._change_lock = threading.Lock()

    # ---- scoring -------------------------------------------------------------------------

    def predict(self, transactions: Sequence[Mapping[str, object]], route: str = "predict") -> list[ScoredRequest]:
        """Score, then block until the prediction log holds the answers (for threads and scripts)."""
        results, commit, started = self.score(transactions, route)
        if commit is not None:
            commit.wait()
        self._observe(route, results, time.perf_counter() - started)
        return results

    async def predict_async(
        self, transactions: Sequence[Mapping[str, object]], route: str = "predict"
    ) -> list[ScoredRequest]:
        """Score, then await the prediction log's commit without blocking the event loop: answered means logged."""
        results, commit, started = self.score(transactions, route)
        if commit is not None:
            await self.prediction_log.committed(commit)
        self._observe(route, results, time.perf_counter() - started)
        return results

    def score(
        self, transactions: Sequence[Mapping[str, object]], route: str = "predict"
    ) -> tuple[list[ScoredRequest], Commit | None, float]:
        """Score and queue the log records. Returns the results, the log commit to wait for before
        answering, and the perf_counter time scoring began."""
        started = time.perf_counter()
        deployment = self.deployment  # one read: the whole request sees one deployment
        champion = deployment.champion
        if champion is None:
            raise NotReady("no champion model is loaded")
        rows = [dict(t) for t in transactions]
        self._check_event_times(rows)
        try:
            features = self.features.get_online_features(rows)
        except TooLateError as exc:  # a partial 30-day window would score differently from training
            raise InvalidTransactions(
                [
                    FieldProblem(
                        row,
                        "event_timestamp",
                        f"older than the online store's allowed lateness: it holds complete 30-day windows "
                        f"for event times from {exc.earliest.isoformat()} on; score older transactions offline",
                        when.isoformat(),
                    )
                    for row, when in zip(exc.rows, exc.event_times)
                ]
            ) from exc
        X = encode_rows(features)
        variants = [deployment.variant_for(str(r["account_id"]), f) for r, f in zip(rows, features)]
        scores = np.empty(len(rows))
        versions = [champion.version] * len(rows)
        errors: list[tuple[int, str, str, str]] = []  # (row, variant, version, message)
        canary_rows = [i for i, v in enumerate(variants) if v == CANARY]
        champion_rows = [i for i, v in enumerate(variants) if v == CHAMPION]
        if canary_rows:
            try:
                scores[canary_rows] = deployment.canary.score(X[canary_rows])
                for i in canary_rows:
                    versions[i] = deployment.canary.version
            except Exception as exc:  # a broken canary must never fail the caller: the champion answers
                self.metrics.model_errors.labels(CANARY).inc(len(canary_rows))
                errors = [(i, CANARY, deployment.canary.version, f"{type(exc).__name__}: {exc}") for i in canary_rows]
                for i in canary_rows:
                    variants[i] = CHAMPION
                champion_rows = sorted(champion_rows + canary_rows)
        if champion_rows:
            scores[champion_rows] = champion.score(X[champion_rows])
        shadow_scores = None
        if deployment.shadow is not None:
            try:
                shadow_scores = deployment.shadow.score(X)
            except Exception as exc:
                self.metrics.model_errors.labels(SHADOW).inc(len(rows))
                errors += [
                    (i, SHADOW, deployment.shadow.version, f"{type(exc).__name__}: {exc}") for i in range(len(rows))
                ]
        if self.record_events:
            self.features.record(rows)
        request_id = uuid.uuid4().hex
        results = []
        for i, row in enumerate(rows):
            model = deployment.canary if variants[i] == CANARY else champion
            score = float(scores[i])
            results.append(
                ScoredRequest(
                    transaction_id=str(row["transaction_id"]),
                    fraud_probability=score,
                    is_fraud=score >= model.threshold,
                    model_version=versions[i],
                    variant=variants[i],
                    request_id=request_id if len(rows) == 1 else f"{request_id}-{i}",
                )
            )
        latency = time.perf_counter() - started
        commit = self._log(rows, features, results, errors, shadow_scores, deployment, latency)
        return results, commit, started

    def _check_event_times(self, rows: list[dict]) -> None:
        """Event times within the bounds, as UTC datetimes in `rows`; InvalidTransactions naming each refused one."""
        now = self.clock()
        problems = []
        for i, row in enumerate(rows):
            value = row.get("event_timestamp")
            when = _utc(value)
            problem = (
                "is not an ISO 8601 time within years 1-9999 UTC"
                if when is None
                else self.event_bounds.problem(when, now)
            )
            if problem is not None:
                problems.append(
                    FieldProblem(
                        i, "event_timestamp", problem, value.isoformat() if isinstance(value, dt.datetime) else value
                    )
                )
            else:
                row["event_timestamp"] = when
        if problems:
            raise InvalidTransactions(problems)

    def _observe(self, route: str, results: list[ScoredRequest], latency: float) -> None:
        m = self.metrics
        m.latency_of[route].observe(latency)
        for r in results:
            m.answered[(route, r.variant)].inc()
            m.scores_of[r.variant].observe(r.fraud_probability)

    def _log(
        self, rows, features, results, errors, shadow_scores, deployment: Deployment, latency: float
    ) -> Commit | None:
        if self.prediction_log is None:
            return None
        now = time.time()
        latency_ms = latency * 1000.0
        records = []
        for row, feats, r in zip(rows, features, results):
            records.append(
                PredictionRecord(
                    logged_at=now,
                    request_id=r.request_id,
                    transaction_id=r.transaction_id,
                    account_id=str(row["account_id"]),
                    event_timestamp=_iso(row["event_timestamp"]),
                    model_version=r.model_version,
                    variant=r.variant,
                    served=1,
                    status="ok",
                    score=r.fraud_probability,
                    decision=int(r.is_fraud),
                    latency_ms=latency_ms,
                    features=features_json(feats),
                )
            )
        if shadow_scores is not None:
            shadow = deployment.shadow
            for row, r, score in zip(rows, results, shadow_scores):
                self.metrics.scores_of[SHADOW].observe(float(score))
                records.append(
                    PredictionRecord(
                        logged_at=now,
                        request_id=r.request_id,
                        transaction_id=r.transaction_id,
                        account_id=str(row["account_id"]),
                        event_timestamp=_iso(row["event_timestamp"]),
                        model_version=shadow.version,
                        variant=SHADOW,
                        served=0,
                        status="ok",
                        score=float(score),
                        decision=int(score >= shadow.threshold),
                        latency_ms=None,
                        features=None,
                    )
                )
        for i, variant, version, message in errors:
            r, row = results[i], rows[i]
            records.append(
                PredictionRecord(
                    logged_at=now,
                    request_id=r.request_id,
                    transaction_id=r.transaction_id,
                    account_id=str(row["account_id"]),
                    event_timestamp=_iso(row["event_timestamp"]),
                    model_version=version,
                    variant=variant,
                    served=0,
                    status="error",
                    score=None,
                    decision=None,
                    latency_ms=latency_ms,
                    features=None,
                    error=message[:500],
                )
            )
        return self.prediction_log.append(records)

    # ---- traffic -------------------------------------------------------------------------

    def _model(self, version: str | None, deployment: Deployment) -> LoadedModel | None:
        """Reuse a model the endpoint already holds; load anything else before the swap."""
        if version is None:
            return None
        for held in (deployment.champion, deployment.canary, deployment.shadow, deployment.previous):
            if held is not None and held.version == str(version):
                return held
        try:
            return self.loader(str(version))
        except Exception as exc:
            raise TrafficError(f"cannot load model version {version}: {exc}") from exc

    def _swap(self, new: Deployment, resumed: TrafficPlan | None = None) -> Deployment:
        """Serve `new`. A change is recorded in the plan file, keeping the plan it replaces in the
        history; a `resumed` plan is served as it is and the file is left untouched."""
        self.deployment = new  # the atomic step: in-flight requests keep the deployment they read
        self.metrics.show(new)
        if self.plan_path is not None:
            if resumed is None:
                # The description holds exactly the plan's fields: what to resume after a restart.
                plan = TrafficPlan(**new.describe())
                self.plan = plan if self.plan is None else self.plan.followed_by(plan)
                self.plan.save(self.plan_path)
            else:
                self.plan = resumed
        log.info("%s: %s", "resumed the recorded plan" if resumed is not None else "traffic changed", new.describe())
        return new

    def apply(
        self,
        champion_version: str | None = None,
        canary_version: str | None = None,
        canary_share: float = 0.0,
        shadow_version: str | None = None,
        reason: str = "traffic change",
        canary_excluded: Sequence[Mapping[str, object] | SegmentRule] = (),
    ) -> Deployment:
        """Load what is new, then swap in one step. A new champion keeps the old one as `previous`."""
        with self._change_lock:
            current = self.deployment
            champion = current.champion
            previous = current.previous
            if champion_version is not None and (champion is None or champion.version != str(champion_version)):
                previous = champion
                champion = self._model(champion_version, current)
            if champion is None:
                raise TrafficError("no champion: pass champion_version")
            canary = self._model(canary_version, current)
            if canary is None and canary_share > 0:
                raise TrafficError("canary_share > 0 needs canary_version")
            shadow = self._model(shadow_version, current)
            return self._swap(
                Deployment(
                    champion=champion,
                    canary=canary,
                    canary_share=canary_share if canary else 0.0,
                    canary_excluded=tuple(SegmentRule.of(rule) for rule in canary_excluded) if canary else (),
                    shadow=shadow,
                    previous=previous,
                    reason=reason,
                )
            )

    def rollback(self, reason: str) -> Deployment:
        """Drain a canary or shadow if one is running; otherwise put the previous champion back."""
        with self._change_lock:
            current = self.deployment
            if current.canary is not None or current.shadow is not None:
                new = Deployment(
                    champion=current.champion, previous=current.previous, reason=f"rollback (drain): {reason}"
                )
            elif current.previous is not None:
                new = Deployment(champion=current.previous, previous=current.champion, reason=f"rollback: {reason}")
            else:
                raise TrafficError("nothing to roll back: no canary, no shadow and no previous champion is held")
            return self._swap(new)

    def restore(self, plan: TrafficPlan) -> Deployment:
        """Resume a recorded plan at start-up, as it is (same reason, same time); previous champion loaded too."""
        with self._change_lock:
            current = self.deployment
            champion = self._model(plan.champion_version, current)
            if champion is None:
                raise TrafficError("the recorded plan has no champion_version")
            deployment = Deployment(
                champion=champion,
                canary=self._model(plan.canary_version, current),
                canary_share=plan.canary_share if plan.canary_version else 0.0,
                canary_excluded=tuple(SegmentRule.of(rule) for rule in plan.canary_excluded)
                if plan.canary_version
                else (),
                shadow=self._model(plan.shadow_version, current),
                previous=self._model(plan.previous_champion_version, current),
                reason=plan.reason,
                changed_at=_changed_at(plan.changed_at),
            )
            return self._swap(deployment, resumed=plan)

    def reload(self) -> Deployment:
        """Serve the registry's champion alias (canary and shadow end); the current champion is kept as previous."""
        version = self.champion_alias() if self.champion_alias is not None else None
        if version is None:
            raise TrafficError("the registry has no champion alias to load")
        return self.apply(champion_version=version, reason=f"reload: registry champion is version {version}")

    def start(self) -> Deployment:
        """At start-up: resume the recorded plan, else the registry champion, else stay not-ready."""
        plan = TrafficPlan.load(self.plan_path) if self.plan_path is not None else None
        if plan is not None and plan.champion_version is not None:
            return self.restore(plan)
        self.plan = plan  # a plan without a champion still carries its history into the next change
        version = self.champion_alias() if self.champion_alias is not None else None
        if version is None:
            log.warning("no traffic plan and no champion alias: not ready until a champion is deployed")
            return self.deployment
        return self.apply(champion_version=version, reason=f"start: registry champion is version {version}")

    def warm_up(self) -> None:
        """Load the feature store's replica now rather than on the first request."""
        self.features.store.read(["__warm_up__"], 0, 1)

    def status(self) -> dict[str, object]:
        d = self.deployment.describe()
        d["ready"] = self.deployment.champion is not None
        d["uptime_seconds"] = round(time.time() - self.started_at, 1)
        if self.prediction_log is not None:
            pl = self.prediction_log
            d["prediction_log"] = {
                "path": str(pl.path),
                "written": pl.written,
                "batches": pl.batches,
                "failures": pl.failures,
                "last_error": pl.last_error,
                "checkpoints": pl.checkpoints.checkpoints,
                "last_checkpoint_error": pl.checkpoints.last_error,
            }
        return d

    def close(self) -> None:
        if self.prediction_log is not None:
            self.prediction_log.close()
        self.features.store.close()


def _iso(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _utc(value: object) -> dt.datetime | None:
    """`value` (a datetime or ISO 8601 text; naive is UTC) as an aware UTC datetime, None if it is neither or overflows."""
    try:
        when = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(when, dt.datetime):
            return None
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


def _changed_at(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return dt.datetime.now(dt.UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
