"""Serving every declared snapshot project from the one `mlops serve`: lazy models within a memory budget,
a traffic plan per project, features as of the project's latest snapshot.

A snapshot project's online route answers "what does the model say about this entity now": the request names
the entity (the declaration's request schema), the features are the ones its latest snapshot computed for it
(published by the project's `online_features` asset as one parquet file, so online equals offline by
construction), and the project's own deployment scores them: champion, or canary for a sticky share of keys,
with an optional shadow. Each project has its own plan file, so a canary or rollback of one never touches
another, and a restart resumes every plan.

Nothing is loaded at start: a project's models and features load on its first request and stay while the
total (ONNX bytes plus feature matrices) fits `memory_budget_bytes`; past it the least recently used project
is dropped, to be loaded again from its plan on its next request.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from mlops_core.projects.declaration import ModelProject, RequestField
from mlops_core.serving.models import LoadedModel
from mlops_core.serving.plan import TrafficPlan
from mlops_core.serving.routing import CANARY, CHAMPION, Deployment

FEATURES_FILE = "features.parquet"
PLAN_FILE = "traffic_plan.json"
MAX_BATCH = 1000
# How often a project's published features are checked for a newer snapshot.
FEATURES_RECHECK_SECONDS = 1.0


class UnknownProject(LookupError):
    pass


class UnknownEntity(LookupError):
    pass


class ProjectNotReady(RuntimeError):
    pass


def features_root(data_dir: Path) -> Path:
    """Where each snapshot project's online_features asset publishes its latest snapshot for serving."""
    return Path(data_dir) / "serving" / "projects"


def features_path(root: Path, project: str) -> Path:
    return Path(root) / project / FEATURES_FILE


def _python_type(field: RequestField) -> Any:
    if field.type == "category":
        from typing import Literal

        return Literal[tuple(field.categories)]  # type: ignore[valid-type]
    return {"string": str, "float": float, "integer": int, "timestamp": str}[field.type]


def request_model(project: ModelProject) -> type[BaseModel]:
    """The pydantic model of one request of `project`, from its declared request schema (unknown fields refused)."""
    fields = {}
    for field in project.serving.request_schema:
        bounds = {k: getattr(field, k) for k in ("gt", "ge", "lt", "le") if getattr(field, k) is not None}
        extra = {"min_length": 1, "max_length": 64} if field.type == "string" else {}
        fields[field.name] = (_python_type(field), Field(..., **bounds, **extra))
    return create_model(
        f"{project.name.title().replace('_', '')}Request",
        __config__=ConfigDict(extra="forbid", strict=False),
        **fields,
    )


@dataclasses.dataclass(frozen=True)
class PublishedFeatures:
    """One project's latest snapshot, as served: entity key -> row of the feature matrix."""

    snapshot_date: str
    index: dict[str, int]
    matrix: np.ndarray
    mtime_ns: int

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes) + 100 * len(self.index)

    @classmethod
    def read(cls, path: Path, key: str, features: list[str]) -> PublishedFeatures:
        import pandas as pd

        stat = path.stat()
        frame = pd.read_parquet(path)
        missing = [c for c in (key, "snapshot_date", *features) if c not in frame.columns]
        if missing:
            raise ProjectNotReady(f"{path} lacks the columns {missing}: rematerialize the project's online_features")
        dates = frame["snapshot_date"].astype(str).unique()
        return cls(
            snapshot_date=str(dates.max())[:10] if len(dates) else "",
            index={str(k): i for i, k in enumerate(frame[key].astype(str))},
            matrix=frame[features].to_numpy(dtype=np.float32, na_value=np.nan),
            mtime_ns=stat.st_mtime_ns,
        )


@dataclasses.dataclass
class _Loaded:
    deployment: Deployment
    features: PublishedFeatures
    checked_at: float

    @property
    def nbytes(self) -> int:
        models = {
            id(m): m for m in (self.deployment.champion, self.deployment.canary, self.deployment.shadow) if m
        }.values()
        return self.features.nbytes + sum(m.nbytes for m in models)


