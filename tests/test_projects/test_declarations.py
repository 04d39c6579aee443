"""Model project declarations (tier 1): fraud's declaration says exactly what the platform runs, and every kind
of bad declaration is refused with an error naming the file, the field, what was found and what is allowed."""

import copy
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlops_assets.deployment.rollout import ShadowConfig, StagingConfig
from mlops_assets.training.models import XGBoostConfig
from mlops_cli.main import main
from mlops_core.features import spec
from mlops_core.projects.declaration import (
    COMPONENT_TYPE,
    ProjectDeclarationError,
    load_project,
    load_projects,
    parse_project,
)
from mlops_core.registry import MODEL_NAME
from mlops_core.serving.analysis import CanaryRules
from mlops_core.serving.schemas import MAX_AMOUNT, Transaction
from mlops_core.settings import REPO_ROOT, Settings
from mlops_core.training.gates import GateThresholds
from mlops_core.training.models import XGBoostParams
from resources.retraining import RetrainingPolicy
from sensors.retraining import weekly_retraining

FRAUD = REPO_ROOT / "projects" / "fraud"


@pytest.fixture(scope="module")
def fraud():
    return load_project(FRAUD)


@pytest.fixture
def fraud_attributes():
    return yaml.safe_load((FRAUD / "defs.yaml").read_text())["attributes"]


def write_project(root: Path, attributes: dict, folder: str | None = None, kind: str = COMPONENT_TYPE) -> Path:
    path = root / (folder or attributes.get("name", "unnamed"))
    path.mkdir(parents=True, exist_ok=True)
    (path / "defs.yaml").write_text(yaml.safe_dump({"type": kind, "attributes": attributes}, sort_keys=False))
    return path


# --- fraud's declaration is what runs ----------------------------------------------------------------


def test_fraud_declares_the_registered_model_the_label_and_the_features_the_platform_uses(fraud):
    assert fraud.registered_model == MODEL_NAME
    assert fraud.entity.key == spec.ENTITY
    assert fraud.label.source == spec.LABEL_EVENTS_TABLE
    assert fraud.label.maturity_days == Settings.from_env({"MLOPS_HOME": "/nonexistent"}).label_maturity_days
    assert sorted(fraud.features.names()) == sorted(spec.FEATURE_NAMES)
    assert len(fraud.features.names()) == len(spec.FEATURE_NAMES)


def test_fraud_declares_the_gates_model_rollout_and_monitoring_defaults_that_run(fraud):
    assert fraud.gates.model_dump() == dataclasses.asdict(GateThresholds())
    assert fraud.model.family == "xgboost"
    # What the candidate asset trains with (its config's defaults), not merely the library's defaults.
    assert fraud.model.hyperparameters.model_dump() == dataclasses.asdict(XGBoostConfig().params())
    assert fraud.model.false_negative_cost == XGBoostConfig().false_negative_cost
    assert fraud.rollout.canary.rules.model_dump() == dataclasses.asdict(CanaryRules())
    staging = fraud.rollout.staging.model_dump()
    assert staging == {k: StagingConfig.model_fields[k].default for k in staging}
    shadow = fraud.rollout.shadow.model_dump()
    assert shadow == {k: ShadowConfig.model_fields[k].default for k in shadow}
    policy = RetrainingPolicy()
    for field in (
        "drift_share",
        "new_labels",
        "prediction_psi",
        "confidence",
        "page_hinkley_threshold",
        "cooldown_days",
    ):
        assert getattr(fraud.monitoring, field) == getattr(policy, field), field
    assert fraud.monitoring.retrain_schedule == weekly_retraining.cron_schedule


def test_fraud_request_schema_is_the_transaction_contract(fraud):
    declared = {f.name: f for f in fraud.serving.request_schema}
    assert list(declared) == list(Transaction.model_fields)
    for name, info in Transaction.model_fields.items():
        if typing.get_origin(info.annotation) is typing.Literal:
            assert declared[name].type == "category", name
            assert declared[name].categories == list(typing.get_args(info.annotation)), name
    assert (declared["amount"].gt, declared["amount"].le) == (0, MAX_AMOUNT)
    assert declared["event_timestamp"].type == "timestamp"


