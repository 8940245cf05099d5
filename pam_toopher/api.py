"""The Toopher API client: OAuth 1.0a-signed calls, typed results, one error tree.

A PAM module decides allow or deny from what this client returns, so it is
strict where the original ToopherPython library was lenient:

* every call has connect and read timeouts, and retries are bounded in total
  time and happen only where repeating the call cannot send a second push;
* TLS is always verified (``ca_bundle`` may name a private CA, nothing turns
  verification off), and a verification failure is never reported as an
  outage, so ``failmode = safe`` cannot be triggered by an interceptor;
* "could not reach the service" (:class:`ToopherUnavailableError`), "the
  service said no" (:class:`ToopherApiError` and its coded subclasses) and
  "the answer makes no sense" (:class:`MalformedResponseError`) are distinct;
* the consumer secret appears in no message, repr or log.

The public names and argument order of the original library are kept, so
``ToopherApi(key, secret, api_url).pair(phrase, user_name)`` works unchanged.
"""

from __future__ import annotations

import contextvars
import json
import platform
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
from requests_oauthlib import OAuth1

from pam_toopher import CLIENT_NAMES, __version__

__all__ = ["DEFAULT_API_URL", "oauth1_signer", "error_for_answer", *CLIENT_NAMES]

DEFAULT_API_URL = "https://api.toopher.com/v1/"
# (connect, read) in seconds for one HTTP call; a long poll adds its own wait
# to the read timeout.
DEFAULT_TIMEOUT = (5.0, 10.0)
# Total time one call may spend retrying (backoff and Retry-After included).
DEFAULT_RETRY_BUDGET = 10.0
# No Toopher answer comes near this; a larger body is a broken or hostile peer.
MAX_RESPONSE_BYTES = 256 * 1024
# The server extension that holds a status answer while it is still pending.
MAX_LONG_POLL = 25.0
_BACKOFF_START = 0.5

USER_AGENT = (
    f"pam_toopher/{__version__} Toopher-Python/{__version__} "
    f"(Python {platform.python_version()})"
)

Timeout = Union[float, Tuple[float, float]]


# --------------------------------------------------------------------- errors


class ToopherApiError(Exception):
    """The service refused a call, or the call failed; base of every client error.

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
    """The service could not be reached or did not answer in time (DNS,
    refused, reset, timeout, 5xx, 429 after retries): a genuine outage.

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
    """The service answered, but not with what the protocol promises."""


class UserDisabledError(ToopherApiError):
    """704: the requester has switched Toopher off for this user."""


class UserUnknownError(ToopherApiError):
    """705: no such user, or the user has no active pairing: pair first."""


class TerminalUnknownError(ToopherApiError):
    """706: the (user, terminal identifier) pair has no named terminal yet."""


class PairingDeactivatedError(ToopherApiError):
    """707 (601 on older servers): the user deleted the pairing on the phone."""


_ERRORS_BY_CODE = {
    704: UserDisabledError,
    705: UserUnknownError,
    706: TerminalUnknownError,
    707: PairingDeactivatedError,
}
# Older servers answered code 601 with these messages for a deactivated pairing.
_DEACTIVATED_MESSAGES = ("pairing has been deactivated", "pairing has not been authorized")


def error_for_answer(status: int, body: Any) -> ToopherApiError:
    """The exception for a non-2xx answer whose body has been parsed (or is None)."""
    code = message = None
    if isinstance(body, Mapping):
        raw_code, raw_message = body.get("error_code"), body.get("error_message")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            code = raw_code
        if isinstance(raw_message, str):
            message = raw_message
    message = message or "the Toopher service refused the request"
    error_class = _ERRORS_BY_CODE.get(code, ToopherApiError)
    if code == 601 or message.strip().lower() in _DEACTIVATED_MESSAGES:
        error_class = PairingDeactivatedError
    if status == 429 or status >= 500:
        error_class = ToopherUnavailableError
    return error_class(message, status=status, error_code=code)


# --------------------------------------------------------------------- models


