"""Write small (or large) random inputs for feast_peer.py: F.parquet, E.parquet, IDS.json.

Needs only numpy + pyarrow (runs in the Feast venv or the project venv):

    python benchmarks/peers/make_tiny_inputs.py --out-dir /tmp/feast_tiny
    python benchmarks/peers/make_tiny_inputs.py --out-dir /tmp/feast_1m \\
        --accounts 20000 --rows-per-account 50 --features 20 --entity-rows 1000000

F: account_id, event_timestamp (timestamp[us, UTC]), then feature columns, alternating
int64 (txn_count_<i>) and float64 (amount_<i>). Timestamps are distinct within an
account except that about 1% of feature rows are exact duplicates of another row (same
account, timestamp and values).
E: transaction_id, account_id, event_timestamp (timestamp[us, UTC]). About 10% of entity
rows copy a feature row's timestamp exactly (to check inclusive matching), about 5% fall
before the account's first feature row (no feature inside the TTL -> null features).
IDS.json: every account id, shuffled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

US = 1_000_000
BASE_US = 1_767_225_600 * US  # 2026-01-01T00:00:00Z
SPAN_US = 90 * 86_400 * US  # 90 days


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--accounts", type=int, default=40)
    p.add_argument("--rows-per-account", type=int, default=100)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--entity-rows", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)

    rng = np.random.default_rng(a.seed)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ts_type = pa.timestamp("us", tz="UTC")

    accounts = np.array([f"acc_{i:07d}" for i in range(a.accounts)], dtype=object)

    # Feature rows (whole seconds so exact-equality matches are easy to build).
    n = a.accounts * a.rows_per_account
    f_acc = np.repeat(np.arange(a.accounts), a.rows_per_account)
    # Distinct whole-second timestamps within each account (positive gaps), ~SPAN long.
    max_gap_s = max(2, 2 * (SPAN_US // US) // a.rows_per_account)
    gaps = rng.integers(1, max_gap_s, (a.accounts, a.rows_per_account))
    f_ts = (BASE_US + np.cumsum(gaps, axis=1) * US).reshape(-1)
    cols: dict[str, np.ndarray] = {}
    for j in range(a.features):
        if j % 2 == 0:
            cols[f"txn_count_{j}"] = rng.integers(0, 1000, n).astype(np.int64)
        else:
            cols[f"amount_{j}"] = rng.normal(100.0, 50.0, n).astype(np.float64)
    # ~1% exact duplicates: copy row k onto row k+1 within the same account.
    dup = np.flatnonzero(rng.random(n) < 0.01)
    dup = dup[(dup + 1 < n)]
    dup = dup[f_acc[dup] == f_acc[np.minimum(dup + 1, n - 1)]]
    f_ts[dup + 1] = f_ts[dup]
    for c in cols.values():
        c[dup + 1] = c[dup]
    order = rng.permutation(n)
    f_table = pa.table(
        {
            "account_id": pa.array(accounts[f_acc[order]], pa.string()),
            "event_timestamp": pa.array(f_ts[order], pa.int64()).cast(ts_type),
            **{k: v[order] for k, v in cols.items()},
        }
    )
    pq.write_table(f_table, out / "F.parquet")

    # Entity rows.
    m = a.entity_rows
    e_acc = rng.integers(0, a.accounts, m)
    e_ts = BASE_US + rng.integers(0, SPAN_US // US, m) * US + rng.integers(0, US, m)
    kind = rng.random(m)
    exact = kind < 0.10
    pick = rng.integers(0, n, m)
    e_acc[exact] = f_acc[pick[exact]]
    e_ts[exact] = f_ts[pick[exact]]
    early = (kind >= 0.10) & (kind < 0.15)
    first_ts = np.full(a.accounts, np.iinfo(np.int64).max)
    np.minimum.at(first_ts, f_acc, f_ts)
    e_ts[early] = first_ts[e_acc[early]] - US * rng.integers(1, 86_400, early.sum())
    e_table = pa.table(
        {
            "transaction_id": pa.array([f"txn_{i:09d}" for i in range(m)], pa.string()),
            "account_id": pa.array(accounts[e_acc], pa.string()),
            "event_timestamp": pa.array(e_ts, pa.int64()).cast(ts_type),
        }
    )
    pq.write_table(e_table, out / "E.parquet")

    ids = list(accounts[rng.permutation(a.accounts)])
    (out / "IDS.json").write_text(json.dumps(ids))
    print(f"wrote {out}: F {n} rows x {a.features} features, E {m} rows, {a.accounts} ids")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
