"""Token budgets per consumer group: tokens per UTC calendar day and month.

Usage is known only once a response ends, so a budget is checked when a request is
admitted (refused once `spent >= budget`) and spent afterwards from the provider's
reported usage. Requests admitted before the budget ran out still finish: the
overshoot is at most the usage of the requests in flight at that moment.

The in-process keeper is the embedded default; `ktproxy.fleet.redis_budgets` keeps
the same counters in Redis for a fleet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from ktproxy.config import Budgets

Period = Literal["day", "month"]


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """A spent budget, and when it is renewed."""

    period: Period
    limit: int
    resets_at: datetime  # UTC, the start of the next day or month
    retry_after: float  # seconds until `resets_at`


class BudgetKeeper(Protocol):
    """What the API layer asks of a budget backend."""

    refusals: dict[tuple[str, str], int]  # (group, "budget_day" | ...) -> count

    async def check(self, group: str, budgets: Budgets) -> BudgetRefusal | None:
        """A `BudgetRefusal` when one of `group`'s budgets is spent."""

    async def spend(self, group: str, budgets: Budgets, tokens: int) -> None:
        """Charge `tokens` (from a response's usage) to `group`'s budgets."""


def limits_of(budgets: Budgets) -> list[tuple[Period, int]]:
    """The budgets that are set, day first."""
    found: list[tuple[Period, int]] = []
    if budgets.tokens_per_day is not None:
        found.append(("day", budgets.tokens_per_day))
    if budgets.tokens_per_month is not None:
        found.append(("month", budgets.tokens_per_month))
    return found


def period_key(period: Period, now: datetime) -> str:
    """The period `now` falls in: `YYYYMMDD` or `YYYYMM` (UTC)."""
    return now.strftime("%Y%m%d" if period == "day" else "%Y%m")


def period_end(period: Period, now: datetime) -> datetime:
    """The start of the period after the one `now` falls in (UTC)."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1, day=1)
    return start.replace(month=start.month + 1, day=1)


def utc_now(clock: Callable[[], float]) -> datetime:
    """`clock()` (seconds since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(clock(), UTC)


def refusal(period: Period, limit: int, now: datetime) -> BudgetRefusal:
    """The refusal for a spent `period` budget at `now`."""
    end = period_end(period, now)
    return BudgetRefusal(period, limit, end, (end - now).total_seconds())


def count_refusal(refusals: dict[tuple[str, str], int], group: str, found: BudgetRefusal) -> None:
    """Count `found` for /metrics (kind `budget_day` or `budget_month`)."""
    key = (group, f"budget_{found.period}")
    refusals[key] = refusals.get(key, 0) + 1


class LocalBudgets:
    """Budgets kept in this process (the embedded default; each worker its own view)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (group, period) -> (period key, tokens spent in it)
        self._spent: dict[tuple[str, Period], tuple[str, int]] = {}
        self.refusals: dict[tuple[str, str], int] = {}

    def _current(self, group: str, period: Period, now: datetime) -> int:
        key, spent = self._spent.get((group, period), ("", 0))
        return spent if key == period_key(period, now) else 0

    async def check(self, group: str, budgets: Budgets) -> BudgetRefusal | None:
        now = utc_now(self._clock)
        for period, limit in limits_of(budgets):
            if self._current(group, period, now) >= limit:
                found = refusal(period, limit, now)
                count_refusal(self.refusals, group, found)
                return found
        return None

    async def spend(self, group: str, budgets: Budgets, tokens: int) -> None:
        if tokens <= 0:
            return
        now = utc_now(self._clock)
        for period, _ in limits_of(budgets):
            spent = self._current(group, period, now)
            self._spent[group, period] = (period_key(period, now), spent + tokens)
