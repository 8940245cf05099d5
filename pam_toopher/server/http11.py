"""HTTP/1.1 framing as pure functions: parse a request head, frame an answer.

No sockets here: :mod:`.httpd` feeds bytes in and writes bytes out, so every
rule about what a request may look like lives in one place and is tested
without a network.  The rules are strict where laxness lets one request be
read two ways (request smuggling behind a proxy): one Content-Length, no
chunked bodies, no folded header lines.
"""
import email.utils
import http.client
import io
import re
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from typing import Iterable, Optional, Tuple

#: Largest request head (request line and headers); real ones are under 2 KiB.
MAX_HEAD = 16 * 1024
#: Most header lines in one request.
MAX_HEADERS = 100
#: Methods handed to the application; anything else is answered 405 here.
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
SERVER_NAME = "ToopherCompatible/1.0"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_DIGITS = re.compile(r"[0-9]{1,18}")


class HttpError(Exception):
    """A request the front answers itself (status, message) and then closes."""

    def __init__(self, status: int, message: str, head_only: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.head_only = head_only  # a HEAD request: the answer has no body


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    headers: Message
    content_length: int
    keep_alive: bool
    expect_continue: bool


def head_end(buffer: bytes) -> int:
    """Offset just past the blank line ending the head, or -1 while incomplete.

    Bare LF line ends are accepted, as http.server did, for hand-typed requests.
    """
    crlf, lf = buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")
    ends = [end for end in (crlf + 4 if crlf >= 0 else -1, lf + 2 if lf >= 0 else -1) if end >= 0]
    return min(ends) if ends else -1


def parse_head(block: bytes, max_body: int) -> RequestHead:
    """The request head ``block`` (up to and including its blank line), checked.

    Raises HttpError: 400 malformed, 405 method, 411 chunked, 413 body over
    ``max_body``, 431 too many headers, 505 HTTP version.
    """
    lines = [line[:-1] if line.endswith(b"\r") else line for line in block.split(b"\n")]
    while lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise HttpError(400, "Empty request")
    method, target, version = _request_line(lines[0])
    if method == "HEAD":
        raise HttpError(405, "Method not allowed", head_only=True)
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "Too many headers")
    for line in lines[1:]:
        # Folded (obs-fold) and colon-less lines are refused: a proxy may read them otherwise.
        if not _FIELD.fullmatch(line):
            raise HttpError(400, "Malformed header line")
    headers = http.client.parse_headers(io.BytesIO(b"\r\n".join(lines[1:]) + b"\r\n\r\n"))
    if method not in METHODS:
        raise HttpError(405, "Method not allowed")
    if headers.get_all("Transfer-Encoding"):
        raise HttpError(411, "Content-Length required, chunked bodies are not supported")
    length = _content_length(headers.get_all("Content-Length") or [])
    if length > max_body:
        raise HttpError(413, "Request body too large")
    connection = {token.strip().lower() for value in headers.get_all("Connection") or []
                  for token in value.split(",")}
    keep_alive = version == (1, 1) and "close" not in connection
    expect = (headers.get("Expect") or "").strip().lower() == "100-continue"
    return RequestHead(method, target, headers, length, keep_alive, expect and length > 0)


def _request_line(line: bytes) -> Tuple[str, str, Tuple[int, int]]:
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, "Bad request line")
    version = _VERSION.fullmatch(parts[2])
    if not version:
        raise HttpError(400, "Bad HTTP version")
    major, minor = int(version.group(1)), int(version.group(2))
    if (major, minor) not in ((1, 0), (1, 1)):
        raise HttpError(505, "HTTP version not supported")
    return parts[0].decode("ascii"), parts[1].decode("ascii"), (major, minor)


def _content_length(values: Iterable[str]) -> int:
    """The one body length the request declares (0 without one)."""
    lengths = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not _DIGITS.fullmatch(item):
                raise HttpError(400, "Invalid Content-Length")
            lengths.add(int(item))
    if len(lengths) > 1:
        raise HttpError(400, "Conflicting Content-Length headers")
    return lengths.pop() if lengths else 0


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def frame(status: int, body: bytes, content_type: str, headers: Iterable[Tuple[str, str]] = (),
          *, close: bool, declared_length: Optional[int] = None, head_only: bool = False) -> bytes:
    """An answer's bytes; ``declared_length`` overrides Content-Length (the truncate fault)."""
    length = len(body) if declared_length is None else declared_length
    lines = [f"HTTP/1.1 {status} {reason(status)}",
             f"Server: {SERVER_NAME}",
             f"Date: {email.utils.formatdate(usegmt=True)}",
             f"Content-Type: {content_type}",
             f"Content-Length: {length}"]
    for name, value in headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} would split the answer")
        lines.append(f"{name}: {value}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
