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


class LimitExceeded(ServerError):
    """403 with one of this server's own codes (OTP_LOCKED, PUSH_LIMITED):
    a limit refused the call.  Deliberately a 4xx and never 429 or 5xx,
    which clients (pam_toopher among them) treat as an outage -- and
    ``failmode = safe`` would then let the caller in.  ``retry_after`` (whole
    seconds) is in the message and, for clients that read it, in the body."""

    status = 403

    def __init__(self, message: str, *, code: int, retry_after: float):
        self.retry_after = max(1, int(-(-retry_after // 1)))  # rounded up, at least 1 s
        super().__init__(f"{message}; try again in {self.retry_after} s", code=code)

    def body(self) -> dict:
        return dict(super().body(), retry_after=self.retry_after)


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

# This server's own codes, away from Toopher's 6xx/7xx ones and from the
# HTTP statuses it mirrors as codes (toopher-api.md; docs/server.md).
#: Too many wrong OTP codes for the pairing: codes are refused for a while.
OTP_LOCKED = 790
#: Too many push requests for the user (pending, or in the last minute).
PUSH_LIMITED = 791
