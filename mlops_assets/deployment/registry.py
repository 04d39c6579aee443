"""The model registry as assets: the challenger alias, the explicit promote step, and the alias history."""

import datetime as dt
import json

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import DEPLOYMENT
from mlops_assets.features.training_set import latest_training_cutoff
from mlops_assets.training.evaluation import EVALUATION
from mlops_assets.training.models import MODEL_ARTIFACT
from mlops_core import ab_tests, approvals, registry
from mlops_core.features.spec import EVENTS_TABLE
from mlops_core.monitoring.reads import newest_event_day
from mlops_core.projects.catalog import fraud_project
from mlops_core.serving.client import EndpointError
from mlops_core.training.candidates import TrainedModel
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource

ALIAS_HISTORY = dg.AssetKey("model_alias_history")
CHALLENGER = dg.AssetKey("registered_challenger")


@dg.asset(
    key=CHALLENGER,
    group_name=DEPLOYMENT,
    deps=[EVALUATION],
    kinds={"mlflow"},
)
def registered_challenger(
    context: dg.AssetExecutionContext,
    fraud_model_candidate: TrainedModel,
    warehouse: DuckDBResource,
    model_registry: ModelRegistry,
):
    """The candidate registered in the MLflow model registry with the `challenger` alias. Runs only
    after every blocking gate on candidate_evaluation passed. All or nothing: a version whose alias
    could not be set is deleted again (MLflow calls are retried first; see mlops_core.registry)."""
    client = model_registry.client()
    require_onnx(client, fraud_model_candidate)
    test_metrics = registry.run_metrics(client, fraud_model_candidate.run_id)
    with warehouse.get_connection() as con:
        change = model_registry.register(
            con,
            registry.CHALLENGER,
            fraud_model_candidate.run_id,
            MODEL_ARTIFACT,
            reason="passed every quality gate",
            metrics=test_metrics,
            tags={
                "threshold": repr(fraud_model_candidate.threshold),
                "data_version": fraud_model_candidate.data_version,
                # Labels known after this were never seen in training: label_volume counts them.
                "training_cutoff": latest_training_cutoff(context.instance) or "",
            },
            model_uri=fraud_model_candidate.model_uri,
        )
    return dg.MaterializeResult(
        metadata={
            "model": registry.MODEL_NAME,
            "version": change.to_version,
            "alias": registry.CHALLENGER,
            "previous_challenger": change.from_version,
            "mlflow_run_id": fraud_model_candidate.run_id,
            "test_auc_pr": test_metrics.get("test_auc_pr"),
        }
    )


def require_onnx(client, trained: TrainedModel) -> None:
    """Register only a model whose ONNX graph is in the artifact store: serving loads nothing else."""
    if not trained.model_uri:
        raise dg.Failure(f"MLflow run {trained.run_id} logged no model: nothing to register")
    files = registry.artifact_files(client, trained.model_uri)
    if not any(path.endswith(".onnx") for path in files):
        raise dg.Failure(f"{trained.model_uri} holds no .onnx file ({sorted(files)}): nothing to register")


class PromoteConfig(dg.Config):
    """Why the challenger becomes champion; recorded in the alias history. With an approval required, the
    decision on it (approval_job, `mlops approve`/`mlops reject`) comes in here too."""

    reason: str = Field(
        default="promoted by hand from the Dagster UI", description="Why this promotion happens (audit history)."
    )
    actor: str = Field(default="dagster", description="Who or what promotes (audit history).")
    require_approval: bool | None = Field(
        default=None,
        description="Wait for a human decision before production; unset: the project's rollout.approval.required.",
    )
    decision: str = Field(
        default="",
        description="'approve' or 'reject' the pending approval of `decision_version` (actor and reason say who "
        "and why); empty: no decision in this run.",
    )
    decision_version: str = Field(default="", description="The challenger version the decision is about.")
    ab_test_required: str = Field(
        default="",
        description="'better', 'not worse' or 'off': the A/B verdict the canary needs before production; empty: "
        "the project's rollout.ab_test.required.",
    )
    ab_min_effect: float = Field(
        default=0.0,
        ge=0.0,
        description="Relative change of the champion's cost the A/B test must be able to detect; 0: the declaration's.",
    )
    ab_max_days: int = Field(
        default=0, ge=0, description="Days the A/B test may run without a verdict; 0: the declaration's."
    )


