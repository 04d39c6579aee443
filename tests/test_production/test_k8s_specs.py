"""Kubernetes, offline: the Job and Pod specs dagster-k8s builds for a run and for a step of the real
code location, the manifests in deploy/k8s/, the Helm values and the Dockerfile.

There is no cluster. The official chart's templates that matter here (the instance dagster.yaml,
the run launcher config, the code location's container context) are mirrored in small functions
below, from the chart's values keys; dagster validates the rendered instance config, dagster-k8s
builds the Jobs, and kubernetes-validate checks every object against the bundled OpenAPI schema
of KUBE_VERSION in strict mode (an unknown field is an error, as with `kubectl --validate=strict`).
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

# A step handler's context is assembled as dagster-k8s's own unit tests do it; these are dagster
# internals, pinned by uv.lock (dagster 1.13.27).
from dagster._config import process_config, resolve_to_config_type
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import LaunchRunContext
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s import K8sRunLauncher
from dagster_k8s.client import PatchedApiClient
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA, K8sStepHandler, k8s_job_executor
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_postgres.utils import pg_config
from packaging.version import Version

from mlops_assets.constants import TRAINING_JOB

ROOT = Path(__file__).resolve().parents[2]
VALUES_FILE = ROOT / "deploy" / "helm" / "values.yaml"
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
PRODUCTION_PROFILE = ROOT / "deploy" / "dagster.production.yaml"
DOCS = ROOT / "docs" / "kubernetes.md"

# The oldest Kubernetes minor we support; kubernetes-validate picks the newest bundled schema
# not newer than this. Also checked against the newest bundled schema.
KUBE_VERSION = "1.31.0"
RELEASE = "dagster"  # `helm install dagster dagster/dagster`: the chart's fullname is "dagster"
NAMESPACE = "mlops"
STEP_KEY = "fraud_model_candidate"

# What k8s_job_executor adds on top of the run launcher's config for per-step pods (run config
# `execution: {config: ...}` of a job using it). The rest is inherited from the chart's config.
STEP_EXECUTOR_CONFIG = {
    "job_namespace": NAMESPACE,
    "max_concurrent": 2,
    "step_k8s_config": {
        "container_config": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}},
    },
}


# ---------------------------------------------------------------------------------------------
# Reading the files


def _values() -> dict:
    return yaml.safe_load(VALUES_FILE.read_text())


def _user_deployment(values: dict) -> dict:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return deployment


def _image(deployment: dict) -> str:
    """dagster.dagsterImage.name: repository:tag."""
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def _manifest_objects() -> list[tuple[str, dict]]:
    objects = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects.append((path.name, doc))
    return objects


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        instruction, _, args = current.partition(" ")
        lines.append((instruction.upper(), args.strip()))
        current = ""
    return lines


def _docker_env(instructions) -> dict[str, str]:
    """ENV of the final stage."""
    final = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    env = {}
    for ins, args in instructions[final:]:
        if ins == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def _last(instructions, name: str) -> str:
    return [args for ins, args in instructions if ins == name][-1]


# ---------------------------------------------------------------------------------------------
# The chart's templates, mirrored (helm/dagster/templates/helpers/instance/*.tpl and
# charts/dagster-user-deployments/templates/helpers/_helpers.tpl of dagster-io/dagster)


def _names(refs: list[dict]) -> list[str]:
    return [ref["name"] for ref in refs if "name" in ref]


def chart_run_launcher(values: dict) -> dict:
    """dagsterYaml.runLauncher.k8s."""
    cfg = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        "load_incluster_config": cfg["loadInclusterConfig"],
        "job_namespace": cfg.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": cfg["imagePullPolicy"],
        "service_account_name": values.get("global", {}).get("serviceAccountName") or RELEASE,
        "dagster_home": values["global"]["dagsterHome"],
        "instance_config_map": f"{RELEASE}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    for key, chart_key in [("env_config_maps", "envConfigMaps"), ("env_secrets", "envSecrets")]:
        if cfg.get(chart_key):
            config[key] = _names(cfg[chart_key])
    for key, chart_key in [
        ("env_vars", "envVars"),
        ("volume_mounts", "volumeMounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("scheduler_name", "schedulerName"),
        ("security_context", "securityContext"),
    ]:
        if cfg.get(chart_key):
            config[key] = cfg[chart_key]
    if cfg.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    run_k8s = cfg.get("runK8sConfig") or {}
    snake = {
        "containerConfig": "container_config",
        "podSpecConfig": "pod_spec_config",
        "podTemplateSpecMetadata": "pod_template_spec_metadata",
        "jobSpecConfig": "job_spec_config",
        "jobMetadata": "job_metadata",
    }
    if run_k8s:
        config["run_k8s_config"] = {snake[k]: v for k, v in run_k8s.items() if v}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def chart_postgres(values: dict) -> dict:
    """dagsterYaml.postgresql.config."""
    pg = values["postgresql"]
    db = {
        "username": pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
    }
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def chart_concurrency(values: dict) -> dict:
    """dagsterYaml.concurrency."""
    conc = values["concurrency"]
    out = {}
    pools = conc.get("pools", {})
    if pools:
        out["pools"] = {
            {
                "defaultLimit": "default_limit",
                "granularity": "granularity",
                "opGranularityRunBuffer": "op_granularity_run_buffer",
            }[k]: v
            for k, v in pools.items()
        }
    runs = conc.get("runs", {})
    if runs:
        out["runs"] = {}
        if "maxConcurrentRuns" in runs:
            out["runs"]["max_concurrent_runs"] = runs["maxConcurrentRuns"]
        if runs.get("tagConcurrencyLimits"):
            out["runs"]["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
    return out


def chart_instance(values: dict) -> dict:
    """The instance ConfigMap's dagster.yaml (templates/configmap-instance.yaml)."""
    daemon = values["dagsterDaemon"]
    storage = {"config": chart_postgres(values)}
    instance = {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            **storage,
        },
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", **storage},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage", **storage},
        "run_launcher": chart_run_launcher(values),
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
        queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"] or {}
        coordinator = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
        if any(v is not None for v in queued.values()):
            coordinator["config"] = {
                "max_concurrent_runs": queued.get("maxConcurrentRuns"),
                "tag_concurrency_limits": queued.get("tagConcurrencyLimits"),
            }
        instance["run_coordinator"] = coordinator
    monitoring = daemon.get("runMonitoring", {})
    if daemon["enabled"] and monitoring.get("enabled"):
        instance["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
        }
    for key in ("sensors", "schedules"):
        if daemon["enabled"] and daemon.get(key, {}).get("useThreads"):
            instance[key] = {"use_threads": True, "num_workers": daemon[key]["numWorkers"]}
    if values.get("concurrency", {}).get("enabled"):
        instance["concurrency"] = chart_concurrency(values)
    return instance


