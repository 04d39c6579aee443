"""`mlops ui`: the Dagster UI and daemon, and the MLflow UI beside them, stopped together."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from mlops_core.local_state import prepare_instance
from mlops_core.settings import REPO_ROOT, Settings


def run_until_signalled(commands: list[list[str]], cwd: Path, grace_seconds: float = 5.0) -> int:
    """Run `commands` side by side, each in its own session, until the first exits or Ctrl-C/SIGTERM
    arrives; then stop every process group (SIGTERM, SIGKILL after `grace_seconds`). `dagster dev`
    ignores signals that reach it through a shell's job control, and its webserver and daemon children
    outlive a plain SIGINT to the parent."""
    processes = [subprocess.Popen(cmd, cwd=cwd, env=os.environ.copy(), start_new_session=True) for cmd in commands]

    def interrupt(signum, frame):  # noqa: ARG001 - the signal module's handler signature
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 130
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.2)
        code = next(p.returncode for p in processes if p.returncode is not None)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


@click.command("ui")
@click.option("--port", type=int, default=3000, show_default=True)
@click.option(
    "--mlflow-port",
    type=int,
    default=5000,
    show_default=True,
    help="Port of the MLflow UI over the embedded store (reports, runs, registry); 0 starts none.",
)
def ui(port, mlflow_port) -> None:
    """Start the Dagster UI and daemon on 127.0.0.1, and the MLflow UI the report links open (Ctrl-C or SIGTERM stops all)."""
    from mlops_core import registry

    settings = Settings.from_env()
    prepare_instance(settings)
    from mlops_assets.transform.manifest import ensure_manifest

    ensure_manifest()
    bin_dir = Path(sys.executable).parent
    commands = [
        [str(bin_dir / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    ]
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops it)")
    tracking = registry.tracking_uri(settings.mlflow_dir)
    if mlflow_port and not tracking.startswith("http"):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
        os.environ["MLOPS_MLFLOW_UI_URL"] = f"http://127.0.0.1:{mlflow_port}"
        # A viewer of runs, models and reports: MLflow's GenAI job runner would add 8 processes and about 25 s
        # of CPU at every start (deploy/mlflow/run_server.sh). The user's own setting wins.
        os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        commands.append(
            [
                str(bin_dir / "mlflow"),
                "ui",
                "--backend-store-uri",
                tracking,
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                # One person's viewer: MLflow's default of 4 uvicorn workers imports its server 4 times (14-16 s
                # of CPU until /health answers, against 6 s with one).
                "--workers",
                os.environ.get("MLOPS_MLFLOW_UI_WORKERS", "1"),
            ]
        )
        click.echo(f"MLflow UI on http://127.0.0.1:{mlflow_port} (the evaluation reports the Dagster UI links to)")
    # Started in DAGSTER_HOME: from the repo root, dagster dev warns on every start that the repo's
    # dagster.yaml (the template `mlops` installs into DAGSTER_HOME) is not the instance's.
    code = run_until_signalled(commands, cwd=settings.dagster_home)
    # Every child is reaped by now; tearing down the interpreter (dagster, dbt and mlflow imported) took
    # seconds on a busy machine, past the 10 s a stop may take.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