class ProjectModels:
    """The declared snapshot projects' deployments, loaded lazily, LRU-evicted past the memory budget.

    `loader(project, version)` builds a LoadedModel from the registry; `champion_alias(project)` names the
    registry's champion version (used when a project has no plan yet). Thread-safe: scoring reads one
    immutable Deployment per request; loads, evictions and plan changes hold the lock."""

    def __init__(
        self,
        projects: Sequence[ModelProject],
        loader: Callable[[ModelProject, str], LoadedModel],
        champion_alias: Callable[[ModelProject], str | None],
        features_root: Path,
        plans_root: Path | None,
        memory_budget_bytes: int,
        metrics: Any | None = None,
    ) -> None:
        self.projects = {p.name: p for p in projects}
        self.loader = loader
        self.champion_alias = champion_alias
        self.features_root = Path(features_root)
        self.plans_root = None if plans_root is None else Path(plans_root)
        self.memory_budget_bytes = memory_budget_bytes
        self.metrics = metrics
        self._requests = {name: request_model(p) for name, p in self.projects.items()}
        self._loaded: collections.OrderedDict[str, _Loaded] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[str, threading.RLock] = {}
        self.evictions = 0

    # --- what is served -------------------------------------------------------------------------------

    def project(self, name: str) -> ModelProject:
        project = self.projects.get(name)
        if project is None:
            raise UnknownProject(f"no project named {name!r}; served projects: {sorted(self.projects)}")
        return project

    def plan_path(self, name: str) -> Path | None:
        return None if self.plans_root is None else self.plans_root / name / PLAN_FILE

    def loaded_bytes(self) -> int:
        with self._lock:
            return sum(state.nbytes for state in self._loaded.values())

    def describe(self) -> list[dict[str, object]]:
        with self._lock:
            loaded = dict(self._loaded)
        out = []
        for name, project in sorted(self.projects.items()):
            state = loaded.get(name)
            plan = None if state is not None else (TrafficPlan.load(p) if (p := self.plan_path(name)) else None)
            deployment = (
                state.deployment.describe()
                if state
                else {
                    "champion_version": plan.champion_version if plan else self.champion_alias(project),
                    "canary_version": plan.canary_version if plan else None,
                    "canary_share": plan.canary_share if plan else 0.0,
                    "shadow_version": plan.shadow_version if plan else None,
                }
            )
            out.append(
                {
                    "project": name,
                    "registered_model": project.registered_model,
                    "family": project.model.family,
                    "serving_mode": project.serving.mode,
                    "loaded": state is not None,
                    "features_as_of": state.features.snapshot_date if state else None,
                    **{
                        k: deployment.get(k)
                        for k in ("champion_version", "canary_version", "canary_share", "shadow_version")
                    },
                }
            )
        return out

    # --- scoring --------------------------------------------------------------------------------------

    def validate(self, name: str, body: Mapping[str, object]) -> dict[str, object]:
        """One request checked against the project's declared schema; ValidationError names the field."""
        return self._requests[self.project(name).name].model_validate(body).model_dump()

    def predict(self, name: str, requests: Sequence[Mapping[str, object]], route: str = "predict") -> list[dict]:
        project = self.project(name)
        started = time.perf_counter()
        state = self._state(project)
        deployment, features = state.deployment, state.features
        key = project.entity.key
        ids = [str(r[key]) for r in requests]
        missing = [i for i in ids if i not in features.index]
        if missing:
            raise UnknownEntity(
                f"{project.name}: no features for {key} {missing[0]!r} in the snapshot of {features.snapshot_date} "
                f"({len(missing)} of {len(ids)} unknown): the entity was not in the population"
            )
        rows = features.matrix[[features.index[i] for i in ids]]
        variants = [deployment.variant_for(i) for i in ids]
        scores = np.empty(len(ids), dtype=np.float64)
        models = {CHAMPION: deployment.champion, CANARY: deployment.canary}
        for variant in set(variants):
            chosen = np.array([v == variant for v in variants])
            scores[chosen] = models[variant].score(rows[chosen])
        if deployment.shadow is not None:
            shadow_scores = deployment.shadow.score(rows)
            if self.metrics is not None:
                self.metrics.shadowed(project.name, shadow_scores)
        answers = []
        for i, variant in enumerate(variants):
            model = models[variant]
            answers.append(
                {
                    "project": project.name,
                    key: ids[i],
                    "score": float(scores[i]),
                    "decision": bool(scores[i] >= model.threshold),
                    "model_version": model.version,
                    "variant": variant,
                    "features_as_of": features.snapshot_date,
                }
            )
        if self.metrics is not None:
            self.metrics.answered(project.name, route, variants, time.perf_counter() - started)
        return answers

    # --- loading and eviction -------------------------------------------------------------------------

    def is_loaded(self, name: str) -> bool:
        """Whether a request of `name` can be answered without loading anything (no I/O on the event loop)."""
        return name in self._loaded

    def _state(self, project: ModelProject) -> _Loaded:
        """The project's loaded state, loading it first when needed. Downloads and file reads happen outside
        the shared lock (a per-project lock stops two requests loading the same project twice), so one
        project's load never holds up another project's requests."""
        now = time.monotonic()
        state = self._loaded.get(project.name)
        if state is None:
            with self._loading_lock(project.name):
                state = self._loaded.get(project.name)
                if state is None:
                    state = self._load(project, now)
                    with self._lock:
                        self._loaded[project.name] = state
                        self._evict(keep=project.name)
                        self._show()
                    return state
        with self._lock:
            if project.name in self._loaded:
                self._loaded.move_to_end(project.name)
        if now - state.checked_at > FEATURES_RECHECK_SECONDS:
            state.checked_at = now
            self._refresh_features(project, state)
        return state

    def _loading_lock(self, name: str) -> threading.RLock:
        # Reentrant: a plan change (apply, rollback) holds it while it loads a project not yet loaded, which
        # takes it again; a plain Lock deadlocked the first admin call after a restart or an eviction.
        with self._lock:
            return self._loading.setdefault(name, threading.RLock())

    def _read_features(self, project: ModelProject) -> PublishedFeatures:
        path = features_path(self.features_root, project.name)
        if not path.is_file():
            raise ProjectNotReady(
                f"{project.name}: no published features at {path}: materialize {project.name}/online_features"
            )
        return PublishedFeatures.read(path, project.entity.key, project.feature_names())

    def _refresh_features(self, project: ModelProject, state: _Loaded) -> None:
        path = features_path(self.features_root, project.name)
        try:
            if path.stat().st_mtime_ns != state.features.mtime_ns:
                state.features = self._read_features(project)
        except (OSError, ProjectNotReady):
            pass  # keep serving the snapshot already loaded; the next check tries again

    def _load(self, project: ModelProject, now: float) -> _Loaded:
        plan_path = self.plan_path(project.name)
        plan = TrafficPlan.load(plan_path) if plan_path else None
        champion_version = plan.champion_version if plan else self.champion_alias(project)
        if champion_version is None:
            raise ProjectNotReady(f"{project.name}: no champion of {project.registered_model!r} to serve yet")
        deployment = self._deployment(project, plan, champion_version, reason="start")
        return _Loaded(deployment=deployment, features=self._read_features(project), checked_at=now)

    def _deployment(
        self,
        project: ModelProject,
        plan: TrafficPlan | None,
        champion: str,
        reason: str,
        loaded: Mapping[str, LoadedModel] | None = None,
    ) -> Deployment:
        """The deployment a plan describes; versions already in `loaded` are reused, the others downloaded."""
        loaded = loaded or {}

        def load(version: str | None) -> LoadedModel | None:
            if version is None:
                return None
            return loaded.get(str(version)) or self.loader(project, version)

        return Deployment(
            champion=load(champion),
            canary=load(plan.canary_version) if plan else None,
            canary_share=plan.canary_share if plan and plan.canary_version else 0.0,
            shadow=load(plan.shadow_version) if plan else None,
            previous=load(plan.previous_champion_version) if plan else None,
            reason=plan.reason if plan else reason,
        )

    def _evict(self, keep: str) -> None:
        while len(self._loaded) > 1 and self.loaded_bytes() > self.memory_budget_bytes:
            oldest = next(iter(self._loaded))
            if oldest == keep:
                break
            del self._loaded[oldest]
            self.evictions += 1

    def _show(self) -> None:
        if self.metrics is not None:
            self.metrics.show_projects({n: s.deployment for n, s in self._loaded.items()}, self.loaded_bytes())

    # --- traffic plans --------------------------------------------------------------------------------

    def apply(
        self,
        name: str,
        champion_version: str | None,
        canary_version: str | None = None,
        canary_share: float = 0.0,
        shadow_version: str | None = None,
        reason: str = "",
    ) -> dict[str, object]:
        """A new plan for one project: every model loaded first (outside the lock: requests keep being answered
        by the current deployment), then one swap; recorded for restarts."""
        project = self.project(name)
        with self._loading_lock(name):  # one plan change of a project at a time
            current = self._state(project)
            deployment = current.deployment
            champion = champion_version or deployment.champion.version
            previous = deployment.previous
            if champion != deployment.champion.version:
                previous = deployment.champion
            plan = TrafficPlan(
                champion_version=champion,
                canary_version=canary_version,
                canary_share=canary_share if canary_version else 0.0,
                shadow_version=shadow_version,
                previous_champion_version=previous.version if previous else None,
                reason=reason,
            )
            new = self._deployment(project, plan, champion, reason, loaded=_models_of(deployment))
            with self._lock:
                self._record(name, plan)
                current.deployment = new
                self._show()
            return new.describe()

    def rollback(self, name: str, reason: str) -> dict[str, object]:
        """This project's champion back to its previous one, canary and shadow off; others untouched."""
        project = self.project(name)
        with self._loading_lock(name):
            current = self._state(project)
            deployment = current.deployment
            if deployment.previous is None:
                raise ProjectNotReady(f"{name}: no previous champion to roll back to")
            plan = TrafficPlan(
                champion_version=deployment.previous.version,
                previous_champion_version=deployment.champion.version,
                reason=reason,
            )
            new = Deployment(champion=deployment.previous, previous=deployment.champion, reason=reason)
            with self._lock:
                self._record(name, plan)
                current.deployment = new
                self._show()
            return new.describe()

    def _record(self, name: str, plan: TrafficPlan) -> None:
        path = self.plan_path(name)
        if path is None:
            return
        before = TrafficPlan.load(path)
        (before.followed_by(plan) if before else plan).save(path)


