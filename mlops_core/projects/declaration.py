"""A model project as a declaration: one `defs.yaml` per project folder, validated against a typed schema.

The file has Dagster's component layout (`type:` and `attributes:`), so the same file a person edits is the
one the code location reads. Everything a model project decides lives under `attributes`: the entity and its
key, the marts it reads, the label, the features over the shared feature store, the model family and its
hyper-parameters, the gates and their bounds, the serving mode and request schema, the rollout plan, the
monitoring and retraining policy, the owner and the alert channel.

Defaults that the platform already has a home for (the gate thresholds, the canary rules, the model families'
hyper-parameters) are taken from that home, not written twice. A bad declaration raises
`ProjectDeclarationError`, whose message names the file, the field, what was found and what is allowed.

No dagster here: the CLI validates projects without loading a code location.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from mlops_core.features import spec
from mlops_core.monitoring.ab_test import ABRules
from mlops_core.projects import snapshots
from mlops_core.serving.analysis import CanaryRules
from mlops_core.training.gates import GateThresholds
from mlops_core.training.models import HistGradientBoostingParams, LogisticParams, XGBoostParams

DECLARATION_FILE = "defs.yaml"
COMPONENT_TYPE = "mlops_assets.projects.ModelProjectComponent"
# A project name becomes an asset-key prefix, a group, a registered-model name part and a URL segment.
PROJECT_NAME = r"^[a-z][a-z0-9_]{1,39}$"
# Marts the shared data layer builds (dbt models under dbt_project/models/marts); a project reads from these.
SHARED_MARTS = (
    "marts.transactions_enriched",
    "marts.account_history",
    "marts.label_events",
    "marts.transaction_labels",
)


class ProjectDeclarationError(ValueError):
    """A declaration that cannot be used; `problems` lists one line per field at fault."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: invalid model project declaration\n" + "\n".join(f"  - {p}" for p in problems))


