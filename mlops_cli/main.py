"""The `mlops` command line, one module per command group. Heavy imports (dagster, the code location)
happen inside the commands that need them, so `mlops serve` and `mlops demo generate` start fast."""

import click

from mlops_cli.approve import approve, reject
from mlops_cli.demo import demo
from mlops_cli.features import features
from mlops_cli.pipeline import ingest, prepare, promote, rollout, train
from mlops_cli.projects import project
from mlops_cli.release import release
from mlops_cli.serve import serve
from mlops_cli.simulate import simulate_command
from mlops_cli.ui import ui


@click.group()
def main() -> None:
    """MLOps platform: demo data, the data layer, training, rollout, serving and the Dagster UI."""


for command in (
    demo,
    simulate_command,
    ingest,
    train,
    promote,
    rollout,
    prepare,
    ui,
    serve,
    features,
    project,
    release,
    approve,
    reject,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
