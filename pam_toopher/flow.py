"""The story of one login, from "who is this" to one recorded decision.

Nothing here knows PAM: the hook (pam_hook.py) and the admin command
(cli.py) hand in a :class:`LoginRequest`, a :class:`Conversation` to talk to
the person, a factory for the API client and a clock, and get back a
:class:`Decision`.  Read :func:`run` and :func:`decide` top to bottom.

The HTTP stack is imported only once the policy has decided that this user
needs a second factor: a user the module steps aside for must not pay the
~190 ms that requests and requests-oauthlib cost to import.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import time
from contextlib import nullcontext
from fnmatch import fnmatchcase

from pam_toopher.audit import (LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING,
                               AuditTrail, format_fields)
from pam_toopher.config import Config, ConfigError, load_config
# The client's errors import no HTTP stack (0.3 ms), so they are imported here.
from pam_toopher.errors import (DeadlineExceededError, OtpLockedError, PairingDeactivatedError,
                                PushLimitedError, TerminalUnknownError, ToopherApiError,
                                ToopherRefusedError, ToopherTLSError, ToopherUnavailableError,
                                UserDisabledError, UserUnknownError)
from pam_toopher.text import sanitize

# typing only for the type checker: importing it costs every login ~3 ms
# (pam_toopher/record.py, docs/pam.md "Speed").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import (Any, Callable, ContextManager, Optional, Protocol, Sequence, Tuple,
                        TypeVar)
    from typing import NamedTuple as Record

    from pam_toopher.models import (AuthenticationStatus, PairingStatus, TerminalStatus,
                                    UserStatus)
else:
    from pam_toopher.record import Protocol, Record

__all__ = ["Outcome", "Interrupted", "LoginRequest", "Decision", "Conversation", "Clock",
           "SystemClock", "ToopherClient",
           "Account", "lookup_account", "needs_second_factor", "describe_action",
           "default_api_factory", "wait_until_answered", "decide", "run", "audit_fields"]

# Each status call asks the server to hold a pending answer this long; short
# enough that a lost connection is noticed, long enough to cost ~0.1 req/s.
LONG_POLL_PER_CALL = 10.0
# A server without long poll answers at once: poll no faster than this.
MIN_POLL_INTERVAL = 1.0
# Total time the client may spend retrying one call during a login: an
# outage should reach failmode quickly rather than eat the user's wait.
RETRY_BUDGET = 3.0
MAX_ACTION_LENGTH = 200
OTP_LENGTH = 6
ABORTED_REASON = "cancelled with Ctrl-C"
UNRECORDED_REASON = "the decision could be recorded neither in syslog nor in the audit file"


class Outcome(enum.Enum):
    """How a login ended; the value is what the audit line says."""

    GRANTED = "granted"                    # the phone (or a valid OTP) approved our request
    DENIED = "denied"                      # the phone said no
    TIMEOUT = "timeout"                    # no answer within auth_timeout
    WRONG_OTP = "wrong_otp"                # the typed code was not valid
    SKIPPED = "skipped"                    # the policy does not ask this user for 2FA
    DISABLED = "disabled"                  # Toopher is switched off for this user (704)
    UNPAIRED_ALLOWED = "unpaired_allowed"  # not paired, unpaired = allow
    UNPAIRED_DENIED = "unpaired_denied"    # not paired, unpaired = deny (or pairing declined)
    PAIRING_FAILED = "pairing_failed"      # inline pairing refused or rejected
    UNAVAILABLE = "unavailable"            # service unreachable, failmode = secure
    FAILED_OPEN = "failed_open"            # service unreachable, failmode = safe
    TLS_ERROR = "tls_error"                # certificate did not verify: never fails open
    API_ERROR = "api_error"                # 401, other 4xx, malformed answer
    CONFIG_ERROR = "config_error"          # config missing, insecure or invalid
    USER_UNKNOWN = "user_unknown"          # not an account on this host
    ABORTED = "aborted"                    # the user pressed Ctrl-C while we waited (sudo)
    OTP_LOCKED = "otp_locked"              # too many wrong codes: the service refuses codes
    RATE_LIMITED = "rate_limited"          # too many pushes for the user: the service refuses
    INTERNAL_ERROR = "internal_error"      # a bug; the traceback goes to syslog


_SEVERITY = {
    Outcome.GRANTED: LOG_INFO, Outcome.SKIPPED: LOG_INFO, Outcome.DISABLED: LOG_INFO,
    Outcome.UNPAIRED_ALLOWED: LOG_WARNING, Outcome.FAILED_OPEN: LOG_WARNING,
    Outcome.UNAVAILABLE: LOG_ERR, Outcome.TLS_ERROR: LOG_ERR, Outcome.API_ERROR: LOG_ERR,
    Outcome.CONFIG_ERROR: LOG_ERR, Outcome.INTERNAL_ERROR: LOG_ERR,
    # Someone may be guessing codes or flooding the user's phone.
    Outcome.OTP_LOCKED: LOG_WARNING, Outcome.RATE_LIMITED: LOG_WARNING,
}


class Interrupted(BaseException):
    """Raised (by a signal handler the hook installs) when the user cancels.
    A BaseException so that no ``except Exception`` on the way swallows it."""


# The records below are NamedTuples to the type checker and pam_toopher.record
# Records at run time, not dataclasses: a skipped login must not pay ~10 ms
# for importing dataclasses and typing (see docs/pam.md, Speed).

class LoginRequest(Record):
    """What PAM (or the admin command) knows about this login."""

    user: str
    service: str
    rhost: Optional[str] = None
    tty: Optional[str] = None
    command: Optional[str] = None      # for sudo: the command line being authorized
    # Why the request is refused before anything else (a user name that is
    # not valid UTF-8: it cannot be the account it may look like).
    refused: Optional[str] = None
    # True where info messages are held back until the next prompt (sshd):
    # the user then learns about the push only through a prompt.
    messages_deferred: bool = False


class Decision(Record):
    outcome: Outcome
    reason: str
    request_id: Optional[str] = None
    elapsed: float = 0.0
    details: Tuple[str, ...] = ()      # traceback lines, for syslog only
    retry_after: Optional[int] = None  # a limit's wait, in seconds, for the user
    answered_by: Optional[str] = None  # the service URL that answered, when not the first


class Conversation(Protocol):
    """How the flow talks to the person logging in."""

    def info(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...

    def prompt_echo_on(self, text: str) -> Optional[str]: ...

    def prompt_echo_off(self, text: str) -> Optional[str]: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class ToopherClient(Protocol):
    """What the flow and the admin command need from a Toopher client:
    :class:`pam_toopher.client.ToopherApi`, or the tests' FakeToopher.
    ``deadline`` (a monotonic time, or None) bounds every call."""

    deadline: Optional[float]

    def authenticate_by_user_name(self, user_name: str, terminal_name_extra: str,
                                  action_name: Optional[str] = None,
                                  **kwargs: Any) -> AuthenticationStatus: ...

    def get_authentication_status(self, authentication_request_id: str,
                                  long_poll: Optional[float] = None) -> AuthenticationStatus: ...

    def authenticate_with_otp(self, authentication_request_id: str,
                              otp: str) -> AuthenticationStatus: ...

    def create_user_terminal(self, user_name: str, terminal_name: str,
                             requester_terminal_id: str) -> TerminalStatus: ...

    def pair(self, pairing_phrase: str, user_name: str) -> PairingStatus: ...

    def get_pairing_status(self, pairing_id: str,
                           long_poll: Optional[float] = None) -> PairingStatus: ...

    def find_user_by_name(self, user_name: str) -> UserStatus: ...

    def set_toopher_enabled_for_user(self, user_name: str, enabled: bool) -> UserStatus: ...

    def reset_user(self, user_name: str) -> object: ...

    def failover_url(self) -> Optional[str]: ...

    def close(self) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


if TYPE_CHECKING:
    ApiFactory = Callable[[Config], ToopherClient]
else:
    ApiFactory = "Callable[[Config], ToopherClient]"  # for run-time importers (cli.py)


def default_api_factory(config: Config) -> ToopherClient:
    """The real client; imported here, not at the top, to keep skips cheap."""
    from pam_toopher.api import ToopherApi

    return ToopherApi(config.consumer_key, config.consumer_secret.reveal(), config.api_urls,
                      ca_bundle=config.ca_bundle, timeout=config.http_timeout,
                      retry_budget=RETRY_BUDGET)


# ------------------------------------------------------------- the story

def run(request: LoginRequest, conversation: Conversation, *, config_path: str,
        audit: AuditTrail, api_factory: ApiFactory = default_api_factory,
        clock: Clock = SystemClock(),
        load: Callable[[str], Config] = load_config, debug: bool = False,
        interruptible: Callable[[], ContextManager[Any]] = nullcontext) -> Decision:
    """Load the config, decide, record exactly one audit line, tell the user.
    ``debug`` (the PAM argument) adds debug lines like the config's ``debug``.
    Inside ``interruptible()`` (the decision only, not telling and recording)
    the hook may raise :class:`Interrupted`; the login is then refused."""
    started = clock.now()
    config: Optional[Config] = None
    try:
        config = load(config_path)
        with interruptible():
            decision = decide(request, config, conversation, api_factory, clock,
                              debug=_debug_logger(audit) if debug or config.debug else None)
    except Interrupted:
        decision = Decision(Outcome.ABORTED, ABORTED_REASON)
    except ConfigError as exc:
        decision = Decision(Outcome.CONFIG_ERROR, str(exc))
    except Exception as exc:  # a bug: refuse, and leave the traceback for the admin
        import traceback  # here only: 10 ms that a normal login need not pay

        decision = Decision(Outcome.INTERNAL_ERROR, f"unexpected {type(exc).__name__}",
                            details=tuple(traceback.format_exc().splitlines()))
    decision = decision._replace(elapsed=clock.now() - started)
    recorded = audit.record(_SEVERITY.get(decision.outcome, LOG_NOTICE),
                            format_fields(audit_fields(request, decision)), decision.details,
                            path=config.audit_log if config else None)
    if not recorded and decision.outcome in (Outcome.GRANTED, Outcome.FAILED_OPEN):
        # Neither syslog nor the audit file took the line (a caller's limits, a
        # full disk, no daemon): a way in that leaves no trace is refused.
        decision = decision._replace(outcome=Outcome.INTERNAL_ERROR, reason=UNRECORDED_REASON)
    _tell_outcome(conversation, decision)
    return decision


def decide(request: LoginRequest, config: Config, conversation: Conversation,
           api_factory: ApiFactory, clock: Clock,
           debug: Optional[Callable[[str], None]] = None) -> Decision:
    """Everything between "who is this" and the outcome."""
    if request.refused:
        return Decision(Outcome.USER_UNKNOWN, request.refused)
    account = lookup_account(request.user)
    if account is None:
        return Decision(Outcome.USER_UNKNOWN, "no such local account")
    if not needs_second_factor(config, account):
        return Decision(Outcome.SKIPPED, "the users/groups policy does not require 2FA")

    deadline = clock.now() + config.auth_timeout
    client = api_factory(config)
    # The last call may start just before the wait ends; it gets one HTTP
    # timeout more and no retry, so the module ends well inside LoginGraceTime.
    client.deadline = deadline + config.http_timeout
    session = _Session(request, config, conversation, client, clock, deadline, debug)
    try:
        decision = _second_factor(session)
    finally:
        client.close()
    # Which instance answered, for the audit line, when it was not the first.
    return decision._replace(answered_by=client.failover_url())


def _second_factor(session: _Session) -> Decision:
    try:
        return session.second_factor()
    except Interrupted:
        return Decision(Outcome.ABORTED, ABORTED_REASON, session.request_id)
    except ToopherTLSError as exc:
        return Decision(Outcome.TLS_ERROR, str(exc), session.request_id)
    except DeadlineExceededError as exc:  # our own limit, not an outage
        return Decision(Outcome.TIMEOUT, str(exc), session.request_id)
    except ToopherUnavailableError as exc:  # the only category failmode applies to
        outcome = Outcome.FAILED_OPEN if session.config.failmode == "safe" \
            else Outcome.UNAVAILABLE
        return Decision(outcome, str(exc), session.request_id)
    except OtpLockedError as exc:  # a limit denies whatever failmode says
        return Decision(Outcome.OTP_LOCKED, str(exc), session.request_id,
                        retry_after=exc.retry_after)
    except PushLimitedError as exc:
        return Decision(Outcome.RATE_LIMITED, str(exc), session.request_id,
                        retry_after=exc.retry_after)
    except ToopherApiError as exc:  # other refusals (401, 4xx), malformed, answer lost
        return Decision(Outcome.API_ERROR, str(exc), session.request_id)


class _Session:
    """One conversation with Toopher about one login, within one deadline.

    ``deadline`` covers every wait for the phone (pairing included), so the
    module ends within auth_timeout plus one HTTP call of its start.
    """

    def __init__(self, request: LoginRequest, config: Config, conversation: Conversation,
                 client: ToopherClient, clock: Clock, deadline: float,
                 debug: Optional[Callable[[str], None]]):
        self.request, self.config, self.conversation = request, config, conversation
        self.client, self.clock, self.deadline = client, clock, deadline
        self.debug = debug or (lambda message: None)
        self.request_id: Optional[str] = None

    def second_factor(self) -> Decision:
        offered = self.offer_code_before_push()
        if offered and not is_otp(offered):  # refused before any push is sent
            return Decision(Outcome.WRONG_OTP, f"the answer is not a {OTP_LENGTH}-digit code")
        try:
            status = self.start_authentication()
        except UserDisabledError:
            return Decision(Outcome.DISABLED, "Toopher is disabled for this user")
        except (UserUnknownError, PairingDeactivatedError) as exc:
            refusal = self.handle_unpaired(exc)
            if refusal is not None:
                return refusal
            status = self.start_authentication()
        if offered:
            return self.check_code(status, offered)
        return self.await_answer(status, told=offered is not None)

    def offer_code_before_push(self) -> Optional[str]:
        """Where info messages are held back (sshd), nothing said after the
        push reaches the user before a prompt would, and a prompt after the
        push costs a keypress after approving.  So the one keypress comes
        first: Enter sends the push (and the approval alone then logs in),
        or the code from the app is typed at once.  Returns the answer ("" for
        Enter), or None where messages show at once (the push goes first).
        The wait for the phone is counted from the push, not from here."""
        if not self.request.messages_deferred or self._code_prompt_at_once():
            return None
        if self.config.otp_fallback:
            text = ("Toopher: press Enter to send a push to your phone, or type the "
                    f"{OTP_LENGTH}-digit code from your app: ")
        else:
            text = "Toopher: press Enter to send a push to your phone: "
        answer = self.ask(text)
        self.deadline = self.clock.now() + self.config.auth_timeout
        self.client.deadline = self.deadline + self.config.http_timeout
        return answer if self.config.otp_fallback else ""

    def _code_prompt_at_once(self) -> bool:
        """otp_prompt_after = 0: the one prompt of 0.1.0 right after the push,
        "approve, then press Enter (or type the code)", in every service."""
        return self.config.otp_fallback and self.config.otp_prompt_after <= 0

    def start_authentication(self) -> AuthenticationStatus:
        """Send the push; a host the user has never logged in to from is
        registered as a terminal first (706), once."""
        try:
            status = self._initiate()
        except TerminalUnknownError:
            self.debug(f"registering terminal {self.config.terminal_id!r} "
                       f"for {self.request.user!r}")
            self.client.create_user_terminal(self.request.user, self.config.terminal_name,
                                             self.config.terminal_id)
            status = self._initiate()
        self.request_id = status.id
        self.debug(f"push sent: request {status.id}, pending={status.pending}")
        return status

    def _initiate(self) -> AuthenticationStatus:
        return self.client.authenticate_by_user_name(
            self.request.user, self.config.terminal_id,
            action_name=describe_action(self.config, self.request),
            automation_allowed=self.config.automation_allowed)

    def handle_unpaired(self, why: Exception) -> Optional[Decision]:
        """None once the user has paired; otherwise the decision."""
        unpaired = self.config.unpaired
        if unpaired == "allow":
            return Decision(Outcome.UNPAIRED_ALLOWED, f"not paired: {why}")
        if unpaired == "deny":
            self.conversation.error(
                f"Toopher: {sanitize(self.request.user, 64)} is not paired with Toopher. "
                f"Ask an administrator to run: toopher-pam pair {sanitize(self.request.user, 64)}")
            return Decision(Outcome.UNPAIRED_DENIED, f"not paired: {why}")
        return self.pair_inline()

    def pair_inline(self) -> Optional[Decision]:
        phrase = self.ask("Toopher: you are not paired yet. Enter the pairing phrase shown "
                          "in the Toopher app (or just press Enter to cancel): ")
        if not phrase:
            return Decision(Outcome.UNPAIRED_DENIED, "no pairing phrase given")
        # The service has just said this user has no second factor: an outage
        # while pairing (whose timing the password holder picks) must not let
        # failmode = safe grant on the password alone.
        try:
            pairing = self.client.pair(phrase, self.request.user)
        except ToopherRefusedError as exc:  # the service refused this phrase
            return Decision(Outcome.PAIRING_FAILED, f"pairing refused: {exc}")
        except ToopherUnavailableError as exc:
            return Decision(Outcome.UNAVAILABLE, f"pairing not completed: {exc}")
        self.announce("accept the pairing on your phone")
        try:
            pairing = wait_until_answered(
                lambda long_poll: self.client.get_pairing_status(pairing.id, long_poll=long_poll),
                self.deadline, self.clock)
        except ToopherUnavailableError as exc:
            return Decision(Outcome.UNAVAILABLE, f"pairing not completed: {exc}")
        if pairing.pending:
            return Decision(Outcome.TIMEOUT, "the pairing was not accepted in time")
        if not pairing.enabled:
            return Decision(Outcome.PAIRING_FAILED, "the pairing was refused on the phone")
        self.debug(f"{self.request.user!r} paired inline")
        return None

    def ask(self, text: str) -> str:
        """Ask the person (echo on).  The time a person takes to answer is
        theirs, bounded by the application (sshd's LoginGraceTime, sudo's
        passwd_timeout): the call that follows still gets one full HTTP
        timeout, so a late answer is checked, not mistaken for an outage."""
        answer = (self.conversation.prompt_echo_on(text) or "").strip()
        self.client.deadline = max(self.deadline, self.clock.now()) + self.config.http_timeout
        return answer

    def announce(self, what: str, code_in: Optional[float] = None) -> None:
        """Tell the user what to do on the phone before waiting for it.  Where
        info messages are held back (sshd) only a prompt reaches the user in
        time, so ask one; its answer is not needed.  ``code_in``: seconds
        until the prompt for the code from the app."""
        if self.request.messages_deferred:
            self.ask(f"Toopher: {what}, then press Enter: ")
            return
        later = "" if code_in is None else \
            f"; phone offline? a prompt for the code from your app comes in {code_in:.0f} s"
        self.conversation.info(f"Toopher: {what} (waiting up to {self.remaining():.0f} s"
                               f"{later})...")

    def await_answer(self, status: Any, told: bool = False) -> Decision:
        """Wait for the phone after the push.  The approval alone ends the
        wait (no keypress after it), except with otp_prompt_after = 0.  With
        otp_fallback, a user whose phone has not answered after
        otp_prompt_after seconds is asked for the code from the app (Enter
        keeps waiting).  ``told``: the user already knows a push is coming
        (sshd's prompt before it)."""
        if not status.pending:
            return self.judge(status, by_otp=False)
        config = self.config
        if self._code_prompt_at_once():
            answer = self.ask("Toopher: approve the request on your phone, then press "
                              f"Enter (or type the {OTP_LENGTH}-digit code from the app): ")
            if answer:
                return self.check_code(status, answer)
            return self.judge(self.wait(status, self.deadline), by_otp=False)
        if not told:
            # Promise the prompt for the code only if it comes before the wait ends
            # (inline pairing may have used most of it).
            code_comes = config.otp_fallback and config.otp_prompt_after < self.remaining()
            self.announce("approve the request on your phone",
                          code_in=config.otp_prompt_after if code_comes else None)
        if config.otp_fallback:
            status = self.wait(status, min(self.deadline,
                                           self.clock.now() + config.otp_prompt_after))
            if not status.pending or self.clock.now() >= self.deadline:
                return self.judge(status, by_otp=False)
            answer = self.ask("Toopher: no answer from your phone yet. Type the "
                              f"{OTP_LENGTH}-digit code from your app, or press Enter to "
                              "keep waiting: ")
            if answer:
                return self.check_code(status, answer)
        return self.judge(self.wait(status, self.deadline), by_otp=False)

    def wait(self, status: Any, until: float) -> Any:
        """Long-poll our request's status until answered or ``until``."""
        if not status.pending:
            return status
        request_id = status.id
        return wait_until_answered(
            lambda long_poll: self.client.get_authentication_status(
                request_id, long_poll=long_poll),
            until, self.clock)

    def check_code(self, status: Any, answer: str) -> Decision:
        """The code the user typed, checked by the service against our request."""
        if not is_otp(answer):
            return Decision(Outcome.WRONG_OTP, f"the answer is not a {OTP_LENGTH}-digit code",
                            status.id)
        try:
            checked = self.client.authenticate_with_otp(status.id, answer)
        except ToopherUnavailableError as exc:
            # The password holder chooses when a code is sent and can guess
            # again at will: a code is granted only on the service's verdict,
            # so an outage while it is checked (a 5xx, no answer in time)
            # refuses under any failmode rather than failing open per guess.
            return Decision(Outcome.UNAVAILABLE, f"the code was not checked: {exc}", status.id)
        return self.judge(checked, by_otp=True)

    def judge(self, status: Any, by_otp: bool) -> Decision:
        """Granted only for our request, answered, approved, and not by an
        automation rule unless automation is allowed."""
        if status.id != self.request_id:
            return Decision(Outcome.API_ERROR, "the answer is about another request",
                            self.request_id)
        if status.pending:
            return Decision(Outcome.TIMEOUT, f"no answer within {self.config.auth_timeout:g} s",
                            status.id)
        reason = sanitize(status.reason or "", 200)
        if not status.granted:
            outcome = Outcome.WRONG_OTP if by_otp else Outcome.DENIED
            return Decision(outcome, reason or "denied", status.id)
        if status.automated and not self.config.automation_allowed:
            return Decision(Outcome.DENIED, "approved by an automation rule, which "
                            "automation_allowed = no refuses", status.id)
        return Decision(Outcome.GRANTED, reason or ("valid OTP" if by_otp else "approved"),
                        status.id)

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock.now())


