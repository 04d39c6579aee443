"""Feast peer for the feature-store benchmarks.

Runs INSIDE the isolated Feast venv made by ``setup_feast_venv.sh``; the project never
imports this file and Feast is never one of the project's runtime dependencies. All
input and output goes through files named on the command line, so callers run it as a
subprocess:

    PY=$(benchmarks/peers/setup_feast_venv.sh)
    $PY benchmarks/peers/feast_peer.py historical --features F.parquet \\
        --entities E.parquet --out RESULT.parquet --timings T.json [--repeats 3]
    $PY benchmarks/peers/feast_peer.py online --features F.parquet \\
        --entity-ids IDS.json --timings T.json [--rate 1000] [--requests 5000] [--warmup 200]

Inputs
------
F.parquet (feature rows): ``account_id`` (string), ``event_timestamp`` (timestamp, UTC),
then N feature columns (int64 or float64; int32/float32/bool/string are also mapped).
A row holds the feature values valid from ``event_timestamp`` for that account. Several
rows per account; repeated (account_id, event_timestamp) rows are allowed when their
values are identical (Feast picks one of them arbitrarily, see below).

E.parquet (entity rows): ``transaction_id`` (string), ``account_id`` (string),
``event_timestamp`` (timestamp, UTC).

Feast set-up
------------
Each run builds a throw-away Feast repo in a temp dir: ``feature_store.yaml`` written
here (provider local, SQL registry in a sqlite file, DuckDB offline store, sqlite online
store, entity_key_serialization_version 3), an Entity ``account`` (join key
``account_id``), a FileSource on F.parquet (timestamp_field ``event_timestamp``) and one
FeatureView ``account_features`` with every feature column and a TTL of 3650 days (the
DuckDB offline store rejects TTLs that mix days and hours, so whole days only).

Point-in-time semantics (historical)
------------------------------------
For every entity row, Feast's DuckDB/ibis offline store picks the feature row of the
same account with the LATEST ``event_timestamp`` such that

    feature_ts <= entity_ts            (inclusive: an equal timestamp matches)
    feature_ts + ttl >= entity_ts      (inside the TTL)

and copies its feature values. Entity rows with no such feature row are kept (left
join) with null features; rows are never dropped or multiplied. Ties (several feature
rows with the same account and timestamp) are broken arbitrarily and not reproducibly
(two runs picked different rows), which is harmless only when the tied rows carry
identical values. Entity rows that share
(account_id, event_timestamp) get the same features. The output row ORDER is not the
input order: join on ``transaction_id``.

Online
------
``store.materialize(start, end)`` over the whole time span of F loads the latest row per
account into the sqlite online store; then single-entity ``get_online_features`` calls
are paced open-loop at ``--rate`` requests/s: request i is scheduled at t0 + i/rate; the
client sleeps if early, and if late sends at once (counted in ``late_requests``).
Latency is measured from the call's actual start (``perf_counter_ns``) through
``to_dict()``; latency measured from the scheduled time is reported too
(``*_from_schedule_ms``), which shows queueing when the rate cannot be sustained.
"""

from __future__ import annotations

import os

