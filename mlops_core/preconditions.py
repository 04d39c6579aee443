"""What a command needs before it starts, checked up front so a missing upstream is named with what to
run first, instead of surfacing as a DuckDB catalog error or a missing file deep inside a run."""

from __future__ import annotations

import click

from mlops_core.settings import Settings


class MissingUpstream(click.ClickException):
    """An upstream a command needs does not exist yet; the message names it and what to run first."""


# Tables the later stages read, and the run that creates each.
PRODUCERS = {
    "marts.transactions_enriched": "the data layer: `mlops demo run`, or `mlops ingest --start DAY --end DAY` for landed days",
    "marts.labels": "the data layer: `mlops demo run`, or `mlops ingest --start DAY --end DAY` for landed days",
    "features.training_set": "training: `mlops train` (training_job builds the training set first)",
}


def missing_tables(settings: Settings, tables: tuple[str, ...]) -> list[str]:
    """The `schema.table` names among `tables` that the warehouse does not hold (all of them without a warehouse)."""
    import duckdb

    if not settings.duckdb_path.exists():
        return list(tables)
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        present = {
            f"{s}.{t}"
            for s, t in con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
        }
    return [table for table in tables if table not in present]


def require_tables(settings: Settings, tables: tuple[str, ...]) -> None:
    missing = missing_tables(settings, tables)
    if missing:
        runs = dict.fromkeys(PRODUCERS.get(table, "the job that builds it") for table in missing)
        raise MissingUpstream(
            f"{', '.join(missing)} {'does' if len(missing) == 1 else 'do'} not exist in {settings.duckdb_path} yet. "
            f"Run first: {'; '.join(runs)}."
        )


def require_data_layer(settings: Settings) -> None:
    require_tables(settings, ("marts.transactions_enriched", "marts.labels"))


def require_challenger(settings: Settings) -> None:
    """A rollout rolls out the registry's challenger: it must exist."""
    import mlflow

    from mlops_core import registry

    client = mlflow.MlflowClient(registry.tracking_uri(settings.mlflow_dir))
    if registry.alias_version(client, registry.CHALLENGER) is None:
        raise MissingUpstream(
            f"the registry ({settings.mlflow_dir}) has no challenger to roll out. "
            f"Run first: `mlops train`, which registers a candidate that passes its gates as challenger."
        )


def require_endpoint(settings: Settings) -> None:
    """The rollout drives the recorded production endpoint: it must answer."""
    import httpx

    try:
        httpx.get(f"{settings.serving_url}/health", timeout=3.0).raise_for_status()
    except httpx.HTTPError:
        raise MissingUpstream(
            f"no endpoint answers at {settings.serving_url} (MLOPS_SERVING_URL, recorded by the last demo). "
            f"Start it first: `mlops serve --detach --port {settings.serving_port}`."
        ) from None
