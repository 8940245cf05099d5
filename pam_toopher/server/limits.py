"""Limits a password holder meets: OTP guessing and push flooding.

Whoever holds a user's password can start as many logins as they like; each
one is a push to the user's phone (push fatigue: pushes until the user taps
approve) or a guess at the 6-digit code.  These are the decisions, pure; the
counting is in :class:`~.store.Store`, in the same transaction as the check.

A limit answers a 403 with one of this server's own error codes
(:class:`~.errors.LimitExceeded`), never 429 or 5xx: a client treats those
as an outage, and a client set to fail open on an outage would let the
attacker in.
"""
import math
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Optional, Tuple

from .errors import OTP_LOCKED, PUSH_LIMITED, LimitExceeded

#: A pending request older than this no longer counts against max_pending:
#: no module waits longer (auth_timeout + http_timeout < 120 s, sshd's
#: LoginGraceTime), so a request nobody answered cannot block the user for ever.
PENDING_WINDOW = 120.0
#: The window of max_per_minute.
RATE_WINDOW = 60.0


@dataclass(frozen=True)
class Limits:
    """The server's limits (``toopher-server serve`` options)."""

    otp_max_failures: int = 5        # wrong codes per pairing before a lockout
    otp_lockout: float = 60.0        # the first lockout, seconds; each next one doubles
    otp_lockout_max: float = 3600.0  # ... up to this
    max_pending: int = 3             # pending push requests per user
    max_per_minute: int = 10         # push requests per user in the last 60 s

    def __post_init__(self) -> None:
        if self.otp_max_failures < 1 or self.max_pending < 1 or self.max_per_minute < 1:
            raise ValueError("the OTP failures, pending and per-minute limits must be at least 1")
        if not (0 < self.otp_lockout <= self.otp_lockout_max
                and math.isfinite(self.otp_lockout_max)):
            raise ValueError("the OTP lockout must be a positive number of seconds, "
                             "at most its maximum")


def lockout_seconds(earlier_lockouts: int, limits: Limits) -> float:
    """How long the next lockout lasts: doubling with each lockout since the
    last valid code, capped."""
    return min(limits.otp_lockout * 2 ** min(earlier_lockouts, 32), limits.otp_lockout_max)


def otp_locked(seconds_left: float) -> LimitExceeded:
    return LimitExceeded("Too many wrong codes", code=OTP_LOCKED, retry_after=seconds_left)


def push_refusal(requests: Iterable[Tuple[float, bool]], now: float,
                 limits: Limits) -> Optional[LimitExceeded]:
    """Whether a new push for a user is refused, given the user's earlier
    push requests as (created at, still pending) pairs."""
    requests = list(requests)
    pending = sorted(created for created, is_pending in requests
                     if is_pending and created > now - PENDING_WINDOW)
    recent = sorted(created for created, _ in requests if created > now - RATE_WINDOW)
    if len(pending) >= limits.max_pending:
        # Answering one on the phone frees a place at once; otherwise the
        # oldest that counts stops counting at the end of its window.
        oldest = pending[len(pending) - limits.max_pending]
        return LimitExceeded(f"Too many push requests: {len(pending)} are waiting for an "
                             f"answer on the phone (at most {limits.max_pending})",
                             code=PUSH_LIMITED, retry_after=oldest + PENDING_WINDOW - now)
    if len(recent) >= limits.max_per_minute:
        oldest = recent[len(recent) - limits.max_per_minute]
        return LimitExceeded(f"Too many push requests: {len(recent)} in the last minute "
                             f"(at most {limits.max_per_minute})",
                             code=PUSH_LIMITED, retry_after=oldest + RATE_WINDOW - now)
    return None
