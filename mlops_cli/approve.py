"""`mlops approve` / `mlops reject`: the human decision on a challenger waiting for approval
(rollout.approval in the project's declaration). Both run approval_job, as the Dagster UI would."""

from __future__ import annotations

import getpass

import click

from mlops_core.settings import Settings


def _decide(decision: str, project: str, version: str, reason: str, actor: str | None) -> None:
    from mlops_assets.constants import APPROVAL_JOB
    from mlops_cli.common import run_stage
    from mlops_core.local_state import prepare_instance

    if project != "fraud":
        raise click.ClickException(
            f"approvals are wired for the fraud project's rollout; {project!r} promotes through its own graph"
        )
    prepare_instance(Settings.from_env())
    who = actor or getpass.getuser()
    run_stage(
        f"{decision.capitalize()} version {version}",
        APPROVAL_JOB,
        "`mlops approve` needs a pending approval of that exact version (see the champion_model run's log).",
        run_config={
            "ops": {
                "champion_model": {
                    "config": {"decision": decision, "decision_version": version, "actor": who, "reason": reason}
                }
            }
        },
    )


@click.command("approve")
@click.argument("project")
@click.argument("version")
@click.option("--reason", required=True, help="Why it may go to production (kept with the decision and the promotion).")
@click.option("--actor", default=None, help="Who decides (default: the login name).")
def approve(project, version, reason, actor) -> None:
    """Approve the pending VERSION of PROJECT: it is promoted and served."""
    _decide("approve", project, version, reason, actor)


@click.command("reject")
@click.argument("project")
@click.argument("version")
@click.option("--reason", required=True, help="Why it must not go to production.")
@click.option("--actor", default=None, help="Who decides (default: the login name).")
def reject(project, version, reason, actor) -> None:
    """Reject the pending VERSION of PROJECT: the challenger alias is removed; production is unchanged."""
    _decide("reject", project, version, reason, actor)
