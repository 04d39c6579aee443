"""Customer churn in the demo world: some card holders' spending fades, then stops.

A churning account keeps its usual rate until its fade starts, then buys less and less, linearly, until its
last day; after that it never buys again. The fade is the signal a churn model can find (30-day activity falls
against the 90-day rate before the account goes quiet), and the stop is what the label sees ("no purchase in
the following N days"). Accounts that are merely infrequent also go quiet for weeks now and then, so the
label is noisy in the way real churn labels are.

Churn has its own random stream, so switching it on changes which accounts make the day's purchases, never
the world itself (accounts, merchants) nor the fraud pattern; with a share of 0 nothing here runs and every
day is the same, byte for byte, as without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlops_core.datagen.world import SECONDS_PER_DAY, World

# Churn decisions happen after this many days, so every churner has a warm history before it fades.
FIRST_CHURN_DAY = 45
FADE_DAYS = (14, 42)


@dataclass(frozen=True)
class ChurnPlan:
    """Per account (world order): the day index its fade starts and the day index it stops (inf: never)."""

    fade_start: np.ndarray
    stop: np.ndarray

    def activity_factor(self, n_accounts: int, day_index: int) -> np.ndarray:
        """Multiplier of each of the first n_accounts' spending rate on this day: 1 before the fade,
        falling linearly to 0 at the stop day, 0 from then on."""
        start, stop = self.fade_start[:n_accounts], self.stop[:n_accounts]
        with np.errstate(invalid="ignore"):  # inf - inf for accounts that never churn; masked below
            remaining = (stop - day_index) / (stop - start)
        factor = np.clip(np.where(np.isfinite(stop), remaining, 1.0), 0.0, 1.0)
        return factor

    def churned_by(self, day_index: int) -> np.ndarray:
        """Indexes of the accounts that stopped on or before day_index."""
        return np.flatnonzero(self.stop <= day_index)


def plan_churn(world: World, days: int, share: float, rng: np.random.Generator) -> ChurnPlan:
    """Pick `share` of the accounts to churn, each at a uniform day after FIRST_CHURN_DAY, with a fade of
    FADE_DAYS before it. Accounts opened during the window churn only after they have been open 60 days."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"churn share must be in [0, 1), got {share}")
    n = len(world.accounts)
    opened_day = (world.accounts.created_s - world.start_s) / SECONDS_PER_DAY
    earliest = np.maximum(FIRST_CHURN_DAY, opened_day + 60)
    churns = (rng.random(n) < share) & (earliest < days)
    stop = np.full(n, np.inf)
    stop[churns] = np.floor(rng.uniform(earliest[churns], days))
    fade = rng.uniform(*FADE_DAYS, n)
    fade_start = np.where(churns, stop - fade, np.inf)
    return ChurnPlan(fade_start=fade_start, stop=stop)