class _Fields:
    """Typed access to one JSON object; a missing or mistyped field is a
    MalformedResponseError naming the field, never a KeyError or TypeError."""

    def __init__(self, raw: Any, what: str):
        if not isinstance(raw, Mapping):
            raise MalformedResponseError(f"expected a JSON object for {what}")
        self.raw, self.what = raw, what

    def get(self, name: str, kind: type, default: Any = ...) -> Any:
        value = self.raw.get(name, None)
        if value is None:
            if default is ...:
                raise MalformedResponseError(f"{self.what} has no '{name}'")
            return default
        # bool is an int in Python; a protocol int must not accept true/false.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MalformedResponseError(f"{self.what} field '{name}' has the wrong type")
        return value

    def nested(self, name: str, required: bool = True) -> "_Fields":
        value = self.raw.get(name)
        if value is None and not required:
            return _Fields({}, f"{self.what}.{name}")
        return _Fields(value, f"{self.what}.{name}")


@dataclass(frozen=True)
class UserStatus:
    id: str
    name: str
    toopher_authentication_enabled: bool
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "UserStatus":
        f = _Fields(raw, "user")
        return cls(f.get("id", str), f.get("name", str),
                   f.get("toopher_authentication_enabled", bool, True), raw)


@dataclass(frozen=True)
class PairingStatus:
    id: str
    enabled: bool
    pending: bool
    user_id: str
    user_name: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "PairingStatus":
        f = _Fields(raw, "pairing")
        user = f.nested("user")
        return cls(f.get("id", str), f.get("enabled", bool), f.get("pending", bool, False),
                   user.get("id", str), user.get("name", str), raw)


@dataclass(frozen=True)
class TerminalStatus:
    id: str
    name: str
    requester_specified_id: Optional[str]
    user_id: Optional[str]
    user_name: Optional[str]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "TerminalStatus":
        f = _Fields(raw, "terminal")
        user = f.nested("user", required=False)
        return cls(f.get("id", str), f.get("name", str),
                   f.get("requester_specified_id", str, None),
                   user.get("id", str, None), user.get("name", str, None), raw)


@dataclass(frozen=True)
class AuthenticationStatus:
    id: str
    pending: bool
    granted: bool
    automated: bool
    reason: str
    reason_code: Optional[int]
    terminal_id: str
    terminal_name: str
    action_name: Optional[str]
    user_id: Optional[str]
    user_name: Optional[str]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "AuthenticationStatus":
        f = _Fields(raw, "authentication request")
        terminal = f.nested("terminal")
        action = f.nested("action", required=False)
        user = f.nested("user", required=False)
        return cls(
            id=f.get("id", str),
            pending=f.get("pending", bool),
            granted=f.get("granted", bool),
            automated=f.get("automated", bool, False),
            reason=f.get("reason", str, ""),
            reason_code=f.get("reason_code", int, None),
            terminal_id=terminal.get("id", str),
            terminal_name=terminal.get("name", str),
            action_name=action.get("name", str, None),
            user_id=user.get("id", str, None),
            user_name=user.get("name", str, None),
            raw=raw,
        )


# ------------------------------------------------------------------ signing


def oauth1_signer(key: str, secret: str, *, nonce: Optional[str] = None,
                  timestamp: Optional[str] = None) -> OAuth1:
    """A requests auth object signing two-legged OAuth 1.0a HMAC-SHA1 in the
    Authorization header (form bodies are part of the signature).
    ``nonce`` and ``timestamp`` are fixed only by known-answer tests."""
    return OAuth1(key, client_secret=secret, signature_method="HMAC-SHA1",
                  signature_type="AUTH_HEADER", nonce=nonce, timestamp=timestamp)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clean_params(params: Mapping[str, Any]) -> dict:
    """Drop absent values; the protocol treats an empty string as absent too."""
    return {k: _form_value(v) for k, v in params.items() if v is not None and v != ""}


# ------------------------------------------------------------------- client