# -------------------------------------------------- small decisions, pure

def retry_wait(seconds: Optional[int]) -> str:
    """When to try again, for the user: "in N min" (rounded up), else "later"."""
    if seconds is None:
        return "later"
    return f"in {max(1, -(-seconds // 60))} min"


def is_otp(answer: str) -> bool:
    return len(answer) == OTP_LENGTH and answer.isascii() and answer.isdigit()


class Account(Record):
    name: str
    groups: Tuple[str, ...]


def lookup_account(user: str) -> Optional[Account]:
    """The local (NSS) account and its group names, or None."""
    try:
        entry = pwd.getpwnam(user)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return None
    gids = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return Account(entry.pw_name, tuple(_group_name(gid) for gid in gids))


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def needs_second_factor(config: Config, account: Account) -> bool:
    """The user needs 2FA when ``users`` matches the user name AND ``groups``
    matches one of the user's groups (see ``_patterns_match``)."""
    return (_patterns_match(config.users, (account.name,))
            and _patterns_match(config.groups, account.groups))


def _patterns_match(patterns: Sequence[str], names: Sequence[str]) -> bool:
    """pam_duo-style lists: a ``!pattern`` matching any name excludes, and
    exclusion wins; otherwise some positive pattern must match some name.
    A list of exclusions only (``!nopush``) means "everyone except"."""
    positive = [p for p in patterns if not p.startswith("!")] or ["*"]
    negative = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatchcase(n, p) for p in negative for n in names):
        return False
    return any(fnmatchcase(n, p) for p in positive for n in names)


