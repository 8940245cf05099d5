"""The phone web app under /app/: pages, JSON endpoints, cookies, CSRF.

:meth:`WebApp.handle` turns one HTTP request into ``(status, headers, body)``
and never raises; the socket side (:mod:`.httpd`) only frames it.

Who may do what:

* an enrolment link's token (single use, short-lived) registers a passkey and
  gives the phone a session cookie (``HttpOnly``, ``SameSite=Strict``,
  ``Secure`` except on ``http://localhost``, ``Path=/app/``);
* the session alone lists the user's pending requests and pairings, makes a
  pairing phrase, and denies or refuses — saying no needs no more;
* approving a request or accepting a pairing needs, on top, a passkey
  assertion (user verification required) over a challenge the server builds
  from its own record of what is approved (:func:`.webauthn.bound_challenge`).

Every state-changing request is a POST with a JSON body whose ``Origin`` must
be the public origin, and (with a session) an ``X-CSRF-Token`` header derived
from the session cookie; a cross-site page can send neither.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Tuple

from .devices import SESSION_SECONDS, DeviceStore, pairing_binding, request_binding
from .errors import BadRequest, Forbidden, NotFound, ServerError, Unauthorized
from .push import parse_subscription
from .store import Store
from .webauthn import RelyingParty, bound_challenge

PREFIX = "/app"
STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "toopher_phone"
CSRF_HEADER = "X-CSRF-Token"
#: Largest JSON body of the web app (a registration is about 1 KiB).
MAX_JSON_BODY = 32 * 1024

Response = tuple[int, list[tuple[str, str]], bytes]

#: No inline script or style, nothing from elsewhere; data: only for QR images.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
       " connect-src 'self'; manifest-src 'self'; worker-src 'self'; base-uri 'none';"
       " form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: Pages: the link printed by ``device enroll`` is /app/enrol#TOKEN (the token
#: in the fragment never reaches a server log or a Referer header).
PAGES = ("/app/", "/app/enrol")


@dataclass(frozen=True)
class PublicUrl:
    """Where phones reach the server; its host is the WebAuthn rp_id."""

    origin: str  # scheme://host[:port], as browsers write it in clientDataJSON
    rp_id: str

    @property
    def app_url(self) -> str:
        return f"{self.origin}{PREFIX}/"

    def enrol_link(self, token: str) -> str:
        return f"{self.origin}{PREFIX}/enrol#{token}"

    @property
    def secure_cookies(self) -> bool:
        return self.origin.startswith("https://")


def parse_public_url(url: str, listening_port: int | None = None) -> PublicUrl:
    """Validate ``--public-url``: https on a DNS name, or http://localhost.

    WebAuthn works only in a secure context and refuses an IP address as
    rp_id.  ``http://localhost`` without a port means the port the server
    listens on (handy with ``--port 0``).
    """
    parsed = urllib.parse.urlsplit(url.strip())
    host = (parsed.hostname or "").lower()
    if parsed.scheme not in ("https", "http") or not host:
        raise BadRequest(f"--public-url must be https://HOST[:PORT] (got {url!r})")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.username:
        raise BadRequest("--public-url is scheme://host[:port] only, without a path")
    if parsed.scheme == "http" and host != "localhost":
        raise BadRequest("--public-url must be https (plain http only for http://localhost):"
                         " browsers allow passkeys only in a secure context")
    if re.fullmatch(r"[\d.]+|\[?[0-9a-f:]+\]?", host):
        raise BadRequest("--public-url needs a DNS name: WebAuthn refuses an IP address")
    try:
        port = parsed.port
    except ValueError:
        raise BadRequest(f"--public-url has an invalid port: {url!r}") from None
    if port is None and parsed.scheme == "http" and listening_port:
        port = listening_port
    default = 443 if parsed.scheme == "https" else 80
    origin = f"{parsed.scheme}://{host}" + (f":{port}" if port and port != default else "")
    return PublicUrl(origin, host)


def user_handle(user_name: str) -> bytes:
    """The WebAuthn user id of a user name (one account per name on this server)."""
    return hashlib.sha256(b"pam_toopher user\0" + user_name.encode("utf-8")).digest()[:16]


def csrf_token(session: str) -> str:
    return hmac.new(session.encode("ascii"), b"csrf", hashlib.sha256).hexdigest()


def otpauth_uri(secret: str, user_name: str, issuer: str) -> str:
    """Key URI of a pairing's TOTP secret for authenticator apps (SHA1, 6 digits, 30 s)."""
    label = urllib.parse.quote(f"{issuer}:{user_name}", safe="@:")
    query = urllib.parse.urlencode({"secret": secret, "issuer": issuer, "algorithm": "SHA1",
                                    "digits": "6", "period": "30"}, quote_via=urllib.parse.quote)
    return f"otpauth://totp/{label}?{query}"