class ToopherApi:
    """A client for one Toopher requester (consumer key and secret).

    ``timeout`` is the (connect, read) timeout of each HTTP call, or one number
    for both; ``retry_budget`` bounds the total time one call spends on
    retries.  ``ca_bundle`` is a CA file or directory to verify the server
    with instead of the system's; verification itself cannot be switched off.

    ``deadline`` (a ``time.monotonic()`` value, settable at any time) bounds
    every call: timeouts are trimmed to it and no retry starts after it, so
    a caller such as a PAM module can promise an end to its whole login.
    """

    def __init__(self, key: str, secret: str, api_url: Optional[str] = None, *,
                 ca_bundle: Optional[str] = None, timeout: Timeout = DEFAULT_TIMEOUT,
                 retry_budget: float = DEFAULT_RETRY_BUDGET,
                 user_agent: Optional[str] = None,
                 session: Optional[requests.Session] = None,
                 deadline: Optional[float] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic):
        if not key or not secret:
            raise ValueError("a Toopher consumer key and secret are both required")
        self.key = key
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/") + "/"
        self.ca_bundle = ca_bundle
        self.timeout = timeout if isinstance(timeout, tuple) else (float(timeout), float(timeout))
        self.retry_budget = retry_budget
        self.deadline = deadline
        self.user_agent = user_agent or USER_AGENT
        self._auth = oauth1_signer(key, secret)
        self._session = session or requests.Session()
        # Lets the deadline watchdog find the socket of the call in flight.
        self._session.mount("https://", _WatchedAdapter())
        self._session.mount("http://", _WatchedAdapter())
        # Environment variables must not redirect a PAM module's traffic or
        # swap its CA bundle (REQUESTS_CA_BUNDLE, HTTPS_PROXY, .netrc).
        self._session.trust_env = False
        self._sleep, self._monotonic = sleep, monotonic

    def __repr__(self) -> str:
        return f"ToopherApi(key={self.key!r}, api_url={self.api_url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "ToopherApi":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- pairings

    def pair(self, pairing_phrase: str, user_name: str, **kwargs: Any) -> PairingStatus:
        params = {"pairing_phrase": pairing_phrase, "user_name": user_name, **kwargs}
        return PairingStatus.from_json(self._post("pairings/create", params))

    def pair_sms(self, phone_number: str, user_name: str, phone_country: Optional[str] = None,
                 **kwargs: Any) -> PairingStatus:
        params = {"phone_number": phone_number, "user_name": user_name,
                  "phone_country": phone_country, **kwargs}
        return PairingStatus.from_json(self._post("pairings/create/sms", params))

    def pair_qr(self, user_name: str, **kwargs: Any) -> PairingStatus:
        params = {"user_name": user_name, **kwargs}
        return PairingStatus.from_json(self._post("pairings/create/qr", params))

    def get_pairing_status(self, pairing_id: str,
                           long_poll: Optional[float] = None) -> PairingStatus:
        raw = self._get(f"pairings/{_path_id(pairing_id)}", long_poll=long_poll)
        return _expect_id(PairingStatus.from_json(raw), pairing_id)

    def send_pairing_reset_link(self, pairing_id: str, reset_email: str) -> Any:
        return self._post(f"pairings/{_path_id(pairing_id)}/send_reset_link",
                          {"reset_email": reset_email})

    # -- authentication requests

    def authenticate(self, pairing_id: str, terminal_name: str,
                     action_name: Optional[str] = None, **kwargs: Any) -> AuthenticationStatus:
        params = {"pairing_id": pairing_id, "terminal_name": terminal_name,
                  "action_name": action_name, **kwargs}
        return self._initiate(params)

    def authenticate_by_user_name(self, user_name: str, terminal_name_extra: str,
                                  action_name: Optional[str] = None,
                                  **kwargs: Any) -> AuthenticationStatus:
        """Zero-storage mode: the service resolves the user's pairing and the
        terminal from (user_name, terminal_name_extra), raising
        UserDisabledError, UserUnknownError, TerminalUnknownError or
        PairingDeactivatedError when it cannot."""
        params = {"user_name": user_name, "terminal_name_extra": terminal_name_extra,
                  "action_name": action_name, **kwargs}
        return self._initiate(params)

    def get_authentication_status(self, authentication_request_id: str,
                                  long_poll: Optional[float] = None) -> AuthenticationStatus:
        """The request's current state.  With ``long_poll`` (seconds) a server
        that supports it holds the answer while the request is pending; one
        that does not answers at once, as the protocol allows."""
        raw = self._get(f"authentication_requests/{_path_id(authentication_request_id)}",
                        long_poll=long_poll)
        return _expect_id(AuthenticationStatus.from_json(raw), authentication_request_id)

    def authenticate_with_otp(self, authentication_request_id: str,
                              otp: str) -> AuthenticationStatus:
        raw = self._post(
            f"authentication_requests/{_path_id(authentication_request_id)}/otp_auth",
            {"otp": otp})
        return _expect_id(AuthenticationStatus.from_json(raw), authentication_request_id)

    def _initiate(self, params: Mapping[str, Any]) -> AuthenticationStatus:
        return AuthenticationStatus.from_json(
            self._post("authentication_requests/initiate", params))

    # -- users and terminals

    def create_user_terminal(self, user_name: str, terminal_name: str,
                             requester_terminal_id: str) -> TerminalStatus:
        params = {"user_name": user_name, "name": terminal_name,
                  "name_extra": requester_terminal_id}
        return TerminalStatus.from_json(self._post("user_terminals/create", params))

    def get_user_terminal(self, terminal_id: str) -> TerminalStatus:
        raw = self._get(f"user_terminals/{_path_id(terminal_id)}")
        return _expect_id(TerminalStatus.from_json(raw), terminal_id)

    def create_user(self, user_name: str) -> UserStatus:
        return UserStatus.from_json(self._post("users/create", {"name": user_name}))

    def get_user(self, user_id: str) -> UserStatus:
        raw = self._get(f"users/{_path_id(user_id)}")
        return _expect_id(UserStatus.from_json(raw), user_id)

    def find_user_by_name(self, user_name: str) -> UserStatus:
        """The requester's user of that name; UserUnknownError when there is none."""
        answer = self._get("users", {"name": user_name})
        if not isinstance(answer, list):
            raise MalformedResponseError("expected a JSON list of users")
        matches = [u for u in map(UserStatus.from_json, answer) if u.name == user_name]
        if not matches:
            raise UserUnknownError("no such user", error_code=705)
        if len(matches) > 1:
            raise MalformedResponseError("more than one user has that name")
        return matches[0]

    def set_toopher_enabled_for_user(self, user_name: str, enabled: bool) -> UserStatus:
        user = self.find_user_by_name(user_name)
        raw = self._post(f"users/{_path_id(user.id)}",
                         {"toopher_authentication_enabled": bool(enabled)})
        return _expect_id(UserStatus.from_json(raw), user.id)

    def enable_user(self, user_name: str) -> UserStatus:
        return self.set_toopher_enabled_for_user(user_name, True)

    def disable_user(self, user_name: str) -> UserStatus:
        return self.set_toopher_enabled_for_user(user_name, False)

    def reset_user(self, user_name: str) -> Any:
        """Forget the user's pairings at the service, so the user can pair anew."""
        return self._post("users/reset", {"user_name": user_name})

    # -- transport: the only code that talks HTTP

    def _get(self, path: str, params: Optional[Mapping[str, Any]] = None, *,
             long_poll: Optional[float] = None) -> Any:
        query = dict(params or {})
        extra_wait = 0.0
        if long_poll is not None and long_poll > 0:
            extra_wait = min(float(long_poll), MAX_LONG_POLL)
            query["long_poll"] = f"{extra_wait:g}"
        # Reading twice changes nothing, so a read may be retried after a
        # timeout or a 5xx.
        return self._request("GET", path, query=_clean_params(query),
                             extra_wait=extra_wait, idempotent=True)

    def _post(self, path: str, params: Mapping[str, Any]) -> Any:
        # A POST that reached the server may have sent a push already: only a
        # failure to connect, or a 429 (not processed), is retried.
        return self._request("POST", path, form=_clean_params(params), idempotent=False)

    def _request(self, method: str, path: str, *, query: Optional[dict] = None,
                 form: Optional[dict] = None, extra_wait: float = 0.0,
                 idempotent: bool) -> Any:
        url = self.api_url + path
        started = self._monotonic()
        backoff = _BACKOFF_START
        while True:
            try:
                return self._request_once(method, url, query, form, extra_wait)
            except ToopherUnavailableError as error:
                wait = error.retry_after if error.retry_after is not None else backoff
                now = self._monotonic()
                if (not (idempotent or error.not_processed)
                        or now - started + wait > self.retry_budget
                        or (self.deadline is not None and now + wait >= self.deadline)):
                    raise
            self._sleep(wait)
            backoff *= 2

    def _request_once(self, method: str, url: str, query: Optional[dict],
                      form: Optional[dict], extra_wait: float) -> Any:
        connect_timeout, read_timeout = self.timeout
        read_timeout += extra_wait
        origin = _origin(url)
        if self.deadline is not None:
            left = self.deadline - self._monotonic()
            if left <= 0:
                raise DeadlineExceededError(f"the deadline passed before calling {origin}")
            connect_timeout, read_timeout = min(connect_timeout, left), min(read_timeout, left)
        # Timeouts bound each socket operation, not a whole call: a server
        # trickling its handshake, headers or body one byte at a time would
        # hold the call past the deadline.  A watchdog thread cuts the
        # connection at the deadline, so every wait ends.
        watch = _Watch(left) if self.deadline is not None else None
        token = _CURRENT_WATCH.set(watch)
        try:
            return self._send_and_read(method, url, query, form, origin,
                                       (connect_timeout, read_timeout))
        except Exception as exc:
            # Whatever broke once the deadline passed (a timeout trimmed to
            # it, or the watchdog's cut) broke because of our own limit: a
            # timeout, never an outage (which failmode = safe would grant).
            if watch is not None and (watch.fired or self._monotonic() >= self.deadline):
                raise DeadlineExceededError(
                    f"the deadline passed while waiting for {origin}") from exc
            raise
        finally:
            _CURRENT_WATCH.reset(token)
            if watch is not None:
                watch.stop()

    def _send_and_read(self, method: str, url: str, query: Optional[dict],
                       form: Optional[dict], origin: str,
                       timeout: Tuple[float, float]) -> Any:
        try:
            response = self._session.request(
                method, url, params=query, data=form, auth=self._auth,
                headers={"User-Agent": self.user_agent, "Accept": "application/json"},
                timeout=timeout,
                verify=self.ca_bundle or True, allow_redirects=False, stream=True)
        except requests.exceptions.SSLError as exc:
            raise ToopherTLSError(
                f"the certificate of {origin} did not verify: {_reason(exc)}") from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise ToopherUnavailableError(
                f"timed out connecting to {origin}", not_processed=True) from exc
        except requests.exceptions.ConnectionError as exc:
            raise ToopherUnavailableError(
                f"could not reach {origin}: {_reason(exc)}",
                not_processed=_is_connect_failure(exc)) from exc
        except requests.exceptions.Timeout as exc:
            raise ToopherUnavailableError(f"{origin} did not answer in time") from exc
        except requests.exceptions.RequestException as exc:
            raise ToopherApiError(f"could not send the request: {_reason(exc)}") from exc
        with response:
            body = _read_capped(response, origin)
            return _interpret(response, body, origin)


