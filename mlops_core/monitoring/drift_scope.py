"""Which features a day's drift share counts, and why the others are left out of it.

A left-out feature is still compared and shown with its statistics in the daily table and report; it only
does not count towards the share that asks for a retraining. Three kinds are left out:

- **Calendar features** (`day_of_week`, `is_weekend`): one day holds a single weekday, which a multi-week
  reference never matches, so they were flagged on every ordinary day (normed Wasserstein 1.48 and PSI 8.05
  on a Sunday) and said nothing about the world. A shift in *when* people buy still shows in the hour and in
  the windowed counts, which are counted.
- **Window features before their window is warm**: on a day less than a window's length after the first
  landed transaction, that window still reaches back before the data begins, so its counts and sums are
  filling up and read as a shift. A feature counts from the first day whose every transaction has its whole
  window after the first transaction (a ratio to a 30-day mean counts from the 30-day window's day).
- **Features the champion barely uses**: less than half the share of its gain an evenly used feature would
  carry (1/2 of 1/31 = 1.6% for the fraud model). A shift there cannot move the served scores much, so it
  is no reason to retrain; a shift in what the model leans on is. A one-hot feature's columns are summed.

No dagster here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from mlops_core.features.spec import REQUEST_FEATURES, WINDOWED_FEATURES, WINDOWS

CALENDAR_TRANSFORMS = ("day_of_week", "is_weekend")
# A feature counts towards the share when the champion gives it at least this fraction of an even share.
MIN_IMPORTANCE_OF_EVEN = 0.5
CALENDAR_REASON = "calendar: one day holds one weekday, which a multi-week reference never matches (shown, not counted)"


def calendar_features() -> list[str]:
    return [f.name for f in REQUEST_FEATURES if f.transform in CALENDAR_TRANSFORMS]


def window_seconds() -> dict[str, int]:
    """Seconds of history each window-dependent feature needs: a windowed feature its window; a request
    feature computed from windowed features the longest of theirs."""
    own = {f.name: f.window_seconds for f in WINDOWED_FEATURES}
    derived = {
        f.name: max(own[i] for i in f.inputs if i in own) for f in REQUEST_FEATURES if any(i in own for i in f.inputs)
    }
    return {**own, **derived}


def warm_day(first_event: dt.datetime, seconds: int) -> dt.date:
    """The first day whose every instant t has [t - window, t) after the first event: the day of
    first_event + window, or the next one when that instant is past midnight."""
    warm_at = first_event + dt.timedelta(seconds=seconds)
    return warm_at.date() if warm_at.time() == dt.time(0) else warm_at.date() + dt.timedelta(days=1)


def left_out_of_share(day: dt.date, first_event: dt.datetime | None) -> dict[str, str]:
    """Feature -> why the drift share of `day` does not count it. `first_event` is the first landed
    transaction's timestamp (None: an empty warehouse, where no window is warm)."""
    left_out = dict.fromkeys(calendar_features(), CALENDAR_REASON)
    for name, seconds in window_seconds().items():
        window = _window_name(seconds)
        if first_event is None:
            left_out[name] = f"window not warm: no transaction has landed yet for its {window} window"
            continue
        warm = warm_day(first_event, seconds)
        if day < warm:
            left_out[name] = (
                f"window not warm: its {window} window reaches back before the first transaction "
                f"({first_event:%Y-%m-%d %H:%M}); counted from {warm}"
            )
    return left_out


def _window_name(seconds: int) -> str:
    return {length: name for name, length in WINDOWS.items()}.get(seconds, f"{seconds} s")


def importance_by_feature(importance: Mapping[str, float]) -> dict[str, float]:
    """A model's importance per input feature, as shares of its total: one-hot columns (`feature=category`)
    summed to their feature."""
    summed: dict[str, float] = {}
    for column, value in importance.items():
        name = column.split("=", 1)[0]
        summed[name] = summed.get(name, 0.0) + max(float(value), 0.0)
    total = sum(summed.values())
    if total <= 0:
        return {}
    return {name: value / total for name, value in summed.items()}


def barely_used(importance: Mapping[str, float], features: list[str], model: str) -> dict[str, str]:
    """Feature -> reason, for the `features` whose share of the model's importance is under half an even
    share. Empty when the importance is unknown (then every feature counts)."""
    shares = importance_by_feature(importance)
    if not shares:
        return {}
    floor = MIN_IMPORTANCE_OF_EVEN / len(features)
    return {
        name: f"barely used by {model}: {shares.get(name, 0.0):.1%} of its importance, under {floor:.1%} (shown, not counted)"
        for name in features
        if shares.get(name, 0.0) < floor
    }
