"""The demo-data generator: simulates the world day by day and writes the landing zone.

Every random stream is keyed by (seed, purpose, day), so a day's clean data does not
depend on the scenario: before the drift day every scenario equals the baseline byte
for byte (a spec's single bad days aside), and the same spec always gives the same files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from mlops_core.contracts import SOURCES
from mlops_core.datagen.churn import ChurnPlan, plan_churn
from mlops_core.datagen.corruption import DayContext, Landed
from mlops_core.datagen.labels import CUSTOMER_REPORT_MAX_DAYS, MATURITY_DAYS, LabelQueue, label_times
from mlops_core.datagen.scenarios import SCENARIOS, get_scenario
from mlops_core.datagen.tables import ContractTables, transaction_id_maker
from mlops_core.datagen.transactions import daily_volume, generate_day, weekday_of
from mlops_core.datagen.world import SECONDS_PER_DAY, World, build_world
from mlops_core.datagen.writer import write_partition

MIN_ROWS_PER_DAY = 10
# Purposes of the random streams; a day's stream is SeedSequence([seed, purpose, day]).
_TRANSACTIONS_STREAM, _LABELS_STREAM, _FAULTS_STREAM, _CHURN_STREAM = 1, 2, 3, 4


def check_bad_days(bad_days: tuple[tuple[int, str], ...], days: int) -> None:
    """Raise ValueError naming the problem unless each (0-based day, scenario) is a landing fault on its own
    day inside the window."""
    indexes = [index for index, _ in bad_days]
    if len(set(indexes)) != len(indexes):
        raise ValueError(f"bad_days names a day twice: {sorted(indexes)}")
    for index, name in bad_days:
        if not 0 <= index < days:
            raise ValueError(f"bad_days: day {index} is not in 0..{days - 1} (0-based day index)")
        fault = get_scenario(name)
        if fault.transactions_fault is None and fault.labels_fault is None:
            raise ValueError(
                f"bad_days: {name!r} is not a landing fault (it changes the world, not the files); "
                f"faults: {', '.join(n for n in SCENARIOS if n.startswith('bad_'))}"
            )


@dataclass(frozen=True)
class DemoSpec:
    """What to generate. Invalid values raise ValueError on construction."""

    start: dt.date
    days: int
    rows_per_day: int
    seed: int = 7
    scenario: str = "baseline"
    # 0-based index of the first affected day; None => days // 2.
    drift_day: int | None = None
    file_format: Literal["parquet", "csv"] = "parquet"
    # The dispute window: a legitimate transaction's label lands this many days after it.
    # Shorter than the 45-day default in simulations, so that a retrained model can see the new fraud.
    label_maturity_days: int = MATURITY_DAYS
    # Share of the accounts whose spending fades and stops during the window (customer churn; see
    # datagen/churn.py). 0 leaves every day exactly as without churn.
    churn_share: float = 0.0
    # Single bad landing days on top of the scenario: (0-based day index, a landing-fault scenario such as
    # "bad_missing_column"). Only that day's files carry the fault; the world, and every other day, is the
    # scenario's. A pipeline meets a broken file in the middle of drift, not instead of it.
    bad_days: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.start, dt.date) or isinstance(self.start, dt.datetime):
            raise ValueError(f"start must be a datetime.date, got {self.start!r}")
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if self.rows_per_day < MIN_ROWS_PER_DAY:
            raise ValueError(f"rows_per_day must be >= {MIN_ROWS_PER_DAY}, got {self.rows_per_day}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        get_scenario(self.scenario)
        if self.drift_day is not None and not 0 <= self.drift_day < self.days:
            raise ValueError(f"drift_day must be in 0..{self.days - 1} (0-based day index), got {self.drift_day}")
        if not CUSTOMER_REPORT_MAX_DAYS < self.label_maturity_days <= 365:
            raise ValueError(
                f"label_maturity_days must be in {CUSTOMER_REPORT_MAX_DAYS + 1}..365, got {self.label_maturity_days}"
            )
        if not 0.0 <= self.churn_share < 1.0:
            raise ValueError(f"churn_share must be in [0, 1), got {self.churn_share}")
        if self.file_format not in ("parquet", "csv"):
            raise ValueError(f"file_format must be 'parquet' or 'csv', got {self.file_format!r}")
        check_bad_days(self.bad_days, self.days)

    @property
    def first_affected_day(self) -> int:
        return self.days // 2 if self.drift_day is None else self.drift_day

    @property
    def dates(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.days)]

    @property
    def affected_dates(self) -> tuple[dt.date, ...]:
        """Days the scenario changes (none for the baseline, else drift day to the end) and the bad days."""
        faulty = {index for index, _ in self.bad_days}
        drifting = get_scenario(self.scenario).changes_anything
        return tuple(
            day
            for index, day in enumerate(self.dates)
            if index in faulty or (drifting and index >= self.first_affected_day)
        )


@dataclass(frozen=True)
class SimulatedDay:
    """One day of the simulation: what lands per source, plus the ground truth."""

    index: int
    date: dt.date
    affected: bool
    accounts: Landed
    transactions: Landed
    labels: Landed
    # The day's transactions before any fault, and whether each one is fraud.
    clean_transactions: pa.Table
    is_fraud: np.ndarray


@dataclass(frozen=True)
class GenerationSummary:
    scenario: str
    seed: int
    first_date: dt.date
    last_date: dt.date
    files: tuple[Path, ...]
    # Rows in readable files per source (a zero-byte or corrupt file counts 0).
    rows: dict[str, int]
    # Ground truth over all simulated transactions, faults aside.
    n_transactions: int
    n_fraud: int
    fraud_rate: float
    affected_dates: tuple[dt.date, ...]


def _rng(spec: DemoSpec, stream: int, day_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([spec.seed, stream, day_index]))


def churn_plan(spec: DemoSpec, world: World | None = None) -> ChurnPlan | None:
    """Which accounts fade and stop, and when (None when the spec has no churn); its own random stream."""
    if spec.churn_share == 0:
        return None
    world = world or build_world(spec.seed, spec.start, spec.days, spec.rows_per_day)
    return plan_churn(world, spec.days, spec.churn_share, _rng(spec, _CHURN_STREAM, 0))


def simulate(spec: DemoSpec) -> Iterator[SimulatedDay]:
    """The days of the spec in order, each with what lands and the ground truth."""
    scenario = get_scenario(spec.scenario)
    world = build_world(spec.seed, spec.start, spec.days, spec.rows_per_day)
    tables = ContractTables(world)
    queue = LabelQueue(world.start_s, spec.days)
    baseline = get_scenario("baseline")
    opened_before_start = 0
    churn = churn_plan(spec, world)
    bad_days = {index: get_scenario(name) for index, name in spec.bad_days}
    for index, day in enumerate(spec.dates):
        day_s = world.start_s + index * SECONDS_PER_DAY
        drifting = scenario.changes_anything and index >= spec.first_affected_day
        active = scenario if drifting else baseline
        bad = bad_days.get(index)
        affected = drifting or bad is not None
        transactions_fault = bad.transactions_fault if bad and bad.transactions_fault else active.transactions_fault
        labels_fault = bad.labels_fault if bad and bad.labels_fault else active.labels_fault
        ctx = DayContext(day, day_s, spec.file_format, tables.account_digits, transaction_id_maker(day))

        # Accounts: the first partition is the whole book so far, later ones the day's openings.
        opened_by_end = world.accounts.n_open_before(day_s + SECONDS_PER_DAY)
        accounts = Landed(tables.accounts(opened_before_start, opened_by_end))
        opened_before_start = opened_by_end

        rng = _rng(spec, _TRANSACTIONS_STREAM, index)
        n_rows = daily_volume(rng, spec.rows_per_day, weekday_of(day_s))
        n_open = world.accounts.n_open_before(day_s)
        factor = None if churn is None else churn.activity_factor(n_open, index)
        txs = generate_day(world, index, n_rows, active.spending, active.fraud, rng, factor)
        clean = tables.transactions(day, txs)
        faults = _rng(spec, _FAULTS_STREAM, index)
        labeled_s, source = label_times(
            _rng(spec, _LABELS_STREAM, index), txs.event_s, txs.is_fraud, spec.label_maturity_days
        )
        if transactions_fault is None:
            landed = Landed(clean)
            queue.add(clean["transaction_id"].combine_chunks(), txs.is_fraud, labeled_s, source)
        else:
            # Ingestion rejects or holds a bad day's batch, so labels pointing into it would
            # be orphans: its transactions never get labels and the labels source stays clean.
            landed = transactions_fault(clean, faults, ctx)
        due = queue.pop(index)
        labels = labels_fault(due, faults, ctx) if labels_fault else Landed(due)

        yield SimulatedDay(index, day, affected, accounts, landed, labels, clean, txs.is_fraud)


def generate_landing(spec: DemoSpec, landing_dir: Path) -> GenerationSummary:
    """Write every source's partition for every day of the spec under landing_dir."""
    landing_dir = Path(landing_dir)
    files: list[Path] = []
    rows = dict.fromkeys(SOURCES, 0)
    n_transactions = n_fraud = 0
    for day in simulate(spec):
        landed_by_source = {"accounts": day.accounts, "transactions": day.transactions, "labels": day.labels}
        for source in SOURCES:
            landed = landed_by_source[source]
            path = write_partition(landing_dir, source, day.date, landed.table, spec.file_format, landed.file_fault)
            if path is not None:
                files.append(path)
            if landed.table is not None and landed.file_fault is None:
                rows[source] += landed.table.num_rows
        n_transactions += len(day.is_fraud)
        n_fraud += int(day.is_fraud.sum())
    return GenerationSummary(
        scenario=spec.scenario,
        seed=spec.seed,
        first_date=spec.dates[0],
        last_date=spec.dates[-1],
        files=tuple(files),
        rows=rows,
        n_transactions=n_transactions,
        n_fraud=n_fraud,
        fraud_rate=n_fraud / n_transactions,
        affected_dates=spec.affected_dates,
    )


__all__ = ["SCENARIOS", "DemoSpec", "GenerationSummary", "SimulatedDay", "generate_landing", "simulate"]
