"""HTTP for the Toopher client: the only code that touches requests and urllib3.

One :meth:`Transport.request` sends one signed call and returns the parsed
JSON answer, or raises one of the categories of :mod:`pam_toopher.errors`.
Every requests/urllib3/http.client failure is translated here, once, with
``raise ... from``; nothing above this module sees the HTTP stack's errors.

What is an outage (the only error ``failmode = safe`` may grant on) is
decided here, narrowly: a connection refused or never made (DNS, routing,
connect timeout), no answer within the read timeout, an answer cut off
mid-body, or the service's own 5xx or 429.  Everything else the peer does is
not an outage:

* bytes that are not valid HTTP (a bad status line, more than 100 headers,
  a 64 KiB header line, a TLS handshake broken off, an encoded body we did
  not ask for, JSON nested too deeply) are a MalformedResponseError;
* a connection closed before any answer to a POST that may have reached the
  service is an AnswerLostError: its outcome (a push sent, an OTP guess
  counted) is unknown, so it is neither repeated nor called an outage.

So that a server closing an idle keep-alive connection cannot race a POST,
a POST always goes out on a fresh connection; a request that surely was not
sent (the connection failed before our request was written) is sent once
more on a fresh connection.  Reads (GET) may be repeated, so they are
retried after a connection lost or a 5xx, within the retry budget.

Several instances of one service (:meth:`Transport.request_any`): an outage
of one moves the call to the next by the same rule that allows a retry
(:func:`may_send_again`), so failover can never send a push twice, nor hide
a TLS failure, a refusal, a malformed or a lost answer behind another
instance's answer.

Bodies are asked for with ``Accept-Encoding: identity`` and an answer with
any other Content-Encoding is refused before it is read: a few hundred bytes
of nested gzip cannot expand into gigabytes inside sudo or sshd.
"""

from __future__ import annotations

import contextvars
import http.client
import json
import platform
import socket
import threading
import time
from typing import Any, Callable, List, Mapping, Optional, Sequence, Set, Tuple, Type, Union

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
from requests_oauthlib import OAuth1

from pam_toopher import __version__
from pam_toopher.errors import (AnswerLostError, DeadlineExceededError, MalformedResponseError,
                                RequestNotSentError, ToopherApiError, ToopherRefusedError,
                                ToopherTLSError,
                                ToopherUnavailableError, error_for_answer,
                                is_outage_status)

__all__ = ["Transport", "oauth1_signer", "may_send_again", "DEFAULT_TIMEOUT",
           "DEFAULT_RETRY_BUDGET", "MAX_RESPONSE_BYTES", "USER_AGENT", "Timeout"]

# (connect, read) in seconds for one HTTP call; a long poll adds its own wait
# to the read timeout.
DEFAULT_TIMEOUT = (5.0, 10.0)
# Total time one call may spend retrying (backoff and Retry-After included).
DEFAULT_RETRY_BUDGET = 10.0
# No Toopher answer comes near this; a larger body is a broken or hostile peer.
MAX_RESPONSE_BYTES = 256 * 1024
_BACKOFF_START = 0.5
# A request no larger than this goes out in one send(), which either takes
# all of it or fails having taken nothing: only then is "the write failed"
# the same as "nothing was sent".  Toopher's forms are a few hundred bytes.
_SINGLE_WRITE_BYTES = 4096

USER_AGENT = (
    f"pam_toopher/{__version__} Toopher-Python/{__version__} "
    f"(Python {platform.python_version()})"
)

Timeout = Union[float, Tuple[float, float]]


def oauth1_signer(key: str, secret: str, *, nonce: Optional[str] = None,
                  timestamp: Optional[str] = None) -> OAuth1:
    """A requests auth object signing two-legged OAuth 1.0a HMAC-SHA1 in the
    Authorization header (form bodies are part of the signature).
    ``nonce`` and ``timestamp`` are fixed only by known-answer tests."""
    return OAuth1(key, client_secret=secret, signature_method="HMAC-SHA1",
                  signature_type="AUTH_HEADER", nonce=nonce, timestamp=timestamp)