# No telemetry; set before Feast is imported.
os.environ.setdefault("FEAST_USAGE", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ENTITY_NAME = "account"
JOIN_KEY = "account_id"
TS_COL = "event_timestamp"
FV_NAME = "account_features"
TTL = timedelta(days=3650)
ONLINE_MAX_SECONDS = 120.0


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _feast_dtype(arrow_type: pa.DataType):
    from feast import types as ft

    if pa.types.is_int64(arrow_type):
        return ft.Int64
    if pa.types.is_float64(arrow_type):
        return ft.Float64
    if pa.types.is_int32(arrow_type) or pa.types.is_int16(arrow_type) or pa.types.is_int8(arrow_type):
        return ft.Int32
    if pa.types.is_float32(arrow_type):
        return ft.Float32
    if pa.types.is_boolean(arrow_type):
        return ft.Bool
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return ft.String
    raise SystemExit(f"unsupported feature column type for Feast: {arrow_type}")


def _feature_columns(features_path: Path) -> list[tuple[str, pa.DataType]]:
    schema = pq.read_schema(features_path)
    names = schema.names
    for required in (JOIN_KEY, TS_COL):
        if required not in names:
            raise SystemExit(f"{features_path}: missing column {required!r}")
    ts_type = schema.field(TS_COL).type
    if not pa.types.is_timestamp(ts_type):
        raise SystemExit(f"{features_path}: {TS_COL} must be a timestamp, got {ts_type}")
    return [(f.name, f.type) for f in schema if f.name not in (JOIN_KEY, TS_COL)]


def _write_feature_store_yaml(repo_dir: Path) -> None:
    data = repo_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    (repo_dir / "feature_store.yaml").write_text(
        "\n".join(
            [
                "project: feast_peer_bench",
                "provider: local",
                "registry:",
                "  registry_type: sql",
                f"  path: sqlite:///{data / 'registry.db'}",
                "  cache_ttl_seconds: 600",
                "offline_store:",
                "  type: duckdb",
                "online_store:",
                "  type: sqlite",
                f"  path: {data / 'online.db'}",
                "entity_key_serialization_version: 3",
                "",
            ]
        )
    )


def _build_store(repo_dir: Path, features_path: Path):
    """Write the repo config, apply Entity/FileSource/FeatureView; return (store, refs)."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import String

    # ibis/duckdb deprecation chatter; Feast resets filters on import, so set them here.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    feature_cols = _feature_columns(features_path)
    if not feature_cols:
        raise SystemExit(f"{features_path}: no feature columns")
    _write_feature_store_yaml(repo_dir)
    store = FeatureStore(repo_path=str(repo_dir))

    account = Entity(name=ENTITY_NAME, join_keys=[JOIN_KEY], value_type=ValueType.STRING)
    source = FileSource(
        name="account_features_source",
        path=str(features_path.resolve()),
        timestamp_field=TS_COL,
    )
    fv = FeatureView(
        name=FV_NAME,
        entities=[account],
        ttl=TTL,
        schema=[Field(name=JOIN_KEY, dtype=String)]
        + [Field(name=name, dtype=_feast_dtype(t)) for name, t in feature_cols],
        source=source,
        online=True,
    )
    store.apply([account, fv])
    refs = [f"{FV_NAME}:{name}" for name, _ in feature_cols]
    return store, refs, [name for name, _ in feature_cols]


def _configure_duckdb(repo_dir: Path, memory_limit: str | None) -> dict:
    """Tune ibis's default in-process DuckDB connection, which Feast's DuckDB store uses.

    Spill files go to the temp repo (DuckDB's default is ``.tmp`` in the caller's cwd);
    ``memory_limit`` (e.g. "8GB") is left at DuckDB's default (80% of RAM) unless given.
    """
    import ibis

    con = ibis.get_backend()
    spill = repo_dir / "duckdb_spill"
    spill.mkdir(exist_ok=True)
    con.raw_sql(f"SET temp_directory = '{spill}'")
    if memory_limit:
        con.raw_sql(f"SET memory_limit = '{memory_limit}'")
    row = con.raw_sql("SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
    return {"duckdb_memory_limit": row[0], "duckdb_threads": int(row[1])}


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def _json_value(v):
    """Feast/numpy scalar -> JSON-safe value (non-finite floats -> None)."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return v


def _percentile(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def cmd_historical(args: argparse.Namespace) -> int:
    import feast
    import pandas as pd

    features_path = Path(args.features)
    entity_df = pd.read_parquet(args.entities)
    for required in ("transaction_id", JOIN_KEY, TS_COL):
        if required not in entity_df.columns:
            raise SystemExit(f"{args.entities}: missing column {required!r}")
    entity_df = entity_df[["transaction_id", JOIN_KEY, TS_COL]].copy()
    if getattr(entity_df[TS_COL].dt, "tz", None) is None:
        # Feast compares against UTC feature timestamps; make the entity side explicit.
        entity_df[TS_COL] = entity_df[TS_COL].dt.tz_localize("UTC")

    with tempfile.TemporaryDirectory(prefix="feast_peer_") as tmp:
        t = time.perf_counter()
        store, refs, feature_names = _build_store(Path(tmp), features_path)
        apply_seconds = time.perf_counter() - t
        duckdb_settings = _configure_duckdb(Path(tmp), args.duckdb_memory_limit)

        seconds: list[float] = []
        result = None
        for _ in range(max(1, args.repeats)):
            result = None  # free the previous result before the next run
            edf = entity_df.copy()
            t0 = time.perf_counter()
            result = store.get_historical_features(entity_df=edf, features=refs).to_df()
            seconds.append(time.perf_counter() - t0)

        keep = ["transaction_id", JOIN_KEY, TS_COL] + feature_names
        result = result[keep]
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.to_parquet(out, index=False)

    _write_json(
        Path(args.timings),
        {
            "peer": "feast",
            "feast_version": feast.__version__,
            "rows_in": int(len(entity_df)),
            "rows_out": int(len(result)),
            "seconds": seconds,
            "median_seconds": statistics.median(seconds),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "feature_rows": int(pq.read_metadata(features_path).num_rows),
            "n_features": len(feature_names),
            "apply_seconds": apply_seconds,
            "offline_store": "duckdb",
            **duckdb_settings,
        },
    )
    return 0


def cmd_online(args: argparse.Namespace) -> int:
    import feast

    features_path = Path(args.features)
    ids = json.loads(Path(args.entity_ids).read_text())
    if not isinstance(ids, list) or not ids:
        raise SystemExit(f"{args.entity_ids}: expected a non-empty JSON list of account ids")
    ids = [str(i) for i in ids]

    ts = pq.read_table(features_path, columns=[TS_COL]).column(TS_COL)
    import pyarrow.compute as pc

    start = pc.min(ts).as_py() - timedelta(seconds=1)
    end = pc.max(ts).as_py() + timedelta(seconds=1)

    with tempfile.TemporaryDirectory(prefix="feast_peer_") as tmp:
        store, refs, feature_names = _build_store(Path(tmp), features_path)

        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress to stdout
            store.materialize(start_date=start, end_date=end)
        materialize_seconds = time.perf_counter() - t

        def call(account_id: str) -> dict:
            return store.get_online_features(features=refs, entity_rows=[{JOIN_KEY: account_id}]).to_dict()

        # Values for the first 20 ids, for the caller's equality check (untimed).
        sample_values: dict[str, dict] = {}
        for account_id in ids[:20]:
            d = call(account_id)
            sample_values[account_id] = {n: _json_value(d[n][0]) for n in feature_names}

        for i in range(max(0, args.warmup)):
            call(ids[i % len(ids)])
        gc.collect()  # don't bill materialization garbage to the timed loop
        gc.freeze()

        period_ns = int(1e9 / args.rate)
        max_ns = int(ONLINE_MAX_SECONDS * 1e9)
        lat_ns: list[int] = []
        sched_lat_ns: list[int] = []
        late = 0
        n_ids = len(ids)
        perf = time.perf_counter_ns
        t0 = perf() + 1_000_000  # first request 1 ms from now
        for i in range(args.requests):
            target = t0 + i * period_ns
            now = perf()
            if now - t0 > max_ns:
                break
            if now < target:
                delay = target - now
                if delay > 200_000:  # coarse sleep, then spin the last 0.2 ms
                    time.sleep((delay - 200_000) / 1e9)
                while perf() < target:
                    pass
            else:
                late += 1
            s = perf()
            call(ids[i % n_ids])
            e = perf()
            lat_ns.append(e - s)
            sched_lat_ns.append(e - target)
        wall = (perf() - t0) / 1e9

    lat_ms = sorted(x / 1e6 for x in lat_ns)
    sched_ms = sorted(x / 1e6 for x in sched_lat_ns)
    _write_json(
        Path(args.timings),
        {
            "peer": "feast",
            "feast_version": feast.__version__,
            "requests": len(lat_ms),
            "rate": args.rate,
            "p50_ms": _percentile(lat_ms, 50),
            "p90_ms": _percentile(lat_ms, 90),
            "p99_ms": _percentile(lat_ms, 99),
            "max_ms": lat_ms[-1] if lat_ms else float("nan"),
            "late_requests": late,
            "materialize_seconds": materialize_seconds,
            "achieved_rate": len(lat_ms) / wall if wall > 0 else None,
            "p50_from_schedule_ms": _percentile(sched_ms, 50),
            "p99_from_schedule_ms": _percentile(sched_ms, 99),
            "warmup": args.warmup,
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "online_store": "sqlite",
            "sample_values": sample_values,
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    h = sub.add_parser("historical", help="time get_historical_features(...).to_df()")
    h.add_argument("--features", required=True, help="feature rows parquet (F)")
    h.add_argument("--entities", required=True, help="entity rows parquet (E)")
    h.add_argument("--out", required=True, help="result parquet (last repeat)")
    h.add_argument("--timings", required=True, help="timings JSON output")
    h.add_argument("--repeats", type=int, default=3)
    h.add_argument(
        "--duckdb-memory-limit",
        default=None,
        help="DuckDB memory_limit, e.g. 8GB (default: DuckDB's own, 80%% of RAM)",
    )
    h.set_defaults(func=cmd_historical)

    o = sub.add_parser("online", help="materialize, then paced get_online_features")
    o.add_argument("--features", required=True, help="feature rows parquet (F)")
    o.add_argument("--entity-ids", required=True, help="JSON list of account ids")
    o.add_argument("--timings", required=True, help="timings JSON output")
    o.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    o.add_argument("--requests", type=int, default=5000, help="timed requests (max)")
    o.add_argument("--warmup", type=int, default=200, help="untimed requests first")
    o.set_defaults(func=cmd_online)

    args = p.parse_args(argv)
    if args.cmd == "online" and args.rate <= 0:
        p.error("--rate must be > 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
