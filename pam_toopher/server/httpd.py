"""The socket side of the server: one event loop reads requests, a bounded pool answers them.

Why not a thread per connection (http.server) or a WSGI server: see
docs/server.md, "The HTTP front".  In short, a connection that has not sent a
complete request costs a file descriptor and a few hundred bytes here, never
a thread, and it has a fixed total time to send it; when the connection cap
is reached the connection that has waited longest for a request is closed to
make room, so idle and trickling clients cannot starve real logins.

Life of a connection (all socket calls happen in the loop's thread):

    accept -> [TLS handshake] -> reading -> busy (a worker runs the dispatcher)
           -> writing -> idle (keep-alive) -> reading ...   or -> lingering -> closed

``reading`` (handshake included) ends by ``request_timeout`` after it began,
however the bytes trickle in; ``idle`` by ``idle_timeout``; ``writing`` by
``request_timeout``; ``lingering`` (discarding what a client still sends after
an answer that closes) by LINGER.  ``busy`` has no limit here: the
application bounds its own waits (long polls end within 25 s).
"""
import collections
import errno
import queue
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import forwarded, http11
from .app import Api
from .dispatch import Dispatcher, Request, Response
from .store import Store

#: Largest request body read; Toopher requests are a few hundred bytes.
MAX_BODY = 64 * 1024
#: Seconds to discard what a client still sends after an answer that closes the connection,
#: so that the kernel does not reset the connection before the client read the answer.
LINGER = 2.0
#: File descriptors kept free for the database, logs and the listening socket.
FD_RESERVE = 64
#: How often deadlines are checked (seconds): deadlines are met within this.
SWEEP_INTERVAL = 0.1
#: At most this many accepts per loop turn, so reading keeps pace with a connect flood.
ACCEPT_BATCH = 128
#: The kernel queues this many connections not yet accepted (capped by net.core.somaxconn).
BACKLOG = 1024
#: Seconds between summary lines about closed connections (never one line per connection).
SUMMARY_INTERVAL = 10.0
_RECV_SIZE = 65536
_SEND_CHUNK = 16384


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may cost; the defaults suit a server for a few thousand hosts."""

    max_connections: int = 4096
    workers: int = 256
    request_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_body: int = MAX_BODY


def raise_file_limit(limits: ConnectionLimits) -> Tuple[ConnectionLimits, Optional[str]]:
    """Raise RLIMIT_NOFILE's soft limit for ``max_connections``; if the hard limit
    is lower, fewer connections.  Returns the limits to use and a warning or None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = limits.max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError):
            pass  # e.g. a seccomp filter: work within the current limit
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return limits, None
    allowed = max(1, soft - FD_RESERVE)
    warning = (f"the open-file limit {soft} allows {allowed} connections, not "
               f"{limits.max_connections} (raise LimitNOFILE or ulimit -n)")
    return ConnectionLimits(allowed, limits.workers, limits.request_timeout, limits.idle_timeout,
                  limits.max_body), warning


class WorkerPool:
    """At most ``size`` daemon threads, started as work arrives; jobs beyond wait in order.

    Daemon threads: a long poll must not delay shutdown.
    """

    def __init__(self, size: int, name: str = "toopher-worker"):
        self.size = size
        self.name = name
        self._jobs: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = self._backlog = 0

    @property
    def backlog(self) -> int:
        """Jobs waiting for a free worker."""
        return self._backlog

    def submit(self, job: Callable[[], None]) -> None:
        # Each job is promised to exactly one thread: an idle one, a new one,
        # or (backlog) the next one to finish.
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._run, name=f"{self.name}-{self._threads}",
                                 daemon=True).start()
            else:
                self._backlog += 1
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception as error:  # noqa: BLE001 - the pool must keep its threads
                _log(f"worker error: {type(error).__name__}")
            with self._lock:
                if self._backlog:
                    self._backlog -= 1
                else:
                    self._idle += 1


# Connection states.
HANDSHAKE, READING, BUSY, WRITING, IDLE, LINGERING = (
    "handshake", "reading", "busy", "writing", "idle", "lingering")
#: States in which a connection waits for its client, so it may be closed to make room.
_WAITING = frozenset({HANDSHAKE, READING, IDLE, LINGERING})


class Connection:
    """One client connection's buffers and state; touched only by the loop's thread."""

    def __init__(self, sock: socket.socket, peer: str, tls: bool):
        self.sock = sock
        self.peer = peer
        self.tls = tls
        self.state = HANDSHAKE if tls else READING
        self.deadline: Optional[float] = None
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.chunk: Optional[bytes] = None  # bytes being sent: TLS retries need the same ones
        self.head: Optional[http11.RequestHead] = None
        self.close_after_write = False
        self.want_write = False  # TLS asked for writability to make progress
        self.events = 0
        self.closed = False