class _Section(BaseModel):
    # A NaN bound compares false with everything: a gate bounded by .nan would pass or fail whatever it measures.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _section_from_dataclass(cls: type, name: str) -> type[BaseModel]:
    """A strict pydantic section whose fields and defaults are the dataclass's: one home for every default."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(cls)}
    return create_model(name, __base__=_Section, **fields)


GatesSection = _section_from_dataclass(GateThresholds, "GatesSection")
CanaryRulesSection = _section_from_dataclass(CanaryRules, "CanaryRulesSection")
ABRulesSection = _section_from_dataclass(ABRules, "ABRulesSection")
XGBoostHyperparameters = _section_from_dataclass(XGBoostParams, "XGBoostHyperparameters")
LogisticHyperparameters = _section_from_dataclass(LogisticParams, "LogisticHyperparameters")


HistGradientBoostingHyperparameters = _section_from_dataclass(
    HistGradientBoostingParams, "HistGradientBoostingHyperparameters"
)


class _ModelBase(_Section):
    # What a missed positive costs in false alarms: it sets the operating threshold on the validation split.
    false_negative_cost: Annotated[float, Field(gt=0)] = 20.0


class XGBoostModel(_ModelBase):
    family: Literal["xgboost"]
    hyperparameters: XGBoostHyperparameters = Field(default_factory=XGBoostHyperparameters)  # type: ignore[valid-type]


class LogisticRegressionModel(_ModelBase):
    family: Literal["logistic_regression"]
    hyperparameters: LogisticHyperparameters = Field(default_factory=LogisticHyperparameters)  # type: ignore[valid-type]


class HistGradientBoostingModel(_ModelBase):
    family: Literal["hist_gradient_boosting"]
    hyperparameters: HistGradientBoostingHyperparameters = Field(  # type: ignore[valid-type]
        default_factory=HistGradientBoostingHyperparameters
    )


ModelSection = Annotated[
    XGBoostModel | LogisticRegressionModel | HistGradientBoostingModel, Field(discriminator="family")
]
# A model family's section class by its tag (the `family` value).
MODEL_SECTIONS: dict[str, type[BaseModel]] = {
    "xgboost": XGBoostModel,
    "logistic_regression": LogisticRegressionModel,
    "hist_gradient_boosting": HistGradientBoostingModel,
}
MODEL_FAMILIES = tuple(MODEL_SECTIONS)


class Entity(_Section):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    key: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    # "event": one prediction per event (a transaction); "snapshot": one per entity every `snapshot_days`.
    grain: Literal["event", "snapshot"] = "event"
    snapshot_days: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _snapshot_has_a_period(self) -> Entity:
        if self.grain == "snapshot" and self.snapshot_days is None:
            raise ValueError("grain 'snapshot' needs snapshot_days (how often a snapshot is taken)")
        if self.grain == "event" and self.snapshot_days is not None:
            raise ValueError("snapshot_days applies to grain 'snapshot' only")
        return self


class Label(_Section):
    source: str
    # Spliced into SQL as a column name: a plain lowercase identifier only.
    column: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    positive_class: bool | int | str
    # Events are labelled when their label matures (fraud: disputes within weeks) or after a fixed horizon
    # (churn: no activity in the following N days): exactly one of the two.
    maturity_days: Annotated[int, Field(ge=0)] | None = None
    horizon_days: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_delay(self) -> Label:
        if (self.maturity_days is None) == (self.horizon_days is None):
            raise ValueError(
                "give exactly one of maturity_days (labels arrive later) or horizon_days (label = outcome)"
            )
        return self


class WindowedAggregate(_Section):
    aggregation: Literal["count", "sum", "mean", "max", "distinct_count", "seconds_since_last"]
    column: str | None = None
    windows: Annotated[list[str], Field(min_length=1)]


class Features(_Section):
    """Features over the shared feature store: windowed aggregates, account attributes and request-time features."""

    windowed: list[WindowedAggregate] = Field(default_factory=list)
    account: list[str] = Field(default_factory=list)
    request: list[str] = Field(default_factory=list)

    def names(self) -> list[str]:
        """Feature names in the shared store, windowed first; a windowed aggregate the store does not
        compute raises ValueError naming it and what the store offers."""
        names = []
        for aggregate in self.windowed:
            for window in aggregate.windows:
                names.append(_windowed_name(aggregate.aggregation, aggregate.column, window))
        return [*names, *self.account, *self.request]


def _windowed_name(aggregation: str, column: str | None, window: str) -> str:
    """The shared store's feature computing this aggregation of this column over this window."""
    for feature in spec.WINDOWED_FEATURES:
        if (feature.aggregation, feature.column, feature.window) == (aggregation, column, window):
            return feature.name
    offered = [f"{f.aggregation}({f.column or '*'}) over {f.window}" for f in spec.WINDOWED_FEATURES]
    raise ValueError(
        f"the shared feature store computes no {aggregation}({column or '*'}) over {window}; it offers: {offered}"
    )


class RequestField(_Section):
    """One field of a scoring request; bounds as in pydantic (gt, ge, lt, le)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    type: Literal["string", "float", "integer", "timestamp", "category"]
    categories: list[str] = Field(default_factory=list)
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    @model_validator(mode="after")
    def _categories_for_categories(self) -> RequestField:
        if self.type == "category" and not self.categories:
            raise ValueError(f"field {self.name!r} of type 'category' needs its categories")
        if self.type != "category" and self.categories:
            raise ValueError(f"field {self.name!r} lists categories but its type is {self.type!r}")
        bounded = any(b is not None for b in (self.gt, self.ge, self.lt, self.le))
        if bounded and self.type not in ("float", "integer"):
            raise ValueError(f"field {self.name!r} has bounds but its type is {self.type!r}, not a number")
        return self


class Serving(_Section):
    mode: Literal["online", "batch", "both"]
    request_schema: Annotated[list[RequestField], Field(min_length=1)]
    # Cron of the batch scores (batch and both); an online-only project scores per request.
    batch_schedule: str | None = None

    @model_validator(mode="after")
    def _batch_has_a_schedule(self) -> Serving:
        if self.mode in ("batch", "both") and not self.batch_schedule:
            raise ValueError(f"serving mode {self.mode!r} needs batch_schedule (a cron expression)")
        names = [f.name for f in self.request_schema]
        if len(names) != len(set(names)):
            raise ValueError(f"request_schema names a field twice: {sorted({n for n in names if names.count(n) > 1})}")
        return self


class StagingStage(_Section):
    requests: Annotated[int, Field(ge=1)] = 200
    warmup_requests: Annotated[int, Field(ge=0)] = 50
    latency_requests: Annotated[int, Field(ge=1)] = 1000
    slo_p99_ms: Annotated[float, Field(gt=0)] = 50.0


class ShadowStage(_Section):
    min_requests: Annotated[int, Field(ge=1)] = 100
    min_decision_agreement: Annotated[float, Field(ge=0, le=1)] = 0.9


class ExcludedSegment(_Section):
    """Requests the canary never answers (serving.routing.SegmentRule): online feature `feature` >= `at_least`."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    feature: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    at_least: float


