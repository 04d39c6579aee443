"""Which model answers a request: sticky canary buckets by account, and the deployment snapshot.

A Deployment is immutable. The endpoint holds one reference to the current one and each
request reads it once, so a request is scored entirely by the models of one deployment,
and a swap (promote, canary, rollback) is one assignment.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the variant names are read without loading models (rollout analysis, project declarations)
    from mlops_core.serving.models import LoadedModel

CHAMPION = "champion"
CANARY = "canary"
SHADOW = "shadow"
# 10,000 buckets: canary shares are honoured to 0.01 %.
BUCKETS = 10_000


def account_bucket(account_id: str) -> int:
    """A stable bucket in [0, BUCKETS) for the account: the same in every process and restart.

    crc32 rather than hash(): Python salts str hashes per process, which would move an
    account between champion and canary on every restart.
    """
    return zlib.crc32(account_id.encode("utf-8")) % BUCKETS


def in_canary(account_id: str, share: float) -> bool:
    return account_bucket(account_id) < round(share * BUCKETS)


@dataclass(frozen=True)
class SegmentRule:
    """A segment the canary never answers, as "high-value customers stay on the champion": the requests whose
    online feature `feature` is at least `at_least` (e.g. amount_sum_30d >= 5000: the accounts that spent
    5,000 USD in 30 days). Judged per request on the features the models score, so the A/B verdict can apply
    the same rule to the champion's logged requests and compare like with like."""

    name: str
    feature: str
    at_least: float

    def matches(self, features: Mapping[str, object] | None) -> bool:
        if not features:
            return False
        value = features.get(self.feature)
        try:
            return value is not None and float(value) >= self.at_least  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    @classmethod
    def of(cls, raw: Mapping[str, object] | SegmentRule) -> SegmentRule:
        if isinstance(raw, SegmentRule):
            return raw
        return cls(name=str(raw["name"]), feature=str(raw["feature"]), at_least=float(raw["at_least"]))  # type: ignore[arg-type]


def excluded_by(rules: tuple[SegmentRule, ...], features: Mapping[str, object] | None) -> str | None:
    """The name of the first rule whose segment holds these features; None when the canary may answer."""
    for rule in rules:
        if rule.matches(features):
            return rule.name
    return None


@dataclass(frozen=True)
class Deployment:
    """The models one request is scored with. `previous` is the champion kept warm for rollback."""

    champion: LoadedModel | None
    canary: LoadedModel | None = None
    canary_share: float = 0.0
    shadow: LoadedModel | None = None
    previous: LoadedModel | None = None
    # Segments the canary never answers (routed to the champion whatever their bucket).
    canary_excluded: tuple[SegmentRule, ...] = ()
    reason: str = "start"
    changed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            raise ValueError(f"canary_share must be within [0, 1], got {self.canary_share}")
        if self.canary_share > 0 and self.canary is None:
            raise ValueError("canary_share > 0 needs a canary model")

    def variant_for(self, account_id: str, features: Mapping[str, object] | None = None) -> str:
        if (
            self.canary is not None
            and self.canary_share > 0
            and in_canary(account_id, self.canary_share)
            and excluded_by(self.canary_excluded, features) is None
        ):
            return CANARY
        return CHAMPION

    def describe(self) -> dict[str, object]:
        def version(model: LoadedModel | None) -> str | None:
            return None if model is None else model.version

        return {
            "champion_version": version(self.champion),
            "canary_version": version(self.canary),
            "canary_share": self.canary_share if self.canary is not None else 0.0,
            "shadow_version": version(self.shadow),
            "previous_champion_version": version(self.previous),
            "canary_excluded": [asdict(rule) for rule in self.canary_excluded] if self.canary is not None else [],
            "reason": self.reason,
            "changed_at": self.changed_at.isoformat(),
        }
