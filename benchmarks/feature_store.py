"""Feature-store benchmark: ours vs Feast 0.67, side by side in one run.

Usage:
  bash benchmarks/peers/setup_feast_venv.sh          # once: Feast in .bench-venvs/feast, never in .venv
  .venv/bin/python benchmarks/feature_store.py [--rows 10000000] [--accounts 100000] [--legs training,online]

training: the point-in-time training set for `--rows` transactions with the spec's 20
  windowed features. Ours: build_training_set (window SQL, ASOF account join, labels
  as known at the cutoff, splits) on a DuckDB file. Feast: get_historical_features on
  its duckdb offline store, given our per-transaction feature values as a parquet
  feature view (Feast cannot compute sliding windows itself), for the same entity rows;
  its time is the point-in-time join alone. The values of both are compared.
online: single-entity lookups paced at --rate requests/s. Ours: OnlineFeatureService
  over the sqlite store (windowed features computed from the account's raw events at
  request time). Feast: get_online_features on its sqlite online store (precomputed
  values of the same windowed features, materialized) for the same accounts.

Every leg writes JSON under benchmarks/.work/feature_store/; the summary is printed as
markdown for benchmarks/RESULTS.md. Each side runs in its own process, one after the other.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from results import common, record, row, show

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "feature_store"
FEAST_PYTHON = Path(os.environ.get("FEAST_VENV", REPO / ".bench-venvs" / "feast")) / "bin" / "python"
sys.path.insert(0, str(REPO))

from mlops_core.features import offline, spec  # noqa: E402
from mlops_core.features.audits import materialize_online_store  # noqa: E402
from mlops_core.features.online import OnlineFeatureService  # noqa: E402
from mlops_core.features.stores import SqliteOnlineStore  # noqa: E402

WINDOWED = [f.name for f in spec.WINDOWED_FEATURES]


def synthesize(db: Path, rows: int, accounts: int, days: int = 365, seed: int = 3) -> None:
    """A year of card transactions shaped like the demo data, written straight into the marts."""
    con = duckdb.connect(str(db))
    con.execute("set TimeZone='UTC'")
    con.execute("create schema if not exists marts")
    con.execute(f"select setseed({seed / 100})")
    con.execute(
        f"""
create or replace table marts.transactions_enriched as
select
    't' || lpad(cast(i as varchar), 9, '0') as transaction_id,
    'a' || lpad(cast(hash(i, 1) % {accounts} as varchar), 7, '0') as account_id,
    'm' || lpad(cast(hash(i, 2) % 5000 as varchar), 5, '0') as merchant_id,
    ['grocery','restaurants','retail','travel','electronics','digital_goods'][1 + cast(hash(i, 3) % 6 as bigint)] as merchant_category,
    ['in_store','online'][1 + cast(hash(i, 4) % 2 as bigint)] as channel,
    ['US','CA','GB','DE','FR','MX'][1 + least(cast(hash(i, 5) % 40 as bigint), 5)] as country,
    round(exp(random() * 6), 2) as amount_usd,
    -- Whole seconds: many accounts have transactions at identical times.
    timestamp '2025-01-01' + to_seconds(cast(hash(i, 6) % {days * 86400} as bigint)) as event_timestamp,
    cast(timestamp '2025-01-01' + to_seconds(cast(hash(i, 6) % {days * 86400} as bigint)) as date) as landed_date
from range({rows}) as r(i)
"""
    )
    con.execute(
        f"""
create or replace table marts.account_history as
select
    'a' || lpad(cast(a as varchar), 7, '0') as account_id,
    timestamp '2024-06-01' + to_days(cast(a % 200 as integer)) as created_at,
    ['US','CA','GB','DE','FR','MX'][1 + a % 6] as home_country,
    ['18-24','25-34','35-44','45-54','55-64','65+'][1 + a % 6] as age_band,
    date '2024-12-31' as landed_date,
    timestamp '2025-01-01' as valid_from
from range({accounts}) as r(a)
"""
    )
    con.execute(
        f"""
create or replace table marts.label_events as
select transaction_id, random() < 0.01 as is_fraud,
       event_timestamp + interval 45 day as labeled_at, 'maturity' as label_source,
       cast(event_timestamp + interval 45 day as date) as landed_date, event_timestamp