class CanaryStage(_Section):
    share: Annotated[float, Field(gt=0, le=1)] = 0.1
    rules: CanaryRulesSection = Field(default_factory=CanaryRulesSection)  # type: ignore[valid-type]
    # Segments that stay on the champion, as the guides' "high-value customers stay on the champion".
    excluded_segments: list[ExcludedSegment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _segment_names_unique(self) -> CanaryStage:
        names = [segment.name for segment in self.excluded_segments]
        if len(names) != len(set(names)):
            raise ValueError(
                f"excluded_segments names a segment twice: {sorted({n for n in names if names.count(n) > 1})}"
            )
        return self


class ABTestStage(_Section):
    """The A/B verdict on matured labels (mlops_core/monitoring/ab_test.py) before full promotion; off by default.

    `required`: "better" promotes only a canary whose expected cost per transaction is significantly lower
    than the champion's; "not worse" also one within `rules.min_effect` of it. A "worse" verdict rolls the
    canary back, and so does no verdict within `max_days` of the canary's start. `unless_champion_degraded`: a
    retraining launched because the champion degraded is neither held by a test nor waits for a verdict."""

    required: Literal["off", "better", "not worse"] = "off"
    rules: ABRulesSection = Field(default_factory=ABRulesSection)  # type: ignore[valid-type]
    max_days: Annotated[int, Field(ge=1)] = 42
    # A retraining launched because the champion degraded (performance_sensor, champion_watch_sensor) goes to
    # production after its canary without waiting weeks for matured labels, and is not held by a running test:
    # the champion it would be compared with is failing now.
    unless_champion_degraded: bool = True

    @field_validator("required", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false.
        return "off" if value is False else value


class ApprovalStage(_Section):
    """A human decision between the canary and production (mlops_core/approvals.py); off by default."""

    required: bool = False
    expires_after_hours: Annotated[float, Field(gt=0)] = 72.0


class Rollout(_Section):
    """Staging smoke test, then shadow, then canary, then (optionally) a human approval, then promotion; each
    stage can stop the rollout."""

    staging: StagingStage = Field(default_factory=StagingStage)
    shadow: ShadowStage = Field(default_factory=ShadowStage)
    canary: CanaryStage = Field(default_factory=CanaryStage)
    approval: ApprovalStage = Field(default_factory=ApprovalStage)
    ab_test: ABTestStage = Field(default_factory=ABTestStage)


class Monitoring(_Section):
    """When to retrain: the thresholds of the monitoring verdicts, the cool-down, and the training window."""

    drift_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    new_labels: Annotated[int, Field(ge=0)] = 2000
    prediction_psi: Annotated[float, Field(gt=0)] = 0.25
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.99
    page_hinkley_threshold: Annotated[float, Field(gt=0)] = 50.0
    cooldown_days: Annotated[int, Field(ge=1)] = 3
    training_lookback_days: Annotated[int, Field(ge=1)] | None = None
    # Cron of a scheduled retraining whatever the monitors say (None: only on triggers).
    retrain_schedule: str | None = None
    retrain_on: list[Literal["feature_drift", "prediction_drift", "label_volume", "concept_drift"]] = Field(
        default_factory=lambda: ["feature_drift", "prediction_drift", "label_volume", "concept_drift"]
    )


class ModelProject(_Section):
    """Everything one model project decides. Field order is the order a reader meets them in defs.yaml."""

    name: Annotated[str, Field(pattern=PROJECT_NAME)]
    description: Annotated[str, Field(min_length=1)]
    owner: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    # slack:#channel, webhook:https://..., email:someone@example.com, or log (the alert log only).
    alert_channel: Annotated[str, Field(pattern=r"^(slack:#[\w-]+|webhook:https?://\S+|email:[^@\s]+@[^@\s]+|log)$")]
    registered_model: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
    entity: Entity
    marts: Annotated[list[str], Field(min_length=1)]
    label: Label
    features: Features
    model: ModelSection
    gates: GatesSection = Field(default_factory=GatesSection)  # type: ignore[valid-type]
    serving: Serving
    rollout: Rollout = Field(default_factory=Rollout)
    monitoring: Monitoring = Field(default_factory=Monitoring)

    @model_validator(mode="after")
    def _canary_excludes_by_the_models_features(self) -> ModelProject:
        """A segment kept on the champion is judged on the features the endpoint computes for this model."""
        known = set(self.feature_names())
        for i, segment in enumerate(self.rollout.canary.excluded_segments):
            if segment.feature not in known:
                raise ValueError(
                    f"rollout.canary.excluded_segments.{i}.feature {segment.feature!r} is not one of the model's "
                    f"features; allowed: {self.feature_names()}"
                )
        return self

    @model_validator(mode="after")
    def _reads_what_exists(self) -> ModelProject:
        unknown_marts = [m for m in self.marts if m not in SHARED_MARTS]
        if unknown_marts:
            raise ValueError(f"marts {unknown_marts} are not built by the data layer; allowed: {list(SHARED_MARTS)}")
        if self.label.source not in self.marts:
            raise ValueError(f"label.source {self.label.source!r} is not one of the project's marts {self.marts}")
        if self.entity.grain == "snapshot":
            return self._snapshot_features()
        names = self.features.names()
        unknown = [n for n in names if n not in spec.BY_NAME]
        if unknown:
            raise ValueError(
                f"features {unknown} are not in the shared feature store; allowed: {list(spec.FEATURE_NAMES)}"
            )
        if len(names) != len(set(names)):
            raise ValueError(f"features named twice: {sorted({n for n in names if names.count(n) > 1})}")
        return self

    def _snapshot_features(self) -> ModelProject:
        """A snapshot project's features are windowed aggregates the platform computes as of each snapshot
        (mlops_core/projects/snapshots.py), over the events mart; its label is an outcome over a horizon."""
        if self.label.horizon_days is None:
            raise ValueError(
                "label.horizon_days: a snapshot project's label is an outcome over the days after the snapshot: "
                "give horizon_days"
            )
        if snapshots.EVENTS_MART not in self.marts:
            raise ValueError(f"marts: a snapshot project's features read {snapshots.EVENTS_MART}: add it to marts")
        if not self.features.windowed:
            raise ValueError("features.windowed: a snapshot project needs at least one windowed feature")
        if self.features.account or self.features.request:
            raise ValueError(
                "features: a snapshot project's features are windowed aggregates as of the snapshot; account and "
                f"request features apply to grain 'event' (found {self.features.account + self.features.request})"
            )
        for i, aggregate in enumerate(self.features.windowed):
            for j, window in enumerate(aggregate.windows):
                try:
                    snapshots.check_aggregate(aggregate.aggregation, aggregate.column, window)
                except ValueError as error:
                    raise ValueError(f"features.windowed.{i}.windows.{j}: {error}") from None
        names = snapshots.feature_names(self.features.windowed)
        if len(names) != len(set(names)):
            doubled = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"features.windowed: features named twice: {doubled}")
        return self

    def feature_names(self) -> list[str]:
        """The model's input features in order: the shared store's names (grain event) or the snapshot
        aggregates' (grain snapshot)."""
        if self.entity.grain == "snapshot":
            return snapshots.feature_names(self.features.windowed)
        return self.features.names()


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The section class a validation error's location points into, to list its allowed fields."""
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            # A discriminated union's member appears in the location by its tag.
            model = MODEL_SECTIONS.get(part)
            continue
        model = _section_of(field.annotation)
    return model


def _section_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


# What a pattern-checked field expects, in words (the regular expression helps nobody).
PATTERN_MEANINGS = {
    "name": "2-40 lowercase letters, digits or _, starting with a letter",
    "owner": "an e-mail address",
    "alert_channel": "slack:#channel, webhook:https://..., email:someone@example.com, or log",
    "registered_model": "2-64 lowercase letters, digits or _, starting with a letter",
    "key": "a lowercase column name",
    "column": "a lowercase column name",
}


def _describe(error: dict) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc if p not in MODEL_FAMILIES) or "(top level)"
    found = error.get("input")
    if error["type"] == "extra_forbidden":
        parent = _model_at(ModelProject, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"{where}: unknown field (found {found!r}); allowed fields here: {allowed}"
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        context = error.get("ctx", {})
        allowed = context.get("expected_tags", ", ".join(repr(f) for f in MODEL_FAMILIES))
        found = context.get("tag")
        return f"{where}.family: unknown model family (found {found!r}); allowed: {allowed}"
    if error["type"] == "string_pattern_mismatch" and loc and loc[-1] in PATTERN_MEANINGS:
        return f"{where}: expected {PATTERN_MEANINGS[loc[-1]]} (found {found!r})"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if not loc:
        # A rule across fields (a model validator): its message names the fields; the input is the whole file.
        return message
    return f"{where}: {message} (found {found!r})"


def parse_project(attributes: Any, path: Path | str = "<declaration>") -> ModelProject:
    """Validate a declaration's attributes; every problem is listed, each naming its field."""
    if not isinstance(attributes, dict):
        raise ProjectDeclarationError(
            path, [f"attributes: expected a mapping of fields, found {type(attributes).__name__}"]
        )
    try:
        return ModelProject.model_validate(attributes)
    except ValidationError as error:
        raise ProjectDeclarationError(path, [_describe(e) for e in error.errors(include_url=False)]) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last
    silently, so a second `gates:` block would throw the first away without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_project(folder_or_file: Path) -> ModelProject:
    """Read and validate `<folder>/defs.yaml` (or the file given). The project's name must be its folder's."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / DECLARATION_FILE
    if not path.is_file():
        raise ProjectDeclarationError(
            path, [f"no declaration: expected the file {DECLARATION_FILE} in the project folder"]
        )
    try:
        document = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ProjectDeclarationError(path, [f"{line}not valid YAML: {getattr(error, 'problem', error)}"]) from None
    if not isinstance(document, dict):
        raise ProjectDeclarationError(path, [f"expected a mapping with 'type' and 'attributes', found {document!r}"])
    problems = []
    unknown = sorted(set(document) - {"type", "attributes"})
    if unknown:
        problems.append(f"unknown top-level keys {unknown}; allowed: type, attributes")
    if document.get("type") != COMPONENT_TYPE:
        problems.append(f"type: expected {COMPONENT_TYPE!r}, found {document.get('type')!r}")
    if problems:
        raise ProjectDeclarationError(path, problems)
    project = parse_project(document.get("attributes"), path)
    if project.entity.grain == "snapshot" and not (path.parent / snapshots.SNAPSHOT_SQL).is_file():
        raise ProjectDeclarationError(
            path,
            [
                f"entity.grain: a snapshot project defines its population and label in "
                f"{path.parent / snapshots.SNAPSHOT_SQL}, which is missing"
            ],
        )
    if project.name != path.parent.name:
        raise ProjectDeclarationError(
            path,
            [f"name: the project is named after its folder: expected {path.parent.name!r}, found {project.name!r}"],
        )
    return project


def project_folders(root: Path) -> list[Path]:
    """Every folder under `root` holding a declaration, sorted by name."""
    return sorted(p.parent for p in Path(root).glob(f"*/{DECLARATION_FILE}"))


def load_projects(root: Path) -> list[ModelProject]:
    """Every project under `root`; all bad declarations are reported together, and names must be unique
    per registered model as well as per folder."""
    projects, problems = [], []
    for folder in project_folders(root):
        try:
            projects.append(load_project(folder))
        except ProjectDeclarationError as error:
            problems.extend(f"{error.path}: {problem}" for problem in error.problems)
    if problems:
        raise ProjectDeclarationError(root, problems)
    registered = [p.registered_model for p in projects]
    doubled = sorted({r for r in registered if registered.count(r) > 1})
    if doubled:
        raise ProjectDeclarationError(
            root, [f"registered_model {r!r} is declared by more than one project" for r in doubled]
        )
    return projects
