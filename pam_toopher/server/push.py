"""Web Push to enrolled phones: a notification when a login or pairing waits.

Standards: RFC 8030 (the push message), RFC 8291 (payload encrypted end to
end, ``aes128gcm``), RFC 8292 (VAPID: the server signs each push with its
own key pair, which the phone's subscription is bound to).  The crypto and
the protocol are pywebpush's (with py-vapid and http-ece); pywebpush is not
packaged in Debian 12, so push is **optional**: :func:`available` tells
whether it can be imported, and without it the web app works as before
(the page polls while it is open).

What a push carries: only ``{"kind": "request"|"pairing", "id": ...}``.  The
service worker fetches what the request is for from the web app itself (with
the phone's session), so the push services of browser vendors learn nothing
but that something happened, and the page, not the push, stays the only
place where a request is shown and answered.

Sending never delays the API's answer to the PAM module and never fails a
login: :meth:`PushSender.on_created` only puts a job on a bounded queue
(dropped, and counted in the log, when full); worker threads look up the
user's subscriptions and send, each HTTP call bounded by a timeout.  A
subscription the push service answers 404 or 410 for is gone (the browser
unsubscribed or the app was removed) and is deleted.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import BadRequest

#: Longest push endpoint accepted (real ones are 150–500 characters).
MAX_ENDPOINT = 2048
#: Seconds for connecting to the push service and for each read of its answer.
PUSH_TIMEOUT = 5.0
#: Seconds after which a push's connection is cut, however its bytes trickle.
PUSH_TOTAL = 15.0
#: A push older than this is useless: no module waits longer for an answer.
PUSH_TTL = 120
#: Jobs waiting to be sent; beyond this, new ones are dropped (and counted).
QUEUE_SIZE = 1000
#: Threads sending pushes: a hanging push service holds one of them only.
WORKERS = 4
#: The setting under which the VAPID private key (PEM) is kept in the database.
VAPID_SETTING = "vapid_private_key"
#: Endpoints accepted over plain http with --push-allow-http-loopback (tests).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

Log = Callable[[str], None]


def available() -> str | None:
    """None if Web Push can be used here, otherwise why not (for the log)."""
    try:
        import pywebpush  # noqa: F401
    except ImportError:
        return "pywebpush is not installed (pip install pywebpush; see docs/server.md)"
    return None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- subscriptions ------------------------------------------------------------------------

@dataclass(frozen=True)
class Subscription:
    """What PushManager.subscribe() gave the page: where to push, and the keys to encrypt to."""

    endpoint: str
    p256dh: str  # the browser's P-256 public key, base64url (65 bytes, uncompressed)
    auth: str    # the shared authentication secret, base64url (16 bytes)

    def info(self) -> dict:
        """As pywebpush wants it (the page's PushSubscription.toJSON())."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def endpoint_host(endpoint: str) -> str:
    """The push service's host: what the log says instead of the (capability) URL."""
    return urllib.parse.urlsplit(endpoint).hostname or "?"


def _check_endpoint(endpoint: Any, allow_http_loopback: bool) -> str:
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_ENDPOINT \
            or not endpoint.isascii() or any(ch in endpoint for ch in " \t\r\n"):
        raise BadRequest(f"Missing or malformed push endpoint (a URL of at most"
                         f" {MAX_ENDPOINT} characters)")
    parsed = urllib.parse.urlsplit(endpoint)
    try:
        _ = parsed.port  # raises on a port that is not a number below 65536
    except ValueError:
        raise BadRequest("The push endpoint has an invalid port") from None
    host = (parsed.hostname or "").lower()
    if not host or parsed.username is not None or parsed.password is not None \
            or parsed.fragment:
        raise BadRequest("Malformed push endpoint")
    if parsed.scheme == "http" and allow_http_loopback and host in LOOPBACK_HOSTS:
        return endpoint
    if parsed.scheme != "https":
        raise BadRequest("The push endpoint must be an https URL")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return endpoint  # a DNS name, as every browser vendor's push service has
    # Push services have names; an address would let a session holder make the
    # server post to hosts of its own network.
    raise BadRequest("The push endpoint must be on a DNS name, not an IP address")


def _check_key(value: Any, name: str, check: Callable[[bytes], bool]) -> str:
    if isinstance(value, str) and 0 < len(value) <= 200:
        try:
            raw = _unb64url(value)
        except ValueError:
            raw = b""
        if raw and check(raw):
            return value
    raise BadRequest(f"Missing or malformed subscription key: {name}")


def _is_p256_point(raw: bytes) -> bool:
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        return False
    return len(raw) == 65


def parse_subscription(value: Any, allow_http_loopback: bool = False) -> Subscription:
    """Validate a PushSubscription.toJSON() from the page; BadRequest otherwise."""
    if not isinstance(value, dict):
        raise BadRequest("Missing field: subscription")
    keys = value.get("keys")
    if not isinstance(keys, dict):
        raise BadRequest("Missing field: subscription.keys")
    return Subscription(
        endpoint=_check_endpoint(value.get("endpoint"), allow_http_loopback),
        p256dh=_check_key(keys.get("p256dh"), "p256dh", _is_p256_point),
        auth=_check_key(keys.get("auth"), "auth", lambda raw: len(raw) == 16))


def is_public(address: str) -> bool:
    """Globally routable (an IPv4-mapped IPv6 address judged as its IPv4)."""
    parsed = ipaddress.ip_address(address.split("%")[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.is_global


def private_address(endpoint: str) -> str | None:
    """The first address of the endpoint's host that is not a public
    (globally routable) one, or None.  Resolved at send time, in a push
    worker: an enrolled phone's session could otherwise subscribe with an
    https URL on a DNS name of the server's own network (or one resolving to
    127.0.0.1) and make the server POST to it.  A name that does not resolve
    is the push service's failure, left to the send."""
    parsed = urllib.parse.urlsplit(endpoint)
    try:
        infos = socket.getaddrinfo(parsed.hostname or "", parsed.port or 443,
                                   type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        address = str(info[4][0])
        if not is_public(address):
            found = ipaddress.ip_address(address.split("%")[0])
            return str(getattr(found, "ipv4_mapped", None) or found)
    return None


def push_session(allow_private: bool = False, total: float = PUSH_TOTAL) -> Any:
    """A requests session for one push: no redirect is followed, every
    connection is cut ``total`` seconds after it was made (a push service
    trickling its answer one byte at a time would otherwise hold a worker
    for ever: the timeouts bound each read, not the call), and, unless
    ``allow_private`` (the tests' fake push service), it connects directly
    only to public addresses.  The address is checked on the connected
    socket, before TLS, so a DNS answer that changed since
    :func:`private_address` looked (DNS rebinding) gets no request either.
    A proxy configured in the environment is the admin's and is not checked."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.exceptions import NewConnectionError

    def guarded(connection: Any) -> Any:
        sock = connection._guarded_new_conn()
        peer = str(sock.getpeername()[0])
        if not allow_private and not is_public(peer):
            sock.close()
            raise NewConnectionError(connection, f"refused: {peer} is not a public address")
        timer = threading.Timer(total, _cut, (sock,))
        timer.daemon = True
        timer.start()
        connection._deadline_timer = timer
        return sock

    def guarded_close(connection: Any) -> None:
        timer = getattr(connection, "_deadline_timer", None)
        if timer is not None:
            timer.cancel()
        connection._guarded_close()

    class GuardedHTTPConnection(HTTPConnection):
        _guarded_new_conn = HTTPConnection._new_conn
        _guarded_close = HTTPConnection.close
        _new_conn = guarded
        close = guarded_close

    class GuardedHTTPSConnection(HTTPSConnection):
        _guarded_new_conn = HTTPSConnection._new_conn
        _guarded_close = HTTPSConnection.close
        _new_conn = guarded
        close = guarded_close

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool,
                                                       "https": GuardedHTTPSPool}

    session = requests.Session()
    session.max_redirects = 0
    session.mount("https://", GuardedAdapter())
    session.mount("http://", GuardedAdapter())
    return session


def _cut(sock: socket.socket) -> None:
    """End a connection's reads and writes at once (from the deadline's timer)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


# -- the server's VAPID key pair --------------------------------------------------------------

def new_vapid_private_key() -> str:
    """A new P-256 private key, PEM (PKCS#8): kept in the database, never logged."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def application_server_key(private_pem: str) -> str:
    """The public key the page subscribes with (base64url uncompressed point)."""
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the VAPID key is not an EC key")
    return b64url(key.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint))


def default_subject(origin: str) -> str:
    """VAPID's contact (RFC 8292 ``sub``): the public https origin, else a mailto."""
    parsed = urllib.parse.urlsplit(origin)
    if parsed.scheme == "https" and parsed.hostname:
        return f"https://{parsed.hostname}"
    return "mailto:toopher-server@localhost"


def check_subject(subject: str) -> str:
    """``--vapid-subject``: a mailto: address or an https: URL (RFC 8292 section 2.1)."""
    if subject.startswith("mailto:") and "@" in subject[7:] and " " not in subject:
        return subject
    parsed = urllib.parse.urlsplit(subject)
    if parsed.scheme == "https" and parsed.hostname and not parsed.path.strip("/"):
        return f"https://{parsed.hostname}"
    raise ValueError("--vapid-subject must be mailto:ADDRESS or https://HOST"
                     f" (got {subject!r})")


def payload(kind: str, object_id: str) -> bytes:
    """What a push carries: the object's kind and id, nothing it is for."""
    return json.dumps({"kind": kind, "id": object_id}, separators=(",", ":")).encode("ascii")


# -- sending ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PushSettings:
    subject: str
    timeout: float = PUSH_TIMEOUT
    ttl: int = PUSH_TTL
    total: float = PUSH_TOTAL
    #: Push to endpoints on private or loopback addresses (the tests' fake
    #: push service, with --push-allow-http-loopback); never in production.
    allow_private: bool = False


class PushSender:
    """A bounded queue and worker threads that push to a user's subscribed devices.

    ``devices`` is the :class:`.devices.DeviceStore` (subscriptions);
    ``private_pem`` the VAPID key.  :meth:`on_created` is what the API calls.
    """

    def __init__(self, devices: Any, private_pem: str, settings: PushSettings, log: Log,
                 workers: int = WORKERS, queue_size: int = QUEUE_SIZE):
        from py_vapid import Vapid02  # RFC 8292 ("vapid t=…, k=…") headers

        self.devices = devices
        self.settings = settings
        self.log = log
        self._vapid = Vapid02.from_pem(private_pem.encode("ascii"))
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._dropped = 0
        self._dropped_lock = threading.Lock()
        self._last_drop_log = 0.0
        self._threads = [threading.Thread(target=self._run, name=f"push-{n}", daemon=True)
                         for n in range(workers)]
        for thread in self._threads:
            thread.start()

    # -- the API's side: never blocks, never raises -------------------------------------------

    def on_created(self, kind: str, created: Mapping[str, Any]) -> None:
        """A request or pairing was created through the API: push it if it waits for the phone."""
        try:
            if created.get("pending"):
                self.notify(kind, str(created["user"]["name"]), str(created["id"]))
        except Exception as error:  # noqa: BLE001 -- a push must never fail a login
            self.log(f"push: not queued: {type(error).__name__}")

    def notify(self, kind: str, user_name: str, object_id: str) -> None:
        try:
            self._jobs.put_nowait((kind, user_name, object_id))
        except queue.Full:
            with self._dropped_lock:
                self._dropped += 1
                now = time.monotonic()
                if now - self._last_drop_log < 10:
                    return
                dropped, self._dropped, self._last_drop_log = self._dropped, 0, now
            self.log(f"push: queue full ({self._jobs.maxsize} waiting), {dropped} push(es)"
                     " dropped; is the push service reachable?")

    def close(self, timeout: float = 1.0) -> None:
        """Stop the workers (those stuck on a push service are daemons and left behind)."""
        for _ in self._threads:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- the workers ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            kind, user_name, object_id = job
            try:
                for device_id, subscription in self.devices.push_subscriptions(user_name):
                    self._send(kind, object_id, device_id, subscription)
            except Exception as error:  # noqa: BLE001 -- keep the worker alive
                self.log(f"push: {kind} {object_id} not sent: {type(error).__name__}")

    def _send(self, kind: str, object_id: str, device_id: str,
              subscription: Subscription) -> None:
        from pywebpush import WebPushException, webpush

        where = f"{kind} {object_id} to device {device_id} ({endpoint_host(subscription.endpoint)})"
        if not self.settings.allow_private:
            address = private_address(subscription.endpoint)
            if address is not None:
                self.log(f"push: {where} refused: the endpoint resolves to {address},"
                         " not a public address")
                return
        # Checked again on the socket (a DNS answer may change), no redirect
        # followed, and the whole call bounded (push_session).
        session = push_session(self.settings.allow_private, self.settings.total)
        try:
            response = webpush(subscription.info(), data=payload(kind, object_id),
                               vapid_private_key=self._vapid,
                               vapid_claims={"sub": self.settings.subject},
                               content_encoding="aes128gcm", ttl=self.settings.ttl,
                               headers={"Urgency": "high"},
                               timeout=(self.settings.timeout, self.settings.timeout),
                               requests_session=session)
        except WebPushException as error:
            response = getattr(error, "response", None)
            status = getattr(response, "status_code", None)
            if status in (404, 410):
                self.devices.delete_push_subscription(device_id, subscription.endpoint)
                self.log(f"push: {where}: {status}, the subscription is gone; removed")
            else:
                self.log(f"push: {where} failed: {status or type(error).__name__}")
            return
        except Exception as error:  # noqa: BLE001 -- timeouts, refused connections, TLS
            self.log(f"push: {where} failed: {type(error).__name__}")
            return
        finally:
            session.close()
        self.log(f"push: {where}: {response.status_code}")
