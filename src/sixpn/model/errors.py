"""The one error tree of sixpn.

Every failure a user can see is one of these. Adapters translate foreign exceptions once, with
``raise ... from``; the API maps each class to one HTTP status (``control/errors.py``) and the CLI
maps them back from the API's answer. Messages say what was being done and what is wrong.
"""

from __future__ import annotations


class SixpnError(Exception):
    """Base of every sixpn error. ``status`` is the HTTP status the API answers with."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class InvalidInput(SixpnError):
    """A value given by the caller is malformed or not allowed. ``field`` names it."""

    status = 422
    code = "invalid"


class NotFound(SixpnError):
    """The named object does not exist (or belongs to another organization)."""

    status = 404
    code = "not_found"


class AlreadyExists(SixpnError):
    """An object with that name already exists where names must be unique."""

    status = 409
    code = "exists"


class Conflict(SixpnError):
    """The request contradicts the current state (deleting a network that still has apps, ...)."""

    status = 409
    code = "conflict"


class Exhausted(SixpnError):
    """An address or ID space has no free value left."""

    status = 507
    code = "exhausted"


class Unauthorized(SixpnError):
    """No credential, or one that is not known."""

    status = 401
    code = "unauthorized"


class Forbidden(SixpnError):
    """A known credential that may not do this."""

    status = 403
    code = "forbidden"


class Gone(SixpnError):
    """A change-stream revision older than what the store still keeps."""

    status = 410
    code = "compacted"


class Unavailable(SixpnError):
    """A dependency (the store, the control plane) cannot be reached right now."""

    status = 503
    code = "unavailable"


class StoreContention(Unavailable):
    """A compare-and-swap kept losing to concurrent writers; the caller may retry."""

    code = "contention"


ERRORS_BY_CODE: dict[str, type[SixpnError]] = {
    cls.code: cls
    for cls in (
        SixpnError,
        InvalidInput,
        NotFound,
        AlreadyExists,
        Conflict,
        Exhausted,
        Unauthorized,
        Forbidden,
        Gone,
        Unavailable,
        StoreContention,
    )
}