def chart_container_context(values: dict, deployment: dict) -> dict | None:
    """dagsterUserDeployments.k8sContainerContext: what the code server hands to every run,
    when includeConfigInLaunchedRuns is enabled (the chart's default)."""
    if not deployment.get("includeConfigInLaunchedRuns", {"enabled": True})["enabled"]:
        return None
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"{RELEASE}-{deployment['name']}-user-env", *_names(deployment.get("envConfigMaps", []))],
        "namespace": NAMESPACE,
        "service_account_name": values.get("global", {}).get("serviceAccountName") or f"{RELEASE}-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = _names(deployment["envSecrets"])
    for key, chart_key in [
        ("volume_mounts", "volumeMounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("scheduler_name", "schedulerName"),
    ]:
        if deployment.get(chart_key):
            k8s[key] = deployment[chart_key]
    return {"k8s": k8s}


# ---------------------------------------------------------------------------------------------
# Rendering with dagster-k8s


class JobRecorder:
    """Stands where the cluster's batch API would: keeps the Job bodies dagster-k8s submits."""

    def __init__(self):
        self.jobs = []

    def create_namespaced_job(self, body, namespace, **_):
        self.jobs.append((namespace, body))


def _serialize(model) -> dict:
    """What the Kubernetes client sends over the wire (camelCase, no nulls)."""
    return PatchedApiClient().sanitize_for_serialization(model)


def pod_of(job: dict) -> dict:
    """The Pod the Job controller creates from the Job's template."""
    template = job["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]}


def validate(obj: dict, version: str = KUBE_VERSION) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory) -> str:
    """dagster-k8s loads a kubeconfig when its launcher starts; it never connects while rendering."""
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "offline",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "offline", "user": {"token": "unused"}}],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "user": "offline", "namespace": NAMESPACE}}
                ],
            }
        )
    )
    return str(path)


