"""Write budgets shared by every process (token buckets), in SQLite.

Each operation is one upsert with RETURNING: SQLite runs it under the database's write lock, so
processes sharing the file draw from one bucket. A bucket that does not exist yet is full.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.store.sqlite.guard import Query

# The bucket refilled up to now: min(burst, tokens + elapsed * rate). `elapsed` never counts
# backwards (a clock that went back, another host slightly behind).
_REFILLED = "min(:burst, budgets.tokens + max(0.0, :now - budgets.updated_at) * :rate)"


@dataclass
class BudgetQuery(Query):

    def take_token(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> float:
        now = self.clock()
        params = {"key": key, "rate": rate_per_second, "burst": burst, "cost": cost, "now": now}
        row = self.db.execute(
            "INSERT INTO budgets (key, tokens, updated_at, blocked_until) VALUES (:key, :burst - :cost, :now, 0) "
            f"ON CONFLICT (key) DO UPDATE SET tokens = {_REFILLED} - :cost, "
            "updated_at = max(budgets.updated_at, :now) RETURNING tokens, blocked_until",
            params,
        ).fetchone()
        return wait_for(row[0], row[1], now, rate_per_second)

    def try_take(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> bool:
        now = self.clock()
        params = {"key": key, "rate": rate_per_second, "burst": burst, "cost": cost, "now": now}
        rows = self.db.execute(
            "INSERT INTO budgets (key, tokens, updated_at, blocked_until) "
            "SELECT :key, :burst - :cost, :now, 0 WHERE :burst >= :cost "
            f"ON CONFLICT (key) DO UPDATE SET tokens = {_REFILLED} - :cost, "
            "updated_at = max(budgets.updated_at, :now) "
            f"WHERE budgets.blocked_until <= :now AND {_REFILLED} >= :cost - 1e-6 RETURNING tokens",
            params,
        ).fetchall()
        return bool(rows)

    def refund(self, key: str, burst: float, cost: float = 1.0) -> None:
        self.db.execute(
            "UPDATE budgets SET tokens = min(:burst, tokens + :cost) WHERE key = :key",
            {"key": key, "burst": burst, "cost": cost},
        )

    def penalize(self, key: str, retry_after: float) -> None:
        now = self.clock()
        self.db.execute(
            "INSERT INTO budgets (key, tokens, updated_at, blocked_until) VALUES (:key, 0, :now, :until) "
            "ON CONFLICT (key) DO UPDATE SET tokens = min(budgets.tokens, 0), "
            "updated_at = max(budgets.updated_at, :now), blocked_until = max(budgets.blocked_until, :until)",
            {"key": key, "now": now, "until": now + max(0.0, retry_after)},
        )


def wait_for(tokens: float, blocked_until: float, now: float, rate: float) -> float:
    """Seconds until a reservation that left `tokens` in the bucket may be used."""
    wait = max(0.0, blocked_until - now)
    if tokens < -1e-9:
        wait = max(wait, -tokens / rate if rate > 0 else float("inf"))
    return wait
