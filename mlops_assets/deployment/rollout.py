"""Staged rollout of the challenger: staging smoke test, shadow, canary, production.

Each stage is a materialization whose metadata says which version takes what traffic at
which URL; each gate is a blocking check, so a failed stage stops the rollout before the
next move of traffic. The endpoint holds the previous champion for instant rollback.
"""

import dataclasses
import time
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import DEPLOYMENT
from mlops_core import registry
from mlops_core.projects.catalog import fraud_project
from mlops_core.serving import server
from mlops_core.serving.analysis import CanaryRules, canary_window, shadow_agreement
from mlops_core.serving.client import EndpointClient, EndpointError
from mlops_core.serving.plan import TrafficPlan
from mlops_core.serving.prediction_log import read_predictions
from mlops_core.serving.replay import recent_transactions, replay
from resources.registry import ModelRegistry
from resources.serving import ServingEndpointResource
from resources.settings import SettingsResource

CHALLENGER = dg.AssetKey("registered_challenger")
STAGING = dg.AssetKey("staging_endpoint")
SHADOW = dg.AssetKey("shadow_endpoint")
CANARY = dg.AssetKey("canary_endpoint")
PRODUCTION = dg.AssetKey("production_endpoint")
CHECK_STAGING = "staging_smoke_test_passed"
CHECK_SHADOW = "shadow_agreement_within_bounds"
CHECK_CANARY = "canary_healthy"
TOO_LITTLE_TRAFFIC = "let real traffic accumulate with wait_seconds, or replay recent transactions with replay_requests"


def _versions(model_registry: ModelRegistry) -> tuple[str | None, str | None]:
    """Version numbers of the challenger and the champion (None when unset)."""
    challenger, champion = model_registry.challenger(), model_registry.champion()
    return (None if challenger is None else challenger.version), (None if champion is None else champion.version)


# The stages' defaults are the fraud project's declared rollout plan (projects/fraud/defs.yaml).
_STAGING_DEFAULTS = fraud_project().rollout.staging
_SHADOW_DEFAULTS = fraud_project().rollout.shadow


class StagingConfig(dg.Config):
    requests: int = Field(
        default=_STAGING_DEFAULTS.requests,
        description="Real recent transactions sent to the staging instance, each answer checked against the contract.",
    )
    warmup_requests: int = Field(
        default=_STAGING_DEFAULTS.warmup_requests,
        description="Requests sent first and not timed, while sessions, caches and the connection warm up.",
    )
    latency_requests: int = Field(
        default=_STAGING_DEFAULTS.latency_requests,
        description="Timed sequential requests (the recent transactions, cycled) whose p99 is judged; at least `requests`.",
    )
    slo_p99_ms: float = Field(
        default=_STAGING_DEFAULTS.slo_p99_ms,
        description="p99 of the server's own processing time of a request (its Server-Timing header), "
        "the staging copy must stay under. The client's wall clock is recorded, not judged: on a busy machine it measures the machine.",
    )


