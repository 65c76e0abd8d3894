"""The API's single error envelope: `{"error": {"code", "message"}}`.

Handlers raise `ApiError`; the server middleware turns it into the JSON response, so every
failure path produces exactly the documented shape.
"""

from __future__ import annotations

from aiohttp import web

# Default code for an HTTP status when none is given (aiohttp's own 404/405 etc.).
CODES = {
    400: "INVALID_INPUT",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "INVALID_REQUEST",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
}


class ApiError(Exception):
    """An error answer; `flat=True` omits the `error` wrapper (token endpoint style)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        flat: bool = False,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.flat = flat

    def response(self) -> web.Response:
        body = {"code": self.code, "message": self.message}
        return web.json_response(
            body if self.flat else {"error": body}, status=self.status, headers=self.headers
        )


def bad_input(message: str) -> ApiError:
    return ApiError(400, "INVALID_INPUT", message)


def not_found(what: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} not found")