def describe_action(config: Config, request: LoginRequest) -> str:
    """The text the phone shows.  By default: the service, the command for
    sudo, and where the login comes from; or the admin's ``action`` template."""
    if config.action is not None:
        fields = {"service": request.service, "user": request.user,
                  "rhost": request.rhost or "", "tty": request.tty or "",
                  "command": request.command or "", "host": config.terminal_name}
        text = config.action.format_map(fields)
    else:
        text = f"{request.service}: {request.command}" if request.command \
            else f"{request.service} login"
        if request.rhost:
            text += f" from {request.rhost}"
    # Shaped once, whole: nothing invisible, blank runs counted, and a long
    # text keeps its end (the rest of a command, a host's domain) visible.
    return sanitize(text, MAX_ACTION_LENGTH)


if TYPE_CHECKING:
    class _Answer(Protocol):
        @property
        def pending(self) -> bool: ...

    T = TypeVar("T", bound=_Answer)


def wait_until_answered(fetch: Callable[[Optional[float]], T], deadline: float,
                        clock: Clock, on_poll: Optional[Callable[[float], None]] = None) -> T:
    """Ask ``fetch(long_poll)`` until its answer is no longer pending or the
    deadline passes; returns the last answer (still pending on timeout).

    The first call goes out at once (the phone may have answered while the
    user read the prompt).  Each call asks the server to hold a pending answer
    for up to LONG_POLL_PER_CALL s but never past the deadline; a server that
    answers sooner than asked while still pending is polled at most once per
    MIN_POLL_INTERVAL.  ``on_poll(remaining)`` lets a terminal show progress.
    """
    while True:
        remaining = deadline - clock.now()
        asked = min(LONG_POLL_PER_CALL, remaining) if remaining > 0 else None
        sent_at = clock.now()
        status = fetch(asked)
        if not status.pending:
            return status
        now = clock.now()
        if now >= deadline:
            return status
        if on_poll is not None:
            on_poll(deadline - now)
        took = now - sent_at
        if took < MIN_POLL_INTERVAL:
            clock.sleep(min(MIN_POLL_INTERVAL - took, deadline - now))