@dg.asset(
    key=STAGING,
    group_name=DEPLOYMENT,
    deps=[CHALLENGER],
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_STAGING,
            asset=STAGING,
            blocking=True,
            description="Zero errors, every answer keeps the contract, server-side p99 (Server-Timing) under the SLO.",
        )
    ],
)
def staging_endpoint(
    config: StagingConfig, warehouse: DuckDBResource, model_registry: ModelRegistry, settings: SettingsResource
):
    """The challenger on a second local endpoint (its own port, log and no writes to production state),
    smoke-tested with real transactions, then stopped."""
    challenger, _ = _versions(model_registry)
    if challenger is None:
        raise dg.Failure(f"no {registry.CHALLENGER!r} alias on {registry.MODEL_NAME!r}: run training_job first")
    with warehouse.get_connection() as con:
        transactions = recent_transactions(con, config.requests)
    port = server.free_port()
    pid = server.start_detached(settings.get(), port=port, role="staging", model_version=challenger, timeout=120)
    url = f"http://127.0.0.1:{port}"
    try:
        with EndpointClient(url) as client:
            result = replay(
                client,
                transactions,
                warmup=config.warmup_requests,
                requests=max(config.latency_requests, len(transactions)),
            )
    finally:
        server.stop(settings.get(), port, "staging")
    summary = result.summary()
    problems = []
    if result.errors:
        problems.append(f"{len(result.errors)} errors, first: {result.errors[0]}")
    if result.contract_violations:
        problems.append(
            f"{len(result.contract_violations)} contract violations, first: {result.contract_violations[0]}"
        )
    if result.versions != {challenger}:
        problems.append(f"answered by versions {sorted(result.versions)}, expected only {challenger}")
    latency = result.latency_problem(config.slo_p99_ms)
    if latency:
        problems.append(latency)
    yield dg.MaterializeResult(
        metadata={
            "version": challenger,
            "url": url,
            "pid": pid,
            "traffic_split": "staging only (no production traffic)",
            **summary,
        }
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_STAGING,
        asset_key=STAGING,
        passed=not problems,
        description="; ".join(problems)
        or f"{result.sent} requests, 0 errors, server p99 {result.server_percentile(99):.1f} ms "
        f"(SLO {config.slo_p99_ms:g} ms; client wall clock p99 {result.percentile(99):.1f} ms, informational)",
        metadata={**summary, "slo_p99_ms": config.slo_p99_ms},
    )


class SoakConfig(dg.Config):
    replay_requests: int = Field(
        default=0,
        description="Recent warehouse transactions to replay through the endpoint during this stage (demo and tests; "
        "0 = judge the real traffic logged since the stage began).",
    )
    wait_seconds: float = Field(default=0.0, description="Let real traffic accumulate this long before judging.")
    min_requests: int = Field(default=100, description="Fewest requests the stage must see to be judged.")


class ShadowConfig(SoakConfig):
    min_requests: int = Field(
        default=_SHADOW_DEFAULTS.min_requests, description="Fewest shadowed requests the stage must see to be judged."
    )
    min_decision_agreement: float = Field(
        default=_SHADOW_DEFAULTS.min_decision_agreement,
        description="Share of requests where challenger and champion decide alike.",
    )


def _soak(warehouse: DuckDBResource, endpoint: ServingEndpointResource, config: SoakConfig) -> float:
    """Traffic for a stage: the replay if asked for, and the wait. Returns the unix time the stage began."""
    began = time.time()
    if config.replay_requests > 0:
        with warehouse.get_connection() as con:
            transactions = recent_transactions(con, config.replay_requests)
        with endpoint.client() as client:
            result = replay(client, transactions)
        if result.errors:
            raise dg.Failure(f"replay to the endpoint failed {len(result.errors)} times, first: {result.errors[0]}")
    if config.wait_seconds > 0:
        time.sleep(config.wait_seconds)
    return began


def _skipped(stage: str, reason: str):
    return dg.MaterializeResult(metadata={"skipped": True, "reason": reason, "stage": stage})


