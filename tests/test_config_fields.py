"""Run-time parameters are typed and documented: every field of every Config and ConfigurableResource the
code location uses has a description (the launchpad and the UI's resource page show it), and no default
is declared twice."""

import dataclasses
import inspect

import dagster as dg

import mlops_assets.definitions
from mlops_assets.deployment.rollout import CanaryConfig
from mlops_assets.training.evaluation import GateConfig
from mlops_core.serving.analysis import CanaryRules
from mlops_core.training.gates import GateThresholds

PROJECT = ("mlops_assets", "mlops_core", "mlops_cli", "resources", "sensors")


def _subclasses(base: type) -> set[type]:
    found = set()
    for sub in base.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def _project_classes() -> set[type]:
    """The Config and ConfigurableResource subclasses the code location reaches: those defined in the
    project's packages once mlops_assets.definitions is imported, and the type of every resource it binds."""
    assert mlops_assets.definitions.defs is not None
    classes = {
        cls
        for base in (dg.Config, dg.ConfigurableResource, dg.ConfigurableIOManager)
        for cls in _subclasses(base)
        if cls.__module__.startswith(PROJECT)
    }
    bound = mlops_assets.definitions.defs.resources or {}
    classes |= {type(r) for r in bound.values() if isinstance(r, dg.ConfigurableResource)}
    return {cls for cls in classes if cls.__module__.startswith(PROJECT)}


def test_the_walk_finds_the_configs_and_resources():
    names = {cls.__name__ for cls in _project_classes()}
    assert {"GateConfig", "CanaryConfig", "RollbackConfig", "AlertResource", "RetrainingPolicy"} <= names


def test_every_config_and_resource_field_has_a_description():
    missing = sorted(
        f"{cls.__module__}.{cls.__name__}.{name}"
        for cls in _project_classes()
        for name, field in cls.model_fields.items()
        if not (field.description or "").strip()
    )
    assert missing == [], "fields without a description (pydantic Field(description=...)): " + ", ".join(missing)


def test_gate_config_takes_every_default_from_gate_thresholds():
    core = {f.name: f.default for f in dataclasses.fields(GateThresholds)}
    config = {name: field.default for name, field in GateConfig.model_fields.items()}
    assert config == core
    assert GateConfig().thresholds() == GateThresholds()
    assert inspect.getsource(GateConfig).count("default=_GATE_DEFAULTS.") == len(core)


def test_canary_config_takes_its_bounds_from_canary_rules():
    """The canary asset and the canary sensor judge by the same default bounds."""
    core = {f.name: f.default for f in dataclasses.fields(CanaryRules)}
    shared = set(core) & set(CanaryConfig.model_fields)
    assert shared == {
        "min_requests",
        "max_error_rate",
        "max_p99_latency_ms",
        "max_score_psi",
        "max_decision_rate_ratio",
    }
    assert {name: CanaryConfig.model_fields[name].default for name in shared} == {name: core[name] for name in shared}
    assert CanaryConfig().rules() == CanaryRules()
    # ... and a bound set in the run config reaches the rules, each one (a field dropped on the way fails)
    overrides = {"min_requests": 7, "max_error_rate": 0.0101, "max_p99_latency_ms": 50.05, "max_score_psi": 0.2501}
    overrides["max_decision_rate_ratio"] = 3.003
    assert set(overrides) == shared
    assert CanaryConfig(**overrides).rules() == dataclasses.replace(CanaryRules(), **overrides)
