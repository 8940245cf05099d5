"""Stand-ins for the unit tests of the flow and the admin command.

``FakeToopher`` has the ToopherApi interface the flow uses and plays both
the service and the phone from a few scenario attributes; it returns the
client's real models and raises the client's real errors, so the flow is
tested against the types it meets in production.  ``FakeClock`` advances
only when slept on or when the fake service holds a long poll.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import List, Optional

from pam_toopher import api as toopher
from pam_toopher.config import Config


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.time = start
        self.sleeps: List[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.time += seconds


@dataclass
class FakeConversation:
    """Answers prompts from a list; records everything shown."""

    answers: List[Optional[str]] = field(default_factory=list)
    shown: List[tuple] = field(default_factory=list)

    def _ask(self, kind: str, text: str) -> Optional[str]:
        self.shown.append((kind, text))
        return self.answers.pop(0) if self.answers else None

    def info(self, text: str) -> None:
        self.shown.append(("info", text))

    def error(self, text: str) -> None:
        self.shown.append(("error", text))

    def prompt_echo_on(self, text: str) -> Optional[str]:
        return self._ask("prompt_echo_on", text)

    def prompt_echo_off(self, text: str) -> Optional[str]:
        return self._ask("prompt_echo_off", text)

    def texts(self) -> str:
        return "\n".join(text for _kind, text in self.shown)


_ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))


def _auth_status(request_id: str, pending: bool, granted: bool, reason: str = "",
                 automated: bool = False) -> toopher.AuthenticationStatus:
    return toopher.AuthenticationStatus(
        id=request_id, pending=pending, granted=granted, automated=automated, reason=reason,
        reason_code=None, terminal_id="t1", terminal_name="host", action_name=None,
        user_id="u1", user_name="alice", raw={})


class FakeToopher:
    """Scenario knobs (set before the flow runs):

    ``pairing``: "paired" | "unpaired" | "deactivated" | "disabled"
    ``terminal_known``: False makes the first initiate answer 706
    ``phone``: "approve" | "deny" | "never"; ``answer_after``: seconds after
    the push that the phone answers; ``reason``: the phone's reason text
    ``error``: an exception every call raises (an outage, a TLS failure...)
    ``long_poll_supported``: False answers pending polls at once
    ``pairing_answer``: "accept" | "refuse" | "never" for inline pairing
    """

    OTP = "123456"

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.pairing = "paired"
        self.terminal_known = True
        self.phone = "approve"
        self.answer_after = 0.5
        self.reason = "approved on the phone"
        self.automated = False
        self.error: Optional[Exception] = None
        self.long_poll_supported = True
        self.pairing_answer = "accept"
        self.wrong_id = False
        self.calls: List[tuple] = []
        self.answered_by: Optional[str] = None  # as if another service URL answered
        self.deadline: Optional[float] = None   # set by the flow, as on the real client
        self.closed = False
        self._pushed_at: Optional[float] = None
        self._request_id: Optional[str] = None
        self._pairing_id: Optional[str] = None

    # -- the calls the flow makes

    def _record(self, *call) -> None:
        self.calls.append(call)
        # The real client's contract: nothing is sent once its deadline passed.
        if self.deadline is not None and self.clock.now() > self.deadline:
            raise toopher.DeadlineExceededError("the deadline passed")
        if self.error is not None:
            raise self.error

    def call_names(self) -> List[str]:
        return [c[0] for c in self.calls]

    def authenticate_by_user_name(self, user_name, terminal_name_extra, action_name=None,
                                  **kwargs):
        self._record("authenticate_by_user_name", user_name, terminal_name_extra,
                     action_name, kwargs)
        if self.pairing == "disabled":
            raise toopher.UserDisabledError("user disabled", status=409, error_code=704)
        if self.pairing == "unpaired":
            raise toopher.UserUnknownError("no such user", status=409, error_code=705)
        if self.pairing == "deactivated":
            raise toopher.PairingDeactivatedError("pairing deactivated", status=409,
                                                  error_code=707)
        if not self.terminal_known:
            raise toopher.TerminalUnknownError("unknown terminal", status=409, error_code=706)
        self._request_id = next(_ids)
        self._pushed_at = self.clock.now()
        return self._status()

    def create_user_terminal(self, user_name, terminal_name, requester_terminal_id):
        self._record("create_user_terminal", user_name, terminal_name, requester_terminal_id)
        self.terminal_known = True
        return toopher.TerminalStatus("t1", terminal_name, requester_terminal_id, "u1",
                                      user_name, {})

    def get_authentication_status(self, request_id, long_poll=None):
        self._record("get_authentication_status", request_id, long_poll)
        assert request_id == self._request_id
        status = self._status()
        if status.pending and long_poll and self.long_poll_supported:
            # The server holds the answer until the phone answers or the poll ends.
            answer_at = self._answer_time()
            hold = long_poll if answer_at is None else min(long_poll,
                                                           max(0, answer_at - self.clock.now()))
            self.clock.time += hold
            status = self._status()
        if self.wrong_id:
            status = replace(status, id="someone-else")
        return status

    def authenticate_with_otp(self, request_id, otp):
        self._record("authenticate_with_otp", request_id, otp)
        good = otp == self.OTP
        return _auth_status(request_id, False, good, "valid otp" if good else "invalid otp")

    def pair(self, pairing_phrase, user_name):
        self._record("pair", pairing_phrase, user_name)
        if pairing_phrase != "correct horse":
            raise toopher.ToopherRefusedError("unknown pairing phrase", status=400, error_code=400)
        self._pairing_id = next(_ids)
        return self._pairing_status(pending=True, enabled=False)

    def get_pairing_status(self, pairing_id, long_poll=None):
        self._record("get_pairing_status", pairing_id, long_poll)
        if self.pairing_answer == "never":
            if long_poll:
                self.clock.time += long_poll
            return self._pairing_status(pending=True, enabled=False)
        accepted = self.pairing_answer == "accept"
        if accepted:
            self.pairing = "paired"
        return self._pairing_status(pending=False, enabled=accepted)

    def find_user_by_name(self, user_name):
        self._record("find_user_by_name", user_name)
        if self.pairing == "unpaired":
            raise toopher.UserUnknownError("no such user", error_code=705)
        return toopher.UserStatus("u1", user_name, self.pairing != "disabled", {})

    def set_toopher_enabled_for_user(self, user_name, enabled):
        self._record("set_toopher_enabled_for_user", user_name, enabled)
        self.pairing = "paired" if enabled else "disabled"
        return toopher.UserStatus("u1", user_name, enabled, {})

    def reset_user(self, user_name):
        self._record("reset_user", user_name)
        self.pairing = "unpaired"
        return {}

    def failover_url(self) -> Optional[str]:
        return self.answered_by

    def close(self):
        self.closed = True

    # -- the phone

    def _answer_time(self) -> Optional[float]:
        if self.phone == "never" or self._pushed_at is None:
            return None
        return self._pushed_at + self.answer_after

    def _status(self) -> toopher.AuthenticationStatus:
        request_id = self._request_id
        assert request_id is not None, "no push was sent"
        answer_at = self._answer_time()
        if answer_at is None or self.clock.now() < answer_at:
            return _auth_status(request_id, True, False)
        return _auth_status(request_id, False, self.phone == "approve", self.reason,
                            self.automated)

    def _pairing_status(self, pending: bool, enabled: bool) -> toopher.PairingStatus:
        assert self._pairing_id is not None, "no pairing was started"
        return toopher.PairingStatus(self._pairing_id, enabled, pending, "u1", "alice", {})


class _Factory:
    def __init__(self, fake: FakeToopher):
        self.fake = fake
        self.config: Optional[Config] = None

    def __call__(self, config: Config) -> FakeToopher:
        self.config = config
        return self.fake


def factory_for(fake: FakeToopher) -> _Factory:
    """An api_factory that hands out ``fake`` and remembers the config it got."""
    return _Factory(fake)