@dg.asset(
    key=SHADOW,
    group_name=DEPLOYMENT,
    deps=[STAGING],
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_SHADOW,
            asset=SHADOW,
            blocking=True,
            description="Enough shadowed requests, and challenger and champion decide alike on most.",
        )
    ],
)
def shadow_endpoint(
    config: ShadowConfig,
    warehouse: DuckDBResource,
    serving_endpoint: ServingEndpointResource,
    model_registry: ModelRegistry,
):
    """The challenger scores every request beside the champion; only the champion answers. Agreement is recorded."""
    challenger, champion = _versions(model_registry)
    endpoint = serving_endpoint
    if champion is None:
        yield _skipped("shadow", "no champion yet: the first model goes from staging to production")
        yield dg.AssetCheckResult(
            check_name=CHECK_SHADOW, asset_key=SHADOW, passed=True, description="skipped: first deployment"
        )
        return
    with endpoint.client() as client:
        client.traffic(
            f"shadow: version {challenger} beside champion {champion}",
            champion_version=champion,
            shadow_version=challenger,
        )
    # Every answer the soak got is in the log already: the endpoint commits a request's rows, its shadow
    # scores included, before it answers (mlops_core/serving/prediction_log.py).
    began = _soak(warehouse, endpoint, config)
    agreement = shadow_agreement(read_predictions(endpoint.prediction_log_path, since=began))
    passed = agreement.requests >= config.min_requests and agreement.decision_agreement >= config.min_decision_agreement
    with endpoint.client() as client:
        # The shadow has been measured; scoring every request twice stops here either way.
        client.traffic(f"shadow of version {challenger} ended", champion_version=champion)
    yield dg.MaterializeResult(
        metadata={
            "version": challenger,
            "champion_version": champion,
            "url": endpoint.url,
            "traffic_split": f"champion {champion} 100%, shadow {challenger}",
            **agreement.as_metadata(),
        }
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_SHADOW,
        asset_key=SHADOW,
        passed=passed,
        metadata=agreement.as_metadata(),
        description=f"{agreement.requests} shadowed requests (need {config.min_requests}), decision agreement "
        f"{agreement.decision_agreement:.3f} (need {config.min_decision_agreement})"
        + ("" if agreement.requests >= config.min_requests else f"; {TOO_LITTLE_TRAFFIC}"),
    )


# The canary's bounds default to the fraud project's declared canary rules (projects/fraud/defs.yaml; a rule it
# leaves out is CanaryRules'), which the canary sensor judges by too.
_CANARY_DEFAULTS = fraud_project().rollout.canary.rules


class CanaryConfig(SoakConfig):
    share: float = Field(
        default=fraud_project().rollout.canary.share,
        ge=0.0,
        le=1.0,
        description="Share of accounts (sticky by account_id hash) the canary answers.",
    )
    min_requests: int = Field(
        default=_CANARY_DEFAULTS.min_requests, description="Fewest canary requests before the canary is judged."
    )
    max_error_rate: float = Field(
        default=_CANARY_DEFAULTS.max_error_rate, description="Largest share of canary requests that may fail."
    )
    max_p99_latency_ms: float = Field(
        default=_CANARY_DEFAULTS.max_p99_latency_ms, description="Largest p99 latency of the canary's answers, ms."
    )
    max_score_psi: float = Field(
        default=_CANARY_DEFAULTS.max_score_psi,
        description="Largest PSI of the canary's scores against the champion's, on fixed probability bins.",
    )
    max_decision_rate_ratio: float = Field(
        default=_CANARY_DEFAULTS.max_decision_rate_ratio,
        description="The canary's flag rate may differ from the champion's by at most this factor "
        "(plus a small floor), either way.",
    )

    def rules(self) -> CanaryRules:
        """The core's rules with this config's bounds; the rules' other fields keep their defaults."""
        return CanaryRules(**self.model_dump(include={field.name for field in dataclasses.fields(CanaryRules)}))