def may_send_again(error: ToopherApiError, idempotent: bool) -> bool:
    """May a call that failed with ``error`` be sent again, to the same
    instance (a retry) or to another instance of the service (failover)?

    Only after an outage, and only when sending it again cannot act twice:
    a read (``idempotent``), or a request that surely did not reach the
    service (no connection, 429).  A POST that may have been processed (a
    5xx, a timeout or a cut after it was sent) could send a second push or
    count a code twice.  Never after a TLS failure (someone may be in the
    middle: another instance would hide it), a refusal (401, 4xx: every
    instance shares the credentials and the database, so it would say the
    same), a malformed answer or a lost answer (AnswerLostError)."""
    return isinstance(error, ToopherUnavailableError) and (idempotent or error.not_processed)


def _outage_of(outages: Sequence[Tuple[str, ToopherUnavailableError]]) -> ToopherUnavailableError:
    """The error for a call whose every attempt had an outage: the one
    error itself for one URL; for several, one naming each URL and what
    happened there (the audit line's reason)."""
    if len(outages) == 1:
        return outages[0][1]
    parts = []
    for url, exc in outages:
        text, origin = str(exc), _origin(url)
        parts.append(text if origin in text else f"{origin}: {text}")
    last = outages[-1][1]
    retry_afters = [exc.retry_after for _url, exc in outages if exc.retry_after is not None]
    combined = ToopherUnavailableError(
        "no service URL answered: " + "; ".join(parts), status=last.status,
        error_code=last.error_code, retry_after=min(retry_afters) if retry_afters else None,
        not_processed=all(exc.not_processed for _url, exc in outages))
    combined.__cause__ = last
    return combined


