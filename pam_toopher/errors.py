"""The client's error tree: what went wrong with a call, by category.

A PAM module decides allow or deny from these, so each category means one
thing, and only one of them may ever let ``failmode = safe`` grant a login:

* :class:`ToopherUnavailableError` -- a genuine outage: the service could not
  be reached, gave no answer in time, or itself said it is failing (5xx, 429);
* :class:`ToopherRefusedError` -- the service answered and said no (any other
  4xx); its coded subclasses (704-707) are what the flow acts on;
* :class:`MalformedResponseError` -- something answered, but not with valid
  HTTP or not with what the protocol promises (a hostile or broken peer);
* :class:`ToopherTLSError` -- the certificate did not verify;
* :class:`DeadlineExceededError` -- the caller's own time limit ended the call;
* :class:`AnswerLostError` -- a POST may have reached the service, but the
  connection closed before any answer: the outcome is unknown;
* :class:`RequestNotSentError` -- the request could not even be built or sent
  (a bad URL, a local error).

:class:`ToopherApiError` is their common root: catch it for "any client
error", but nothing raises it directly.  This module imports nothing of the
HTTP stack, so code that only needs to catch errors (the flow, the CLI) can
import it on every login at no cost.
"""

from __future__ import annotations

# typing only for the type checker: the flow imports this module on every
# login, skipped ones included, and typing costs ~3 ms (docs/pam.md, "Speed").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Type

__all__ = ["ToopherApiError", "ToopherUnavailableError", "ToopherRefusedError",
           "ToopherTLSError", "DeadlineExceededError", "MalformedResponseError",
           "AnswerLostError", "RequestNotSentError", "UserDisabledError", "UserUnknownError",
           "TerminalUnknownError", "PairingDeactivatedError", "LimitRefusedError",
           "OtpLockedError", "PushLimitedError", "error_for_answer",
           "is_outage_status"]


