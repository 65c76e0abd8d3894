"""Employees in PostgreSQL: chat users and what we know of them (email, name, activity)."""

from __future__ import annotations

from bridge.models import ChatUser, Employee
from bridge.store.postgres.guard import PgQuery
from bridge.store.rows import employee_from_row as _employee

KEY = "platform = %s AND workspace = %s AND user_id = %s"




class EmployeeQuery(PgQuery):

    async def get(self, platform: str, workspace: str, user_id: str) -> Employee | None:
        row = await self._row(f"SELECT * FROM employees WHERE {KEY}", (platform, workspace, user_id))
        return _employee(row) if row else None

    async def email_checked_at(self, platform: str, workspace: str, user_id: str) -> float | None:
        row = await self._row(f"SELECT email_checked_at FROM employees WHERE {KEY}", (platform, workspace, user_id))
        return row["email_checked_at"] if row else None

    async def save(self, user: ChatUser, *, email_checked: bool = False, active: bool = False) -> None:
        """One upsert whose conflict rule keeps every stored value the new row leaves NULL."""
        now = self.clock()
        await self._write(
            "INSERT INTO employees (platform, workspace, user_id, email, name, email_checked_at, last_active_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (platform, workspace, user_id) DO UPDATE SET "
            "email = COALESCE(EXCLUDED.email, employees.email), "
            "name = COALESCE(EXCLUDED.name, employees.name), "
            "email_checked_at = COALESCE(EXCLUDED.email_checked_at, employees.email_checked_at), "
            "last_active_at = COALESCE(EXCLUDED.last_active_at, employees.last_active_at)",
            (
                user.platform,
                user.workspace,
                user.user_id,
                user.email,
                user.name,
                now if email_checked else None,
                now if active else None,
            ),
        )

    async def by_email(self, email: str) -> list[Employee]:
        rows = await self._rows(
            "SELECT * FROM employees WHERE lower(email) = lower(%s) "
            "ORDER BY last_active_at IS NULL, last_active_at DESC, platform, workspace, user_id",
            (email,),
        )
        return [_employee(r) for r in rows]

    async def identities(self) -> list[tuple[str, float | None]]:
        rows = await self._rows(
            "SELECT lower(email) AS email, MAX(last_active_at) AS last_active_at FROM employees "
            "WHERE email IS NOT NULL AND email != '' GROUP BY lower(email) ORDER BY 1"
        )
        return [(r["email"], r["last_active_at"]) for r in rows]

    async def last_active(self) -> Employee | None:
        row = await self._row(
            "SELECT * FROM employees WHERE last_active_at IS NOT NULL ORDER BY last_active_at DESC LIMIT 1"
        )
        return _employee(row) if row else None

    async def active_people(self) -> int:
        row = await self._row(
            "SELECT COUNT(DISTINCT COALESCE(lower(email), platform || ':' || workspace || ':' || user_id)) AS n "
            "FROM employees WHERE last_active_at IS NOT NULL"
        )
        return int(row["n"]) if row else 0

    async def last_activity(self) -> float | None:
        row = await self._row("SELECT MAX(last_active_at) AS t FROM employees")
        return row["t"] if row else None
