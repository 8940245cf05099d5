"""One exception hierarchy for the server, the phone simulator and the CLI.

Each error carries the HTTP status and Toopher ``error_code`` it is answered
with, so the storage layer can say *what* went wrong and the HTTP layer only
has to serialise it.
"""

from typing import Optional


class ServerError(Exception):
    """Root of every error the server, phone simulator and CLI report."""

    status = 400

    def __init__(self, message: str, *, status: Optional[int] = None,
                 code: Optional[int] = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code if code is not None else self.status

    def body(self) -> dict:
        return {"error_code": self.code, "error_message": self.message}


class BadRequest(ServerError):
    status = 400


class Unauthorized(ServerError):
    status = 401


class Forbidden(ServerError):
    status = 403


class NotFound(ServerError):
    status = 404


class Conflict(ServerError):
    """409; ``code`` distinguishes the zero-storage answers (704-707)."""

    status = 409


# Zero-storage error codes from the Toopher API (toopher-api.md).
USER_DISABLED = 704
USER_UNKNOWN = 705
TERMINAL_UNKNOWN = 706
PAIRING_DEACTIVATED = 707
#: Older servers' code for a pairing that is pending, refused or deactivated.
PAIRING_NOT_AUTHORIZED = 601