def test_the_shipped_projects_all_validate():
    names = [p.name for p in load_projects(REPO_ROOT / "projects")]
    assert "fraud" in names


# --- bad declarations ---------------------------------------------------------------------------------


def _error(tmp_path: Path, attributes: dict, folder: str | None = None) -> str:
    path = write_project(tmp_path, attributes, folder)
    with pytest.raises(ProjectDeclarationError) as caught:
        load_project(path)
    message = str(caught.value)
    assert str(path / "defs.yaml") in message, message  # every error names its file
    return message


def test_an_unknown_model_family_names_the_allowed_ones(tmp_path, fraud_attributes):
    fraud_attributes["model"]["family"] = "xgboosted"  # shares a long prefix with a real one
    message = _error(tmp_path, fraud_attributes)
    assert "model.family" in message
    assert "'xgboosted'" in message
    for family in ("xgboost", "logistic_regression", "hist_gradient_boosting"):
        assert family in message


def test_a_misspelt_gate_is_refused_with_the_gates_that_exist(tmp_path, fraud_attributes):
    fraud_attributes["gates"]["max_recall_gap_"] = 0.5  # one character more than a real gate
    message = _error(tmp_path, fraud_attributes)
    assert "gates.max_recall_gap_: unknown field" in message
    assert "max_recall_gap," in message and "max_calibration_error" in message


def test_a_hyperparameter_of_another_family_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["model"]["hyperparameters"]["C"] = 0.5  # logistic regression's, not xgboost's
    message = _error(tmp_path, fraud_attributes)
    assert "model.hyperparameters.C: unknown field" in message
    assert "n_estimators" in message and "learning_rate" in message


def test_a_wrongly_typed_bound_names_field_and_value(tmp_path, fraud_attributes):
    fraud_attributes["gates"]["min_auc_pr"] = "high"
    message = _error(tmp_path, fraud_attributes)
    assert "gates.min_auc_pr" in message and "'high'" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_bound_that_is_not_a_finite_number_is_refused(tmp_path, fraud_attributes, value):
    fraud_attributes["gates"]["max_calibration_error"] = value
    message = _error(tmp_path, fraud_attributes)
    assert "gates.max_calibration_error" in message and "finite number" in message


def test_a_bound_off_its_range_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["rollout"]["canary"]["share"] = 1.001
    message = _error(tmp_path, fraud_attributes)
    assert "rollout.canary.share" in message and "1.001" in message


def test_a_feature_the_store_does_not_compute_is_refused_with_what_it_offers(tmp_path, fraud_attributes):
    fraud_attributes["features"]["request"].append("amount_usd_")
    message = _error(tmp_path, fraud_attributes)
    assert "'amount_usd_'" in message and "not in the shared feature store" in message
    assert "log_amount_usd" in message  # the allowed names are listed


def test_a_window_the_store_does_not_compute_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["features"]["windowed"][0]["windows"].append("90d")
    message = _error(tmp_path, fraud_attributes)
    assert "count(*) over 90d" in message and "count(*) over 30d" in message


def test_a_label_needs_exactly_one_of_maturity_and_horizon(tmp_path, fraud_attributes):
    fraud_attributes["label"]["horizon_days"] = 30
    assert "exactly one of maturity_days" in _error(tmp_path, fraud_attributes)
    del fraud_attributes["label"]["horizon_days"], fraud_attributes["label"]["maturity_days"]
    assert "exactly one of maturity_days" in _error(tmp_path, fraud_attributes)


def test_a_label_read_from_a_mart_the_project_does_not_declare_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["marts"] = ["marts.transactions_enriched"]
    assert "label.source 'marts.label_events' is not one of the project's marts" in _error(tmp_path, fraud_attributes)


