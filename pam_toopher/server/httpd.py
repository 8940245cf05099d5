"""The socket side of the server: HTTP/1.1 framing, body limits, TLS, fault switches, logs."""
import json
import math
import socket
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from .app import Api
from .store import Store

#: Largest request body read; Toopher requests are a few hundred bytes.
MAX_BODY = 64 * 1024
#: Seconds a client may take to send its request, so stalled sockets get freed.
SOCKET_TIMEOUT = 60


def _json_bytes(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def _error(status: int, message: str) -> bytes:
    return _json_bytes({"error_code": status, "error_message": message})


class ToopherHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' sessions expect
    # Garbage request lines are parsed as HTTP/0.9, whose answers have no
    # status line or headers; answer them as HTTP/1.0 so the 400 is readable.
    default_request_version = "HTTP/1.0"
    server_version = "ToopherCompatible/1.0"
    timeout = SOCKET_TIMEOUT
    # Headers and body go out in separate writes; with Nagle's algorithm the
    # body would wait for the client's delayed ACK (40 ms per answer).
    disable_nagle_algorithm = True

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def do_HEAD(self):
        self._send(405, _error(405, "Method not allowed"), head=True)

    # -- answers ---------------------------------------------------------------

    def _send(self, status: int, body: bytes, *, content_type="application/json",
              headers=(), length: Optional[int] = None, head=False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        # http.server's own errors (bad request line, huge headers, unknown
        # method) would be HTML; every answer of this server is JSON.
        if code == 501:
            code = 405
        self.close_connection = True
        self.log_error("%d %s", code, message or "")
        self._send(code, _error(code, message or self.responses.get(code, ("Error",))[0]),
                   head=self.command == "HEAD")

    def _read_body(self) -> Optional[bytes]:
        """The request body, or None after answering a 4xx about it."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self._send(411, _error(411, "Content-Length required, chunked bodies are not supported"))
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            self._send(400, _error(400, "Invalid Content-Length"))
            return None
        if length > MAX_BODY:
            # Not read: the connection closes instead, so a huge body costs nothing.
            self.close_connection = True
            self._send(413, _error(413, "Request body too large"))
            return None
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        return body

    def _handle(self) -> None:
        body = self._read_body()
        if body is None:
            return
        webapp = self.server.webapp
        if webapp is not None and (self.path == "/app" or self.path.startswith("/app/")):
            # The phone web app (webapp.py); fault switches are for API clients.
            status, headers, content = webapp.handle(self.command, self.path, self.headers, body)
            content_type = dict(headers).pop("Content-Type", "text/plain")
            self._send(status, content, content_type=content_type,
                       headers=[h for h in headers if h[0] != "Content-Type"])
            return
        fault = self.server.store.take_fault()
        if fault is not None and self._inject(fault):
            return
        scheme = "https" if self.server.tls else "http"
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        status, answer = self.server.api.handle(self.command, self.path, self.headers, body,
                                                f"{scheme}://{host}")
        self._send(status, _json_bytes(answer))

    def _inject(self, fault: dict) -> bool:
        """Apply a fault switch; True when it replaced the answer."""
        kind, seconds = fault["kind"], fault["seconds"]
        if kind == "slow":
            time.sleep(seconds)
            return False
        if kind == "429":
            self._send(429, _error(429, "Rate limit exceeded"),
                       headers=[("Retry-After", str(math.ceil(seconds)))])
        elif kind == "html":
            self._send(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>",
                       content_type="text/html")
        elif kind == "truncate":
            self.close_connection = True
            partial = b'{"id": "'
            self._send(200, partial, length=len(partial) + 200)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            status = int(kind)
            self._send(status, _error(status, "Simulated server error"))
        return True

    # -- logs: method, path, status; never the query, headers or body -------------

    def log_request(self, code="-", size="-"):
        # Unset when the request line itself was malformed.
        path = (getattr(self, "path", None) or "-").partition("?")[0]
        sys.stderr.write(f"{self.address_string()} {self.command or '-'} {path} {code}\n")

    def log_message(self, format, *args):
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class ToopherServer(ThreadingHTTPServer):
    daemon_threads = True  # long polls must not delay shutdown
    allow_reuse_address = True
    # socketserver's default backlog of 5 resets connections when dozens of
    # clients connect at once (seen with 50 concurrent test clients).
    request_queue_size = 128

    def __init__(self, address, store: Store, api: Api,
                 tls_context: Optional[ssl.SSLContext] = None):
        super().__init__(address, ToopherHandler)
        self.store, self.api, self.tls = store, api, tls_context is not None
        self.webapp = None  # set by cmd_serve when --public-url is given
        if tls_context is not None:
            # The handshake happens in the handler thread, on first read, so a
            # slow or broken client cannot stall the accept loop.
            self.socket = tls_context.wrap_socket(self.socket, server_side=True,
                                                  do_handshake_on_connect=False)

    def handle_error(self, request, client_address):
        # A client that hung up (or failed the TLS handshake) is routine.
        error = sys.exc_info()[1]
        sys.stderr.write(f"{client_address[0]} connection error: {type(error).__name__}: {error}\n")


def make_server(store: Store, host: str = "127.0.0.1", port: int = 8765,
                tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                api: Optional[Api] = None) -> ToopherServer:
    context = None
    if tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_cert, tls_key)
    return ToopherServer((host, port), store, api or Api(store), context)