# The deadline watchdog.  requests' timeouts bound each socket operation, so
# a server that trickles its TLS handshake, headers or body can hold one call
# far past the deadline.  Signals (SIGALRM) would disturb sshd and sudo, so a
# timer thread, started and joined within the call (pam_python freezes threads
# between hook calls), shuts down the call's socket at the deadline: the
# blocked recv in the calling thread then returns at once, and the call maps
# whatever breaks to DeadlineExceededError.  The socket is found through
# connection and pool classes that report it to the call's _Watch (a
# context variable, so it is per thread); this works alike on urllib3 1.26
# and 2.x, which both create sockets in HTTPConnection._new_conn and hand
# out pooled connections from HTTPConnectionPool._get_conn.

_CURRENT_WATCH: "contextvars.ContextVar[Optional[_Watch]]" = contextvars.ContextVar(
    "pam_toopher_watch", default=None)


class _Watch:
    def __init__(self, seconds: float):
        import threading  # only a call with a deadline needs it
        self.fired = False
        self._lock = threading.Lock()
        # Duplicates of the call's sockets: they stay valid when ssl wraps
        # (and detaches) the original, and shutting one down cuts the shared
        # connection.  Closed by stop(), in the calling thread.
        self._socks: list = []
        self._conns: list = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True   # a safety net: stop() always joins it
        # The thread inherits the signal mask it starts with: start it with
        # every signal blocked, so the host's signals (sudo's Ctrl-C that the
        # hook takes while waiting) still reach the thread blocked in recv.
        import signal

        saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._timer.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)

    def attach(self, conn: Any, sock: Optional[socket.socket]) -> None:
        with self._lock:
            if conn not in self._conns:
                self._conns.append(conn)
            if sock is None:
                return
            try:
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return
            self._socks.append(dup)
            if self.fired:       # a socket made after the deadline is cut at once
                _cut(dup)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for dup in self._socks:
                _cut(dup)

    def stop(self) -> None:
        self._timer.cancel()
        self._timer.join()
        with self._lock:
            socks, self._socks = self._socks, []
            conns, self._conns = self._conns, []
        for dup in socks:
            dup.close()
        if self.fired:
            # Never let the pool hand a cut connection to the next call.
            for conn in conns:
                try:
                    conn.close()
                except Exception:   # pragma: no cover - closing is best effort
                    pass