def test_a_mart_the_data_layer_does_not_build_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["marts"].append("marts.transactions_enriched_v2")
    message = _error(tmp_path, fraud_attributes)
    assert "marts.transactions_enriched_v2" in message and "allowed" in message


def test_a_missing_section_is_named(tmp_path, fraud_attributes):
    del fraud_attributes["entity"]
    assert "entity: required field is missing" in _error(tmp_path, fraud_attributes)


def test_batch_serving_needs_a_schedule(tmp_path, fraud_attributes):
    del fraud_attributes["serving"]["batch_schedule"]
    assert "serving mode 'both' needs batch_schedule" in _error(tmp_path, fraud_attributes)


def test_a_request_field_declared_twice_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["serving"]["request_schema"].append({"name": "amount", "type": "float"})
    assert "names a field twice: ['amount']" in _error(tmp_path, fraud_attributes)


def test_a_category_field_needs_its_categories(tmp_path, fraud_attributes):
    fraud_attributes["serving"]["request_schema"][3]["categories"] = []
    assert "'merchant_category' of type 'category' needs its categories" in _error(tmp_path, fraud_attributes)


def test_bad_owner_and_alert_channel_are_refused(tmp_path, fraud_attributes):
    fraud_attributes["owner"] = "fraud-ml"
    fraud_attributes["alert_channel"] = "slack:fraud"  # a channel needs its '#'
    message = _error(tmp_path, fraud_attributes)
    assert "owner" in message and "'fraud-ml'" in message
    assert "alert_channel" in message and "'slack:fraud'" in message


def test_a_project_is_named_after_its_folder(tmp_path, fraud_attributes):
    message = _error(tmp_path, fraud_attributes, folder="fraud2")
    assert "expected 'fraud2', found 'fraud'" in message


def test_a_project_name_that_cannot_be_a_key_prefix_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["name"] = "Fraud-2"
    assert "name:" in _error(tmp_path, fraud_attributes, folder="Fraud-2")


def test_every_problem_is_reported_at_once(tmp_path, fraud_attributes):
    fraud_attributes["gates"]["min_auc_pr"] = "high"
    fraud_attributes["model"]["family"] = "svm"
    fraud_attributes["owner"] = "nobody"
    message = _error(tmp_path, fraud_attributes)
    assert "gates.min_auc_pr" in message and "model.family" in message and "owner" in message


def test_invalid_yaml_names_its_line(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "defs.yaml").write_text(f"type: {COMPONENT_TYPE}\nattributes:\n  name: broken\n   owner: [\n")
    with pytest.raises(ProjectDeclarationError, match=r"line 4, column \d+: not valid YAML"):
        load_project(folder)


def test_a_key_given_twice_is_refused_not_silently_overwritten(tmp_path):
    """PyYAML keeps the last of two equal keys: a second gates block would drop the first without a word."""
    folder = tmp_path / "fraud"
    folder.mkdir()
    text = (FRAUD / "defs.yaml").read_text()
    assert text.count("\n  gates:\n") == 1
    (folder / "defs.yaml").write_text(text.replace("\n  gates:\n", "\n  gates:\n    min_auc_pr: 0.5\n  gates:\n", 1))
    with pytest.raises(ProjectDeclarationError, match=r"key 'gates' appears twice \(lines \d+ and \d+\)"):
        load_project(folder)


def test_the_component_type_and_layout_are_checked(tmp_path, fraud_attributes):
    message = _error_of_kind(tmp_path, fraud_attributes, "mlops_assets.projects.ModelProjectComponen")
    assert "type: expected 'mlops_assets.projects.ModelProjectComponent'" in message
    with pytest.raises(ProjectDeclarationError, match="expected the file defs.yaml"):
        load_project(tmp_path / "nowhere")
    with pytest.raises(ProjectDeclarationError, match="expected a mapping of fields, found list"):
        parse_project([1, 2])


def _error_of_kind(tmp_path, attributes, kind):
    path = write_project(tmp_path, attributes, kind=kind)
    with pytest.raises(ProjectDeclarationError) as caught:
        load_project(path)
    return str(caught.value)


