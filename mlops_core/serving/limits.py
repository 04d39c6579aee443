"""What the endpoint accepts: event-time bounds of a transaction and the HTTP limits of a connection.

Read from the environment once, at start-up (`ServingLimits.from_env`), with defaults that fit
the demo and a production endpoint behind a load balancer. docs/reliability.md lists them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass

UTC = dt.UTC


def wall_clock() -> dt.datetime:
    """The machine's time, UTC: the default clock of the event-time bounds."""
    return dt.datetime.now(UTC)


@dataclass(frozen=True)
class EventTimeBounds:
    """When a scored transaction may have happened, relative to the service's clock.

    Like the landing gates (mlops_core.validation.timestamp_violations), a transaction from the
    future is refused: one request dated 2999 would move the online store's freshness watermark
    to 2999. The upper bound allows `max_future` of clock skew between the card network and this
    server. `max_lateness` (off by default) refuses transactions older than that: off, because
    the demo and the simulation replay days of a calendar that lies in the machine's past.
    """

    earliest: dt.datetime = dt.datetime(2000, 1, 1, tzinfo=UTC)
    max_future: dt.timedelta = dt.timedelta(hours=24)
    max_lateness: dt.timedelta | None = None

    def problem(self, when: dt.datetime, now: dt.datetime) -> str | None:
        """Why `when` (UTC-aware) is refused at `now`, naming the bound and its setting; None if accepted."""
        if when < self.earliest:
            return f"before the earliest accepted event time {self.earliest.isoformat()} (MLOPS_EVENT_TIME_MIN)"
        latest = now + self.max_future
        if when > latest:
            return (
                f"in the future: after the latest accepted event time {latest.isoformat()}, which is now ({now.isoformat()}) "
                f"plus {_hours(self.max_future)} h (MLOPS_MAX_EVENT_FUTURE_SKEW_HOURS)"
            )
        if self.max_lateness is not None and when < now - self.max_lateness:
            return (
                f"too late: before {(now - self.max_lateness).isoformat()}, which is now ({now.isoformat()}) "
                f"minus {self.max_lateness.days} days (MLOPS_MAX_EVENT_LATENESS_DAYS)"
            )
        return None


@dataclass(frozen=True)
class ServingLimits:
    """Per-request and per-connection limits of the endpoint (enforced in app.py and protocol.py)."""

    event_time: EventTimeBounds = EventTimeBounds()
    # A batch of MAX_BATCH transactions is ~300 KB of JSON; anything far beyond is abuse or a bug.
    max_body_bytes: int = 1_000_000
    # Request line and headers together; clients of this API send about 200 bytes.
    max_header_bytes: int = 16_384
    # From a connection's opening (or a request's first byte) to the request's last byte.
    request_timeout_seconds: float = 10.0
    # An idle keep-alive connection is closed after this long.
    keep_alive_seconds: int = 5
    # Requests arriving while more connections than this are open are answered 503.
    max_connections: int = 512

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingLimits:
        env = os.environ if environ is None else environ
        lateness = _number(env, "MLOPS_MAX_EVENT_LATENESS_DAYS", None, minimum=1)
        return cls(
            event_time=EventTimeBounds(
                earliest=_instant(env, "MLOPS_EVENT_TIME_MIN", EventTimeBounds.earliest),
                max_future=dt.timedelta(hours=_number(env, "MLOPS_MAX_EVENT_FUTURE_SKEW_HOURS", 24, minimum=0)),
                max_lateness=None if lateness is None else dt.timedelta(days=lateness),
            ),
            max_body_bytes=int(_number(env, "MLOPS_SERVE_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024)),
            max_header_bytes=int(_number(env, "MLOPS_SERVE_MAX_HEADER_BYTES", cls.max_header_bytes, minimum=1024)),
            request_timeout_seconds=_number(
                env, "MLOPS_SERVE_REQUEST_TIMEOUT_SECONDS", cls.request_timeout_seconds, minimum=0.1
            ),
            keep_alive_seconds=int(_number(env, "MLOPS_SERVE_KEEP_ALIVE_SECONDS", cls.keep_alive_seconds, minimum=1)),
            max_connections=int(_number(env, "MLOPS_SERVE_MAX_CONNECTIONS", cls.max_connections, minimum=1)),
        )


def _number(env: Mapping[str, str], name: str, default: float | None, minimum: float) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _instant(env: Mapping[str, str], name: str, default: dt.datetime) -> dt.datetime:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = dt.datetime.fromisoformat(raw)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{name} must be an ISO 8601 date or time, got {raw!r}") from None


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}"