def _training_job(values: dict, deployment: dict):
    """training_job of the real code location as the chart's code server serves it: (job, its origin)."""
    repository = ReconstructableRepository.for_module(
        "mlops_assets.definitions",
        "defs",
        working_directory="/app",
        container_image=_image(deployment),
        container_context=chart_container_context(values, deployment),
    )
    recon_job = repository.get_reconstructable_job(TRAINING_JOB)
    origin = recon_job.get_python_origin()
    # The code server in the image reports its own interpreter, not this test's.
    return recon_job, origin._replace(
        repository_origin=origin.repository_origin._replace(executable_path="/app/.venv/bin/python")
    )


def _k8s_executor(recon_job, instance, executor_config: dict, kubeconfig: str):
    """k8s_job_executor built from `executor_config` as a run's would be: (executor, its processed config)."""
    processed = process_config(
        resolve_to_config_type(_K8S_EXECUTOR_CONFIG_SCHEMA),
        {**executor_config, "load_incluster_config": False, "kubeconfig_file": kubeconfig},
    )
    assert processed.success, processed.errors
    executor = k8s_job_executor.executor_creation_fn(
        InitExecutorContext(
            job=recon_job, executor_def=k8s_job_executor, executor_config=processed.value, instance=instance
        )
    )
    return executor, processed.value


def _step_context(instance, recon_job, run, executor, plan, origin, step_key: str, known_state=None):
    """What K8sStepHandler.launch_step gets for `step_key` of `plan`."""
    return StepHandlerContext(
        instance=instance,
        plan_context=PlanOrchestrationContext(
            plan_data=PlanData(
                job=recon_job,
                dagster_run=run,
                instance=instance,
                execution_plan=plan,
                raise_on_error=True,
                retry_mode=RetryMode.DISABLED,
            ),
            log_manager=create_context_free_log_manager(instance, run),
            executor=executor,
            output_capture=None,
        ),
        steps=[plan.get_step_by_key(step_key)],
        execute_step_args=ExecuteStepArgs(origin, run.run_id, [step_key], known_state=known_state),
    )