def qr_data_uri(text: str) -> str:
    import segno  # only the pairing answer needs it

    return segno.make(text, error="m").svg_data_uri(scale=5, border=2)


class _Request:
    """One decoded request of the web app."""

    def __init__(self, method: str, path: str, headers: Mapping[str, str], body: bytes):
        self.method, self.path, self.headers, self.body = method, path, headers, body
        self.cookie = _cookie(headers.get("Cookie", ""))
        self._json: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        if self._json is None:
            if not self.body:
                self._json = {}
            else:
                try:
                    value = json.loads(self.body.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    raise BadRequest("The body is not valid JSON") from None
                if not isinstance(value, dict):
                    raise BadRequest("The body must be a JSON object")
                self._json = value
        return self._json


def _cookie(header: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def _json_response(status: int, value: Any, headers: list[tuple[str, str]] | None = None
                   ) -> Response:
    return (status, [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                     *(headers or [])], json.dumps(value).encode("utf-8"))


class WebApp:
    """Routes of /app/; ``handle`` is what :mod:`.httpd` calls."""

    def __init__(self, store: Store, public: PublicUrl, push_key: str | None = None,
                 push_allow_http_loopback: bool = False):
        self.devices = DeviceStore(store)
        self.public = public
        #: The VAPID public key phones subscribe with; None: push is off.
        self.push_key = push_key
        self.push_allow_http_loopback = push_allow_http_loopback
        self.rp = RelyingParty(public.origin, public.rp_id)
        self.static = {f"{PREFIX}/{path.name}": path for path in STATIC_DIR.iterdir()
                       if path.suffix in STATIC_TYPES}
        post = "POST"
        table: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", r"/app/api/state", self.state),
            (post, r"/app/api/enrol/options", self.enrol_options),
            (post, r"/app/api/enrol/complete", self.enrol_complete),
            (post, r"/app/api/phrase", self.phrase),
            (post, r"/app/api/push/subscribe", self.push_subscribe),
            (post, r"/app/api/push/unsubscribe", self.push_unsubscribe),
            (post, r"/app/api/requests/(?P<id>[\w-]{1,64})/options", self.request_options),
            (post, r"/app/api/requests/(?P<id>[\w-]{1,64})/approve", self.approve),
            (post, r"/app/api/requests/(?P<id>[\w-]{1,64})/deny", self.deny),
            (post, r"/app/api/pairings/(?P<id>[\w-]{1,64})/options", self.pairing_options),
            (post, r"/app/api/pairings/(?P<id>[\w-]{1,64})/accept", self.accept_pairing),
            (post, r"/app/api/pairings/(?P<id>[\w-]{1,64})/refuse", self.refuse_pairing),
        ]
        self.routes = [(method, re.compile(pattern + r"\Z"), handler)
                       for method, pattern, handler in table]

    # -- plumbing -------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
               base_url: str = "", client_address: Any = None) -> Response:
        """Answer one request below /app; never raises."""
        path = target.partition("?")[0]
        try:
            status, response_headers, content = self._dispatch(method, path, headers, body)
        except ServerError as error:
            status, response_headers, content = _json_response(error.status,
                                                               {"error": error.message})
        except Exception as error:  # noqa: BLE001 -- a bug: refuse, keep serving, log no input
            sys.stderr.write(f"web app error on {method} {path}: {type(error).__name__}\n")
            status, response_headers, content = _json_response(500, {"error": "Internal error"})
        return status, [*response_headers, *SECURITY_HEADERS], content

    def _dispatch(self, method: str, path: str, headers: Mapping[str, str],
                  body: bytes) -> Response:
        if path == PREFIX:
            return 308, [("Location", f"{PREFIX}/")], b""
        if path in PAGES or path in self.static:
            if method != "GET":
                raise ServerError("Method not allowed", status=405)
            return self._static(STATIC_DIR / "index.html" if path in PAGES else self.static[path])
        allowed = []
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match:
                if route_method != method:
                    allowed.append(route_method)
                    continue
                request = _Request(method, path, headers, body)
                if method == "POST":
                    self._check_post(request)
                return handler(request, **match.groupdict())
        if allowed:
            raise ServerError("Method not allowed", status=405)
        raise NotFound("No such page")

    @staticmethod
    def _static(path: Path) -> Response:
        content = path.read_bytes()
        cache = "no-cache"  # revalidate: a new release must reach installed apps
        return 200, [("Content-Type", STATIC_TYPES[path.suffix]), ("Cache-Control", cache)], content

    def _check_post(self, request: _Request) -> None:
        """Same-origin JSON only: what a cross-site form or fetch cannot send."""
        if request.headers.get("Origin") != self.public.origin:
            raise Forbidden("Cross-origin request refused (the Origin header is not"
                            f" {self.public.origin})")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ServerError("The body must be application/json", status=415)
        if len(request.body) > MAX_JSON_BODY:
            raise ServerError("Request body too large", status=413)
        request.json()  # a JSON object, or 400

    def _session(self, request: _Request, *, csrf: bool) -> tuple[Any, str]:
        """(device row, session token) of a valid session; 401/403 otherwise."""
        device = self.devices.session_device(request.cookie)
        if device is None or request.cookie is None:
            raise Unauthorized("This phone is not enrolled, or its enrolment was revoked")
        if csrf and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""),
                                            csrf_token(request.cookie)):
            raise Forbidden("Missing or wrong CSRF token; reload the page")
        return device, request.cookie

    def _cookie_header(self, session: str) -> tuple[str, str]:
        attributes = [f"{COOKIE}={session}", f"Path={PREFIX}/", f"Max-Age={SESSION_SECONDS}",
                      "HttpOnly", "SameSite=Strict"]
        if self.public.secure_cookies:
            attributes.append("Secure")
        return "Set-Cookie", "; ".join(attributes)

    @staticmethod
    def _string(request: _Request, name: str, limit: int = 256) -> str:
        value = request.json().get(name)
        if not isinstance(value, str) or not value or len(value) > limit:
            raise BadRequest(f"Missing or malformed field: {name}")
        return value

    @staticmethod
    def _credential(request: _Request) -> Mapping[str, Any]:
        credential = request.json().get("credential")
        if not isinstance(credential, dict):
            raise BadRequest("Missing field: credential")
        return credential

    # -- enrolment ---------------------------------------------------------------------------

    def enrol_options(self, request: _Request) -> Response:
        token = self._string(request, "token")
        enrolment = self.devices.enrolment(token)
        user_name = enrolment["user_name"]
        challenge_id, nonce = self.devices.new_challenge("register", enrolment["token_hash"], None)
        options = self.rp.registration_options(user_handle(user_name), user_name, nonce,
                                               self.devices.user_credential_ids(user_name))
        return _json_response(200, {"challengeId": challenge_id, "publicKey": options,
                                    "user": user_name})

    def enrol_complete(self, request: _Request) -> Response:
        token = self._string(request, "token")
        enrolment = self.devices.enrolment(token)
        nonce = self.devices.challenge_nonce(request.json().get("challengeId"), "register",
                                             enrolment["token_hash"], None)
        credential = self.rp.verify_registration(nonce, self._credential(request))
        _, session = self.devices.complete_enrolment(
            token, request.json()["challengeId"], credential, user_handle(enrolment["user_name"]))
        return _json_response(200, {"user": enrolment["user_name"]},
                              [self._cookie_header(session)])

    # -- the phone's view ----------------------------------------------------------------------

    def state(self, request: _Request) -> Response:
        device, session = self._session(request, csrf=False)
        user_name = device["user_name"]
        return _json_response(200, {
            "user": user_name, "device": device["name"], "csrf": csrf_token(session),
            "requests": self.devices.pending_requests(user_name),
            "pairings": self.devices.pending_pairings(user_name),
            "push": None if self.push_key is None else {
                "key": self.push_key,
                "subscribed": self.devices.has_push_subscription(device["id"])}})

    def phrase(self, request: _Request) -> Response:
        device, _ = self._session(request, csrf=True)
        return _json_response(200, {"phrase": self.devices.store.make_pairing_phrase(
            device["user_name"])})

    # -- push notifications ------------------------------------------------------------------

    def push_subscribe(self, request: _Request) -> Response:
        """Store the PushSubscription the page's browser made with our VAPID key."""
        device, _ = self._session(request, csrf=True)
        if self.push_key is None:
            raise NotFound("Push notifications are not enabled on this server")
        subscription = parse_subscription(request.json().get("subscription"),
                                          self.push_allow_http_loopback)
        self.devices.save_push_subscription(device["id"], subscription)
        return _json_response(200, {"subscribed": True})

    def push_unsubscribe(self, request: _Request) -> Response:
        device, _ = self._session(request, csrf=True)
        self.devices.delete_push_subscription(device["id"])
        return _json_response(200, {"subscribed": False})

    # -- passkey answers: a request's approval, a pairing's acceptance ------------------

    def _subject(self, purpose: str, id: str, user_name: str) -> Tuple[Any, dict]:
        """The server's own record of what is answered, and the fields the
        challenge binds (never what the page sends)."""
        if purpose == "approve":
            row = self.devices.request_for_phone(id, user_name)
            return row, request_binding(row)
        row = self.devices.pairing_for_phone(id, user_name)
        return row, pairing_binding(row)

    def _assertion_options(self, request: _Request, id: str, purpose: str) -> Response:
        device, _ = self._session(request, csrf=True)
        _, binding = self._subject(purpose, id, device["user_name"])
        challenge_id, nonce = self.devices.new_challenge(purpose, id, device["id"])
        options = self.rp.assertion_options(bound_challenge(nonce, binding),
                                            [bytes(device["credential_id"])])
        return _json_response(200, {"challengeId": challenge_id, "publicKey": options})

    def _verified_assertion(self, request: _Request, id: str,
                            purpose: str) -> Tuple[Any, Any, Any, int, dict]:
        """(device, row, challenge id, sign count, assertion record) of a
        passkey assertion over this subject's single-use challenge."""
        device, _ = self._session(request, csrf=True)
        challenge_id = request.json().get("challengeId")
        nonce = self.devices.challenge_nonce(challenge_id, purpose, id, device["id"])
        row, binding = self._subject(purpose, id, device["user_name"])
        credential = self._credential(request)
        sign_count = self.rp.verify_assertion(bound_challenge(nonce, binding),
                                              bytes(device["credential"]), credential)
        return device, row, challenge_id, sign_count, _assertion_record(credential)

    # -- requests -------------------------------------------------------------------------------

    def request_options(self, request: _Request, id: str) -> Response:
        return self._assertion_options(request, id, "approve")

    def approve(self, request: _Request, id: str) -> Response:
        device, row, challenge_id, sign_count, record = self._verified_assertion(
            request, id, "approve")
        self.devices.answer_request(device, row, True, challenge_id, sign_count, record)
        return _json_response(200, {"answered": "approve"})

    def deny(self, request: _Request, id: str) -> Response:
        device, _ = self._session(request, csrf=True)
        row = self.devices.request_for_phone(id, device["user_name"])
        self.devices.answer_request(device, row, False)
        return _json_response(200, {"answered": "deny"})

    # -- pairings --------------------------------------------------------------------------------

    def pairing_options(self, request: _Request, id: str) -> Response:
        return self._assertion_options(request, id, "pair")

    def accept_pairing(self, request: _Request, id: str) -> Response:
        device, row, challenge_id, sign_count, record = self._verified_assertion(
            request, id, "pair")
        self.devices.answer_pairing(device, row, True, challenge_id, sign_count, record)
        # Shown once, in this answer: the page does not keep it and no other
        # endpoint returns it.
        uri = otpauth_uri(row["totp_secret"], row["user_name"], row["requester_name"])
        return _json_response(200, {"answered": "accept", "otpauth": uri,
                                    "qr": qr_data_uri(uri)})

    def refuse_pairing(self, request: _Request, id: str) -> Response:
        device, _ = self._session(request, csrf=True)
        row = self.devices.pairing_for_phone(id, device["user_name"])
        self.devices.answer_pairing(device, row, False)
        return _json_response(200, {"answered": "refuse"})


def _assertion_record(credential: Mapping[str, Any]) -> dict[str, str]:
    """The verified assertion as kept in the audit trail (base64url, as sent)."""
    return {name: str(credential[name]) for name in
            ("credentialId", "clientDataJSON", "authenticatorData", "signature")}
