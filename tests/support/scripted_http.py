"""A loopback HTTP(S) server that answers what a test scripts, for the
failure classes a real Toopher server does not produce on its own: redirects,
answers about the wrong id, missing fields, oversized bodies, stalls.

Every request it receives is checked against an independent OAuth 1.0a
signature check and recorded, so a test can also assert what was sent.
"""
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional
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


@dataclass
class Answer:
    status: int = 200
    body: object = None          # dict/list -> JSON; bytes -> raw
    headers: dict = field(default_factory=dict)
    delay: float = 0.0           # seconds to stall before answering
    cut_after: Optional[int] = None  # send only this many body bytes, then close
    declare_length: bool = True      # False: no Content-Length, the body ends at close

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body if self.body is not None else {}).encode()


class ScriptedServer:
    """``script`` is called with each Received request and returns an Answer."""

    def __init__(self, script: Callable[[Received], Answer], tls_context: Optional[ssl.SSLContext] = None):
        self.script = script
        self.received: List[Received] = []
        outer = self

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
                                       form, KEY, SECRET))
                outer.received.append(received)
                answer = outer.script(received)
                time.sleep(answer.delay)
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
                    self.end_headers()
                    if answer.cut_after is not None:
                        self.wfile.write(body[:answer.cut_after])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
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
        self.httpd.shutdown()
        self.httpd.server_close()
