"""Model registry layer over MLflow's registry, with aliases and an audit history. No dagster here.

Versions are addressed by aliases (`champion`, `challenger`); MLflow stages are deprecated and
never used. MLflow keeps no record of alias changes, so every move is appended to the DuckDB
table `registry.alias_history`, which is also what `rollback_champion` reads.

Consistency between MLflow and the history table: the alias is set in MLflow first and the
history row written second. MLflow is the call likely to fail (a remote server), and when it
does nothing has been written. If the history write fails afterwards, the alias is put back to
the version it had (or removed if it had none) before the error is re-raised, so the two never
disagree. Only if that compensation itself fails (MLflow went away in between) can they differ;
the raised `RegistryInconsistent` then names the alias and both versions.

Registration writes no history. `register_as` registers a version and points an alias at it
all or nothing: if the alias cannot be set, the new version is deleted again, so training
never leaves a version that no alias names (a half-registered model).

Retries: every MLflow call that fails for transport or server reasons is retried here,
`len(RETRY_DELAYS_S)` more times with growing pauses, and each retry is logged; then
RegistryUnavailable says how many attempts were made. Registering a version is not
idempotent in MLflow (a retried create makes a second version), so a retried create first
looks for the version an earlier attempt may have made. MLflow's HTTP client has its own
retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7 with backoff: minutes); set it low
(0-2) so these bounded, logged retries are the ones that decide (docs/reliability.md).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

# mlflow (and pandas, requests under it) load inside the functions that call MLflow: the code location
# imports this module for its names and its resource, and importing mlflow costs it a second.

log = logging.getLogger(__name__)

MODEL_NAME = "fraud_detector"
CHAMPION = "champion"
CHALLENGER = "challenger"

HISTORY_TABLE = "registry.alias_history"

HISTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    changed_at TIMESTAMP NOT NULL,  -- UTC, stored naive so no session time zone shifts it
    model_name VARCHAR NOT NULL,
    alias VARCHAR NOT NULL,
    from_version VARCHAR,           -- NULL: the alias was unset before
    to_version VARCHAR,             -- NULL: the alias was removed
    reason VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    metrics VARCHAR NOT NULL,       -- JSON object
    run_id VARCHAR                  -- MLflow run of to_version; NULL when the alias was removed
)
"""

# MLflow error codes that mean "the request was wrong", not "the registry is unreachable".
_CLIENT_ERROR_CODES = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE",
    "BAD_REQUEST",
}

_T = TypeVar("_T")

_RUN_ID = re.compile(r"[0-9a-f]{32}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")

# Client and server clocks may differ by this much when telling this call's versions from older ones.
_CLOCK_SKEW_MS = 5_000

# Pauses before the 2nd, 3rd, ... attempt of a failing MLflow call: 3 attempts over ~3 s.
RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0)


class RegistryError(Exception):
    """A registry operation was refused: missing alias, version or history."""


class VersionNotFound(RegistryError):
    """The model version named does not exist in the registry."""


class RegistryUnavailable(RegistryError):
    """The MLflow tracking/registry server could not be reached or failed internally."""


class RegistryInconsistent(RegistryError):
    """History write failed and the alias could not be restored: MLflow and history differ."""


@dataclass(frozen=True)
class AliasChange:
    """One alias move as recorded in registry.alias_history."""

    changed_at: datetime
    model_name: str
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str
    metrics: dict[str, Any]
    run_id: str | None


@dataclass(frozen=True)
class AliasedVersion:
    """The version an alias names: its number (always a string), the MLflow run that made it, its tags."""

    model_name: str
    alias: str
    version: str
    run_id: str | None
    tags: dict[str, str]


def tracking_uri_for(mlflow_dir: Path) -> str:
    """sqlite tracking URI for the store in `mlflow_dir`."""
    return f"sqlite:///{Path(mlflow_dir).resolve() / 'mlflow.db'}"


