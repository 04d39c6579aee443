"""`mlops features`: what the feature spec generates, readable. Needs no Dagster."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("features")
def features() -> None:
    """The features generated from the spec (mlops_core.features.spec)."""


@features.command("source")
@click.option(
    "--offline",
    is_flag=True,
    help="The offline twin instead: the point-in-time DuckDB SQL the training set is built with.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write to this file instead of standard output.",
)
def source(offline: bool, output: Path | None) -> None:
    """The generated Python of online.compute_features, which serving runs for every request (or with
    --offline, the SQL it is the twin of). Both are generated from the spec at import, never written by hand."""
    if offline:
        from mlops_core.features.offline import point_in_time_features_sql

        text = point_in_time_features_sql().strip() + "\n"
    else:
        from mlops_core.features.online import ONLINE_SOURCE

        text = ONLINE_SOURCE
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output} ({len(text.splitlines())} lines)", err=True)