class Transport:
    """Signed HTTP calls to one service with the client's limits: per-call
    timeouts, a total retry budget, a deadline enforced by a watchdog, TLS
    verified against ``ca_bundle`` or the system CAs."""

    def __init__(self, auth: OAuth1, *, ca_bundle: Optional[str] = None,
                 timeout: Timeout = DEFAULT_TIMEOUT,
                 retry_budget: float = DEFAULT_RETRY_BUDGET,
                 user_agent: Optional[str] = None,
                 session: Optional[requests.Session] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic):
        self.ca_bundle = ca_bundle
        self.timeout = timeout if isinstance(timeout, tuple) else (float(timeout), float(timeout))
        self.retry_budget = retry_budget
        self.user_agent = user_agent or USER_AGENT
        self._auth = auth
        self.session = session or requests.Session()
        # Lets the watchdog and the call record find the connection in use.
        self.session.mount("https://", _WatchedAdapter())
        self.session.mount("http://", _WatchedAdapter())
        # Environment variables must not redirect a PAM module's traffic or
        # swap its CA bundle (REQUESTS_CA_BUNDLE, HTTPS_PROXY, .netrc).
        self.session.trust_env = False
        self._sleep, self._monotonic = sleep, monotonic

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, url: str, *, query: Optional[Mapping[str, str]] = None,
                form: Optional[Mapping[str, str]] = None, extra_wait: float = 0.0,
                idempotent: bool, deadline: Optional[float] = None) -> Any:
        """The parsed JSON of a 2xx answer.  ``idempotent`` says repeating the
        call changes nothing (a GET), so it may be retried after it may have
        reached the service; ``deadline`` (a monotonic time) bounds the call."""
        return self.request_any(method, (url,), query=query, form=form, extra_wait=extra_wait,
                                idempotent=idempotent, deadline=deadline)

    def request_any(self, method: str, urls: Sequence[str], *,
                    query: Optional[Mapping[str, str]] = None,
                    form: Optional[Mapping[str, str]] = None, extra_wait: float = 0.0,
                    idempotent: bool, deadline: Optional[float] = None,
                    answered: Callable[[int], None] = lambda index: None) -> Any:
        """The same call to several instances of one service, in order of
        preference: the parsed JSON of the first 2xx answer.  ``answered`` is
        told the index in ``urls`` of the instance that answered, whether it
        granted the call or refused it (a 4xx is the service's answer too).

        An outage of one URL moves the call on to the next at once, but only
        when :func:`may_send_again` allows (a read, or a request that surely
        did not reach the service); any other error ends the call: it is the
        service's answer, or a TLS failure or a lost answer that another
        instance must not paper over.  When every URL had an outage, a new
        round starts after a backoff (or the Retry-After asked for), within
        the retry budget; ``deadline`` bounds the whole of it."""
        if not urls:
            raise RequestNotSentError("no service URL to send the request to")
        started = self._monotonic()
        backoff = _BACKOFF_START
        fresh_retried: Set[str] = set()
        while True:
            outages: List[Tuple[str, ToopherUnavailableError]] = []
            for index, url in enumerate(urls):
                if outages and deadline is not None and self._monotonic() >= deadline:
                    # No time left for the next instance: the outage stands
                    # (as a retry that would pass the deadline is not made).
                    raise _outage_of(outages)
                try:
                    body = self._request_to(method, url, query, form, extra_wait, deadline,
                                            idempotent, fresh_retried)
                except ToopherUnavailableError as exc:
                    outages.append((url, exc))
                except ToopherRefusedError:
                    answered(index)
                    raise
                else:
                    answered(index)
                    return body
                if not may_send_again(outages[-1][1], idempotent):
                    raise _outage_of(outages)
            error = _outage_of(outages)
            # The shortest wait any instance asked for (one without a Retry-After: the backoff).
            wait = min(exc.retry_after if exc.retry_after is not None else backoff
                       for _url, exc in outages)
            now = self._monotonic()
            if (now - started + wait > self.retry_budget
                    or (deadline is not None and now + wait >= deadline)):
                raise error
            self._sleep(wait)
            backoff *= 2

    def _request_to(self, method: str, url: str, query: Optional[Mapping[str, str]],
                    form: Optional[Mapping[str, str]], extra_wait: float,
                    deadline: Optional[float], idempotent: bool,
                    fresh_retried: Set[str]) -> Any:
        """One attempt at one URL; a request that surely was not sent, or a
        read a stale kept-alive connection lost, goes out once more on a new
        connection (once per URL and call)."""
        while True:
            try:
                return self._request_once(method, url, query, form, extra_wait, deadline,
                                          idempotent, url in fresh_retried)
            except _RetryOnFreshConnection as retry:
                if url not in fresh_retried:
                    fresh_retried.add(url)
                    continue
                raise retry.error from retry.__cause__

    def _request_once(self, method: str, url: str, query: Optional[Mapping[str, str]],
                      form: Optional[Mapping[str, str]], extra_wait: float,
                      deadline: Optional[float], idempotent: bool,
                      fresh_retry: bool) -> Any:
        connect_timeout, read_timeout = self.timeout
        read_timeout += extra_wait
        origin = _origin(url)
        watch = None
        if deadline is not None:
            left = deadline - self._monotonic()
            if left <= 0:
                raise DeadlineExceededError(f"the deadline passed before calling {origin}")
            connect_timeout, read_timeout = min(connect_timeout, left), min(read_timeout, left)
            # Timeouts bound each socket operation, not a whole call: a server
            # trickling its handshake, headers or body one byte at a time
            # would hold the call past the deadline.  A watchdog thread cuts
            # the connection at the deadline, so every wait ends.
            watch = _Watch(left)
        # A POST never goes out on a kept-alive connection (see the top).
        call = _Call(watch, idempotent, fresh_only=fresh_retry or not idempotent)
        token = _CURRENT_CALL.set(call)
        try:
            return self._send_and_read(method, url, query, form, origin, call,
                                       (connect_timeout, read_timeout))
        except Exception as exc:
            # Whatever broke once the deadline passed (a timeout trimmed to
            # it, or the watchdog's cut) broke because of our own limit: a
            # timeout, never an outage (which failmode = safe would grant).
            if deadline is not None and watch is not None and (
                    watch.fired or self._monotonic() >= deadline):
                raise DeadlineExceededError(
                    f"the deadline passed while waiting for {origin}") from exc
            raise
        finally:
            _CURRENT_CALL.reset(token)
            if watch is not None:
                watch.stop()

    def _send_and_read(self, method: str, url: str, query: Optional[Mapping[str, str]],
                       form: Optional[Mapping[str, str]], origin: str, call: _Call,
                       timeout: Tuple[float, float]) -> Any:
        try:
            response = self.session.request(
                method, url, params=query, data=form, auth=self._auth,
                headers={"User-Agent": self.user_agent, "Accept": "application/json",
                         # Decoding is where a compression bomb explodes.
                         "Accept-Encoding": "identity"},
                timeout=timeout,
                verify=self.ca_bundle or True, allow_redirects=False, stream=True)
        except requests.exceptions.SSLError as exc:
            raise ToopherTLSError(
                f"the certificate of {origin} did not verify: {_reason(exc)}") from exc
        except requests.exceptions.ConnectTimeout as exc:
            raise ToopherUnavailableError(
                f"timed out connecting to {origin}", not_processed=True) from exc
        except requests.exceptions.ConnectionError as exc:
            raise _connection_error(exc, call, origin) from exc
        except requests.exceptions.Timeout as exc:
            raise ToopherUnavailableError(f"{origin} did not answer in time") from exc
        except requests.exceptions.RequestException as exc:
            raise RequestNotSentError(f"could not send the request: {_reason(exc)}") from exc
        with response:
            body = _read_capped(response, origin)
            return _interpret(response, body, origin)


