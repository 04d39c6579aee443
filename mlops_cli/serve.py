"""`mlops serve`: the scoring endpoint. Needs no Dagster: it starts in well under 2 s."""

from __future__ import annotations

import click

from mlops_core.settings import Settings


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; loopback unless you mean it.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Default: the recorded endpoint's port (MLOPS_SERVING_URL), else 8000.",
)
@click.option(
    "--role",
    type=click.Choice(["production", "staging"]),
    default="production",
    show_default=True,
    help="staging keeps its own log, serves --model-version only and writes no production state.",
)
@click.option(
    "--model-version",
    default=None,
    help="Serve this registry version (staging); default: the recorded plan, else the champion alias.",
)
@click.option(
    "--detach", is_flag=True, help="Run in the background; writes a PID file and returns once /health answers."
)
@click.option("--stop", "stop_server", is_flag=True, help="Stop the detached server on --port (by its PID file).")
def serve(host, port, role, model_version, detach, stop_server) -> None:
    """The scoring endpoint: POST /v1/predict, /v1/predict/batch; GET /health, /ready, /metrics."""
    from mlops_core.serving import server

    settings = Settings.from_env()
    port = port or settings.serving_port
    settings.export()
    server.ensure_admin_token(settings)
    if stop_server:
        pid = server.stop(settings, port, role)
        click.echo(f"stopped {role} server pid {pid}" if pid else f"no {role} server recorded on port {port}")
        return
    if detach:
        try:
            pid = server.start_detached(settings, host, port, role, model_version)
        except server.PortInUseError as err:
            raise click.ClickException(str(err)) from None
        click.echo(
            f"{role} endpoint on http://{host}:{port} (pid {pid}); stop it with `mlops serve --stop --port {port}`"
        )
        return
    try:
        server.run(settings, host, port, role, model_version)
    except server.PortInUseError as err:
        raise click.ClickException(str(err)) from None
