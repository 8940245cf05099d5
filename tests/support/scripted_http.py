"""A loopback HTTP(S) server that answers what a test scripts, for the
failure classes a real Toopher server does not produce on its own: redirects,
answers about the wrong id, missing fields, oversized bodies, stalls.

Every request it receives is checked against an independent OAuth 1.0a
signature check and recorded, so a test can also assert what was sent.
"""
import json
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Tuple
from urllib.parse import parse_qsl

from tests.support.oauth_check import signature_is_valid

KEY, SECRET = "scripted-key-0001", "scripted-secret-0001"


@dataclass
class Received:
    method: str
    path: str
    form: list
    headers: dict
    signature_valid: bool
    client_port: int = 0             # tells a kept-alive connection from a new one


@dataclass
class Answer:
    status: int = 200
    body: object = None          # dict/list -> JSON; bytes -> raw
    headers: dict = field(default_factory=dict)
    delay: float = 0.0           # seconds to stall before answering
    cut_after: Optional[int] = None  # send only this many body bytes, then close
    declare_length: bool = True      # False: no Content-Length, the body ends at close
    # (bytes_per_step, seconds_per_step): send the body this slowly, each step
    # short of any read timeout, as a server holding a call open would.
    trickle: Optional[Tuple[int, float]] = None
    # The same for the status line and headers.
    trickle_headers: Optional[Tuple[int, float]] = None
    # Close the connection without answering, as a server closing an idle
    # keep-alive connection does when the next request arrives on it.
    drop: bool = False
    # After answering, reset the kept-alive connection (RST, not FIN).
    reset_after: bool = False

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body if self.body is not None else {}).encode()


class ScriptedServer:
    """``script`` is called with each Received request and returns an Answer."""

    def __init__(self, script: Callable[[Received], Answer], tls_context: Optional[ssl.SSLContext] = None):
        self.script = script
        self.received: List[Received] = []
        # Set on exit: ends every stall and trickle, so no handler outlives the server.
        self.stopping = threading.Event()
        outer = self

        def trickle(write, data: bytes, pace: Optional[Tuple[int, float]]) -> bool:
            if pace is None:
                write(data)
                return True
            size, seconds = pace
            for start in range(0, len(data), size):
                if outer.stopping.wait(seconds):
                    return False
                write(data[start:start + size])
            return True

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                form = parse_qsl(raw, keep_blank_values=True)
                scheme = "https" if tls_context else "http"
                url = f"{scheme}://{self.headers['Host']}{self.path}"
                received = Received(
                    self.command, self.path, form, dict(self.headers),
                    signature_is_valid(self.command, url, self.headers.get("Authorization", "OAuth "),
                                       form, KEY, SECRET),
                    self.client_address[1])
                outer.received.append(received)
                answer = outer.script(received)
                if answer.delay and outer.stopping.wait(answer.delay):
                    return
                if answer.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = answer.encoded()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    if answer.declare_length:
                        self.send_header("Content-Length", str(len(body)))
                    else:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    if answer.trickle_headers is not None:
                        head = b"".join(self._headers_buffer) + b"\r\n"
                        self._headers_buffer = []
                        if not trickle(self.wfile.write, head, answer.trickle_headers):
                            self.close_connection = True
                            return
                    else:
                        self.end_headers()
                    if answer.trickle is not None:
                        if not trickle(self.wfile.write, body, answer.trickle):
                            self.close_connection = True
                    elif answer.cut_after is not None:
                        self.wfile.write(body[:answer.cut_after])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                    else:
                        self.wfile.write(body)
                    if answer.reset_after:
                        self.wfile.flush()
                        self.close_connection = True
                        # SO_LINGER 0: close() sends RST instead of FIN.
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
                        self.connection.close()
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls_context:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