# ------------------------------------------------------ one call, on record
#
# What the classification needs to know about the connection a call used:
# was it taken from the pool (kept alive) or new, did TCP connect, did the
# TLS handshake complete, was our request written.  Connection and pool
# classes report to the call's _Call through a context variable (so it is
# per thread); they also hand the deadline watchdog the call's socket.
# urllib3 1.26 and 2.x alike create sockets in HTTPConnection._new_conn,
# handshake in connect(), write in send() and hand out pooled connections
# from HTTPConnectionPool._get_conn.


class _Call:
    def __init__(self, watch: Optional[_Watch], idempotent: bool, fresh_only: bool):
        self.watch = watch
        self.idempotent = idempotent
        self.fresh_only = fresh_only   # never reuse a kept-alive connection
        self.reused = False
        self.tcp_connected = False
        self.connected = False         # TCP, and TLS where used
        self.write_failed = False
        self.written = False

    def took(self, conn: Any) -> None:
        self.reused = self.tcp_connected = self.connected = getattr(conn, "sock", None) is not None


_CURRENT_CALL: contextvars.ContextVar[Optional[_Call]] = contextvars.ContextVar(
    "pam_toopher_call", default=None)


class _RetryOnFreshConnection(Exception):
    """Internal: the request surely did not reach the service, or it is a
    read that a stale kept-alive connection lost; send it once more on a new
    connection.  ``error`` is what to raise when it happens again."""

    def __init__(self, error: ToopherApiError):
        super().__init__(str(error))
        self.error = error


def _connection_error(exc: requests.exceptions.ConnectionError, call: _Call,
                      origin: str) -> Exception:
    """What a requests ConnectionError means, from where in the call it broke."""
    if _is_connect_failure(exc) or not call.tcp_connected:
        return ToopherUnavailableError(f"could not reach {origin}: {_reason(exc)}",
                                       not_processed=True)
    if not call.connected:
        # TCP connected, then the peer broke off the TLS handshake: a broken
        # or hostile peer, not an unreachable service.
        return MalformedResponseError(f"{origin} broke off the TLS handshake: {_reason(exc)}")
    defect = _http_defect(exc)
    if defect is not None:
        return MalformedResponseError(f"{origin} answered with something that is not valid "
                                      f"HTTP: {defect}")
    if not call.written:
        return _RetryOnFreshConnection(ToopherUnavailableError(
            f"{origin} closed the connection before the request was sent",
            not_processed=True))
    if call.idempotent:
        lost = ToopherUnavailableError(f"could not reach {origin}: {_reason(exc)}")
        # A kept-alive connection the server had closed: retry at once.
        return _RetryOnFreshConnection(lost) if call.reused else lost
    return AnswerLostError(f"{origin} closed the connection without answering a request "
                           "that may have reached it")


