"""`mlops project`: scaffold, list and validate model projects (one folder with a defs.yaml each).
Needs no Dagster: a declaration is checked against its typed schema alone."""

from __future__ import annotations

from pathlib import Path

import click

# Shipped inside the package (package-data), so an installed CLI scaffolds without a checkout.
TEMPLATES = Path(__file__).resolve().parents[1] / "mlops_core" / "projects" / "templates"
TEMPLATE = TEMPLATES / "defs.yaml"
SQL_TEMPLATE = TEMPLATES / "snapshots.sql"


def projects_dir() -> Path:
    # Imported when a project command runs: the catalog loads every declaration's schema (pandas and numpy
    # among its imports), 0.5 s that `mlops serve --help` and every other command paid at start-up.
    from mlops_core.projects import catalog

    return catalog.projects_dir()


root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=projects_dir,
    show_default="projects/, or MLOPS_PROJECTS_DIR",
    help="The folder holding one sub-folder per project.",
)


@click.group("project")
def project() -> None:
    """Model projects: each is a folder under projects/ with one declaration, defs.yaml."""


@project.command("new")
@click.argument("name")
@click.option("--owner", default="you@example.com", show_default=True, help="The owning team's e-mail.")
@root_option
def new(name: str, owner: str, root: Path) -> None:
    """Scaffold projects/NAME/defs.yaml and snapshots.sql from the template (like `dg scaffold defs`), then
    validate them."""
    import re

    from mlops_core.projects.declaration import PROJECT_NAME, ProjectDeclarationError, load_project

    if not re.match(PROJECT_NAME, name):
        raise click.UsageError(
            f"project name {name!r}: 2-40 characters, lowercase letters, digits and _, starting with a letter"
        )
    folder = root / name
    if folder.exists():
        raise click.UsageError(f"{folder} exists already: a project is never overwritten")
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(TEMPLATE.read_text().format(name=name, owner=owner))
    (folder / "snapshots.sql").write_text(SQL_TEMPLATE.read_text().replace("{name}", name))
    try:
        load_project(folder)
    except ProjectDeclarationError as error:  # the template itself is wrong: say so, keep the file to look at
        raise click.ClickException(f"the scaffolded declaration does not validate:\n{error}") from None
    click.echo(
        f"created {folder / 'defs.yaml'} and {folder / 'snapshots.sql'}; edit them, then run: "
        f"mlops project validate {name}"
    )


@project.command("list")
@root_option
def list_projects(root: Path) -> None:
    """Every project with its model family, serving mode and owner."""
    from mlops_core.projects.declaration import ProjectDeclarationError, load_projects

    try:
        projects = load_projects(root)
    except ProjectDeclarationError as error:
        raise click.ClickException(str(error)) from None
    if not projects:
        click.echo(f"no projects under {root}; create one with: mlops project new NAME")
        return
    click.echo(f"{'project':20s} {'registered model':24s} {'family':24s} {'serving':8s} owner")
    for p in projects:
        click.echo(f"{p.name:20s} {p.registered_model:24s} {p.model.family:24s} {p.serving.mode:8s} {p.owner}")


@project.command("validate")
@click.argument("names", nargs=-1)
@root_option
def validate(names: tuple[str, ...], root: Path) -> None:
    """Check the declarations of NAMES (default: every project); exit 1 naming each bad field."""
    from mlops_core.projects.declaration import ProjectDeclarationError, load_project, load_projects, project_folders

    try:
        if names:
            projects = [load_project(root / name) for name in names]
        else:
            if not project_folders(root):
                raise click.ClickException(f"no projects under {root}")
            projects = load_projects(root)
    except ProjectDeclarationError as error:
        raise click.ClickException(str(error)) from None
    from mlops_core.projects.catalog import unbuildable

    problems = unbuildable(projects, root)
    if problems:
        raise click.ClickException("projects the platform cannot build:\n" + "\n".join(f"  - {p}" for p in problems))
    for p in projects:
        click.echo(f"ok  {p.name}: {len(p.feature_names())} features, {p.model.family}, serving {p.serving.mode}")


def _project_job(name: str, root: Path, job: str, what: str) -> None:
    """Run one of project NAME's jobs on the local instance; run logs go to $MLOPS_HOME/<name>.log, and a failure
    stops the command naming each failed check with what it measured."""
    from mlops_cli.common import _output_to, run_stage
    from mlops_core.local_state import prepare_instance
    from mlops_core.preconditions import require_tables
    from mlops_core.projects.declaration import ProjectDeclarationError, load_project
    from mlops_core.settings import Settings

    try:
        project = load_project(root / name)
    except ProjectDeclarationError as error:
        raise click.ClickException(str(error)) from None
    if project.entity.grain != "snapshot":
        raise click.UsageError(f"{name} is an event-grain project: use `mlops train` (fraud's pipeline)")
    settings = Settings.from_env()
    prepare_instance(settings)
    require_tables(settings, tuple(project.marts))  # the shared marts this project reads
    log_path = settings.home / f"{name}.log"
    click.echo(f"{name}: {what}; run logs go to {log_path}")
    with _output_to(log_path):
        run_stage(
            f"{name}: {what}",
            f"{name}_{job}",
            f"read the failed checks above; `mlops project validate {name}` checks the declaration, and the "
            f"Dagster UI (`mlops ui`) shows the {name} asset group",
        )


def latest_materialization(name: str, step: str) -> dict:
    """The metadata of the latest materialization of <name>/<step> on the local instance."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey([name, step]))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@project.command("train")
@click.argument("name")
@root_option
def train(name: str, root: Path) -> None:
    """Run NAME's training job: snapshots, candidate, the declared gates, registration with the batch shadow
    check, promotion. Stops naming every failed gate with what it measured."""
    _project_job(name, root, "training_job", "training (the declared gates)")
    evaluation, champion = (
        latest_materialization(name, "candidate_evaluation"),
        latest_materialization(name, "champion_model"),
    )
    click.echo(
        f"{name}: {evaluation.get('verdict')}; test AUC-PR {evaluation.get('test_auc_pr', float('nan')):.4f} against "
        f"{evaluation.get('baseline_test_auc_pr', float('nan')):.4f} for the best single-feature rule"
    )
    click.echo(f"{name}: champion is version {champion.get('champion_version')} of {champion.get('model')}")
    click.echo(f"evaluation report: {evaluation.get('report_file')}")


@project.command("score")
@click.argument("name")
@root_option
def score(name: str, root: Path) -> None:
    """Run NAME's scoring job: the latest snapshot scored by the champion, its features published for
    `mlops serve`, its feature drift."""
    _project_job(name, root, "scoring_job", "batch scoring")
    scores = latest_materialization(name, "batch_scores")
    click.echo(
        f"{name}: {scores.get('dagster/row_count')} entities of the {scores.get('snapshot_date')} snapshot scored by "
        f"version {scores.get('model_version')} into {scores.get('table')}; {scores.get('flagged')} flagged"
    )
    click.echo(f"online: POST /v1/models/{name}/predict on `mlops serve`")
