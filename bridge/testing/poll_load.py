"""Load for the poller's scheduler, shared by its virtual-time tests and the poller bench:
thousands of known employees, an instant Moveworks client that records every poll, and the
largest number of requests in any window (what Moveworks would count)."""

from __future__ import annotations

from collections.abc import Callable

from bridge.moveworks.errors import RateLimited
from bridge.moveworks.models import Page
from bridge.store import Store


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:  # half-open window (t - window, t]
            j += 1
        best = max(best, i - j + 1)
    return best


class CountingClient:
    """list_events answering instantly with an empty page; records the (virtual) time and identity
    of each call, and answers 429 at the call numbers in `rate_limit_at`."""

    def __init__(self, clock: Callable[[], float], *, rate_limit_at: set[int] | None = None,
                 retry_after: float = 5.0) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.identities: list[str | None] = []
        self.rate_limit_at = rate_limit_at or set()
        self.retry_after = retry_after

    async def list_events(self, identity, conversation_id="-", *, starting_after=None, ending_at=None,
                          cursor=None, limit=100):
        self.times.append(self.clock())
        self.identities.append(identity)
        if len(self.times) in self.rate_limit_at:
            raise RateLimited("429", retry_after=self.retry_after, status=429, code="RATE_LIMIT_EXCEEDED")
        return Page((), None)


def fill_employees(store: Store, n: int, *, active: int, now: float, active_age: float = 30.0,
                   idle_days: Callable[[int], float] = lambda i: 3.0) -> list[str]:
    """`n` Slack employees: the first `active` seen `active_age` s ago, employee i otherwise
    `idle_days(i)` days ago. Returns their emails."""
    emails = [f"user{i:05d}@example.com" for i in range(n)]
    store.db.execute("BEGIN")
    for i, email in enumerate(emails):
        store.db.execute(
            "INSERT INTO employees (platform, workspace, user_id, email, name, email_checked_at, "
            "last_active_at) VALUES ('slack', 'T1', ?, ?, NULL, ?, ?)",
            (f"U{i}", email, now, now - active_age if i < active else now - 86_400 * idle_days(i)),
        )
    store.db.execute("COMMIT")
    return emails