def _http_defect(exc: BaseException) -> Optional[str]:
    """A short description when http.client refused the peer's bytes as HTTP
    (never the bytes themselves: they are the peer's); None otherwise."""
    cause = _find_cause(exc, http.client.HTTPException)
    if cause is None or isinstance(cause, http.client.RemoteDisconnected):
        return None    # the connection closed before any answer: not a defect
    if isinstance(cause, http.client.LineTooLong):
        return "a line too long"
    if isinstance(cause, http.client.BadStatusLine):
        return "an invalid status line"
    if "more than" in str(cause) and "headers" in str(cause):
        return "too many headers"
    return type(cause).__name__


def _find_cause(exc: BaseException, kind: Type[BaseException]) -> Optional[BaseException]:
    """The first exception of ``kind`` in ``exc``'s wrapping (requests and
    urllib3 wrap the original in args, not only in __cause__)."""
    seen: List[int] = []
    todo: List[Any] = [exc]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.append(id(current))
        if isinstance(current, kind):
            return current
        todo.extend(current.args)
        todo.extend((current.__cause__, current.__context__, getattr(current, "reason", None)))
    return None


# ---------------------------------------------------------- the watchdog
#
# requests' timeouts bound each socket operation, so a server that trickles
# its TLS handshake, headers or body can hold one call far past the
# deadline.  Signals (SIGALRM) would disturb sshd and sudo, so a timer
# thread, started and joined within the call (pam_python freezes threads
# between hook calls), shuts down the call's socket at the deadline: the
# blocked recv in the calling thread then returns at once, and the call
# maps whatever breaks to DeadlineExceededError.


class _Watch:
    def __init__(self, seconds: float):
        import signal   # only a call with a deadline needs it

        self.fired = False
        self._lock = threading.Lock()
        # Duplicates of the call's sockets: they stay valid when ssl wraps
        # (and detaches) the original, and shutting one down cuts the shared
        # connection.  Closed by stop(), in the calling thread.
        self._socks: List[socket.socket] = []
        self._conns: List[Any] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True   # a safety net: stop() always joins it
        # The thread inherits the signal mask it starts with: start it with
        # every signal blocked, so the host's signals (sudo's Ctrl-C that the
        # hook takes while waiting) still reach the thread blocked in recv.
        saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._timer.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)

    def attach(self, conn: Any, sock: Optional[socket.socket]) -> None:
        with self._lock:
            if conn not in self._conns:
                self._conns.append(conn)
            if sock is None:
                return
            try:
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return
            self._socks.append(dup)
            if self.fired:       # a socket made after the deadline is cut at once
                _cut(dup)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for dup in self._socks:
                _cut(dup)

    def stop(self) -> None:
        self._timer.cancel()
        self._timer.join()
        with self._lock:
            socks, self._socks = self._socks, []
            conns, self._conns = self._conns, []
        for dup in socks:
            dup.close()
        if self.fired:
            # Never let the pool hand a cut connection to the next call.
            for conn in conns:
                try:
                    conn.close()
                except Exception:   # pragma: no cover - closing is best effort
                    pass


def _cut(sock: socket.socket) -> None:
    # SHUT_RD, not SHUT_RDWR: it wakes a blocked recv (and a TLS handshake)
    # just as well, and a later send cannot raise SIGPIPE in a host process
    # (sudo, sshd) that does not ignore it.
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass


class _WatchedConnectionMixin:
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        call = _CURRENT_CALL.get()
        if call is not None:
            call.tcp_connected = True
            if call.watch is not None:
                call.watch.attach(self, sock)
        return sock

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        call = _CURRENT_CALL.get()
        if call is not None:
            call.connected = True

    def send(self, data: Any) -> None:
        call = _CURRENT_CALL.get()
        try:
            super().send(data)  # type: ignore[misc]
        except OSError:
            # urllib3 swallows a broken pipe here and reads on: remember it.
            if call is not None and not call.written:
                call.write_failed = True
                # Only a single small write that failed surely sent nothing.
                size = len(data) if isinstance(data, (bytes, bytearray, str)) else None
                call.written = size is None or size > _SINGLE_WRITE_BYTES
            raise
        if call is not None:
            call.written = True


