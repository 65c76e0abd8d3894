"""Write budgets shared by every process (token buckets), in PostgreSQL.

Each operation is one `INSERT … ON CONFLICT DO UPDATE … RETURNING`: the row lock serialises the
replicas drawing from one key, so together they never take more than the bucket gives.
"""

from __future__ import annotations

from bridge.store.postgres.guard import PgQuery
from bridge.store.sqlite.budgets import wait_for

_REFILLED = "LEAST(%(burst)s, budgets.tokens + GREATEST(0.0, %(now)s - budgets.updated_at) * %(rate)s)"


class BudgetQuery(PgQuery):

    async def take_token(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> float:
        now = self.clock()
        rows = await self._write_returning(
            "INSERT INTO budgets (key, tokens, updated_at, blocked_until) "
            "VALUES (%(key)s, %(burst)s - %(cost)s, %(now)s, 0) "
            f"ON CONFLICT (key) DO UPDATE SET tokens = {_REFILLED} - %(cost)s, "
            "updated_at = GREATEST(budgets.updated_at, %(now)s) RETURNING tokens, blocked_until",
            _params(key, rate_per_second, burst, cost, now),
        )
        return wait_for(rows[0]["tokens"], rows[0]["blocked_until"], now, rate_per_second)

    async def try_take(self, key: str, rate_per_second: float, burst: float, cost: float = 1.0) -> bool:
        now = self.clock()
        rows = await self._write_returning(
            "INSERT INTO budgets (key, tokens, updated_at, blocked_until) "
            "SELECT %(key)s, %(burst)s - %(cost)s, %(now)s, 0 WHERE %(burst)s >= %(cost)s "
            f"ON CONFLICT (key) DO UPDATE SET tokens = {_REFILLED} - %(cost)s, "
            "updated_at = GREATEST(budgets.updated_at, %(now)s) "
            f"WHERE budgets.blocked_until <= %(now)s AND {_REFILLED} >= %(cost)s - 1e-6 RETURNING tokens",
            _params(key, rate_per_second, burst, cost, now),
        )
        return bool(rows)

    async def refund(self, key: str, burst: float, cost: float = 1.0) -> None:
        await self._write(
            "UPDATE budgets SET tokens = LEAST(%(burst)s, tokens + %(cost)s) WHERE key = %(key)s",
            {"key": key, "burst": float(burst), "cost": float(cost)},
        )

    async def penalize(self, key: str, retry_after: float) -> None:
        now = self.clock()
        await self._write(
            "INSERT INTO budgets (key, tokens, updated_at, blocked_until) VALUES (%(key)s, 0, %(now)s, %(until)s) "
            "ON CONFLICT (key) DO UPDATE SET tokens = LEAST(budgets.tokens, 0), "
            "updated_at = GREATEST(budgets.updated_at, %(now)s), "
            "blocked_until = GREATEST(budgets.blocked_until, %(until)s)",
            {"key": key, "now": float(now), "until": float(now + max(0.0, retry_after))},
        )


def _params(key: str, rate: float, burst: float, cost: float, now: float) -> dict[str, object]:
    # floats, so PostgreSQL infers double precision for every parameter (an int would be bigint)
    return {"key": key, "rate": float(rate), "burst": float(burst), "cost": float(cost), "now": float(now)}
