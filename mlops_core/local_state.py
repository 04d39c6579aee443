"""The local state a laptop run keeps under MLOPS_HOME, and the port its endpoint listens on.

Dagster-free, so the CLI and the simulation share it without importing the code location.
"""

from __future__ import annotations

import shutil

from mlops_core.settings import REPO_ROOT, Settings


class PortBusyError(RuntimeError):
    """Something this MLOPS_HOME did not start listens on the endpoint's port."""


def claim_port(settings: Settings, port: int) -> int | None:
    """Stop the endpoint this MLOPS_HOME recorded on `port`; then refuse a port something else still holds.
    Returns the stopped endpoint's pid. Called before any state is wiped, so a refusal loses nothing."""
    from mlops_core.serving import server

    stopped = server.stop(settings, port)
    foreign = server.describe_listener("127.0.0.1", port)
    if foreign is not None:
        raise PortBusyError(
            f"port {port} is in use by {foreign}, which this MLOPS_HOME ({settings.home}) did not start. "
            f"Stop it where it was started (`mlops serve --stop --port {port}` in that checkout, or kill its pid), "
            f"or choose another port with --port."
        )
    return stopped


def reset_local_state(settings: Settings, port: int) -> int | None:
    """Stop the endpoint recorded on `port` (it serves state about to go) after making sure no foreign server
    holds the port, then remove the landing zone, warehouse, Dagster instance, reports, MLflow store and the
    release files under MLOPS_HOME (the admin token stays: a server started later in this MLOPS_HOME shares it). Returns the stopped endpoint's pid."""
    stopped = claim_port(settings, port)
    # home/simulation held the in-process sensors' cursors before they moved into DAGSTER_HOME: stale
    # cursors against a fresh instance skip every new event.
    for path in (
        settings.data_dir,
        settings.dagster_home,
        settings.reports_dir,
        settings.mlflow_dir,
        settings.home / "simulation",
    ):
        shutil.rmtree(path, ignore_errors=True)
    settings.duckdb_path.unlink(missing_ok=True)
    # Release files describe versions of the registry just removed: kept, they made the endpoint refuse the
    # next run's version 1 (another graph under the same number). A releases directory outside MLOPS_HOME is
    # a user's deploy repository and is never touched here.
    releases = settings.releases_dir
    if releases is not None and releases.resolve().is_relative_to(settings.home.resolve()):
        shutil.rmtree(releases, ignore_errors=True)
    return stopped


def prepare_instance(settings: Settings) -> None:
    """Create local state and install the repo's instance profile into DAGSTER_HOME."""
    settings.export()
    settings.ensure_dirs()
    instance_yaml = settings.dagster_home / "dagster.yaml"
    template = REPO_ROOT / "dagster.yaml"
    if not instance_yaml.exists() or instance_yaml.read_text() != template.read_text():
        shutil.copyfile(template, instance_yaml)
