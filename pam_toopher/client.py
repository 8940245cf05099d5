"""The Toopher API client: one method per endpoint, typed results.

Each endpoint is a few lines over one request helper (``_get``/``_post``):
it names the path and the form, and turns the JSON answer into a model
(:mod:`pam_toopher.models`).  Signing, timeouts, retries, the deadline and
the mapping of failures onto the error categories (:mod:`pam_toopher.errors`)
are the transport's (:mod:`pam_toopher.transport`).

The public names and argument order of the original ToopherPython library
are kept, so ``ToopherApi(key, secret, api_url).pair(phrase, user_name)``
works unchanged; the consumer secret appears in no message, repr or log.

``api_url`` may also be several base URLs of one service (instances sharing
one database), in order of preference: each call goes to the instance that
answered last (the first one at the start) and fails over to the others on
an outage, as far as :func:`pam_toopher.transport.may_send_again` allows.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import requests

from pam_toopher.errors import MalformedResponseError, UserUnknownError
from pam_toopher.models import (AuthenticationStatus, PairingStatus, TerminalStatus, UserStatus,
                                expect_id)
from pam_toopher.transport import (DEFAULT_RETRY_BUDGET, DEFAULT_TIMEOUT, Timeout, Transport,
                                   oauth1_signer)

__all__ = ["ToopherApi", "DEFAULT_API_URL", "LONG_POLL_LIMIT", "preference_order"]

DEFAULT_API_URL = "https://api.toopher.com/v1/"
# The longest a server holds a pending status answer when asked to (the
# long-poll extension; our server's MAX_LONG_POLL): asking for more is cut.
LONG_POLL_LIMIT = 25.0


class ToopherApi:
    """A client for one Toopher requester (consumer key and secret).

    ``api_url`` is the service's base URL, or a sequence of base URLs of
    instances of one service in order of preference (see the module's
    docstring); ``api_urls`` holds them all, ``api_url`` the first.

    ``timeout`` is the (connect, read) timeout of each HTTP call, or one number
    for both; ``retry_budget`` bounds the total time one call spends on
    retries.  ``ca_bundle`` is a CA file or directory to verify the server
    with instead of the system's; verification itself cannot be switched off.

    ``deadline`` (a ``time.monotonic()`` value, settable at any time) bounds
    every call: timeouts are trimmed to it and no retry starts after it, so
    a caller such as a PAM module can promise an end to its whole login.
    """

    def __init__(self, key: str, secret: str,
                 api_url: Union[str, Sequence[str], None] = None, *,
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
        self.api_urls = _base_urls(api_url)
        # Which of api_urls answered last: the next call goes there first.
        self._answering = 0
        self.deadline = deadline
        self._transport = Transport(oauth1_signer(key, secret), ca_bundle=ca_bundle,
                                    timeout=timeout, retry_budget=retry_budget,
                                    user_agent=user_agent, session=session,
                                    sleep=sleep, monotonic=monotonic)

    @property
    def api_url(self) -> str:
        """The preferred (first) base URL."""
        return self.api_urls[0]

    @property
    def _session(self) -> requests.Session:
        return self._transport.session

    def __repr__(self) -> str:
        urls = self.api_url if len(self.api_urls) == 1 else " ".join(self.api_urls)
        return f"ToopherApi(key={self.key!r}, api_url={urls!r})"

    def failover_url(self) -> Optional[str]:
        """The base URL that answered the latest call, when it is not the
        first one (a failover happened); None when the first one answered
        or none has yet."""
        return self.api_urls[self._answering] if self._answering else None

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> ToopherApi:
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
        return expect_id(PairingStatus.from_json(raw), pairing_id)

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
        return expect_id(AuthenticationStatus.from_json(raw), authentication_request_id)

    def authenticate_with_otp(self, authentication_request_id: str,
                              otp: str) -> AuthenticationStatus:
        raw = self._post(
            f"authentication_requests/{_path_id(authentication_request_id)}/otp_auth",
            {"otp": otp})
        return expect_id(AuthenticationStatus.from_json(raw), authentication_request_id)

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
        return expect_id(TerminalStatus.from_json(raw), terminal_id)

    def create_user(self, user_name: str) -> UserStatus:
        return UserStatus.from_json(self._post("users/create", {"name": user_name}))

    def get_user(self, user_id: str) -> UserStatus:
        raw = self._get(f"users/{_path_id(user_id)}")
        return expect_id(UserStatus.from_json(raw), user_id)

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
        return expect_id(UserStatus.from_json(raw), user.id)

    def enable_user(self, user_name: str) -> UserStatus:
        return self.set_toopher_enabled_for_user(user_name, True)

    def disable_user(self, user_name: str) -> UserStatus:
        return self.set_toopher_enabled_for_user(user_name, False)

    def reset_user(self, user_name: str) -> Any:
        """Forget the user's pairings at the service, so the user can pair anew."""
        return self._post("users/reset", {"user_name": user_name})

    # -- the one request helper under every endpoint

    def _get(self, path: str, params: Optional[Mapping[str, Any]] = None, *,
             long_poll: Optional[float] = None) -> Any:
        query = dict(params or {})
        extra_wait = 0.0
        if long_poll is not None and long_poll > 0:
            extra_wait = min(float(long_poll), LONG_POLL_LIMIT)
            query["long_poll"] = f"{extra_wait:g}"
        # Reading twice changes nothing, so a read may be retried (or sent to
        # another instance) after a timeout, a lost connection or a 5xx.
        return self._send("GET", path, query=_clean_params(query), extra_wait=extra_wait,
                          idempotent=True)

    def _post(self, path: str, params: Mapping[str, Any]) -> Any:
        # A POST that reached the server may have sent a push already: only a
        # request that surely was not processed (no connection, 429) is sent
        # again, here or to another instance.
        return self._send("POST", path, form=_clean_params(params), idempotent=False)

    def _send(self, method: str, path: str, *, idempotent: bool,
              query: Optional[Mapping[str, str]] = None,
              form: Optional[Mapping[str, str]] = None, extra_wait: float = 0.0) -> Any:
        order = preference_order(len(self.api_urls), self._answering)

        def answered(position: int) -> None:
            # Also a refusal (706 before a terminal is made): that instance is up.
            self._answering = order[position]
        return self._transport.request_any(
            method, [self.api_urls[i] + path for i in order], query=query, form=form,
            extra_wait=extra_wait, idempotent=idempotent, deadline=self.deadline,
            answered=answered)


