"""The Toopher phone app, simulated on the server's database.

It works on the server's database directly (the SQLite file or PostgreSQL,
through :class:`~.store.Store`), so a test (or ``toopher-server phone``) in
another process can pair, approve and deny while the server runs.  The
rules themselves live in :class:`~.store.Store`; this is the app's view.
"""
import time
from typing import List, Optional, Union

from .errors import ServerError
from .store import Store

#: Raised for an unknown or no longer pending pairing or request.
PhoneError = ServerError


class Phone:
    def __init__(self, db: Union[str, Store]):
        self.store = db if isinstance(db, Store) else Store(db)

    def close(self) -> None:
        self.store.close()

    # -- pairing ------------------------------------------------------------------

    def make_pairing_phrase(self, user_name: str) -> str:
        """The phrase the app shows; a requester submits it with pairings/create."""
        return self.store.make_pairing_phrase(user_name)

    def pending_pairings(self, user_name: Optional[str] = None) -> List[dict]:
        """[{id, user, requester}] of pairings waiting for the app's answer."""
        return self.store.pending_pairings(user_name)

    def accept_pairing(self, pairing_id: str) -> None:
        self.store.answer_pairing(pairing_id, True)

    def refuse_pairing(self, pairing_id: str) -> None:
        self.store.answer_pairing(pairing_id, False)

    def set_pairing_rule(self, user_name: str, answer: str = "accept", delay: float = 0.0) -> None:
        """Answer every new pairing for ``user_name`` (accept|refuse|never) after ``delay`` s."""
        self.store.set_pairing_rule(user_name, answer, delay)

    def clear_pairing_rule(self, user_name: str) -> None:
        self.store.clear_pairing_rule(user_name)

    def delete_pairing(self, user_name: str) -> None:
        """The user removes the pairing in the app: the next initiate answers 707."""
        self.store.deactivate_pairings(user_name)

    def otp(self, user_name: str) -> str:
        """The current 6-digit code of the user's newest active pairing."""
        return self.store.current_otp(user_name)

    # -- authentication ---------------------------------------------------------------

    def pending_requests(self, user_name: Optional[str] = None) -> List[dict]:
        """[{id, user, terminal, action, requester}] waiting for an answer, oldest first."""
        return self.store.pending_requests(user_name)

    def approve(self, request_id: str, reason: str = "approved on phone") -> None:
        self.store.answer_request(request_id, True, reason)

    def deny(self, request_id: str, reason: str = "denied on phone") -> None:
        self.store.answer_request(request_id, False, reason)

    def set_rule(self, user_name: str, answer: str, delay: float = 0.0,
                 automated: bool = False) -> None:
        """Answer each new request for ``user_name`` (approve|deny|never) after ``delay`` s.

        ``automated=True`` marks the answers as the app's own (``automated``
        in the request) and is not applied where the requester sent
        ``automation_allowed=false``.
        """
        self.store.set_rule(user_name, answer, delay, automated)

    def clear_rule(self, user_name: str) -> None:
        self.store.clear_rule(user_name)

    def wait_for_request(self, user_name: str, timeout: float = 10.0) -> dict:
        """The newest pending request for the user, waiting up to ``timeout`` s for one."""
        return self._wait(lambda: self.pending_requests(user_name), timeout,
                          f"no pending authentication request for {user_name}")

    def wait_for_pairing(self, user_name: str, timeout: float = 10.0) -> dict:
        """The newest pending pairing for the user, waiting up to ``timeout`` s for one."""
        return self._wait(lambda: self.pending_pairings(user_name), timeout,
                          f"no pending pairing for {user_name}")

    @staticmethod
    def _wait(read, timeout: float, message: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = read()
            if found:
                return found[-1]
            if time.monotonic() >= deadline:
                raise TimeoutError(message)
            time.sleep(0.02)

    # -- fault switches (server misbehaviour, for client tests) ------------------------

    def fault(self, kind: str, count: int = 1, seconds: float = 1.0) -> None:
        """Make the next ``count`` answers misbehave.

        kind: "slow" (sleep ``seconds``, then answer), "500"/"502"/"503",
        "429" (Retry-After: ``seconds``), "html" (200 text/html),
        "truncate" (Content-Length larger than the body, then close).
        """
        self.store.add_fault(str(kind), count, seconds)

    def clear_faults(self) -> None:
        self.store.clear_faults()
