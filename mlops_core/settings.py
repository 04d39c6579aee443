"""Where local state lives. Every path derives from one directory, MLOPS_HOME.

Kept free of dagster so the CLI, the data generator and benchmarks share it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / ".mlops"

# The simulated calendar. The demo and the tests run on a fixed "today" so that the same seed draws the
# same history and reaches the same outcome on any date; MLOPS_TODAY=system follows the machine's clock
# (production), MLOPS_TODAY=YYYY-MM-DD pins another day.
DEFAULT_TODAY = dt.date(2026, 7, 1)
SYSTEM_CLOCK = "system"
DEFAULT_PARTITIONS_START = dt.date(2025, 1, 1)
DEFAULT_SERVING_URL = "http://127.0.0.1:8000"
# dbt's --log-level-file values (MLOPS_DBT_FILE_LOG_LEVEL).
DBT_FILE_LOG_LEVELS = ("debug", "info", "warn", "error", "none")
# What a demo records about itself in MLOPS_HOME (its calendar and its endpoint), so that every later
# command, the code location, its assets and sensors see the same days and talk to the same endpoint.
RECORDED_FILE = "recorded_settings.json"
RECORDED_NAMES = ("MLOPS_TODAY", "MLOPS_PARTITIONS_START", "MLOPS_SERVING_URL")


def system_today() -> dt.date:
    """The machine's UTC date; only read when MLOPS_TODAY=system."""
    return dt.datetime.now(dt.UTC).date()


def _date_setting(name: str, raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        allowed = f"YYYY-MM-DD or {SYSTEM_CLOCK!r}" if name == "MLOPS_TODAY" else "YYYY-MM-DD"
        raise ValueError(f"{name} must be {allowed}, got {raw!r}") from None


def read_recorded(home: Path) -> dict[str, str]:
    """The settings a demo recorded in `home` (empty when none were)."""
    path = home / RECORDED_FILE
    if not path.exists():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{path}: unreadable recorded settings ({err}); delete the file or rerun `mlops demo run`"
        ) from None
    return {k: str(v) for k, v in recorded.items() if k in RECORDED_NAMES}