def _cut(sock: socket.socket) -> None:
    # SHUT_RD, not SHUT_RDWR: it wakes a blocked recv (and a TLS handshake)
    # just as well, and a later send cannot raise SIGPIPE in a host process
    # (sudo, sshd) that does not ignore it.
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


class _WatchedConnectionMixin:
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        watch = _CURRENT_WATCH.get()
        if watch is not None:
            watch.attach(self, sock)
        return sock


class _WatchedPoolMixin:
    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        watch = _CURRENT_WATCH.get()
        if watch is not None:
            # A kept-alive connection already has its socket; a new one
            # reports it from _new_conn.
            watch.attach(conn, getattr(conn, "sock", None))
        return conn


class _WatchedHTTPConnection(_WatchedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(_WatchedPoolMixin, urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_WatchedPoolMixin, urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool,
                                                   "https": _WatchedHTTPSPool}


def _read_capped(response: requests.Response, origin: str) -> bytes:
    too_large = MalformedResponseError(
        f"{origin} sent an answer larger than {MAX_RESPONSE_BYTES} bytes",
        status=response.status_code)
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise too_large
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(chunk_size=16384):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise too_large
            chunks.append(chunk)
    except requests.exceptions.ContentDecodingError as exc:
        # The service answered, but with a body its own Content-Encoding does
        # not decode: malformed, not an outage (which failmode = safe grants).
        raise MalformedResponseError(f"{origin} sent an answer that could not be decoded",
                                     status=response.status_code) from exc
    except requests.exceptions.RequestException as exc:
        # The connection broke mid-answer (reset, cut off, read timeout).
        raise ToopherUnavailableError(f"{origin} broke off its answer: {_reason(exc)}") from exc
    # urllib3 1.x does not enforce Content-Length by itself.
    if declared.isdigit() and size < int(declared):
        raise ToopherUnavailableError(f"{origin} broke off its answer")
    return b"".join(chunks)


def _interpret(response: requests.Response, body: bytes, origin: str) -> Any:
    status = response.status_code
    parsed = _parse_json(body)
    if 200 <= status < 300:
        if parsed is _NOT_JSON:
            raise MalformedResponseError(
                f"{origin} answered with something that is not JSON", status=status)
        return parsed
    if 300 <= status < 400:
        # Following a redirect would send a signed request somewhere we did
        # not choose; the protocol never redirects.
        raise ToopherApiError(f"{origin} answered with an unexpected redirect", status=status)
    error = error_for_answer(status, None if parsed is _NOT_JSON else parsed)
    if status == 429:
        error.retry_after = _retry_after(response)
        error.not_processed = True
    raise error


_NOT_JSON = object()


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _NOT_JSON


def _retry_after(response: requests.Response) -> Optional[float]:
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


def _expect_id(result: Any, expected_id: str) -> Any:
    """An answer about another object than the one asked for must not be trusted."""
    if result.id != expected_id:
        raise MalformedResponseError("the answer is about a different id than the one asked for")
    return result


def _path_id(value: str) -> str:
    """An id goes into a URL path: refuse anything that could change the path."""
    if not isinstance(value, str) or not value or not all(
            c.isalnum() or c in "-_." for c in value) or value in (".", ".."):
        raise ValueError("an id must be a non-empty string of letters, digits, '-', '_' or '.'")
    return value


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


_KNOWN_REASONS = (
    "certificate verify failed", "hostname mismatch", "connection refused",
    "connection reset", "name or service not known", "temporary failure in name resolution",
    "no route to host", "network is unreachable", "read timed out",
)


def _reason(exc: BaseException) -> str:
    """A short reason from a requests/urllib3 exception, without its object reprs."""
    text = str(exc).lower()
    for reason in _KNOWN_REASONS:
        if reason in text:
            return reason
    return type(exc).__name__


def _is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was never made, so the request was not sent."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)