@dg.asset(
    key=CANARY,
    group_name=DEPLOYMENT,
    deps=[SHADOW],
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_CANARY,
            asset=CANARY,
            blocking=True,
            description="Canary error rate and p99 latency within bounds; score shift and flag rate within bounds of "
            "the champion's or of its own on its test split.",
        )
    ],
)
def canary_endpoint(
    config: CanaryConfig,
    warehouse: DuckDBResource,
    serving_endpoint: ServingEndpointResource,
    model_registry: ModelRegistry,
):
    """The challenger answers a share of accounts (sticky by account hash). The canary rollback sensor
    watches it live; this check judges the soak before production."""
    challenger, champion = _versions(model_registry)
    endpoint = serving_endpoint
    if champion is None:
        yield _skipped("canary", "no champion yet: the first model goes from staging to production")
        yield dg.AssetCheckResult(
            check_name=CHECK_CANARY, asset_key=CANARY, passed=True, description="skipped: first deployment"
        )
        return
    excluded = [segment.model_dump() for segment in fraud_project().rollout.canary.excluded_segments]
    with endpoint.client() as client:
        client.traffic(
            f"canary: version {challenger} on {config.share:.0%} of accounts"
            + (f", except {', '.join(s['name'] for s in excluded)}" if excluded else ""),
            champion_version=champion,
            canary_version=challenger,
            canary_share=config.share,
            canary_excluded=excluded,
        )
    expected = model_registry.offline_expectation(model_registry.challenger())
    began = _soak(warehouse, endpoint, config)  # answered means logged: no wait for a commit
    window = canary_window(read_predictions(endpoint.prediction_log_path, since=began), config.rules(), expected)
    passed = window.judged and not window.violations
    if window.violations:
        # Don't leave a canary that broke the rules answering customers until the sensor's next tick.
        with endpoint.client() as client:
            client.rollback(f"canary {challenger} failed its soak: {'; '.join(window.violations)}")
    yield dg.MaterializeResult(
        metadata={
            "version": challenger,
            "champion_version": champion,
            "url": endpoint.url,
            "traffic_split": f"champion {champion} {1 - config.share:.0%}, canary {challenger} {config.share:.0%}",
            "canary_excluded": [f"{s['name']}: {s['feature']} >= {s['at_least']:g}" for s in excluded],
            "drained_after_failing": bool(window.violations),
            **window.as_metadata(),
        }
    )
    if not window.judged:
        description = f"only {window.canary_requests} canary requests, need {config.min_requests}; {TOO_LITTLE_TRAFFIC}"
    else:
        description = "; ".join(window.violations) or f"{window.canary_requests} canary requests within every bound"
    yield dg.AssetCheckResult(
        check_name=CHECK_CANARY, asset_key=CANARY, passed=passed, description=description, metadata=window.as_metadata()
    )


@dg.asset(
    key=PRODUCTION,
    group_name=DEPLOYMENT,
    deps=[dg.AssetKey("champion_model")],
    kinds={"python"},
)
def production_endpoint(
    warehouse: DuckDBResource, serving_endpoint: ServingEndpointResource, model_registry: ModelRegistry
):
    """The endpoint serving the registry's champion to all traffic, the previous champion held for rollback.
    If the endpoint cannot load it, the champion alias is rolled back and the run fails."""
    _, champion = _versions(model_registry)
    if champion is None:
        raise dg.Failure(f"no {registry.CHAMPION!r} alias on {registry.MODEL_NAME!r}: nothing to serve")
    endpoint = serving_endpoint
    reason = f"production: champion version {champion}"
    with endpoint.client() as client:
        if not client.alive():
            # Down (or not started yet): record the plan; the endpoint resumes it at start.
            previous = TrafficPlan.load(Path(endpoint.plan_path))
            plan = TrafficPlan(
                champion_version=champion,
                previous_champion_version=previous.champion_version
                if previous and previous.champion_version != champion
                else None,
                reason=reason,
            )
            # The plan it replaces goes into its history, as when the running endpoint changes traffic.
            (previous.followed_by(plan) if previous else plan).save(Path(endpoint.plan_path))
            return dg.MaterializeResult(
                metadata={
                    "version": champion,
                    "url": endpoint.url,
                    "endpoint_running": False,
                    "traffic_split": f"champion {champion} 100% (when the endpoint starts)",
                }
            )
        try:
            deployment = client.traffic(reason, champion_version=champion)
        except EndpointError as exc:
            with warehouse.get_connection() as con:
                model_registry.rollback_champion(con, reason=f"endpoint could not serve version {champion}: {exc}")
            raise dg.Failure(
                f"the endpoint refused champion version {champion}; the alias was rolled back: {exc}"
            ) from exc
    return dg.MaterializeResult(
        metadata={
            "version": champion,
            "url": endpoint.url,
            "endpoint_running": True,
            "traffic_split": f"champion {champion} 100%",
            "previous_champion_version": deployment["previous_champion_version"],
        }
    )
