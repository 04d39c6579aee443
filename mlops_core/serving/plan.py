"""The recorded traffic plan: which versions the endpoint serves, persisted so a restart resumes it.

Written atomically (temp file + rename) after every admin change; read at start-up. The
MLflow aliases say which model is champion in the registry; the plan says what the
endpoint was told to serve, including an in-progress canary or shadow.
"""

import datetime as dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TrafficPlan:
    champion_version: str | None
    canary_version: str | None = None
    canary_share: float = 0.0
    shadow_version: str | None = None
    previous_champion_version: str | None = None
    reason: str = ""
    changed_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".plan-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "TrafficPlan | None":
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"traffic plan {path} is unreadable ({exc}); fix or delete it to start from the registry aliases") from exc