class ToopherServer:
    """Listening socket, event loop, connection table and worker pool."""

    def __init__(self, address: Tuple[str, int], dispatcher: Dispatcher,
                 tls_context: Optional[ssl.SSLContext] = None, limits: ConnectionLimits = ConnectionLimits(),
                 trusted_proxies: Sequence[forwarded.Network] = ()):
        self.dispatcher = dispatcher
        self.tls_context = tls_context
        self.tls = tls_context is not None
        self.limits = limits
        self.trusted_proxies = tuple(trusted_proxies)
        self.socket = _listen(*address)
        self.server_address = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ, "listener")
        self._accepting = True
        self._paused_until = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "waker")
        self._connections: Dict[int, Connection] = {}
        # Waiting connections, oldest first: the first is the one closed to make room.
        self._waiting: "collections.OrderedDict[Connection, None]" = collections.OrderedDict()
        self._answers: "queue.SimpleQueue[Tuple[Connection, bytes, bool]]" = queue.SimpleQueue()
        self._pool = WorkerPool(limits.workers)
        self._stop = False
        self._counts: Dict[str, int] = collections.Counter()
        self._next_summary = time.monotonic() + SUMMARY_INTERVAL

    # -- the loop ------------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = SWEEP_INTERVAL) -> None:
        next_sweep = time.monotonic()
        while not self._stop:
            for key, mask in self._selector.select(max(0.0, min(poll_interval, next_sweep
                                                                 - time.monotonic()))):
                if key.data == "listener":
                    self._accept()
                elif key.data == "waker":
                    _drain(self._wake_r)
                else:
                    self._on_event(key.data, mask)
            self._take_answers()
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_INTERVAL

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread)."""
        self._stop = True
        self._wake()

    def server_close(self) -> None:
        for connection in list(self._connections.values()):
            self._close(connection)
        self._selector.close()
        self.socket.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are closing

    # -- accepting ----------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            full = len(self._connections) >= self.limits.max_connections
            if full and not self._waiting:
                # Every connection is being answered: let the kernel queue new ones.
                self._pause_accepting(0.0)
                return
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._count("out of file descriptors")
                    if not self._make_room():
                        self._pause_accepting(0.1)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            if full:
                # Only now, with a newcomer in hand: one that is still waiting goes.
                self._make_room()
            self._add(sock, address[0])

    def _add(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        try:
            # Headers and body go out in one write; no reason to wait for ACKs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.tls_context is not None:
            try:
                sock = self.tls_context.wrap_socket(sock, server_side=True,
                                                    do_handshake_on_connect=False)
            except (OSError, ValueError):
                sock.close()
                return
        connection = Connection(sock, forwarded.normalise(peer), self.tls)
        self._connections[sock.fileno()] = connection
        # The request timer starts at accept: the handshake is part of sending a request.
        self._enter(connection, connection.state, self.limits.request_timeout)
        if connection.state == HANDSHAKE:
            self._handshake(connection)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request; False if none waits."""
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        self._count(f"closed to make room (cap {self.limits.max_connections})")
        self._close(oldest)
        return True

    def _pause_accepting(self, seconds: float) -> None:
        if self._accepting:
            self._selector.unregister(self.socket)
            self._accepting = False
        self._paused_until = time.monotonic() + seconds

    def _resume_accepting(self) -> None:
        # Room again: a connection closed, or one waits and can be closed for a newcomer.
        if (not self._accepting and time.monotonic() >= self._paused_until
                and (len(self._connections) < self.limits.max_connections or self._waiting)):
            self._selector.register(self.socket, selectors.EVENT_READ, "listener")
            self._accepting = True

    # -- per-connection events ------------------------------------------------------------

    def _enter(self, connection: Connection, state: str, timeout: Optional[float]) -> None:
        connection.state = state
        connection.deadline = None if timeout is None else time.monotonic() + timeout
        self._waiting.pop(connection, None)
        if state in _WAITING:
            self._waiting[connection] = None
        self._update_events(connection)

    def _update_events(self, connection: Connection) -> None:
        if connection.closed:
            return
        state = connection.state
        events = 0
        if state in (HANDSHAKE, READING, IDLE, LINGERING):
            events |= selectors.EVENT_READ
        if connection.outbox or connection.chunk or connection.want_write:
            events |= selectors.EVENT_WRITE
        if state == HANDSHAKE and connection.want_write:
            events = selectors.EVENT_WRITE
        if events == connection.events:
            return
        if connection.events == 0:
            self._selector.register(connection.sock, events, connection)
        elif events == 0:
            self._selector.unregister(connection.sock)
        else:
            self._selector.modify(connection.sock, events, connection)
        connection.events = events

    def _on_event(self, connection: Connection, mask: int) -> None:
        if connection.state == HANDSHAKE:
            self._handshake(connection)
            return
        read_blocked_on_write = connection.want_write
        if mask & selectors.EVENT_WRITE:
            connection.want_write = False
            self._flush(connection)
        if connection.closed:
            return
        if mask & selectors.EVENT_READ or (read_blocked_on_write and mask & selectors.EVENT_WRITE):
            self._read(connection)

    def _handshake(self, connection: Connection) -> None:
        sock = connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            connection.want_write = False
        except ssl.SSLWantWriteError:
            connection.want_write = True
        except (ssl.SSLError, OSError):
            self._count("failed the TLS handshake")
            self._close(connection)
            return
        else:
            connection.want_write = False
            # Same deadline: the handshake and the first request share request_timeout.
            connection.state = READING
            self._update_events(connection)
            if sock.pending():
                self._read(connection)
            return
        self._update_events(connection)

    def _read(self, connection: Connection) -> None:
        eof = False
        while True:
            # Never buffer much more than one request may hold (the memory bound in the docs).
            room = http11.MAX_HEAD + self.limits.max_body - len(connection.inbox)
            try:
                data = connection.sock.recv(max(4096, min(_RECV_SIZE, room)))
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                connection.want_write = True
                self._update_events(connection)
                break
            except (ssl.SSLError, OSError):
                eof = True
                break
            if not data:
                eof = True
                break
            if connection.state != LINGERING:
                connection.inbox += data
            pending = connection.state != LINGERING and _tls_pending(connection.sock)
            if not pending or len(connection.inbox) > http11.MAX_HEAD + self.limits.max_body:
                break
        if connection.state == IDLE and connection.inbox:
            # The keep-alive wait is over: this request gets request_timeout from its first byte.
            self._enter(connection, READING, self.limits.request_timeout)
        if connection.state == READING:
            self._parse(connection)
        if eof and not connection.closed and connection.state in _WAITING:
            self._close(connection)

    def _parse(self, connection: Connection) -> None:
        """Hand a complete request to a worker, or answer a bad one and close."""
        inbox = connection.inbox
        try:
            if connection.head is None:
                end = http11.head_end(bytes(inbox[:http11.MAX_HEAD + 4]))
                if end < 0:
                    if len(inbox) > http11.MAX_HEAD:
                        raise http11.HttpError(431, "Request header fields too large")
                    return
                connection.head = http11.parse_head(bytes(inbox[:end]), self.limits.max_body)
                del inbox[:end]
                if connection.head.expect_continue and len(inbox) < connection.head.content_length:
                    connection.outbox += http11.CONTINUE
                    self._update_events(connection)
        except http11.HttpError as error:
            self._answer_error(connection, error)
            return
        head = connection.head
        if len(inbox) < head.content_length:
            return
        body = bytes(inbox[:head.content_length])
        del inbox[:head.content_length]
        connection.head = None
        request = self._request(connection, head, body)
        self._enter(connection, BUSY, None)
        self._pool.submit(lambda: self._work(connection, request, head.keep_alive))
        if self._pool.backlog:
            self._count("waited for a free worker (all busy: raise --workers)")

    def _request(self, connection: Connection, head: http11.RequestHead, body: bytes) -> Request:
        headers = head.headers
        scheme = forwarded.scheme(connection.peer, headers.get("X-Forwarded-Proto"),
                                  "https" if self.tls else "http", self.trusted_proxies)
        host = headers.get("Host") or _host_port(self.server_address)
        client = forwarded.client_address(connection.peer, headers.get_all("X-Forwarded-For") or [],
                                          self.trusted_proxies)
        return Request(head.method, head.target, headers, body, f"{scheme}://{host}", client)

    def _answer_error(self, connection: Connection, error: http11.HttpError) -> None:
        _log(f"{connection.peer} - - {error.status}")
        response = Response.error(error.status, error.message)
        data = http11.frame(response.status, response.body, response.content_type,
                            close=True, head_only=error.head_only)
        connection.inbox.clear()
        self._respond(connection, data, close=True)

    # -- answers ------------------------------------------------------------------------

    def _work(self, connection: Connection, request: Request, keep_alive: bool) -> None:
        """In a worker thread: dispatch, frame, and pass the bytes back to the loop.

        Always passes something back: a busy connection has no deadline.
        """
        response = Response.error(500, "Internal server error")
        data, close = http11.frame(500, response.body, response.content_type, close=True), True
        try:
            response = self.dispatcher(request)
            close = response.close or not keep_alive
            data = http11.frame(response.status, response.body, response.content_type,
                                response.headers, close=close,
                                declared_length=response.declared_length)
        except Exception as error:  # noqa: BLE001 - e.g. a handler put a line break in a header
            response, close = Response.error(500, "Internal server error"), True
            _log(f"{request.client_address} internal error: {type(error).__name__} answering")
        finally:
            _log(f"{request.client_address} {request.method} {request.path} {response.status}")
            self._answers.put((connection, data, close))
            self._wake()

    def _take_answers(self) -> None:
        while True:
            try:
                connection, data, close = self._answers.get_nowait()
            except queue.Empty:
                return
            if not connection.closed:
                self._respond(connection, data, close)

    def _respond(self, connection: Connection, data: bytes, close: bool) -> None:
        connection.outbox += data
        connection.close_after_write = close
        self._enter(connection, WRITING, self.limits.request_timeout)
        self._flush(connection)

    def _flush(self, connection: Connection) -> None:
        while connection.outbox or connection.chunk:
            if connection.chunk is None:
                connection.chunk = bytes(connection.outbox[:_SEND_CHUNK])
                del connection.outbox[:_SEND_CHUNK]
            try:
                sent = connection.sock.send(connection.chunk)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break  # TLS wants the very same bytes again: they stay in .chunk
            except (ssl.SSLError, OSError):
                self._close(connection)
                return
            connection.chunk = connection.chunk[sent:] or None
        if connection.outbox or connection.chunk or connection.state != WRITING:
            self._update_events(connection)
            return
        if connection.close_after_write:
            self._linger(connection)
        else:
            self._enter(connection, IDLE, self.limits.idle_timeout)
            if connection.inbox or _tls_pending(connection.sock):
                # A pipelined request arrived while this one was answered.
                self._enter(connection, READING, self.limits.request_timeout)
                if _tls_pending(connection.sock):
                    self._read(connection)  # takes the bytes out of the TLS layer, then parses
                else:
                    self._parse(connection)

    def _linger(self, connection: Connection) -> None:
        """Half-close, then discard input briefly, so the client reads the answer
        instead of a reset caused by unread bytes."""
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(connection)
            return
        connection.inbox.clear()
        self._enter(connection, LINGERING, LINGER)

    # -- ending connections ------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        for connection in [c for c in self._connections.values()
                           if c.deadline is not None and now >= c.deadline]:
            if connection.state in (HANDSHAKE, READING):
                self._count(f"timed out sending a request ({self.limits.request_timeout:g} s)")
            elif connection.state == IDLE:
                self._count("idle keep-alive timed out")
            elif connection.state == WRITING:
                self._count("timed out reading the answer")
            self._close(connection)
        self._resume_accepting()
        if now >= self._next_summary:
            self._next_summary = now + SUMMARY_INTERVAL
            self._log_summary()

    def _close(self, connection: Connection) -> None:
        if connection.closed:
            return
        connection.closed = True
        self._waiting.pop(connection, None)
        if connection.events:
            try:
                self._selector.unregister(connection.sock)
            except (KeyError, ValueError):
                pass
        self._connections.pop(connection.sock.fileno(), None)
        try:
            connection.sock.close()
        except OSError:
            pass
        connection.inbox.clear()
        connection.outbox.clear()
        self._resume_accepting()

    def _count(self, reason: str) -> None:
        self._counts[reason] += 1

    def _log_summary(self) -> None:
        if not self._counts:
            return
        parts = ", ".join(f"{count} {reason}" for reason, count in sorted(self._counts.items()))
        _log(f"connections in the last {SUMMARY_INTERVAL:g} s: {parts}; "
             f"open now: {len(self._connections)}")
        self._counts.clear()


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _host_port(address: tuple) -> str:
    host = address[0]
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, OSError):
        pass


def _tls_pending(sock: socket.socket) -> int:
    """Decrypted bytes held inside the TLS layer (they do not wake the selector)."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def _log(line: str) -> None:
    # One write per line, so lines from workers do not interleave.
    sys.stderr.write(line + "\n")


def tls_context(cert: str, key: Optional[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert, key)
    return context


def make_server(store: Store, host: str = "127.0.0.1", port: int = 8765,
                tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                api: Optional[Api] = None, limits: ConnectionLimits = ConnectionLimits(),
                trusted_proxies: Sequence[forwarded.Network] = (),
                dispatcher: Optional[Dispatcher] = None) -> ToopherServer:
    context = tls_context(tls_cert, tls_key) if tls_cert else None
    return ToopherServer((host, port), dispatcher or Dispatcher(store, api), context, limits,
                         trusted_proxies)


__all__: List[str] = ["ConnectionLimits", "ToopherServer", "WorkerPool", "make_server", "raise_file_limit",
                      "tls_context", "MAX_BODY"]