@pytest.fixture(scope="module")
def rendered(kubeconfig):
    """The run Job (K8sRunLauncher.launch_run) and a step Job (K8sStepHandler.launch_step) for
    training_job of the real code location, configured exactly as the chart configures them."""
    values = _values()
    deployment = _user_deployment(values)
    launcher_config = dict(chart_run_launcher(values)["config"])
    # In the cluster: in-cluster config. Here: a kubeconfig that is never contacted.
    launcher_config.update(load_incluster_config=False, kubeconfig_file=kubeconfig)

    recon_job, origin = _training_job(values, deployment)

    recorder = JobRecorder()
    with instance_for_test(
        overrides={"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config}}
    ) as instance:
        run = create_run_for_test(instance, job_name=TRAINING_JOB, job_code_origin=origin)

        launcher = K8sRunLauncher(**launcher_config, k8s_client_batch_api=recorder)
        launcher.register_instance(instance)
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

        executor, _ = _k8s_executor(recon_job, instance, STEP_EXECUTOR_CONFIG, kubeconfig)
        plan = create_execution_plan(recon_job)
        step_context = _step_context(instance, recon_job, run, executor, plan, origin, STEP_KEY)
        handler = K8sStepHandler(
            image=None,
            container_context=K8sContainerContext(
                namespace=STEP_EXECUTOR_CONFIG["job_namespace"],
                run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(STEP_EXECUTOR_CONFIG["step_k8s_config"]),
            ),
            load_incluster_config=False,
            kubeconfig_file=kubeconfig,
            k8s_client_batch_api=recorder,
        )
        list(handler.launch_step(step_context))

    (run_ns, run_job), (step_ns, step_job) = recorder.jobs
    return {
        "run": _serialize(run_job),
        "run_namespace": run_ns,
        "step": _serialize(step_job),
        "step_namespace": step_ns,
        "run_id": run.run_id,
        "values": values,
        "deployment": deployment,
    }


BUCKET_STEP = "training_set.build_training_set_bucket[bucket_1]"


@pytest.fixture(scope="module")
def bucket_step(kubeconfig, monkeypatch_module):
    """The Job for one bucket step of the training set, in a run whose plan step yielded two buckets, with
    k8s_job_executor configured as the code location configures it (`k8s_executor_config`) from a production
    profile that asks 5Gi per bucket."""
    from dagster._core.execution.plan.state import KnownExecutionState

    from resources.environment import k8s_executor_config

    monkeypatch_module.setenv("MLOPS_TRAINING_BUCKET_MEMORY", "5Gi")
    executor_config = k8s_executor_config()
    values = _values()
    deployment = _user_deployment(values)
    launcher_config = dict(chart_run_launcher(values)["config"])
    launcher_config.update(load_incluster_config=False, kubeconfig_file=kubeconfig)
    recon_job, origin = _training_job(values, deployment)
    known_state = KnownExecutionState(
        dynamic_mappings={"training_set.plan_training_set": {"result": ["bucket_0", "bucket_1"]}}
    )
    recorder = JobRecorder()
    with instance_for_test(
        overrides={"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config}}
    ) as instance:
        run = create_run_for_test(instance, job_name=TRAINING_JOB, job_code_origin=origin)
        executor, processed = _k8s_executor(
            recon_job, instance, {**executor_config, "job_namespace": NAMESPACE}, kubeconfig
        )
        # The plan as the run's orchestrator holds it once the plan step has yielded its two buckets.
        plan = create_execution_plan(
            recon_job,
            step_keys_to_execute=["training_set.build_training_set_bucket[bucket_0]", BUCKET_STEP, STEP_KEY],
            known_state=known_state,
        )
        assert {k for k in plan.step_keys_to_execute if "build_training_set_bucket" in k} == {
            "training_set.build_training_set_bucket[bucket_0]",
            BUCKET_STEP,
        }
        step_context = _step_context(instance, recon_job, run, executor, plan, origin, BUCKET_STEP, known_state)
        handler = K8sStepHandler(
            image=None,
            container_context=K8sContainerContext(namespace=NAMESPACE),
            load_incluster_config=False,
            kubeconfig_file=kubeconfig,
            k8s_client_batch_api=recorder,
            per_step_k8s_config=processed["per_step_k8s_config"],
        )
        list(handler.launch_step(step_context))
        # Another step of the same run gets no bucket memory: the override is the bucket op's alone.
        step_context_other = _step_context(instance, recon_job, run, executor, plan, origin, STEP_KEY, known_state)
        list(handler.launch_step(step_context_other))
    (_, bucket_job), (_, other_job) = recorder.jobs
    return {"bucket": _serialize(bucket_job), "other": _serialize(other_job)}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_each_training_set_bucket_is_a_pod_with_the_production_profiles_memory(bucket_step):
    job = bucket_step["bucket"]
    validate(job)
    validate(pod_of(job), kubernetes_validate.utils.latest_version())
    container = _container(job)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DAGSTER_RUN_STEP_KEY"] == BUCKET_STEP
    assert container["args"][:3] == ["dagster", "api", "execute_step"]
    # The bucket's memory, request and limit; the rest (the CPU request) is the run launcher's, as for every step.
    launcher = _values()["runLauncher"]["config"]["k8sRunLauncher"]["resources"]
    assert container["resources"]["requests"] == {**launcher.get("requests", {}), "memory": "5Gi"}
    assert container["resources"]["limits"]["memory"] == "5Gi"
    other = _container(bucket_step["other"]).get("resources", {})
    assert other.get("requests", {}).get("memory") != "5Gi" and other.get("limits", {}).get("memory") != "5Gi"


def test_the_bucket_memory_setting_is_a_kubernetes_quantity(monkeypatch):
    from resources.environment import DEFAULT_TRAINING_BUCKET_MEMORY, k8s_executor_config

    monkeypatch.delenv("MLOPS_TRAINING_BUCKET_MEMORY", raising=False)
    resources = k8s_executor_config()["per_step_k8s_config"]["build_training_set_bucket"]["container_config"]
    assert resources["resources"]["requests"]["memory"] == DEFAULT_TRAINING_BUCKET_MEMORY
    for bad in ("3 GB", "3GB", "lots", ""):
        with pytest.raises(ValueError, match="MLOPS_TRAINING_BUCKET_MEMORY must be a Kubernetes memory quantity"):
            k8s_executor_config({"MLOPS_TRAINING_BUCKET_MEMORY": bad})


def _container(job: dict) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


# ---------------------------------------------------------------------------------------------
# The run and step specs


def test_schema_versions_are_bundled():
    versions = kubernetes_validate.utils.all_versions()
    assert KUBE_VERSION in versions
    assert Version(kubernetes_validate.utils.latest_version()) >= Version(KUBE_VERSION)


@pytest.mark.parametrize("kind", ["run", "step"])
@pytest.mark.parametrize("version", [KUBE_VERSION, kubernetes_validate.utils.latest_version()])
def test_dagster_k8s_job_and_pod_are_valid_kubernetes(rendered, kind, version):
    job = rendered[kind]
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    validate(job, version)
    validate(pod_of(job), version)


def test_run_job_carries_the_image_instance_and_secrets(rendered):
    job, deployment, values = rendered["run"], rendered["deployment"], rendered["values"]
    assert rendered["run_namespace"] == NAMESPACE
    assert job["metadata"]["name"] == f"dagster-run-{rendered['run_id']}"
    assert job["metadata"]["labels"]["dagster/job"] == TRAINING_JOB
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == RELEASE  # the chart's service account, allowed to launch Jobs
    assert pod["securityContext"]["fsGroup"] == 10001
    container = _container(job)
    assert container["image"] == _image(deployment)
    # `dagster api execute_run ...`: resolved through the image's PATH (see the Dockerfile test).
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    assert "/app/.venv/bin/python" in container["args"][3]
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == values["global"]["dagsterHome"]
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlops-postgres",
        "key": "postgresql-password",
    }
    env_from = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
    assert (
        env_from
        == _names(deployment["envConfigMaps"]) + _names(deployment["envSecrets"])
        == ["mlops-settings", "mlops-secrets"]
    )
    # The run pod sees what the code server sees: its settings ConfigMap, secrets and state volume.
    assert {"name": "mlops-state", "mountPath": "/var/lib/mlops"} in container["volumeMounts"]
    assert any(
        v["name"] == "mlops-state" and v["persistentVolumeClaim"]["claimName"] == "mlops-state" for v in pod["volumes"]
    )
    # Run pods get the runLauncher's resources, not the code server's (see values.yaml).
    assert container["resources"] == values["runLauncher"]["config"]["k8sRunLauncher"]["resources"]
    assert container["resources"] != deployment["resources"]
    assert container["securityContext"]["runAsNonRoot"] is True


def test_step_job_runs_one_step_of_the_real_job(rendered):
    job = rendered["step"]
    assert rendered["step_namespace"] == NAMESPACE
    assert job["metadata"]["name"].startswith("dagster-step-")
    assert len(job["metadata"]["name"]) <= 63
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["dagster/op"] == STEP_KEY
    assert labels["app.kubernetes.io/component"] == "step_worker"
    container = _container(job)
    assert container["image"] == _image(rendered["deployment"])
    assert container["args"][:3] == ["dagster", "api", "execute_step"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DAGSTER_RUN_STEP_KEY"] == STEP_KEY
    assert env["DAGSTER_RUN_JOB_NAME"] == TRAINING_JOB
    assert container["resources"] == STEP_EXECUTOR_CONFIG["step_k8s_config"]["container_config"]["resources"]
    assert {"name": "mlops-state", "mountPath": "/var/lib/mlops"} in container["volumeMounts"]


def test_validator_rejects_a_broken_job(rendered):
    """The schema check can fail: a container without its required name, a misspelled field, a
    wrongly typed value are each rejected."""
    missing_name = copy.deepcopy(rendered["run"])
    del _container(missing_name)["name"]
    with pytest.raises(kubernetes_validate.ValidationError, match="'name' is a required property"):
        validate(missing_name)

    typo = copy.deepcopy(rendered["step"])
    _container(typo)["imagePullPolcy"] = "IfNotPresent"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        validate(typo)
    # Only strict mode catches a misspelled field: why every check here is strict.
    kubernetes_validate.validate(typo, KUBE_VERSION, strict=False)

    wrong_type = copy.deepcopy(rendered["run"])
    wrong_type["spec"]["backoffLimit"] = "none"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type)


# ---------------------------------------------------------------------------------------------
# deploy/k8s


def test_every_manifest_is_valid_kubernetes():
    objects = _manifest_objects()
    kinds = sorted({(obj["kind"], obj["metadata"]["name"]) for _, obj in objects})
    for name in ("mlops-serving", "mlflow", "redis"):
        assert ("Deployment", name) in kinds and ("Service", name) in kinds
    for filename, obj in objects:
        validate(obj)
        validate(obj, kubernetes_validate.utils.latest_version())
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, f"{filename}: {obj['metadata']['name']}"


def test_validator_rejects_a_broken_manifest():
    deployment = next(obj for _, obj in _manifest_objects() if obj["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    no_selector = copy.deepcopy(deployment)
    del no_selector["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError, match="'selector' is a required property"):
        validate(no_selector)


def _deployment(name: str) -> dict:
    return next(
        obj for _, obj in _manifest_objects() if obj["kind"] == "Deployment" and obj["metadata"]["name"] == name
    )


def test_serving_endpoint_probes_secrets_and_services():
    serving = _deployment("mlops-serving")
    pod = serving["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["mlops", "serve"]
    assert (
        "--host" in container["command"] and container["command"][container["command"].index("--host") + 1] == "0.0.0.0"
    )
    port = int(container["command"][container["command"].index("--port") + 1])
    assert container["ports"][0]["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e for e in container["env"]}
    assert env["MLOPS_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlops-secrets",
        "key": "MLOPS_ADMIN_TOKEN",
    }
    assert "value" not in env["MLOPS_ADMIN_TOKEN"]
    # One writer of the sqlite prediction log: one replica, never two during a rollout.
    assert serving["spec"]["replicas"] == 1 and serving["spec"]["strategy"]["type"] == "Recreate"
    services = {obj["metadata"]["name"]: obj for _, obj in _manifest_objects() if obj["kind"] == "Service"}
    selector = serving["spec"]["selector"]["matchLabels"]
    for name in ("mlops-serving", "mlops-serving-admin"):
        assert services[name]["spec"]["selector"] == selector
    assert services["mlops-serving-admin"]["spec"]["publishNotReadyAddresses"] is True
    # Dagster's rollout assets reach the endpoint through the admin Service.
    admin_url = f"http://mlops-serving-admin:{services['mlops-serving-admin']['spec']['ports'][0]['port']}"
    assert _settings()["MLOPS_SERVING_URL"] == admin_url
    assert {"configMapRef": {"name": "mlops-settings"}} in container["envFrom"]


def _settings() -> dict[str, str]:
    return next(
        obj
        for _, obj in _manifest_objects()
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "mlops-settings"
    )["data"]


def test_no_manifest_writes_a_secret_value():
    """Secret material only through secretKeyRef / envFrom: no literal value for a sensitive name."""
    sensitive = re.compile(r"TOKEN|PASSWORD|SECRET|_URI$|_URL$|AUTH")
    allowed_literals = {"MLOPS_SERVING_URL"}
    for filename, obj in _manifest_objects():
        if obj["kind"] != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if sensitive.search(entry["name"]) and entry["name"] not in allowed_literals:
                    assert "valueFrom" in entry and "value" not in entry, f"{filename}: {entry['name']}"
    for key in _settings():
        assert not sensitive.search(key) or key in allowed_literals, key


# ---------------------------------------------------------------------------------------------
# Helm values


def _launcher_config_result(config: dict):
    return process_config(resolve_to_config_type(K8sRunLauncher.config_type()), config)


def test_helm_values_render_a_valid_instance(tmp_path, monkeypatch):
    """The chart's dagster.yaml from these values passes dagster's own instance validation
    (schema, and the rule that run limits are not set in two places), and its run launcher and
    storage sections are what dagster-k8s and dagster-postgres accept."""
    values = _values()
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart_instance(values)))
    config, _ = dagster_instance_config(str(tmp_path))
    launcher = _launcher_config_result(config["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert launcher.value["env_config_maps"] == ["mlops-settings"]
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert config["schedule_storage"]["class"] == "PostgresScheduleStorage"
    # The postgres block is what dagster-postgres accepts, password from the environment.
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "from-the-secret")
    processed = process_config(resolve_to_config_type(pg_config()), chart_postgres(values))
    assert processed.success, processed.errors
    assert processed.value["postgres_db"]["password"] == "from-the-secret"
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    assert values["dagsterDaemon"]["enabled"] is True


def test_helm_concurrency_matches_the_production_profile():
    production = yaml.safe_load(PRODUCTION_PROFILE.read_text())
    assert chart_concurrency(_values()) == production["concurrency"]


def test_helm_values_checks_can_fail(tmp_path):
    """The checks above can fail: a run launcher field dagster-k8s does not know is refused, and
    run limits set both on the coordinator and in `concurrency` are refused by dagster."""
    values = _values()
    launcher = dict(chart_run_launcher(values)["config"], job_image_typo="x")
    result = _launcher_config_result(launcher)
    assert not result.success and "job_image_typo" in str(result.errors)

    values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] = {"maxConcurrentRuns": 2}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(chart_instance(values)))
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        dagster_instance_config(str(tmp_path))


def test_image_and_secrets_are_consistent_across_values_and_manifests():
    values = _values()
    deployment = _user_deployment(values)
    image = _image(deployment)
    ours = [
        c["image"]
        for _, obj in _manifest_objects()
        if obj["kind"] == "Deployment"
        for c in obj["spec"]["template"]["spec"]["containers"]
        if c["image"].startswith(deployment["image"]["repository"])
    ]
    assert len(ours) == 2 and set(ours) == {image}  # mlops-serving and mlflow run the code location image
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    # The run pods see what the code server sees.
    assert _names(deployment["envSecrets"]) == _names(launcher["envSecrets"]) == ["mlops-secrets"]
    assert _names(deployment["envConfigMaps"]) == _names(launcher["envConfigMaps"]) == ["mlops-settings"]
    assert deployment["volumes"] == launcher["volumes"] and deployment["volumeMounts"] == launcher["volumeMounts"]

    # Every secret referenced anywhere is created in docs/kubernetes.md, with every key read from it.
    referenced: dict[str, set[str]] = {
        values["global"]["postgresqlSecretName"]: {"postgresql-password"},
        "mlops-secrets": {"MLOPS_ADMIN_TOKEN", "MLOPS_MLFLOW_TRACKING_URI", "MLOPS_REDIS_URL"},
    }
    for _, obj in _manifest_objects():
        if obj["kind"] != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.setdefault(ref["name"], set()).add(ref["key"])
    docs = DOCS.read_text()
    for name, keys in referenced.items():
        match = re.search(rf"kubectl [^\n]*create secret generic {re.escape(name)}((?:[^\n]*\\\n)*[^\n]*)", docs)
        assert match, f"docs/kubernetes.md does not create secret {name}"
        for key in keys:
            assert f"--from-literal={key}=" in match.group(1), f"secret {name} lacks key {key} in the docs"


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_claims():
    instructions = _dockerfile()
    values = _values()
    deployment = _user_deployment(values)
    froms = [args for ins, args in instructions if ins == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)

    runs = [args for ins, args in instructions if ins == "RUN"]
    copies = [args for ins, args in instructions if ins == "COPY"]
    lock_copy = next(i for i, (ins, args) in enumerate(instructions) if ins == "COPY" and "uv.lock" in args.split())
    assert "pyproject.toml" in instructions[lock_copy][1].split()
    first_sync = next(i for i, (ins, args) in enumerate(instructions) if ins == "RUN" and "uv sync" in args)
    assert lock_copy < first_sync  # the locked environment installs from the lock file
    assert all("--frozen" in r and "--no-dev" in r for r in runs if "uv sync" in r)
    build_env = {
        k: v for ins, args in instructions if ins == "ENV" for k, _, v in (t.partition("=") for t in shlex.split(args))
    }
    assert build_env.get("UV_COMPILE_BYTECODE") == "1"
    assert any("mlops prepare" in r and "manifest.json" in r for r in runs)

    # Every package of the project is copied before the project is installed.
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {args.split()[0].rstrip("/") for args in copies if not args.startswith("--from")}
    for package in packages:
        assert package.split(".")[0] in copied, package
        assert (ROOT / package.replace(".", "/")).is_dir()
    assert "dbt_project" in copied and "uv.lock" not in copied  # uv.lock comes with pyproject above
    # The project is installed editable, so uv compiles none of it: each of its packages is compiled after the
    # install (the pods run with PYTHONDONTWRITEBYTECODE and would compile them in every process).
    install = max(i for i, (ins, args) in enumerate(instructions) if ins == "RUN" and "uv sync" in args)
    compiled = [set(args.split()) for ins, args in instructions[install + 1 :] if ins == "RUN" and "compileall" in args]
    assert compiled and {package.split(".")[0] for package in packages} <= compiled[0], compiled

    # Non-root, and the same uid the pods' security contexts ask for.
    user = _last(instructions, "USER").split(":")[0]
    assert user not in ("root", "0")
    assert (
        int(user)
        == deployment["podSecurityContext"]["runAsUser"]
        == _deployment("mlops-serving")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )

    # The chart passes `dagster code-server start ...` as args: an ENTRYPOINT would be prefixed to them.
    assert not [args for ins, args in instructions if ins == "ENTRYPOINT"]
    cmd = yaml.safe_load(_last(instructions, "CMD"))  # JSON exec form
    assert cmd[:3] == ["dagster", "code-server", "start"]
    port = int(_last(instructions, "EXPOSE"))
    assert port == int(cmd[cmd.index("-p") + 1]) == deployment["port"]
    module = cmd[cmd.index("-m") + 1]
    assert module == deployment["codeServerArgs"][deployment["codeServerArgs"].index("-m") + 1]
    assert importlib.util.find_spec(module) is not None
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()

    env = _docker_env(instructions)
    assert "/app/.venv/bin" in env["PATH"].split(":")  # run and step pods start `dagster ...` by name
    assert env["DAGSTER_HOME"] == values["global"]["dagsterHome"]
    assert env["MLOPS_HOME"] == _settings()["MLOPS_HOME"] == deployment["volumeMounts"][0]["mountPath"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # bytecode was compiled at build time


def test_dockerignore_keeps_local_state_out_and_sources_in():
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns)

    for path in (".venv", ".mlops", ".mlops-ci", ".git", "mlruns", "data", "dbt_project/target", ".pytest_cache"):
        assert ignored(path), path
    for ins, args in _dockerfile():
        if ins == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert not ignored(source.rstrip("/")), f"{source} is copied but ignored"