def record_settings(home: Path, **values: str) -> Path:
    """Record settings in `home` for every later command (merged with what is recorded already)."""
    unknown = set(values) - set(RECORDED_NAMES)
    if unknown:
        raise ValueError(f"cannot record {sorted(unknown)}; recordable: {list(RECORDED_NAMES)}")
    home.mkdir(parents=True, exist_ok=True)
    path = home / RECORDED_FILE
    merged = {**read_recorded(home), **values}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def _int_env(env, name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _bool_env(env, name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValueError(f"{name} must be 1/true/yes or 0/false/no, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Resolved locations of the platform's local state.

    MLOPS_HOME (default: <repo>/.mlops, git-ignored) holds everything; the other
    variables override single locations inside or outside it.
    """

    home: Path
    data_dir: Path
    duckdb_path: Path
    dagster_home: Path
    reports_dir: Path
    mlflow_dir: Path
    # "sqlite" (embedded, under data_dir) or "redis" (MLOPS_REDIS_URL).
    online_store: str = "sqlite"
    # The dispute window of the business: a transaction without a fraud verdict after this many days
    # is legitimate. Training leaves younger transactions out (MLOPS_LABEL_MATURITY_DAYS).
    label_maturity_days: int = 45
    # Days of mature history the training set takes (MLOPS_TRAINING_LOOKBACK_DAYS; unset: all of it).
    training_lookback_days: int | None = None
    # Train on the frauds confirmed before their transactions matured too (MLOPS_TRAIN_ON_EARLY_FRAUDS=1):
    # a new fraud pattern reaches a retraining days sooner. Off by default.
    train_on_early_frauds: bool = False
    # How late a transaction may reach the online store and still get its full windows
    # (MLOPS_ONLINE_ALLOWED_LATENESS_DAYS); a rebuild keeps the longest window plus this.
    online_allowed_lateness_days: int = 7
    # MLOPS_TODAY: a date, or "system" for the machine's clock. The last complete day is the day before.
    clock: str = DEFAULT_TODAY.isoformat()
    # MLOPS_PARTITIONS_START: the first daily partition (a demo records its first landed day).
    partitions_start: dt.date = DEFAULT_PARTITIONS_START
    # MLOPS_SERVING_URL: the production endpoint every command, asset and sensor talks to.
    serving_url: str = DEFAULT_SERVING_URL
    # MLOPS_RELEASES_DIR: the release files, one per registered model (mlops_core/releases.py); default
    # $MLOPS_HOME/releases. With MLOPS_RELEASES_GIT_REMOTE it is a clone of the GitOps repository, and every
    # promotion and rollback is a commit pushed to MLOPS_RELEASES_GIT_BRANCH.
    releases_dir: Path | None = None
    releases_git_remote: str = ""
    releases_git_branch: str = "mlops/releases"
    # MLOPS_DBT_LAUNCHER: "warm" runs each dbt command as a fork of a server that imported dbt once
    # (mlops_core/warm_dbt.py: 2-3 s of CPU saved per command); "cold" starts the venv's dbt every time, as
    # a production pod that runs one dbt command does.
    dbt_launcher: str = "warm"
    # MLOPS_DBT_FILE_LOG_LEVEL: what each dbt command writes to the dbt.log in its run's target folder. dbt's
    # default, debug, writes every statement and connection event (2 MB a `dbt build` of the warehouse) and
    # costs about 0.35 s of a build's 3.5-3.9 s of CPU; the run's events and failures reach Dagster from dbt's
    # stdout whatever this says. Set debug to diagnose dbt itself.
    dbt_file_log_level: str = "warn"

    @property
    def today(self) -> dt.date:
        """The platform's "today": fixed by default (deterministic demo and tests), the system date on request."""
        return system_today() if self.clock == SYSTEM_CLOCK else _date_setting("MLOPS_TODAY", self.clock)

    @property
    def last_complete_day(self) -> dt.date:
        return self.today - dt.timedelta(days=1)

    @property
    def serving_port(self) -> int:
        from urllib.parse import urlsplit

        return urlsplit(self.serving_url).port or 80

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def online_store_path(self) -> Path:
        return self.data_dir / "online_store.sqlite"

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("MLOPS_HOME", DEFAULT_HOME)).resolve()
        recorded = read_recorded(home)

        def chosen(name: str, default: str) -> str:
            # The environment wins over what a demo recorded, which wins over the default.
            return env.get(name) or recorded.get(name) or default

        return cls(
            home=home,
            data_dir=Path(env.get("MLOPS_DATA_DIR", home / "data")).resolve(),
            duckdb_path=Path(env.get("MLOPS_DUCKDB_PATH", home / "warehouse.duckdb")).resolve(),
            dagster_home=Path(env.get("DAGSTER_HOME", home / "dagster_home")).resolve(),
            reports_dir=Path(env.get("MLOPS_REPORTS_DIR", home / "reports")).resolve(),
            mlflow_dir=Path(env.get("MLOPS_MLFLOW_DIR", home / "mlflow")).resolve(),
            online_store=env.get("MLOPS_ONLINE_STORE", "sqlite"),
            label_maturity_days=_int_env(env, "MLOPS_LABEL_MATURITY_DAYS", 45),
            training_lookback_days=_int_env(env, "MLOPS_TRAINING_LOOKBACK_DAYS", None),
            train_on_early_frauds=_bool_env(env, "MLOPS_TRAIN_ON_EARLY_FRAUDS"),
            online_allowed_lateness_days=_int_env(env, "MLOPS_ONLINE_ALLOWED_LATENESS_DAYS", 7),
            clock=chosen("MLOPS_TODAY", DEFAULT_TODAY.isoformat()),
            partitions_start=_date_setting(
                "MLOPS_PARTITIONS_START", chosen("MLOPS_PARTITIONS_START", DEFAULT_PARTITIONS_START.isoformat())
            ),
            serving_url=chosen("MLOPS_SERVING_URL", DEFAULT_SERVING_URL),
            releases_dir=Path(env.get("MLOPS_RELEASES_DIR", home / "releases")).resolve(),
            releases_git_remote=env.get("MLOPS_RELEASES_GIT_REMOTE", ""),
            releases_git_branch=env.get("MLOPS_RELEASES_GIT_BRANCH", "mlops/releases"),
            dbt_launcher=env.get("MLOPS_DBT_LAUNCHER", "warm"),
            dbt_file_log_level=env.get("MLOPS_DBT_FILE_LOG_LEVEL", "warn"),
        )

    def __post_init__(self) -> None:
        if self.online_store not in ("sqlite", "redis"):
            raise ValueError(f"MLOPS_ONLINE_STORE must be 'sqlite' or 'redis', got {self.online_store!r}")
        if self.dbt_launcher not in ("warm", "cold"):
            raise ValueError(f"MLOPS_DBT_LAUNCHER must be 'warm' or 'cold', got {self.dbt_launcher!r}")
        if self.dbt_file_log_level not in DBT_FILE_LOG_LEVELS:
            raise ValueError(
                f"MLOPS_DBT_FILE_LOG_LEVEL must be one of {', '.join(DBT_FILE_LOG_LEVELS)}, got {self.dbt_file_log_level!r}"
            )
        if not 1 <= self.label_maturity_days <= 365:
            raise ValueError(f"MLOPS_LABEL_MATURITY_DAYS must be in 1..365, got {self.label_maturity_days}")
        if not 0 <= self.online_allowed_lateness_days <= 365:
            raise ValueError(
                f"MLOPS_ONLINE_ALLOWED_LATENESS_DAYS must be in 0..365, got {self.online_allowed_lateness_days}"
            )
        if self.clock != SYSTEM_CLOCK:
            _date_setting("MLOPS_TODAY", self.clock)
        if self.partitions_start >= self.today:
            raise ValueError(
                f"MLOPS_PARTITIONS_START ({self.partitions_start}) must be before today ({self.today}, MLOPS_TODAY={self.clock})"
            )
        if not self.serving_url.startswith(("http://", "https://")):
            raise ValueError(f"MLOPS_SERVING_URL must be an http(s) URL, got {self.serving_url!r}")

    def environment(self) -> dict[str, str]:
        """The resolved paths as the variables a child process reads them from (dbt reads MLOPS_DUCKDB_PATH, a
        started endpoint its MLOPS_HOME). The calendar and the serving URL are not among them: a child reads them
        from MLOPS_HOME's recorded settings, as every later command does."""
        env = {
            "MLOPS_HOME": str(self.home),
            "MLOPS_DATA_DIR": str(self.data_dir),
            "MLOPS_DUCKDB_PATH": str(self.duckdb_path),
            "DAGSTER_HOME": str(self.dagster_home),
            "MLOPS_REPORTS_DIR": str(self.reports_dir),
            "MLOPS_MLFLOW_DIR": str(self.mlflow_dir),
            "MLOPS_LABEL_MATURITY_DAYS": str(self.label_maturity_days),
        }
        # MLOPS_RELEASES_DIR is not published: a child derives it from MLOPS_HOME (or inherits the caller's own
        # setting). Published, one home's releases would follow a process into the next home it builds settings for.
        if self.training_lookback_days is not None:
            env["MLOPS_TRAINING_LOOKBACK_DAYS"] = str(self.training_lookback_days)
        if self.train_on_early_frauds:
            env["MLOPS_TRAIN_ON_EARLY_FRAUDS"] = "1"
        return env

    def export(self) -> None:
        """Publish the resolved paths to this process's children (the CLI, before it starts Dagster)."""
        os.environ.update(self.environment())
        if self.training_lookback_days is None:
            os.environ.pop("MLOPS_TRAINING_LOOKBACK_DAYS", None)
        if not self.train_on_early_frauds:
            os.environ.pop("MLOPS_TRAIN_ON_EARLY_FRAUDS", None)

    def ensure_dirs(self) -> None:
        for path in (self.home, self.data_dir, self.landing_dir, self.dagster_home, self.reports_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.duckdb_path.parent.mkdir(parents=True, exist_ok=True)


def code_version() -> str:
    """The git commit of the checkout, with '+dirty' when it has uncommitted changes; 'unknown' outside git."""
    import subprocess

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")