class ToopherApiError(Exception):
    """The root of every client error (never raised itself: see the categories).

    ``status`` is the HTTP status (None when there was no answer),
    ``error_code`` the Toopher error code from the body (None when absent).
    """

    def __init__(self, message: str, status: Optional[int] = None,
                 error_code: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.error_code is not None:
            parts.append(f"error {self.error_code}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class ToopherUnavailableError(ToopherApiError):
    """A genuine outage, and the only error ``failmode = safe`` may grant on:
    the connection was refused or the host unreachable (DNS, routing), no
    answer came within the timeout, or the service itself answered 5xx or
    429 (after the retries the budget allowed).

    ``retry_after`` is the wait the service asked for (429), and
    ``not_processed`` says the request surely did not reach the service, so
    even a POST may be sent again.
    """

    def __init__(self, message: str, status: Optional[int] = None,
                 error_code: Optional[int] = None, *, retry_after: Optional[float] = None,
                 not_processed: bool = False):
        super().__init__(message, status, error_code)
        self.retry_after = retry_after
        self.not_processed = not_processed


class ToopherRefusedError(ToopherApiError):
    """The service answered and refused the call: a 4xx answer other than 429
    (bad credentials, unknown id, a wrong pairing phrase...).  The coded
    subclasses below are the refusals the flow acts on."""


class ToopherTLSError(ToopherApiError):
    """The server's certificate did not verify. Not an outage: someone may be
    in the middle, so callers must deny rather than fail open."""


class DeadlineExceededError(ToopherApiError):
    """The caller's deadline had passed, so the call was not sent, or it
    passed while the call was under way (a timeout cut short by it fired,
    the answer was still arriving, or the deadline watchdog cut the
    connection of a server still handshaking or trickling its answer).
    Our own limit, not a failure at the service: callers must not treat
    this as an outage (and so never as a reason to fail open)."""


class MalformedResponseError(ToopherApiError):
    """Something answered, but not with what the protocol promises: not valid
    HTTP (a bad status line, too many or too long headers, non-HTTP bytes, a
    TLS handshake broken off), a redirect, an encoding we did not ask for, or
    a body that is not the JSON the protocol describes.  A hostile or broken
    peer, never an outage."""


class AnswerLostError(ToopherApiError):
    """A POST may have reached the service, but the connection closed before
    any answer.  Sending it again could send a second push or count a second
    OTP guess, and calling it an outage would let ``failmode = safe`` grant a
    login whose code was never checked: the outcome is unknown, so refuse."""


class RequestNotSentError(ToopherApiError):
    """The request could not be built or sent (an invalid URL, a local
    error): a misconfiguration or a bug, not something the service did."""


class UserDisabledError(ToopherRefusedError):
    """704: the requester has switched Toopher off for this user."""


class UserUnknownError(ToopherRefusedError):
    """705: no such user, or the user has no active pairing: pair first."""


class TerminalUnknownError(ToopherRefusedError):
    """706: the (user, terminal identifier) pair has no named terminal yet."""


class PairingDeactivatedError(ToopherRefusedError):
    """707 (601 on older servers): the user deleted the pairing on the phone."""


class LimitRefusedError(ToopherRefusedError):
    """One of the service's limits refused the call (this project's server,
    docs/server.md).  A refusal, never an outage: a limit answered with 429
    would let ``failmode = safe`` grant the very attacker it stops.
    ``retry_after`` is the wait the service named, in seconds, if any."""

    def __init__(self, message: str, status: Optional[int] = None,
                 error_code: Optional[int] = None, *, retry_after: Optional[int] = None):
        super().__init__(message, status, error_code)
        self.retry_after = retry_after


class OtpLockedError(LimitRefusedError):
    """790: too many wrong codes for this pairing; codes are refused for a while."""


class PushLimitedError(LimitRefusedError):
    """791: too many login requests for this user; no push was sent."""


_LIMITS_BY_CODE: Dict[int, Type[LimitRefusedError]] = {
    790: OtpLockedError,
    791: PushLimitedError,
}

_REFUSALS_BY_CODE: Dict[int, Type[ToopherRefusedError]] = {
    704: UserDisabledError,
    705: UserUnknownError,
    706: TerminalUnknownError,
    707: PairingDeactivatedError,
}
# Older servers answered code 601 with these messages for a deactivated pairing.
_DEACTIVATED_MESSAGES = ("pairing has been deactivated", "pairing has not been authorized")


def is_outage_status(status: int) -> bool:
    """429 and 5xx: the service itself says it cannot serve the call now."""
    return status == 429 or 500 <= status < 600


def error_for_answer(status: int, body: Any) -> ToopherApiError:
    """The exception for a non-2xx, non-3xx answer whose body has been parsed
    (or is None): an outage for 429 and 5xx, a refusal for any other 4xx,
    and a malformed answer for a status HTTP does not define."""
    code = message = None
    if isinstance(body, dict):
        raw_code, raw_message = body.get("error_code"), body.get("error_message")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            code = raw_code
        if isinstance(raw_message, str):
            message = raw_message
    message = message or "the Toopher service refused the request"
    if is_outage_status(status):
        return ToopherUnavailableError(message, status=status, error_code=code)
    if not 400 <= status < 500:
        return MalformedResponseError(f"unexpected HTTP status: {message}", status=status,
                                      error_code=code)
    if code in _LIMITS_BY_CODE:
        wait = body.get("retry_after") if isinstance(body, dict) else None
        retry_after = wait if isinstance(wait, int) and not isinstance(wait, bool) \
            and 0 <= wait < 10 ** 9 else None
        return _LIMITS_BY_CODE[code](message, status=status, error_code=code,
                                     retry_after=retry_after)
    refusal = _REFUSALS_BY_CODE.get(code, ToopherRefusedError) if code is not None \
        else ToopherRefusedError
    if code == 601 or message.strip().lower() in _DEACTIVATED_MESSAGES:
        refusal = PairingDeactivatedError
    return refusal(message, status=status, error_code=code)