class _WatchedPoolMixin:
    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        call = _CURRENT_CALL.get()
        if call is not None:
            if call.fresh_only and getattr(conn, "sock", None) is not None:
                # A POST must not race the server closing an idle kept-alive
                # connection: close it, and urllib3 connects anew.
                conn.close()
            call.took(conn)
            if call.watch is not None:
                # A kept-alive connection already has its socket; a new one
                # reports it from _new_conn.
                call.watch.attach(conn, getattr(conn, "sock", None))
        return conn


class _WatchedHTTPConnection(_WatchedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(_WatchedPoolMixin, urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_WatchedPoolMixin, urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool,
                                                   "https": _WatchedHTTPSPool}


# ------------------------------------------------------- reading an answer


def _read_capped(response: requests.Response, origin: str) -> bytes:
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # We asked for identity: an encoded body is refused unread (a few
        # hundred bytes of nested gzip decode to gigabytes).  A 5xx or 429
        # is an outage by its status alone; its body only adds a message.
        if is_outage_status(response.status_code):
            return b""
        raise MalformedResponseError(
            f"{origin} sent an answer that could not be decoded: it has a Content-Encoding, "
            "and only identity was asked for", status=response.status_code)
    too_large = MalformedResponseError(
        f"{origin} sent an answer larger than {MAX_RESPONSE_BYTES} bytes",
        status=response.status_code)
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise too_large
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(chunk_size=16384):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise too_large
            chunks.append(chunk)
    except requests.exceptions.ContentDecodingError as exc:
        raise MalformedResponseError(f"{origin} sent an answer that could not be decoded",
                                     status=response.status_code) from exc
    except requests.exceptions.RequestException as exc:
        # The connection broke mid-answer (reset, cut off, read timeout).
        raise ToopherUnavailableError(f"{origin} broke off its answer: {_reason(exc)}") from exc
    # urllib3 1.x does not enforce Content-Length by itself.
    if declared.isdigit() and size < int(declared):
        raise ToopherUnavailableError(f"{origin} broke off its answer")
    return b"".join(chunks)


def _interpret(response: requests.Response, body: bytes, origin: str) -> Any:
    status = response.status_code
    parsed = _parse_json(body, origin, status)
    if 200 <= status < 300:
        if parsed is _NOT_JSON:
            raise MalformedResponseError(
                f"{origin} answered with something that is not JSON", status=status)
        return parsed
    if 300 <= status < 400:
        # Following a redirect would send a signed request somewhere we did
        # not choose; the protocol never redirects.
        raise MalformedResponseError(f"{origin} answered with an unexpected redirect",
                                     status=status)
    error = error_for_answer(status, None if parsed is _NOT_JSON else parsed)
    if isinstance(error, ToopherUnavailableError) and status == 429:
        error.retry_after = _retry_after(response)
        error.not_processed = True
    raise error


_NOT_JSON = object()


def _parse_json(body: bytes, origin: str, status: int) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _NOT_JSON
    except RecursionError:
        # JSON nested deeper than the interpreter's recursion limit: no
        # Toopher answer is, so it is malformed, not a bug of ours.
        raise MalformedResponseError(f"{origin} answered with JSON nested too deeply",
                                     status=status) from None


def _retry_after(response: requests.Response) -> Optional[float]:
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


_KNOWN_REASONS = (
    "certificate verify failed", "hostname mismatch", "connection refused",
    "connection reset", "name or service not known", "temporary failure in name resolution",
    "no route to host", "network is unreachable", "read timed out",
)


def _reason(exc: BaseException) -> str:
    """A short reason from a requests/urllib3 exception, without its object reprs."""
    text = str(exc).lower()
    for reason in _KNOWN_REASONS:
        if reason in text:
            return reason
    return type(exc).__name__


def _is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was never made, so the request was not sent."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)
