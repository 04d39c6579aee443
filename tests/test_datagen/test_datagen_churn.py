"""Customer churn in the demo data: fading accounts that stop, on their own random stream, leaving fraud's data
as it was when churn is off and the world (accounts, merchants, fraud volume) as it was when churn is on."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import numpy as np
import pytest

from mlops_core.datagen.churn import FIRST_CHURN_DAY, plan_churn
from mlops_core.datagen.generator import DemoSpec, churn_plan, simulate
from mlops_core.datagen.scenarios import get_scenario
from mlops_core.datagen.transactions import generate_day
from mlops_core.datagen.world import build_world

START = dt.date(2024, 3, 1)
# The digest of 6 days of seed 7 as generated before churn existed (commit ea52163): the fraud demo's data
# must not move by a byte while churn is off.
FRAUD_DATA_BEFORE_CHURN = "70298c5a0d1a8045661d9d9ffab8822ec9e3fd96fd822c2bf3a1c25c58ae700f"


def _digest(spec: DemoSpec) -> str:
    h = hashlib.sha256()
    for day in simulate(spec):
        table = day.clean_transactions
        for name in table.column_names:
            h.update(name.encode())
            h.update(str(table[name].to_pylist()).encode())
        h.update(day.is_fraud.tobytes())
    return h.hexdigest()


def test_churn_off_leaves_the_fraud_data_exactly_as_before():
    spec = DemoSpec(START, days=6, rows_per_day=200, seed=7)
    assert spec.churn_share == 0.0
    assert _digest(spec) == FRAUD_DATA_BEFORE_CHURN
    assert churn_plan(spec) is None


def test_churn_on_keeps_the_world_and_the_daily_fraud_volume():
    off = list(simulate(DemoSpec(START, days=70, rows_per_day=200, seed=7)))
    on = list(simulate(DemoSpec(START, days=70, rows_per_day=200, seed=7, churn_share=0.5)))
    for a, b in zip(off, on, strict=True):
        assert a.accounts.table.equals(b.accounts.table)
        assert len(a.is_fraud) == len(b.is_fraud)
        assert int(a.is_fraud.sum()) == int(b.is_fraud.sum())
    # ... and it does change who buys: after the first churners stop, days differ.
    assert any(not a.clean_transactions.equals(b.clean_transactions) for a, b in zip(off[-10:], on[-10:]))


def test_the_plan_fades_linearly_then_stops_and_never_before_the_first_churn_day():
    world = build_world(7, START, 200, 300)
    plan = plan_churn(world, 200, 0.4, np.random.default_rng(0))
    churners = np.flatnonzero(np.isfinite(plan.stop))
    assert 0.3 < len(churners) / len(world.accounts) < 0.45
    assert plan.stop[churners].min() >= FIRST_CHURN_DAY
    n = len(world.accounts)
    one = churners[0]
    start, stop = plan.fade_start[one], plan.stop[one]
    assert 14 <= stop - start <= 42
    assert plan.activity_factor(n, int(np.floor(start)))[one] == 1.0
    middle = (start + stop) / 2
    assert plan.activity_factor(n, middle)[one] == pytest.approx(0.5, abs=1e-12)
    assert plan.activity_factor(n, int(stop))[one] == 0.0
    assert plan.activity_factor(n, int(stop) + 30)[one] == 0.0
    stayers = np.flatnonzero(~np.isfinite(plan.stop))
    assert np.all(plan.activity_factor(n, 199)[stayers] == 1.0)
    with pytest.raises(ValueError, match="churn share must be in"):
        plan_churn(world, 200, 1.0, np.random.default_rng(0))


def test_a_stopped_account_makes_no_purchase_of_its_own():
    world = build_world(7, START, 10, 300)
    n_open = world.accounts.n_open_before(world.start_s)
    factor = np.ones(n_open)
    stopped = np.arange(0, n_open, 2)  # half the accounts have stopped
    factor[stopped] = 0.0
    baseline = get_scenario("baseline")
    fraud_free = dataclasses.replace(baseline.fraud, rate=0.0)
    day = generate_day(world, 0, 3000, baseline.spending, fraud_free, np.random.default_rng(1), factor)
    assert len(day.account) == 3000
    assert not np.isin(day.account, stopped).any()


def test_churn_share_is_validated():
    with pytest.raises(ValueError, match=r"churn_share must be in \[0, 1\)"):
        DemoSpec(START, days=5, rows_per_day=200, churn_share=-0.1)