from marts.transactions_enriched
where event_timestamp + interval 45 day < timestamp '2025-01-01' + interval {days} day
"""
    )
    con.close()


def _cutoff(days: int = 365):
    import datetime as dt

    return dt.datetime(2025, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)


def leg_training_ours(db: Path, out: Path, repeats: int) -> dict:
    con = duckdb.connect(str(db))
    con.execute("set TimeZone='UTC'")
    training_spec = offline.TrainingSetSpec(cutoff=_cutoff())
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        summary = offline.build_training_set(con, training_spec, target="features.training_set_bench")
        seconds.append(time.perf_counter() - started)
    # Inputs for Feast: our per-transaction feature values as the feature view, and the entity rows.
    con.execute(
        f"copy (select account_id, event_timestamp::timestamptz as event_timestamp, {', '.join(WINDOWED)} "
        f"from ({offline.point_in_time_features_sql()})) to '{out / 'features.parquet'}' (format parquet)"
    )
    con.execute(
        f"copy (select transaction_id, account_id, event_timestamp::timestamptz as event_timestamp "
        f"from features.training_set_bench) to '{out / 'entities.parquet'}' (format parquet)"
    )
    con.execute(
        f"copy (select transaction_id, {', '.join(WINDOWED)} from features.training_set_bench) "
        f"to '{out / 'ours.parquet'}' (format parquet)"
    )
    con.close()
    return {
        "side": "ours",
        "rows_in": summary.entity_rows,
        "rows_out": summary.rows,
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "features": len(spec.FEATURES),
        "windowed_features": len(WINDOWED),
    }


def compare_training(out: Path) -> dict:
    con = duckdb.connect()
    ours = f"read_parquet('{out / 'ours.parquet'}')"
    feast = f"read_parquet('{out / 'feast.parquet'}')"
    rows_ours, rows_feast = (con.execute(f"select count(*) from {t}").fetchone()[0] for t in (ours, feast))
    differing = {}
    for name in WINDOWED:
        differing[name] = con.execute(
            f"""select count(*) from {ours} o full join {feast} f using (transaction_id)
                where f.{name} is null or o.{name} is null
                   or abs(o.{name} - f.{name}) > 1e-9 * greatest(1, abs(o.{name}))"""
        ).fetchone()[0]
    return {
        "rows_ours": rows_ours,
        "rows_feast": rows_feast,
        "values_differing": sum(differing.values()),
        "by_feature": differing,
    }


def leg_online_ours(db: Path, out: Path, rate: float, requests: int, warmup: int) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    store_path = out / "ours_online.sqlite"
    store_path.unlink(missing_ok=True)
    store = SqliteOnlineStore(store_path)
    started = time.perf_counter()
    materialize_online_store(con, store)
    materialize_seconds = time.perf_counter() - started
    ids = json.loads((out / "entity_ids.json").read_text())
    newest = con.execute("select max(event_timestamp) from marts.transactions_enriched").fetchone()[0]
    con.close()
    service = OnlineFeatureService(store)
    import datetime as dt

    # Lookups at the instant just after the newest event: the full 30-day history counts.
    at = newest.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=1)
    request = {
        "transaction_id": "bench",
        "event_timestamp": at,
        "amount_usd": 42.0,
        "merchant_id": "m00001",
        "merchant_category": "grocery",
        "channel": "online",
        "country": "US",
    }
    latencies = []
    late = 0
    samples = {}
    total = requests
    for i in range(warmup):
        service.get_online_features([{**request, "account_id": ids[i % len(ids)]}])
    # Set-up garbage is not the lookups' cost; the Feast peer does the same.
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for i in range(total):
        due = t0 + i / rate
        if time.perf_counter() > due:
            late += 1
        pace_until(due)
        account = ids[i % len(ids)]
        begin = time.perf_counter_ns()
        values = service.get_online_features([{**request, "account_id": account}])[0]
        elapsed = time.perf_counter_ns() - begin
        latencies.append(elapsed / 1e6)
        if len(samples) < 20:
            samples[account] = {k: values[k] for k in WINDOWED}
        if time.perf_counter() - t0 > 120:
            break
    store.close()
    latencies.sort()
    return {
        "side": "ours",
        "requests": len(latencies),
        "rate": rate,
        "p50_ms": statistics.median(latencies),
        "p90_ms": latencies[int(0.9 * len(latencies)) - 1],
        "p99_ms": latencies[int(0.99 * len(latencies)) - 1],
        "max_ms": latencies[-1],
        "late_requests": late,
        "materialize_seconds": materialize_seconds,
        "sample_values": samples,
    }


def pace_until(due: float) -> None:
    """Sleep until just before `due`, then spin: a sleeping process wakes with cold caches
    and the scheduler's timer slack, which would be measured as lookup latency. The Feast
    peer paces the same way."""
    remaining = due - time.perf_counter()
    if remaining > SPIN_SECONDS:
        time.sleep(remaining - SPIN_SECONDS)
    while time.perf_counter() < due:
        pass


SPIN_SECONDS = 0.0002


def run_feast(args: list[str], log: Path) -> None:
    if not FEAST_PYTHON.exists():
        sys.exit(f"Feast venv missing at {FEAST_PYTHON}: run bash benchmarks/peers/setup_feast_venv.sh")
    env = {**os.environ, "FEAST_USAGE": "False", "PYTHONWARNINGS": "ignore"}
    with log.open("w") as handle:
        subprocess.run(
            [str(FEAST_PYTHON), str(HERE / "peers" / "feast_peer.py"), *args],
            check=True,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )


def run_self(leg: str, argv: list[str], out_json: Path) -> dict:
    """Run one of our legs in a fresh process so its peak RSS is its own."""
    subprocess.run([sys.executable, __file__, "--leg", leg, "--out-json", str(out_json), *argv], check=True)
    return json.loads(out_json.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feast-repeats", type=int, default=None, help="Default: --repeats.")
    parser.add_argument(
        "--feast-memory-limit",
        default=None,
        help="DuckDB memory limit of Feast's offline store, e.g. 12GB: uncapped it needs ~7 GB per 1M rows.",
    )
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--legs", default="training,online")
    parser.add_argument("--reuse-data", action="store_true", help="Keep the synthesized DuckDB file of an earlier run.")
    parser.add_argument("--leg", help=argparse.SUPPRESS)
    parser.add_argument("--out-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = WORK / f"rows{args.rows}"
    out.mkdir(parents=True, exist_ok=True)
    db = out / "warehouse.duckdb"

    if args.leg == "training":
        Path(args.out_json).write_text(json.dumps(leg_training_ours(db, out, args.repeats)))
        return
    if args.leg == "online":
        Path(args.out_json).write_text(json.dumps(leg_online_ours(db, out, args.rate, args.requests, args.warmup)))
        return

    if not (args.reuse_data and db.exists()):
        db.unlink(missing_ok=True)
        started = time.perf_counter()
        synthesize(db, args.rows, args.accounts)
        print(f"synthesized {args.rows} transactions in {time.perf_counter() - started:.1f} s", flush=True)
    common = ["--rows", str(args.rows), "--accounts", str(args.accounts), "--repeats", str(args.repeats)]
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "rows": args.rows, "accounts": args.accounts}
    legs = args.legs.split(",")
    if "training" in legs:
        ours = run_self("training", common, out / "training_ours.json")
        print(f"training ours: median {ours['median_seconds']:.1f} s {ours['seconds']}", flush=True)
        run_feast(
            [
                "historical",
                "--features",
                str(out / "features.parquet"),
                "--entities",
                str(out / "entities.parquet"),
                "--out",
                str(out / "feast.parquet"),
                "--timings",
                str(out / "training_feast.json"),
                "--repeats",
                str(args.feast_repeats or args.repeats),
                *(["--duckdb-memory-limit", args.feast_memory_limit] if args.feast_memory_limit else []),
            ],
            out / "training_feast.log",
        )
        feast = json.loads((out / "training_feast.json").read_text())
        print(f"training feast: median {feast['median_seconds']:.1f} s {feast['seconds']}", flush=True)
        results["training"] = {"ours": ours, "feast": feast, "equality": compare_training(out)}
    if "online" in legs:
        con = duckdb.connect(str(db), read_only=True)
        ids = [
            r[0]
            for r in con.execute(
                "select account_id from marts.transactions_enriched where event_timestamp >= "
                "(select max(event_timestamp) - interval 30 day from marts.transactions_enriched) "
                "group by account_id order by hash(account_id) limit 2000"
            ).fetchall()
        ]
        con.close()
        random.Random(1).shuffle(ids)
        (out / "entity_ids.json").write_text(json.dumps(ids))
        ours = run_self(
            "online",
            [*common, "--rate", str(args.rate), "--requests", str(args.requests), "--warmup", str(args.warmup)],
            out / "online_ours.json",
        )
        print(f"online ours: p50 {ours['p50_ms']:.3f} ms p99 {ours['p99_ms']:.3f} ms", flush=True)
        if not (out / "features.parquet").exists():
            sys.exit("online leg needs features.parquet from the training leg (run --legs training,online once)")
        # Feast materializes the latest feature row of each looked-up account; the other
        # accounts' rows would only slow its materialization, not its lookups.
        feature_file = out / "online_features.parquet"
        duckdb.execute(
            f"copy (select * from read_parquet('{out / 'features.parquet'}') where account_id in (select unnest($ids))) "
            f"to '{feature_file}' (format parquet)",
            {"ids": ids},
        )
        run_feast(
            [
                "online",
                "--features",
                str(feature_file),
                "--entity-ids",
                str(out / "entity_ids.json"),
                "--timings",
                str(out / "online_feast.json"),
                "--rate",
                str(args.rate),
                "--requests",
                str(args.requests),
                "--warmup",
                str(args.warmup),
            ],
            out / "online_feast.log",
        )
        feast = json.loads((out / "online_feast.json").read_text())
        print(f"online feast: p50 {feast['p50_ms']:.3f} ms p99 {feast['p99_ms']:.3f} ms", flush=True)
        results["online"] = {"ours": ours, "feast": feast}
    (out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str)[:4000])
    rows = result_rows(results, args)
    record(rows)
    show(rows)


def result_rows(results: dict, args: argparse.Namespace) -> list[dict]:
    """The rows for benchmarks/results.json, one per goal of each leg that ran."""
    shared = common()
    size = {"rows": args.rows, "accounts": args.accounts}
    rows = []
    if "training" in results:
        ours, feast, equality = (results["training"][k] for k in ("ours", "feast", "equality"))
        rows.append(
            row(
                f"feature_store_training_set_{args.rows}_rows_vs_feast",
                ours=ours["median_seconds"],
                peer=feast["median_seconds"],
                peer_name="Feast 0.67 get_historical_features (point-in-time join alone, our values precomputed)",
                ratio="peer/ours",
                meaning="times faster ours is",
                unit="s",
                goal="at least 5x faster than Feast, with equal values",
                met=feast["median_seconds"] >= 5 * ours["median_seconds"] and equality["values_differing"] == 0,
                details={
                    **size,
                    "ours_runs_s": ours["seconds"],
                    "feast_runs_s": feast["seconds"],
                    "feast_memory_limit": args.feast_memory_limit,
                    **equality,
                },
                shared=shared,
            )
        )
    if "online" in results:
        ours, feast = results["online"]["ours"], results["online"]["feast"]
        details = {
            **size,
            "rate": args.rate,
            "requests": args.requests,
            "warmup": args.warmup,
            **{
                f"{side}_{k}": r.get(k)
                for side, r in (("ours", ours), ("feast", feast))
                for k in ("p50_ms", "p90_ms", "max_ms", "late_requests")
            },
        }
        for name, goal, met in (
            ("feature_store_online_p99", "p99 under 1 ms in process", ours["p99_ms"] < 1.0),
            (
                "feature_store_online_p99_vs_feast",
                "p99 at least 10x lower than Feast's",
                feast["p99_ms"] >= 10 * ours["p99_ms"],
            ),
        ):
            rows.append(
                row(
                    name,
                    ours=ours["p99_ms"],
                    peer=feast["p99_ms"],
                    peer_name="Feast 0.67 get_online_features, sqlite online store, materialized values",
                    ratio="peer/ours",
                    meaning="times lower ours' p99 is",
                    unit="ms",
                    goal=goal,
                    met=met,
                    details=details,
                    shared=shared,
                )
            )
    return rows


if __name__ == "__main__":
    main()
