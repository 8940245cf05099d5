"""A fake Web Push service on loopback that checks what a real one would, and more.

    with FakePushService() as service:
        subscription = service.subscribe()      # what PushManager.subscribe() gives a page
        ...                                     # the page/test posts it to the server
        service.server_key = state["push"]["key"]   # the VAPID key the page subscribed with
        message = service.next_message()        # waits; message.payload is the plaintext

Each push is checked independently of the server's libraries: the VAPID
token (RFC 8292 ``Authorization: vapid t=JWT, k=KEY``) with PyJWT (Debian's
python3-jwt) against the server's public key, ``aud`` equal to this
service's origin and ``exp`` in the future and at most 24 h ahead; the body
(RFC 8291 ``aes128gcm``) is decrypted with http_ece and the subscription's
private key, which only this test holds.  Anything wrong is recorded in
``message.problems``; tests assert it is empty.

``service.answer`` is the status it answers (201; 404/410 say the
subscription is gone, 500 a failure); ``service.hang()`` makes it accept
pushes and never answer until ``release()``.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Message:
    token: str                       # which subscription (the endpoint's last part)
    headers: dict[str, str]
    payload: bytes | None = None     # the decrypted body
    claims: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def json(self) -> Any:
        assert self.payload is not None, self.problems
        return json.loads(self.payload)


class FakePushService:
    def __init__(self) -> None:
        self.answer = 201
        self.server_key: str | None = None  # the VAPID public key pushes must be signed with
        self.messages: queue.Queue[Message] = queue.Queue()
        self._keys: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        self._released = threading.Event()
        self._released.set()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                service._received(self.path, dict(self.headers.items()), body)
                service._released.wait(60)
                self.send_response(service.answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> FakePushService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    # -- what a browser does ------------------------------------------------------------------

    def subscribe(self) -> dict[str, Any]:
        """A new subscription (PushSubscription.toJSON()): keys only this service knows."""
        token = b64url(os.urandom(16))
        private_key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        self._keys[token] = (private_key, auth)
        public = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": f"{self.origin}/push/{token}", "expirationTime": None,
                "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}

    def hang(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def next_message(self, timeout: float = 10.0) -> Message:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no push reached the push service in {timeout} s") from None

    def no_message(self, wait: float = 1.0) -> bool:
        try:
            self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    # -- checking a push ------------------------------------------------------------------------

    def _received(self, path: str, headers: dict[str, str], body: bytes) -> None:
        token = path.rsplit("/", 1)[-1]
        message = Message(token, {name.lower(): value for name, value in headers.items()})
        if token not in self._keys:
            message.problems.append(f"unknown subscription {path}")
        else:
            self._check_vapid(message)
            self._decrypt(message, body)
        self.messages.put(message)

    def _check_vapid(self, message: Message) -> None:
        scheme, _, params = message.headers.get("authorization", "").partition(" ")
        fields = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        if scheme.lower() != "vapid" or "t" not in fields or "k" not in fields:
            message.problems.append(f"not a VAPID authorization: {scheme!r}")
            return
        if self.server_key is not None and fields["k"] != self.server_key:
            message.problems.append("signed with another key than the one the page subscribed with")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                                  unb64url(fields["k"]))
            message.claims = jwt.decode(fields["t"], key=public, algorithms=["ES256"],
                                        audience=self.origin,
                                        options={"require": ["exp", "aud", "sub"]})
        except (ValueError, jwt.PyJWTError) as error:
            message.problems.append(f"VAPID token refused: {error}")
            return
        if message.claims["exp"] > time.time() + 24 * 3600:
            message.problems.append("VAPID token valid for more than 24 h")

    def _decrypt(self, message: Message, body: bytes) -> None:
        if message.headers.get("content-encoding") != "aes128gcm":
            message.problems.append(f"content encoding {message.headers.get('content-encoding')!r}")
            return
        private_key, auth = self._keys[message.token]
        try:
            message.payload = http_ece.decrypt(body, private_key=private_key, auth_secret=auth,
                                               version="aes128gcm")
        except Exception as error:  # noqa: BLE001 -- any failure is the finding
            message.problems.append(f"cannot decrypt: {type(error).__name__}: {error}")