# ------------------------------------------------------- telling, logging

def audit_fields(request: LoginRequest, decision: Decision) -> list:
    return [("outcome", decision.outcome.value), ("user", request.user),
            ("service", request.service), ("rhost", request.rhost), ("tty", request.tty),
            ("request", decision.request_id), ("elapsed", f"{decision.elapsed:.2f}s"),
            ("reason", decision.reason or "-")] + (
                [("answered_by", decision.answered_by)] if decision.answered_by else [])


_USER_MESSAGES = {
    Outcome.DENIED: "Toopher: the request was denied.",
    Outcome.TIMEOUT: "Toopher: no answer from your phone in time.",
    Outcome.WRONG_OTP: "Toopher: that code is not valid.",
    Outcome.PAIRING_FAILED: "Toopher: pairing failed.",
    Outcome.UNAVAILABLE: "Toopher: the service cannot be reached; login refused.",
    Outcome.FAILED_OPEN: "Toopher: the service cannot be reached; "
                         "allowed without a second factor.",
    Outcome.TLS_ERROR: "Toopher: the service's certificate is not trusted; login refused.",
    Outcome.API_ERROR: "Toopher: the service refused the request; see the system log.",
    Outcome.CONFIG_ERROR: "Toopher: the module is misconfigured; see the system log.",
    Outcome.INTERNAL_ERROR: "Toopher: internal error; see the system log.",
    Outcome.ABORTED: "Toopher: cancelled.",
    Outcome.OTP_LOCKED: "Toopher: too many wrong codes; try again {wait}.",
    Outcome.RATE_LIMITED: "Toopher: too many login requests; answer those on your phone "
                          "or try again {wait}.",
}


def _tell_outcome(conversation: Conversation, decision: Decision) -> None:
    message = _USER_MESSAGES.get(decision.outcome)
    if message is None:
        return
    if decision.outcome is Outcome.DENIED and decision.reason not in ("", "denied"):
        message = f"{message[:-1]}: {sanitize(decision.reason, 120)}"
    if decision.outcome in (Outcome.OTP_LOCKED, Outcome.RATE_LIMITED):
        message = message.format(wait=retry_wait(decision.retry_after))
    try:
        conversation.error(message)
    except Exception:  # the user may be gone; the decision stands regardless
        pass


def _debug_logger(audit: AuditTrail) -> Callable[[str], None]:
    return lambda message: audit.note(LOG_DEBUG, f"debug: {message}")