def test_two_projects_may_not_register_the_same_model(tmp_path, fraud_attributes):
    write_project(tmp_path, fraud_attributes)
    other = copy.deepcopy(fraud_attributes) | {"name": "fraud_eu"}
    write_project(tmp_path, other)
    with pytest.raises(ProjectDeclarationError, match="registered_model 'fraud_detector' is declared by more than one"):
        load_projects(tmp_path)
    other["registered_model"] = "fraud_detector_eu"
    write_project(tmp_path, other)
    assert [p.name for p in load_projects(tmp_path)] == ["fraud", "fraud_eu"]


def test_defaults_left_out_are_the_platforms(tmp_path, fraud_attributes):
    for section in ("gates", "rollout", "monitoring"):
        del fraud_attributes[section]
    del fraud_attributes["model"]["hyperparameters"]
    project = load_project(write_project(tmp_path, fraud_attributes))
    assert project.gates.model_dump() == dataclasses.asdict(GateThresholds())
    assert project.model.hyperparameters.model_dump() == dataclasses.asdict(XGBoostParams())
    assert project.rollout.canary.rules.model_dump() == dataclasses.asdict(CanaryRules())


# --- the CLI ------------------------------------------------------------------------------------------


def test_project_new_scaffolds_a_project_that_validates_and_never_overwrites(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main, ["project", "new", "churn_eu", "--owner", "churn@example.com", "--root", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    project = load_project(tmp_path / "churn_eu")
    assert (project.name, project.owner, project.registered_model) == (
        "churn_eu",
        "churn@example.com",
        "churn_eu_model",
    )
    again = runner.invoke(main, ["project", "new", "churn_eu", "--root", str(tmp_path)])
    assert again.exit_code != 0 and "never overwritten" in again.output
    bad = runner.invoke(main, ["project", "new", "Churn EU", "--root", str(tmp_path)])
    assert bad.exit_code != 0 and "lowercase" in bad.output
    listed = runner.invoke(main, ["project", "list", "--root", str(tmp_path)])
    assert listed.exit_code == 0 and "churn_eu_model" in listed.output and "logistic_regression" in listed.output


def test_project_validate_exits_non_zero_naming_the_bad_field(tmp_path, fraud_attributes):
    fraud_attributes["model"]["family"] = "svm"
    write_project(tmp_path, fraud_attributes)
    result = CliRunner().invoke(main, ["project", "validate", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "fraud/defs.yaml" in result.output and "model.family" in result.output and "'svm'" in result.output
    ok = CliRunner().invoke(main, ["project", "validate", "fraud"])
    assert ok.exit_code == 0 and "ok  fraud: 31 features" in ok.output


def test_an_ab_requirement_out_of_its_words_is_refused_with_the_allowed_ones(tmp_path, fraud_attributes):
    fraud_attributes["rollout"]["ab_test"] = {"required": "not-worse"}  # the CLI's spelling, not the declaration's
    message = _error(tmp_path, fraud_attributes)
    assert "rollout.ab_test.required" in message and "'not-worse'" in message
    assert "'not worse'" in message and "'better'" in message


def test_a_canary_exclusion_on_a_feature_the_model_does_not_have_is_refused(tmp_path, fraud_attributes):
    fraud_attributes["rollout"]["canary"]["excluded_segments"] = [
        {"name": "high_value", "feature": "amount_sum_30", "at_least": 5000}  # the model's is amount_sum_30d
    ]
    message = _error(tmp_path, fraud_attributes)
    assert "excluded_segments.0.feature 'amount_sum_30'" in message and "amount_sum_30d" in message


def test_the_fraud_defaults_leave_the_ab_test_off_and_every_account_in_the_canary_draw(fraud):
    assert fraud.rollout.ab_test.required == "off"
    assert fraud.rollout.canary.excluded_segments == []
    assert fraud.rollout.ab_test.rules.cost_of_miss == fraud.model.false_negative_cost  # one business cost
