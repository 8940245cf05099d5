"""The Toopher API v1: request parsing, routing and one short handler per endpoint.

:class:`Api.handle` turns raw request parts into ``(status, JSON object)``
and never raises: every failure becomes a documented 4xx JSON answer.  The
socket side (body limits, fault switches, TLS) is in :mod:`.http`.
"""
import math
import re
import time
import urllib.parse
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from oauthlib.common import urldecode

from .errors import BadRequest, NotFound, ServerError, Unauthorized
from .oauth import TIMESTAMP_WINDOW, Verifier
from .store import Store

API_PREFIX = "/v1/"
#: Longest parameter value accepted; real names, phrases and ids are far shorter.
MAX_PARAM_LENGTH = 1000
#: Upper bound of the long_poll extension, below common proxy idle timeouts.
MAX_LONG_POLL = 25.0
OAUTH_FAILURE = "Not a valid OAuth signed request"
_ID = r"(?P<id>[^/]+)"


class Params:
    """Request parameters with Toopher's conventions: aliases, '' means absent."""

    def __init__(self, pairs: List[Tuple[str, str]]):
        self._values: Dict[str, str] = {}
        for name, value in pairs:
            if len(name) > MAX_PARAM_LENGTH or len(value) > MAX_PARAM_LENGTH:
                raise BadRequest("Parameter too long")
            if value != "" and not name.startswith("oauth_"):
                self._values.setdefault(name, value)

    def get(self, *names: str) -> Optional[str]:
        """The first of ``names`` (aliases of one parameter) that was sent."""
        return next((self._values[name] for name in names if name in self._values), None)

    def require(self, *names: str) -> str:
        value = self.get(*names)
        if value is None:
            raise BadRequest(f"Missing required parameter: {names[0]}")
        return value

    def boolean(self, *names: str, default: Optional[bool] = None) -> Optional[bool]:
        value = self.get(*names)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise BadRequest(f"Not a boolean: {names[0]}")

    def seconds(self, name: str, limit: float) -> float:
        value = self.get(name)
        if value is None:
            return 0.0
        try:
            seconds = float(value)
        except ValueError:
            raise BadRequest(f"Not a number: {name}") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise BadRequest(f"Not a valid number of seconds: {name}")
        return min(seconds, limit)


def parse_form(raw: str) -> List[Tuple[str, str]]:
    """Strict application/x-www-form-urlencoded parsing; ValueError if malformed."""
    urldecode(raw)  # oauthlib's own checks, so that what we accept it can sign
    return urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=True,
                                  errors="strict")


