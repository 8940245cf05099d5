"""The one place where a complete request becomes a response.

The front (:mod:`.httpd`) reads a request off the network and hands a
:class:`Request` to :class:`Dispatcher`; whatever route matches the path
answers with a :class:`Response`.  Routes are ``(path, handler)`` pairs: a
path ending in ``/`` matches everything below it, any other path matches
exactly; the first match wins and the Toopher API (with the fault switches)
answers everything else.  Another application plugs in with one line, e.g.

    dispatcher.add_route("/app/", lambda r: Response.from_parts(*webapp.handle(r)))
"""
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from email.message import Message
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, cast

from .app import Api
from .store import Store

Headers = Tuple[Tuple[str, str], ...]
JSON = "application/json"
HEALTH_PATH = "/health"


@dataclass(frozen=True)
class Request:
    method: str
    target: str            # path and query, exactly as sent
    headers: Message       # case-insensitive .get(), as http.server gave
    body: bytes
    base_url: str          # scheme://host[:port] as the client addressed us
    client_address: str    # the peer, or the client a trusted proxy named

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: Headers = ()
    #: Close the connection after this answer.
    close: bool = False
    #: Content-Length to claim instead of len(body): only the truncate fault lies.
    declared_length: Optional[int] = None

    @classmethod
    def json(cls, status: int, obj: object, headers: Headers = ()) -> "Response":
        return cls(status, json.dumps(obj).encode("utf-8"), JSON, headers)

    @classmethod
    def error(cls, status: int, message: str, headers: Headers = ()) -> "Response":
        return cls.json(status, {"error_code": status, "error_message": message}, headers)

    @classmethod
    def from_parts(cls, status: int, headers: Sequence[Tuple[str, str]], body: bytes) -> "Response":
        """From a handler answering ``(status, [(header, value), ...], body)``;
        its Content-Type header becomes the content type."""
        content_type, rest = "application/octet-stream", []
        for name, value in headers:
            if name.lower() == "content-type":
                content_type = value
            elif name.lower() not in ("content-length", "connection"):  # the front's to set
                rest.append((name, value))
        return cls(status, body, content_type, tuple(rest))


Handler = Callable[[Request], Response]


class Dispatcher:
    """Routes requests to handlers; never raises (a bug answers 500)."""

    def __init__(self, store: Store, api: Optional[Api] = None):
        self.store = store
        self.api = api or Api(store)
        self.routes: List[Tuple[str, Handler]] = [(HEALTH_PATH, self.health)]
        self.fallback: Handler = self.toopher_api

    def add_route(self, path: str, handler: Handler) -> None:
        self.routes.append((path, handler))

    def handler_for(self, path: str) -> Handler:
        for prefix, handler in self.routes:
            if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
                return handler
        return self.fallback

    def __call__(self, request: Request) -> Response:
        try:
            return self.handler_for(request.path)(request)
        except Exception as error:  # noqa: BLE001 - one bug must not take the server down
            # Type and place only: a message could quote the request.
            frame = error.__traceback__
            while frame is not None and frame.tb_next is not None:
                frame = frame.tb_next
            where = (f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}"
                     if frame is not None else "?")
            sys.stderr.write(f"{request.client_address} internal error: "
                             f"{type(error).__name__} at {where}\n")
            return replace(Response.error(500, "Internal server error"), close=True)

    # -- routes ----------------------------------------------------------------------

    def health(self, request: Request) -> Response:
        """For load balancers: unsigned, says only whether the database answers."""
        if request.method != "GET":
            return Response(405, b"method not allowed\n", "text/plain")
        try:
            self.store.ping()
        except Exception as error:  # noqa: BLE001 - any failure means "do not send logins here"
            sys.stderr.write(f"health check failed: {type(error).__name__}\n")
            return Response(503, b"unavailable\n", "text/plain", (("Cache-Control", "no-store"),))
        return Response(200, b"ok\n", "text/plain", (("Cache-Control", "no-store"),))

    def toopher_api(self, request: Request) -> Response:
        fault = self.store.take_fault()
        if fault is not None:
            faulted = apply_fault(str(fault["kind"]), float(fault["seconds"]))  # type: ignore[arg-type]
            if faulted is not None:
                return faulted
        # An email.message.Message, as http.server gave the API: case-insensitive get().
        headers = cast(Mapping[str, str], request.headers)
        status, answer = self.api.handle(request.method, request.target, headers,
                                         request.body, request.base_url)
        return Response.json(status, answer)


def apply_fault(kind: str, seconds: float) -> Optional[Response]:
    """The answer a fault switch replaces the real one with (None: answer normally)."""
    if kind == "slow":
        time.sleep(seconds)
        return None
    if kind == "429":
        return Response.error(429, "Rate limit exceeded",
                              (("Retry-After", str(math.ceil(seconds))),))
    if kind == "html":
        return Response(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html")
    if kind == "truncate":
        partial = b'{"id": "'
        return Response(200, partial, close=True, declared_length=len(partial) + 200)
    status = int(kind)
    return Response.error(status, "Simulated server error")