def _approval_evidence(model_registry: ModelRegistry, challenger) -> tuple[dict, str | None]:
    """What the approver reads: the challenger's test metrics and where its report and model card are."""
    client = model_registry.client()
    metrics = registry.run_metrics(client, challenger.run_id) if challenger.run_id else {}
    evidence = {k: v for k, v in sorted(metrics.items()) if k.startswith("test_")}
    evidence["model_card"] = f"runs:/{challenger.run_id}/model_card.md"
    return evidence, f"runs:/{challenger.run_id}/evaluation"


def _start_ab_test(con, config: PromoteConfig, ab_rules, required: str, challenger, model_registry, serving_endpoint):
    """The A/B test of the live canary: its share and excluded segments as the endpoint serves them, from the next
    event day on (the warehouse's newest day was answered before it)."""
    if required not in ("better", "not worse"):
        raise dg.Failure(f"rollout.ab_test.required must be 'off', 'better' or 'not worse', got {required!r}")
    champion = model_registry.champion()
    try:
        with serving_endpoint.client() as client:
            deployment = client.deployment()
    except EndpointError as exc:
        raise dg.Failure(f"an A/B test needs the live canary, but the endpoint is not reachable: {exc}") from exc
    if champion is None or str(deployment.get("canary_version")) != str(challenger.version):
        raise dg.Failure(
            f"an A/B test needs version {challenger.version} live as canary beside a champion; the endpoint serves "
            f"champion {deployment.get('champion_version')}, canary {deployment.get('canary_version')}: run the rollout"
        )
    newest = newest_event_day(con)
    if newest is None:
        raise dg.Failure(f"an A/B test counts event days from the warehouse's newest, but {EVENTS_TABLE} is empty")
    rules = ab_rules.rules.model_dump()
    if config.ab_min_effect:
        rules["min_effect"] = config.ab_min_effect
    return ab_tests.start(
        con,
        registry.MODEL_NAME,
        challenger.version,
        champion.version,
        required,
        float(deployment["canary_share"]),
        list(deployment.get("canary_excluded") or []),
        rules,
        newest + dt.timedelta(days=1),
        config.ab_max_days or ab_rules.max_days,
        dt.datetime.now(dt.UTC),
    )