class Api:
    """Everything between a decoded HTTP request and its JSON answer."""

    def __init__(self, store: Store, clock: Optional[Callable[[], float]] = None,
                 timestamp_window: Optional[float] = TIMESTAMP_WINDOW):
        self.store = store
        self.verifier = Verifier(store, clock, timestamp_window)
        #: Told ("request" or "pairing", the new object) after one is created:
        #: the phone web app's push notifications (push.PushSender.on_created,
        #: which only queues).
        self.on_created: Optional[Callable[[str, dict], None]] = None
        post, get = "POST", "GET"
        # Specific paths before the {id} patterns that would also match them.
        self.routes = [(method, re.compile(pattern + r"\Z"), handler) for method, pattern, handler in (
            (post, "pairings/create", self.create_pairing),
            (post, "pairings/create/sms", self.create_pairing_sms),
            (post, "pairings/create/qr", self.create_pairing_qr),
            (get, f"pairings/{_ID}", self.get_pairing),
            (post, f"pairings/{_ID}/send_reset_link", self.send_reset_link),
            (post, "authentication_requests/initiate", self.initiate),
            (get, f"authentication_requests/{_ID}", self.get_request),
            (post, f"authentication_requests/{_ID}/otp_auth", self.otp_auth),
            (get, "users", self.find_users),
            (post, "users/create", self.create_user),
            (post, "users/reset", self.reset_user),
            (get, f"users/{_ID}", self.get_user),
            (post, f"users/{_ID}", self.update_user),
            (post, "user_terminals/create", self.create_terminal),
            (get, f"user_terminals/{_ID}", self.get_terminal),
        )]

    # -- plumbing --------------------------------------------------------------

    def route(self, method: str, path: str):
        """(handler, ids) for a path below /v1/; NotFound or 405 otherwise."""
        if not path.startswith(API_PREFIX):
            raise NotFound("No such path")
        relative = path[len(API_PREFIX):].rstrip("/")
        allowed = []
        for route_method, pattern, handler in self.routes:
            match = pattern.match(relative)
            if match:
                if route_method == method:
                    return handler, match.groupdict()
                allowed.append(route_method)
        if allowed:
            raise ServerError("Method not allowed", status=405)
        raise NotFound("No such path")

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
               base_url: str) -> Tuple[int, object]:
        """Answer one request; ``base_url`` is scheme://host[:port] as the client sent it."""
        try:
            return 200, self._handle(method, target, headers, body, base_url)
        except ServerError as error:
            return error.status, error.body()

    def _handle(self, method, target, headers, body, base_url):
        path, _, query = target.partition("?")
        handler, ids = self.route(method, path)
        content_type = headers.get("Content-Type", "")
        if body and "application/x-www-form-urlencoded" not in content_type:
            # oauthlib signs only form bodies; anything else would be unsigned input.
            raise ServerError("Body must be application/x-www-form-urlencoded", status=415)
        try:
            text = body.decode("utf-8")
            pairs = parse_form(query) + parse_form(text)
        except ValueError:
            raise BadRequest("Malformed request parameters") from None
        params = Params(pairs)
        requester = self.verifier.verify(base_url + target, method, text, headers)
        if requester is None:
            raise Unauthorized(OAUTH_FAILURE)
        return handler(requester["id"], params, **ids)

    def _long_poll(self, params: Params, read: Callable[[], dict],
                   wake_at: Callable[[], Optional[float]]) -> dict:
        """Hold a pending object until it changes or long_poll seconds pass."""
        deadline = time.monotonic() + params.seconds("long_poll", MAX_LONG_POLL)
        mark = self.store.change_mark()  # before the read: a write after it wakes the wait
        current = read()
        while current["pending"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wait = min(remaining, self.store.poll_interval)
            due = wake_at()
            if due is not None:
                wait = min(wait, max(0.0, due - self.store.clock()))
            self.store.wait_for_change(wait, mark)
            mark = self.store.change_mark()
            current = read()
        return current

    # -- pairings -------------------------------------------------------------------

    def _created(self, kind: str, created: dict) -> dict:
        if self.on_created is not None:
            self.on_created(kind, created)
        return created

    def create_pairing(self, requester_id, params):
        return self._created("pairing", self.store.create_pairing(
            requester_id, params.require("user_name"), "phrase",
            params.require("pairing_phrase", "pairing_token")))

    def create_pairing_sms(self, requester_id, params):
        params.require("phone_number")
        return self._created("pairing", self.store.create_pairing(
            requester_id, params.require("user_name"), "sms"))

    def create_pairing_qr(self, requester_id, params):
        return self._created("pairing", self.store.create_pairing(
            requester_id, params.require("user_name"), "qr"))

    def get_pairing(self, requester_id, params, id):
        return self._long_poll(params, lambda: self.store.get_pairing(requester_id, id),
                               lambda: self.store.pairing_wake_at(id))

    def send_reset_link(self, requester_id, params, id):
        params.require("reset_email")
        self.store.get_pairing(requester_id, id)  # ownership; the mail itself is simulated
        return {}

    # -- authentication requests ---------------------------------------------------------

    def initiate(self, requester_id, params):
        pairing_id, user_name = params.get("pairing_id"), params.get("user_name")
        if (pairing_id is None) == (user_name is None):
            raise BadRequest("Exactly one of pairing_id and user_name is required")
        return self._created("request", self.store.initiate(
            requester_id, pairing_id=pairing_id, user_name=user_name,
            terminal_name=params.get("terminal_name"),
            terminal_id=params.get("terminal_name_extra", "requester_specified_terminal_id",
                                   "terminal_id"),
            action_name=params.get("action_name", "action") or "Log in",
            automation_allowed=params.boolean("automation_allowed", default=True),
            challenge_required=params.boolean("challenge_required", default=False),
            otp=params.get("otp")))

    def get_request(self, requester_id, params, id):
        return self._long_poll(params, lambda: self.store.get_request(requester_id, id),
                               lambda: self.store.request_wake_at(id))

    def otp_auth(self, requester_id, params, id):
        return self.store.otp_auth(requester_id, id, params.require("otp"))

    # -- users and terminals --------------------------------------------------------------

    def find_users(self, requester_id, params):
        return self.store.find_users(requester_id, params.get("name", "user_name"))

    def create_user(self, requester_id, params):
        return self.store.create_user(requester_id, params.require("name", "user_name"))

    def reset_user(self, requester_id, params):
        self.store.reset_user(requester_id, params.require("user_name", "name"))
        return {}

    def get_user(self, requester_id, params, id):
        return self.store.get_user(requester_id, id)

    def update_user(self, requester_id, params, id):
        enabled = params.boolean("toopher_authentication_enabled")
        disabled = params.boolean("disable_toopher_auth")
        if enabled is None and disabled is not None:
            enabled = not disabled
        if enabled is None:
            return self.store.get_user(requester_id, id)
        return self.store.set_user_enabled(requester_id, id, enabled)

    def create_terminal(self, requester_id, params):
        return self.store.create_terminal(
            requester_id, params.require("user_name"), params.require("name", "terminal_name"),
            params.require("name_extra", "requester_specified_id"))

    def get_terminal(self, requester_id, params, id):
        return self.store.get_terminal(requester_id, id)
