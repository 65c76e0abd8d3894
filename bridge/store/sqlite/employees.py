"""Employees in SQLite: chat users and what we know of them (email, name, activity)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlite_utils.db import NotFoundError

from bridge.models import ChatUser, Employee
from bridge.store.rows import employee_from_row as _employee
from bridge.store.sqlite.guard import Query

TABLE = "employees"




@dataclass
class EmployeeQuery(Query):

    def get(self, platform: str, workspace: str, user_id: str) -> Employee | None:
        try:
            return _employee(self.db.table(TABLE).get((platform, workspace, user_id)))
        except NotFoundError:
            return None

    def email_checked_at(self, platform: str, workspace: str, user_id: str) -> float | None:
        rows = list(
            self.db.table(TABLE).rows_where(
                "platform = ? AND workspace = ? AND user_id = ?", [platform, workspace, user_id],
                select="email_checked_at", limit=1,
            )
        )
        return rows[0]["email_checked_at"] if rows else None

    def save(self, user: ChatUser, *, email_checked: bool = False, active: bool = False) -> None:
        """Upsert what we know of a chat user; never forgets a known email or name.

        One statement whose conflict rule keeps every stored value the new row leaves NULL, so
        concurrent writers from several processes never erase each other's knowledge.
        """
        now = self.clock()
        self.db.execute(
            "INSERT INTO employees (platform, workspace, user_id, email, name, email_checked_at, "
            "last_active_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (platform, workspace, user_id) DO UPDATE SET "
            "email = COALESCE(excluded.email, employees.email), "
            "name = COALESCE(excluded.name, employees.name), "
            "email_checked_at = COALESCE(excluded.email_checked_at, employees.email_checked_at), "
            "last_active_at = COALESCE(excluded.last_active_at, employees.last_active_at)",
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

    def by_email(self, email: str) -> list[Employee]:
        """Chat accounts of one employee, the most recently active first."""
        rows = self.db.table(TABLE).rows_where(
            "email = ? COLLATE NOCASE", [email], order_by="last_active_at IS NULL, last_active_at DESC"
        )
        return [_employee(r) for r in rows]

    def identities(self) -> list[tuple[str, float | None]]:
        """Every known employee email with its last activity, for the per-employee poller."""
        rows = self.db.query(
            "SELECT lower(email) AS email, MAX(last_active_at) AS last_active_at FROM employees "
            "WHERE email IS NOT NULL AND email != '' GROUP BY lower(email)"
        )
        return [(r["email"], r["last_active_at"]) for r in rows]

    def last_active(self) -> Employee | None:
        rows = list(
            self.db.table(TABLE).rows_where("last_active_at IS NOT NULL", order_by="last_active_at DESC", limit=1)
        )
        return _employee(rows[0]) if rows else None

    def active_people(self) -> int:
        """How many different people have asked something (chat accounts with the same email
        are one person)."""
        rows = list(
            self.db.query(
                "SELECT COUNT(DISTINCT COALESCE(lower(email), platform || ':' || workspace || ':' || "
                "user_id)) AS n FROM employees WHERE last_active_at IS NOT NULL"
            )
        )
        return int(rows[0]["n"]) if rows else 0

    def last_activity(self) -> float | None:
        rows = list(self.db.query("SELECT MAX(last_active_at) AS t FROM employees"))
        return rows[0]["t"] if rows else None