def preference_order(count: int, answering: int) -> Tuple[int, ...]:
    """The order to try ``count`` instances in: the one that answered last
    first (a status poll goes where the push went), then the others in the
    configured order."""
    return (answering,) + tuple(i for i in range(count) if i != answering)


def _base_urls(api_url: Union[str, Sequence[str], None]) -> Tuple[str, ...]:
    if isinstance(api_url, str) or api_url is None:
        urls: Tuple[str, ...] = (api_url or DEFAULT_API_URL,)
    else:
        urls = tuple(api_url)
    if not urls or not all(isinstance(url, str) and url for url in urls):
        raise ValueError("api_url must be a base URL or a sequence of base URLs")
    return tuple(url.rstrip("/") + "/" for url in urls)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clean_params(params: Mapping[str, Any]) -> Dict[str, str]:
    """Drop absent values; the protocol treats an empty string as absent too."""
    return {k: _form_value(v) for k, v in params.items() if v is not None and v != ""}



def _path_id(value: str) -> str:
    """An id goes into a URL path: refuse anything that could change the path."""
    if not isinstance(value, str) or not value or not all(
            c.isalnum() or c in "-_." for c in value) or value in (".", ".."):
        raise ValueError("an id must be a non-empty string of letters, digits, '-', '_' or '.'")
    return value
