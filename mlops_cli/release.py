"""`mlops release`: the GitOps record of what is deployed (mlops_core/releases.py)."""

from __future__ import annotations

import click

from mlops_core.settings import Settings


@click.group("release")
def release() -> None:
    """The release files: what each registered model serves, and what a promotion would change."""


@click.command("diff")
@click.option("--model", "model_name", default=None, help="Registered model (default: the fraud model).")
def release_diff(model_name: str | None) -> None:
    """What promoting the current challenger would change in the release file; exits 1 when there is no challenger."""
    from mlflow import MlflowClient

    from mlops_core import registry, releases

    settings = Settings.from_env()
    model_name = model_name or registry.MODEL_NAME
    client = MlflowClient(tracking_uri=registry.tracking_uri(settings.mlflow_dir))
    challenger = registry.alias_version(client, registry.CHALLENGER, model_name)
    if challenger is None:
        raise click.ClickException(f"{model_name!r} has no challenger: nothing would be promoted")
    champion = registry.alias_version(client, registry.CHAMPION, model_name)
    current = releases.read(settings.releases_dir, model_name) if settings.releases_dir else None
    proposed = releases.release_of(
        client, model_name, challenger, action=releases.PROMOTE, previous_version=champion, actor="-", reason="-"
    )
    path = releases.path_for(settings.releases_dir, model_name) if settings.releases_dir else "(no MLOPS_RELEASES_DIR)"
    click.echo(f"--- {path} (now: version {current.version if current else 'none'})")
    click.echo(f"+++ promotion of version {challenger} (champion now: {champion or 'none'})")
    changes = releases.diff(current, proposed)
    for name, before, after in changes:
        click.echo(f"  {name}:\n    - {before}\n    + {after}")
    if not changes:
        click.echo("  no change")


release.add_command(release_diff)
