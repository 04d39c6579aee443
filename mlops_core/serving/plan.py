"""The recorded traffic plan: which versions the endpoint serves, persisted so a restart resumes it.

Written atomically (temp file + rename) after every admin change; read at start-up and resumed
as it is (a restart is not a change: the file, its reason and its time stay the same). Each
change keeps the plan it replaced in `history`. The MLflow aliases say which model is champion
in the registry; the plan says what the endpoint was told to serve, including an in-progress
canary or shadow.
"""

import datetime as dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# Earlier plans kept in the file, oldest dropped first: enough to read back weeks of rollouts.
HISTORY_LIMIT = 100


@dataclass(frozen=True)
class TrafficPlan:
    champion_version: str | None
    canary_version: str | None = None
    canary_share: float = 0.0
    shadow_version: str | None = None
    previous_champion_version: str | None = None
    # Segments the canary never answers (routing.SegmentRule as dicts); a list, as the file holds it, so a plan
    # read back equals the one written.
    canary_excluded: list[dict] = field(default_factory=list)
    reason: str = ""
    changed_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    # The plans this one replaced, oldest first, each without its own history.
    history: tuple[dict, ...] = ()

    def change(self) -> dict:
        """This plan as an entry of its successor's history."""
        entry = asdict(self)
        del entry["history"]
        return entry

    def followed_by(self, successor: "TrafficPlan") -> "TrafficPlan":
        """`successor` with this plan appended to the history it inherits."""
        return replace(successor, history=(*self.history, self.change())[-HISTORY_LIMIT:])

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
            raw["history"] = tuple(raw.get("history", ()))
            raw["canary_excluded"] = list(raw.get("canary_excluded", []))
            return cls(**raw)
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"traffic plan {path} is unreadable ({exc}); fix or delete it to start from the registry aliases"
            ) from exc
