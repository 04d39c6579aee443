"""Where local state lives. Every path derives from one directory, MLOPS_HOME.

Kept free of dagster so the CLI, the data generator and benchmarks share it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / ".mlops"


def _int_env(env, name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


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

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def online_store_path(self) -> Path:
        return self.data_dir / "online_store.sqlite"

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("MLOPS_HOME", DEFAULT_HOME)).resolve()
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
        )

    def __post_init__(self) -> None:
        if self.online_store not in ("sqlite", "redis"):
            raise ValueError(f"MLOPS_ONLINE_STORE must be 'sqlite' or 'redis', got {self.online_store!r}")
        if not 1 <= self.label_maturity_days <= 365:
            raise ValueError(f"MLOPS_LABEL_MATURITY_DAYS must be in 1..365, got {self.label_maturity_days}")

    def export(self) -> None:
        """Publish the resolved paths to child processes (dbt reads MLOPS_DUCKDB_PATH)."""
        os.environ["MLOPS_HOME"] = str(self.home)
        os.environ["MLOPS_DATA_DIR"] = str(self.data_dir)
        os.environ["MLOPS_DUCKDB_PATH"] = str(self.duckdb_path)
        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        os.environ["MLOPS_LABEL_MATURITY_DAYS"] = str(self.label_maturity_days)
        if self.training_lookback_days is None:
            os.environ.pop("MLOPS_TRAINING_LOOKBACK_DAYS", None)
        else:
            os.environ["MLOPS_TRAINING_LOOKBACK_DAYS"] = str(self.training_lookback_days)

    def ensure_dirs(self) -> None:
        for path in (self.home, self.data_dir, self.landing_dir, self.dagster_home, self.reports_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.duckdb_path.parent.mkdir(parents=True, exist_ok=True)


def code_version() -> str:
    """The git commit of the checkout, with '+dirty' when it has uncommitted changes; 'unknown' outside git."""
    import subprocess

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")