def _models_of(deployment: Deployment) -> dict[str, LoadedModel]:
    return {
        m.version: m
        for m in (deployment.champion, deployment.canary, deployment.shadow, deployment.previous)
        if m is not None
    }


def publish_features(frame, root: Path, project: ModelProject) -> Path:
    """Write the latest snapshot's features where the server reads them: a temp file renamed into place, so
    a server never reads half a file."""
    path = features_path(root, project.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    frame.to_parquet(partial, index=False)
    os.replace(partial, path)
    return path


def invalid(error: ValidationError, prefix: tuple = ()) -> list[dict[str, object]]:
    return [{"loc": (*prefix, *e.get("loc", ())), "msg": e.get("msg"), "input": e.get("input")} for e in error.errors()]


class ProjectMetrics:
    """The projects' series in the service's registry, labelled by project (only declared projects: the label
    set is bounded by the declarations, never by what a client sends)."""

    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        from mlops_core.serving.service import LATENCY_BUCKETS

        self.predictions = Counter(
            "mlops_project_predictions",
            "Entities answered per project, by route and variant (a batch counts each of its requests).",
            ["project", "route", "variant"],
            registry=registry,
        )
        self.latency = Histogram(
            "mlops_project_request_latency_seconds",
            "Scoring time per project: validated request to answer.",
            ["project"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow = Counter(
            "mlops_project_shadow_scores",
            "Entities scored by a project's shadow model.",
            ["project"],
            registry=registry,
        )
        self.loaded = Gauge(
            "mlops_project_model_loaded",
            "1 per model version loaded, by project and variant.",
            ["project", "variant", "version"],
            registry=registry,
        )
        self.memory = Gauge(
            "mlops_project_loaded_bytes",
            "What the loaded projects count against MLOPS_SERVING_MEMORY_BUDGET_MB (ONNX graphs, sessions, features).",
            registry=registry,
        )

    def answered(self, project: str, route: str, variants: list[str], seconds: float) -> None:
        for variant, count in collections.Counter(variants).items():
            self.predictions.labels(project, route, variant).inc(count)
        self.latency.labels(project).observe(seconds)

    def shadowed(self, project: str, scores: np.ndarray) -> None:
        self.shadow.labels(project).inc(len(scores))

    def show_projects(self, deployments: Mapping[str, Deployment], loaded_bytes: int) -> None:
        self.loaded.clear()
        for project, deployment in deployments.items():
            for variant, model in (
                (CHAMPION, deployment.champion),
                (CANARY, deployment.canary),
                ("shadow", deployment.shadow),
                ("previous", deployment.previous),
            ):
                if model is not None:
                    self.loaded.labels(project, variant, model.version).set(1)
        self.memory.set(loaded_bytes)


def registry_loader(client) -> Callable[[ModelProject, str], LoadedModel]:
    """Build a project's LoadedModel from its registered model's version: ONNX bytes and threshold only."""
    from mlops_core.serving.models import ModelLoadError, download_onnx
    from mlops_core.training.onnx_export import OnnxScorer

    def load(project: ModelProject, version: str) -> LoadedModel:
        model_bytes, threshold = download_onnx(client, version, project.registered_model)
        scorer = OnnxScorer(model_bytes)
        if scorer.n_features != len(project.feature_names()):
            raise ModelLoadError(
                f"{project.registered_model!r} version {version} takes {scorer.n_features} features; "
                f"project {project.name!r} declares {len(project.feature_names())}"
            )
        return LoadedModel(version=str(version), scorer=scorer, threshold=threshold, size_bytes=len(model_bytes))

    return load