def seed_sqlite_store(db_path: Path) -> None:
    """Create the embedded store `db_path`, when it does not exist yet, as a copy of an empty migrated one.

    MLflow creates a new sqlite store by running each of its alembic migrations in turn, rebuilding tables
    as it goes: 1.2-2 s of CPU per new store, every time (a suite of tests creates dozens). The empty store
    is built that way once per MLflow version and kept in the user's cache; a copy opens in 0.04 s. Its
    experiments are removed, so MLflow creates the default one on first use with this store's artifact root.
    The copy is linked into place, so a store another process created meanwhile is never overwritten."""
    import os
    import shutil
    from importlib.metadata import version

    db_path = Path(db_path)
    if db_path.exists():
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops-platform"
        template = cache / f"mlflow-{version('mlflow')}-empty-store.db"
        if not template.exists():
            cache.mkdir(parents=True, exist_ok=True)
            building = _unique_sibling(template)
            _build_empty_store(building)
            os.replace(building, template)
    except OSError as error:
        # No writable cache (a read-only home in a container): MLflow creates the store itself, only slower.
        log.info("no MLflow store template (%s); MLflow creates %s itself", error, db_path)
        return
    copy = _unique_sibling(db_path)
    shutil.copyfile(template, copy)
    try:
        os.link(copy, db_path)
    except FileExistsError:
        pass  # another process created the store first: keep theirs
    finally:
        copy.unlink()


def _unique_sibling(path: Path) -> Path:
    import os
    import uuid

    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")