@dg.asset(
    group_name=DEPLOYMENT,
    deps=[CHALLENGER, dg.AssetKey("canary_endpoint")],
    kinds={"mlflow"},
    output_required=False,
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: PromoteConfig,
    warehouse: DuckDBResource,
    model_registry: ModelRegistry,
    serving_endpoint: ServingEndpointResource,
):
    """The `champion` alias moved to the current challenger, after its canary passed (rollout_job) or by
    hand (promote_job). The previous champion stays recorded for rollback.

    With an approval required (the project's rollout.approval, or the config), a challenger nobody approved
    is not promoted: a pending approval is recorded, this asset is not materialized and production is left as
    it was, until approval_job (or `mlops approve`) brings the decision. A rejection removes the challenger.

    With an A/B verdict required (rollout.ab_test), a canary that passed its soak keeps answering its share of
    accounts: an A/B test is started (registry.ab_tests) and nothing is promoted until the daily ab_verdict
    says it passed; ab_verdict_sensor then launches this asset again, which promotes it."""
    challenger = model_registry.challenger()
    approval_rules = fraud_project().rollout.approval
    ab_rules = fraud_project().rollout.ab_test
    ab_required = config.ab_test_required or ab_rules.required
    required = approval_rules.required if config.require_approval is None else config.require_approval
    now = dt.datetime.now(dt.UTC)
    actor, reason = config.actor, config.reason
    with warehouse.get_connection() as con:
        if config.decision:
            if challenger is None or challenger.version != config.decision_version:
                raise dg.Failure(
                    f"the decision is about version {config.decision_version or '(none given)'}, but the challenger "
                    f"is {challenger.version if challenger else 'not set'}: nothing decided"
                )
            try:
                decided = approvals.decide(
                    con, registry.MODEL_NAME, challenger.version, config.decision, config.actor, config.reason, now
                )
            except approvals.ApprovalError as exc:
                raise dg.Failure(str(exc)) from exc
            if decided.status == approvals.REJECTED:
                model_registry.remove_alias(
                    con, registry.CHALLENGER, f"rejected by {config.actor}: {config.reason}", actor=config.actor
                )
                context.log.info(f"version {challenger.version} rejected by {config.actor}: production unchanged")
                return
        # The first model has no champion to be compared with: it goes to production as before.
        passed_test = None
        trigger = context.run.tags.get(ab_tests.TRIGGER_TAG, "")
        urgent = ab_rules.unless_champion_degraded and trigger in ab_tests.DEGRADATION_TRIGGERS
        if ab_required != "off" and urgent:
            reason = f"{reason} (no A/B test: launched by {trigger} because the champion degraded)"
            context.log.warning(f"version {challenger.version if challenger else '-'}: {reason}")
        elif ab_required != "off" and challenger is not None and model_registry.champion() is not None:
            test = ab_tests.latest(con, registry.MODEL_NAME, challenger.version)
            if test is None or test.status != ab_tests.PASSED:
                test = _start_ab_test(con, config, ab_rules, ab_required, challenger, model_registry, serving_endpoint)
                context.log.warning(
                    f"version {challenger.version} stays canary on {test.canary_share:.0%} of accounts until its A/B "
                    f"verdict ({test.required}) on matured labels, by {test.deadline.isoformat()}: ab_verdict judges it "
                    "daily; production unchanged"
                )
                return
            actor, reason = "ab_verdict", test.reason or f"A/B verdict met {test.required}"
            passed_test = test
        if required and challenger is not None:
            approval = approvals.latest(con, registry.MODEL_NAME, challenger.version)
            if approval is None or approval.status != approvals.APPROVED:
                evidence, report = _approval_evidence(model_registry, challenger)
                if passed_test is not None:  # the approver reads the verdict on real outcomes too
                    evidence["ab_verdict"] = passed_test.reason
                approval = approvals.request(
                    con,
                    registry.MODEL_NAME,
                    challenger.version,
                    evidence,
                    report,
                    now,
                    approval_rules.expires_after_hours,
                )
                context.log.warning(
                    f"version {challenger.version} waits for approval until {approval.expires_at.isoformat()} UTC: "
                    f"`mlops approve fraud {challenger.version} --reason ...` or `mlops reject ...`; production unchanged"
                )
                return
            actor, reason = approval.decided_by, f"approved by {approval.decided_by}: {approval.reason}"
        metrics = registry.run_metrics(model_registry.client(), challenger.run_id) if challenger else {}
        change = model_registry.promote_challenger(con, reason=reason, metrics=metrics, actor=actor)
        if passed_test is not None:
            ab_tests.end(con, passed_test, ab_tests.PROMOTED, passed_test.reason or reason, now)
        for stale in ab_tests.running(con, registry.MODEL_NAME):
            # Its champion is no longer serving: what it compared is gone, and its end must not roll back anything.
            ab_tests.end(con, stale, ab_tests.SUPERSEDED, f"version {change.to_version} was promoted ({reason})", now)
    yield dg.MaterializeResult(
        metadata={
            "model": registry.MODEL_NAME,
            "champion_version": change.to_version,
            "previous_champion": change.from_version,
            "promoted_by": actor,
        }
    )


@dg.asset(key=ALIAS_HISTORY, group_name=DEPLOYMENT, deps=[CHALLENGER, dg.AssetKey("champion_model")], kinds={"duckdb"})
def model_alias_history(warehouse: DuckDBResource, model_registry: ModelRegistry):
    """Every alias move (what, from which version to which, why, when, by whom, metrics then), from
    registry.alias_history; MLflow keeps no such history."""
    with warehouse.get_connection() as con:
        frame = model_registry.history(con)
    recent = frame.tail(20)
    lines = ["| when | alias | from | to | reason | actor |", "|---|---|---|---|---|---|"]
    for row in recent.itertuples():
        lines.append(
            f"| {row.changed_at} | {row.alias} | {row.from_version or '-'} | {row.to_version or '-'} | {row.reason} | {row.actor} |"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "table": registry.HISTORY_TABLE,
            "recent_changes": dg.MetadataValue.md("\n".join(lines)),
            "latest": dg.MetadataValue.json(
                json.loads(recent.tail(1).to_json(orient="records", date_format="iso")) if len(recent) else []
            ),
        }
    )