def _build_empty_store(path: Path) -> None:
    import sqlite3

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.unlink(missing_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{path}", path.parent.as_uri())
    store.engine.dispose()
    con = sqlite3.connect(path)
    try:
        con.execute("DELETE FROM experiment_tags")
        con.execute("DELETE FROM experiments")
        con.commit()
    finally:
        con.close()


# Where `mlops ui` serves the embedded store's MLflow UI, beside the Dagster UI.
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def artifact_page_url(tracking: str, experiment_id: str, run_id: str, artifact_path: str) -> str:
    """The MLflow UI page that shows a run's artifact, for a link a browser can open: the tracking server
    itself when there is one, else MLOPS_MLFLOW_UI_URL (the MLflow UI `mlops ui` starts)."""
    import os
    from urllib.parse import quote

    base = (
        tracking
        if tracking.startswith(("http://", "https://"))
        else os.environ.get("MLOPS_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL)
    )
    return (
        f"{base.rstrip('/')}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}/artifacts/{quote(artifact_path)}"
    )


def artifact_download_url(tracking: str, run_id: str, artifact_path: str) -> str:
    """The artifact's own bytes from the same MLflow server (the page above loads them from here)."""
    import os
    from urllib.parse import urlencode

    base = (
        tracking
        if tracking.startswith(("http://", "https://"))
        else os.environ.get("MLOPS_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL)
    )
    return f"{base.rstrip('/')}/get-artifact?{urlencode({'path': artifact_path, 'run_uuid': run_id})}"


def tracking_uri(mlflow_dir: Path) -> str:
    """MLOPS_MLFLOW_TRACKING_URI (a server such as http://127.0.0.1:5000), else the embedded sqlite store."""
    import os

    return os.environ.get("MLOPS_MLFLOW_TRACKING_URI") or tracking_uri_for(mlflow_dir)


def artifact_root_for(mlflow_dir: Path) -> str:
    """File URI of the artifact root in `mlflow_dir`."""
    return (Path(mlflow_dir).resolve() / "artifacts").as_uri()


def _uri(client: MlflowClient) -> str:
    # Registry and tracking share one URI here; MlflowClient exposes only the tracking one.
    return client.tracking_uri


def _call(client: MlflowClient, what: str, fn: Callable[[], _T]) -> _T:
    """Run one MLflow call, retrying transport and server failures (RETRY_DELAYS_S), then
    raising RegistryUnavailable. Client errors (bad request, missing resource) are not retried."""
    import requests
    from mlflow.exceptions import MlflowException

    attempts = len(RETRY_DELAYS_S) + 1
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except MlflowException as exc:
            if exc.error_code in _CLIENT_ERROR_CODES:
                raise
            problem = f"failed during {what}: {exc}"
            cause = exc
        except (requests.exceptions.RequestException, OSError) as exc:
            problem = f"unreachable during {what}: {exc}"
            cause = exc
        if attempt < attempts:
            delay = RETRY_DELAYS_S[attempt - 1]
            log.warning(
                "MLflow registry at %s %s; attempt %d of %d, retrying in %.1f s",
                _uri(client),
                problem,
                attempt,
                attempts,
                delay,
            )
            time.sleep(delay)
    raise RegistryUnavailable(
        f"MLflow registry at {_uri(client)} {problem} (gave up after {attempts} attempts)"
    ) from cause


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Experiment id for `name`, created with an explicit artifact location so nothing lands in
    ./mlruns (None: the tracking server's own artifact root)."""
    existing = _call(client, f"get experiment {name!r}", lambda: client.get_experiment_by_name(name))
    if existing is not None:
        return existing.experiment_id
    return _call(
        client,
        f"create experiment {name!r}",
        lambda: client.create_experiment(name, artifact_location=artifact_location),
    )


def _get_version(client: MlflowClient, model_name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return _call(
            client, f"get {model_name} version {version}", lambda: client.get_model_version(model_name, str(version))
        )
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise VersionNotFound(f"model {model_name!r} has no version {version!r}") from exc
        raise


def register_version(
    client: MlflowClient,
    run_id: str,
    artifact_path: str,
    model_name: str = MODEL_NAME,
    tags: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    model_uri: str | None = None,
) -> str:
    """Register a new version of `model_name`; returns its number once READY.

    `model_uri` is the logged model (`models:/m-...`, what `mlflow.<flavor>.log_model`
    returns). Registered from it, the version loads with `mlflow models serve` and
    `mlflow.pyfunc.load_model`; MLflow 3 cannot load a version whose source is
    runs:/<run_id>/<artifact_path> (it looks for MLmodel one folder too high). Without it,
    the runs:/ source is used, for plain artifacts that are not logged models.
    """
    from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
    from mlflow.exceptions import MlflowException

    source = model_uri or f"runs:/{run_id}/{artifact_path}"
    model_id = model_uri.removeprefix("models:/") if model_uri and model_uri.startswith("models:/m-") else None

    def create_model() -> None:
        try:
            client.create_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    started_ms = time.time() * 1000 - _CLOCK_SKEW_MS
    attempts = []

    def create_version():
        # A retry: the previous attempt may have created the version before its answer was
        # lost. Only a version of this run created since this call began counts.
        if attempts:
            for existing in client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'"):
                if existing.source == source and existing.creation_timestamp >= started_ms:
                    return existing
        attempts.append(1)
        return client.create_model_version(model_name, source=source, run_id=run_id, tags=tags, model_id=model_id)

    # Both go into a search filter below: checked, never quoted user text.
    if not _RUN_ID.fullmatch(run_id):
        raise RegistryError(f"run id {run_id!r} is not an MLflow run id (32 hex digits)")
    if not _MODEL_NAME.fullmatch(model_name):
        raise RegistryError(f"model name {model_name!r} must be letters, digits, '_', '-' or '.'")
    _call(client, f"create registered model {model_name!r}", create_model)
    version = _call(client, f"register {source}", create_version)
    deadline = time.monotonic() + timeout_s
    while version.status != ModelVersionStatus.to_string(ModelVersionStatus.READY):
        if version.status == ModelVersionStatus.to_string(ModelVersionStatus.FAILED_REGISTRATION):
            raise RegistryError(f"{model_name} version {version.version} failed registration: {version.status_message}")
        if time.monotonic() > deadline:
            raise RegistryError(f"{model_name} version {version.version} not READY after {timeout_s} s")
        time.sleep(0.5)
        version = _get_version(client, model_name, version.version)
    return str(version.version)


def register_as(
    client: MlflowClient,
    con: duckdb.DuckDBPyConnection,
    alias: str,
    run_id: str,
    artifact_path: str,
    reason: str,
    metrics: dict[str, Any],
    tags: dict[str, str] | None = None,
    model_uri: str | None = None,
    actor: str = "dagster",
    model_name: str = MODEL_NAME,
) -> AliasChange:
    """Register a version and point `alias` at it, all or nothing.

    If the alias cannot be moved (after the retries), the version just created is deleted
    and the error re-raised: no version without its alias stays behind. If the delete fails
    too (MLflow still down), RegistryInconsistent names the version to delete by hand.
    """
    version = register_version(client, run_id, artifact_path, model_name, tags=tags, model_uri=model_uri)
    try:
        return move_alias(client, con, alias, version, reason, metrics, actor, model_name)
    except Exception as alias_error:
        # Deliberately broad: whatever stopped the alias, the new version must not stay,
        # unless an alias points at it after all (then it is not half-registered).
        try:
            aliased = bool(_get_version(client, model_name, version).aliases)
            if not aliased:
                _call(
                    client,
                    f"delete {model_name} version {version}",
                    lambda: client.delete_model_version(model_name, version),
                )
        except RegistryError as cleanup_error:
            raise RegistryInconsistent(
                f"{model_name} version {version} was registered but alias {alias!r} could not be set ({alias_error}) "
                f"and deleting the version failed ({cleanup_error}): delete version {version} by hand"
            ) from alias_error
        if not aliased:
            log.warning(
                "%s version %s deleted again: alias %r could not be set (%s)", model_name, version, alias, alias_error
            )
        raise


def log_onnx_model(onnx_bytes: bytes, name: str, example: pd.DataFrame, predictions: Any) -> str:
    """Log an ONNX model to the active MLflow run; returns its `models:/m-...` URI.

    Its environment is what scoring it needs, onnx and onnxruntime pinned to the versions it was checked
    with (MLflow adds itself). Left to infer it, MLflow 3 finds this repository's uv.lock beside
    pyproject.toml and exports the whole platform's lock, 223 packages from dagster to dbt, into every
    model's requirements.txt: an environment `mlflow models serve` would build for hours, and 2-3 s of CPU
    per model (a `uv export`, then a version check of each of the 223 when the input example is validated).
    """
    import mlflow
    import mlflow.onnx
    import onnx

    info = mlflow.onnx.log_model(
        onnx.load_from_string(onnx_bytes),
        name=name,
        signature=mlflow.models.infer_signature(example, predictions),
        input_example=example,
        pip_requirements=mlflow.onnx.get_default_pip_requirements(),
    )
    return info.model_uri


def artifact_files(client: MlflowClient, model_uri: str) -> list[str]:
    """Paths of the files of a logged model (`models:/m-...`, what `log_model` returns)."""
    if not model_uri.startswith("models:/m-"):
        raise RegistryError(f"cannot list {model_uri!r}: expected a logged model URI, models:/m-...")
    model_id = model_uri.removeprefix("models:/")
    return _call(
        client, f"list artifacts of {model_uri}", lambda: [f.path for f in client.list_logged_model_artifacts(model_id)]
    )


def run_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The metrics logged on an MLflow run."""
    return run_metrics_and_tags(client, run_id)[0]


def run_metrics_and_tags(client: MlflowClient, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and the tags of an MLflow run, in one request."""
    data = _call(client, f"get run {run_id}", lambda: client.get_run(run_id).data)
    return data.metrics, data.tags


# The candidate's test split as scored by its evaluated model: CBPE's calibration reference.
CBPE_REFERENCE_ARTIFACT = "cbpe_reference.json"
# Run tag, "true" or "false": the candidate's own test metrics were below the gates' minimums (it could pass
# only as clearly better than a failing champion). A champion so tagged is provisional (concept_drift).
BELOW_MINIMUMS_TAG = "below_quality_minimums"


def run_json_artifact(client: MlflowClient, run_id: str, name: str) -> dict | None:
    """A JSON artifact a run logged; None when it logged none."""
    import tempfile

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _call(
                client, f"download {name} of run {run_id}", lambda: client.download_artifacts(run_id, name, tmp)
            )
        except (MlflowException, OSError):
            return None
        return json.loads(Path(path).read_text())


def run_feature_importance(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The feature_importance.json a training run logged ({} when it logged none)."""
    logged = run_json_artifact(client, run_id, "feature_importance.json") or {}
    return {str(k): float(v) for k, v in logged.items()}


def alias_version(client: MlflowClient, alias: str, model_name: str = MODEL_NAME) -> str | None:
    """Version the alias points at, or None if the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = _call(client, f"get registered model {model_name!r}", lambda: client.get_registered_model(model_name))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def aliased_version(client: MlflowClient, alias: str, model_name: str = MODEL_NAME) -> AliasedVersion | None:
    """The registry version the alias points at (number, run id, tags), or None if the alias is unset."""
    version = alias_version(client, alias, model_name)
    if version is None:
        return None
    details = _get_version(client, model_name, version)
    return AliasedVersion(model_name, alias, str(details.version), details.run_id, dict(details.tags or {}))


def ensure_history_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the registry schema and registry.alias_history if missing."""
    con.execute("CREATE SCHEMA IF NOT EXISTS registry")
    con.execute(HISTORY_DDL)


def _append_history(con: duckdb.DuckDBPyConnection, change: AliasChange) -> None:
    ensure_history_table(con)
    con.execute(
        f"INSERT INTO {HISTORY_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            change.changed_at.replace(tzinfo=None),
            change.model_name,
            change.alias,
            change.from_version,
            change.to_version,
            change.reason,
            change.actor,
            json.dumps(change.metrics, sort_keys=True, default=str),
            change.run_id,
        ],
    )


def _set_alias(client: MlflowClient, model_name: str, alias: str, version: str | None) -> None:
    if version is None:
        _call(
            client,
            f"delete alias {alias!r} of {model_name!r}",
            lambda: client.delete_registered_model_alias(model_name, alias),
        )
    else:
        _call(
            client,
            f"set alias {alias!r} of {model_name!r} to version {version}",
            lambda: client.set_registered_model_alias(model_name, alias, str(version)),
        )


def _change_alias(
    client: MlflowClient,
    con: duckdb.DuckDBPyConnection,
    alias: str,
    to_version: str | None,
    reason: str,
    metrics: dict[str, Any],
    actor: str,
    model_name: str,
) -> AliasChange:
    run_id = None
    if to_version is not None:
        run_id = _get_version(client, model_name, str(to_version)).run_id
    from_version = alias_version(client, alias, model_name)
    if to_version is None and from_version is None:
        raise RegistryError(f"alias {alias!r} of {model_name!r} is not set; nothing to remove")
    change = AliasChange(
        changed_at=datetime.now(UTC),
        model_name=model_name,
        alias=alias,
        from_version=from_version,
        to_version=None if to_version is None else str(to_version),
        reason=reason,
        actor=actor,
        metrics=dict(metrics),
        run_id=run_id,
    )
    _set_alias(client, model_name, alias, change.to_version)
    try:
        _append_history(con, change)
    except Exception as history_error:
        # Deliberately broad: whatever broke the history write, the alias must go back.
        try:
            _set_alias(client, model_name, alias, from_version)
        except RegistryError as restore_error:
            raise RegistryInconsistent(
                f"alias {alias!r} of {model_name!r} moved {from_version} -> {change.to_version} "
                f"but history write failed ({history_error}) and restoring failed ({restore_error})"
            ) from history_error
        raise
    return change


def move_alias(
    client: MlflowClient,
    con: duckdb.DuckDBPyConnection,
    alias: str,
    to_version: str,
    reason: str,
    metrics: dict[str, Any],
    actor: str = "dagster",
    model_name: str = MODEL_NAME,
) -> AliasChange:
    """Point `alias` at `to_version` and record the move; raises VersionNotFound for an unknown version."""
    return _change_alias(client, con, alias, str(to_version), reason, metrics, actor, model_name)


def remove_alias(
    client: MlflowClient,
    con: duckdb.DuckDBPyConnection,
    alias: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    actor: str = "dagster",
    model_name: str = MODEL_NAME,
) -> AliasChange:
    """Remove `alias` and record it (to_version NULL); raises RegistryError if the alias is unset."""
    return _change_alias(client, con, alias, None, reason, metrics or {}, actor, model_name)


def history(con: duckdb.DuckDBPyConnection, model_name: str | None = None) -> pd.DataFrame:
    """All recorded alias changes, oldest first; metrics stay JSON text."""
    ensure_history_table(con)
    where = "" if model_name is None else "WHERE model_name = ?"
    params = [] if model_name is None else [model_name]
    return con.execute(f"SELECT * FROM {HISTORY_TABLE} {where} ORDER BY changed_at, rowid", params).df()


def promote_challenger(
    client: MlflowClient,
    con: duckdb.DuckDBPyConnection,
    reason: str,
    metrics: dict[str, Any],
    actor: str = "dagster",
    model_name: str = MODEL_NAME,
) -> AliasChange:
    """Move champion to the challenger's version; the old champion is kept as from_version for rollback."""
    challenger = alias_version(client, CHALLENGER, model_name)
    if challenger is None:
        raise RegistryError(f"no {CHALLENGER!r} alias on {model_name!r}: nothing to promote")
    if alias_version(client, CHAMPION, model_name) == challenger:
        raise RegistryError(f"{model_name!r} version {challenger} is already {CHAMPION!r}")
    return move_alias(client, con, CHAMPION, challenger, reason, metrics, actor, model_name)


def rollback_champion(
    client: MlflowClient,
    con: duckdb.DuckDBPyConnection,
    reason: str,
    actor: str = "dagster",
    model_name: str = MODEL_NAME,
) -> AliasChange:
    """Undo the latest champion move: point champion at that row's from_version.

    A second rollback undoes the first one (it is itself a recorded move), so repeated
    rollbacks toggle between two versions rather than walking further back.
    """
    current = alias_version(client, CHAMPION, model_name)
    ensure_history_table(con)
    row = con.execute(
        f"SELECT from_version, to_version FROM {HISTORY_TABLE} "
        "WHERE model_name = ? AND alias = ? ORDER BY changed_at DESC, rowid DESC LIMIT 1",
        [model_name, CHAMPION],
    ).fetchone()
    if row is None or row[0] is None:
        raise RegistryError(f"no previous {CHAMPION!r} of {model_name!r} in history to roll back to")
    previous, last_to = row
    if last_to != current:
        raise RegistryError(
            f"{CHAMPION!r} of {model_name!r} is version {current} in MLflow but history says {last_to}; "
            "refusing to roll back"
        )
    metrics = {"rolled_back_from": current}
    return move_alias(client, con, CHAMPION, previous, reason, metrics, actor, model_name)
