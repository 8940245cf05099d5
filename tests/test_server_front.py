"""The HTTP front under hostile clients: real sockets over loopback against a real server.

Issue 14 item 5: thousands of idle or trickling connections made a denied user
``failed_open`` (the module saw an outage).  Here they must cost no thread,
be cut at their deadline, and never stop a login from being decided.
"""
import re
import resource
import select
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import List

import pytest
import requests
from requests_oauthlib import OAuth1

from pam_toopher.server import forwarded, http11
from pam_toopher.server.dispatch import Dispatcher, Request, Response
from pam_toopher.server.httpd import FD_RESERVE, ConnectionLimits
from pam_toopher.server.store import Store
from tests.support.server import REPO_ROOT, RunningServer, server_command, server_env
from tests.test_pam import ready
from tests.test_server_api import ok

IDLE_CONNECTIONS = 5000
TRICKLING_CONNECTIONS = 300
REQUEST_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.5
#: Slack for a loaded 2-core machine (the server checks deadlines every 0.1 s).
SLACK = 1.0


def address(server: RunningServer):
    host, port = server.url.split("//")[1].split("/")[0].rsplit(":", 1)
    return host, int(port)


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"this test needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def connect_many(server: RunningServer, count: int) -> List[socket.socket]:
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection(address(server), timeout=10))
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def close_all(sockets) -> None:
    for sock in sockets:
        sock.close()


def closed_by_peer(sockets) -> int:
    """How many of ``sockets`` the server has closed (readable EOF or reset)."""
    poller = select.poll()
    by_fd = {}
    for sock in sockets:
        poller.register(sock, select.POLLIN)
        by_fd[sock.fileno()] = sock
    closed = 0
    for fd, _ in poller.poll(0):
        try:
            closed += by_fd[fd].recv(1, socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed += 1
    return closed


def seconds_until_closed(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends)."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        pytest.fail(f"the server kept the connection open for {limit} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


_unread = {}  # bytes received past one answer, per socket (pipelined answers)


def read_answer(sock: socket.socket) -> tuple:
    """One answer from a keep-alive connection: (status, headers, body)."""
    received = _unread.pop(sock, b"")
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in
               (line.split(": ", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    if body[length:]:
        _unread[sock] = body[length:]
    return int(lines[0].split()[1]), headers, body[:length]


def server_threads(server: RunningServer) -> int:
    status = Path(f"/proc/{server.pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


class Trickler:
    """Connections that send a request's head one byte at a time (slowloris)."""

    def __init__(self, server: RunningServer, count: int, interval: float = 0.25):
        self.sockets = connect_many(server, count)
        self.interval = interval
        self.data = b"GET /v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 5000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        position = 0
        while not self._stop.wait(self.interval) and position < len(self.data):
            byte = self.data[position:position + 1]
            for sock in self.sockets:
                try:
                    sock.send(byte, socket.MSG_DONTWAIT)
                except OSError:
                    pass  # cut by the server: that is the point
            position += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        close_all(self.sockets)


# -- thousands of connections ----------------------------------------------------------------

def test_idle_and_trickling_connections_do_not_stop_logins(scene):
    """5000 silent connections and 300 slowloris ones against the default limits
    (4096 connections, and the open-file limit systemd gives by default), half of them
    opened before a login and the rest while its push waits for the phone: a signed
    call is answered at once, the login the phone denies is denied (not failed_open
    under failmode = safe), the server holds no thread per connection, and the
    oldest waiting connections were closed to make room."""
    raise_open_files(IDLE_CONNECTIONS + TRICKLING_CONNECTIONS + 512)
    # Started as systemd starts a service without LimitNOFILE (soft limit 1024): the
    # server raises its own limit to fit its connection cap.
    with RunningServer(open_files=1024, tls=True) as server:  # the module believes https
        ready(scene, server, rule="deny", delay=2.0, failmode="safe")
        idle = connect_many(server, IDLE_CONNECTIONS // 2)
        trickling = None
        results = []
        login = threading.Thread(target=lambda: results.append(
            scene.pamtester([scene.user.password, ""], timeout=30)))
        try:
            login.start()
            server.phone.wait_for_request(scene.user.name, timeout=10)
            # The module now waits for the phone on its connection: flood the rest.
            idle += connect_many(server, IDLE_CONNECTIONS - len(idle))
            trickling = Trickler(server, TRICKLING_CONNECTIONS)

            started = time.monotonic()
            api = server.client()
            assert ok(api.get("users", name=scene.user.name))[0]["name"] == scene.user.name
            assert time.monotonic() - started < 2.0
            api.close()

            login.join(40)
            result, = results
            assert result.failed_with("PAM_AUTH_ERR"), result
            audit = scene.audit()
            assert audit["outcome"] == "denied"
            assert float(audit["elapsed"].rstrip("s")) < 2.0 + 2 * SLACK

            assert server_threads(server) < 20  # a worker per request in progress, not per socket
            # Over the cap of 4096, new connections closed the ones that had waited longest.
            time.sleep(0.2)
            closed = closed_by_peer(idle) + closed_by_peer(trickling.sockets)
            assert closed >= IDLE_CONNECTIONS + TRICKLING_CONNECTIONS - 4096
            assert server.running
        finally:
            login.join(40)
            if trickling is not None:
                trickling.close()
            close_all(idle)
        assert "Traceback" not in server.log()


# -- deadlines ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_server():
    args = ("--request-timeout", str(REQUEST_TIMEOUT), "--idle-timeout", str(IDLE_TIMEOUT))
    with RunningServer(serve_args=args) as server:
        yield server


def test_headers_trickling_past_the_deadline_are_cut(strict_server):
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/users HTTP/1.1\r\n")
        # One header byte every 0.1 s: each byte would restart a per-read timeout.
        for byte in b"X-Slow: " + b"z" * 100:
            try:
                sock.send(bytes([byte]))
            except OSError:
                break
            if select.select([sock], [], [], 0.1)[0]:
                break
        elapsed = time.monotonic() - started + seconds_until_closed(sock, 5)
    assert REQUEST_TIMEOUT - 0.05 <= elapsed < REQUEST_TIMEOUT + SLACK


def test_a_silent_connection_is_cut_at_the_deadline(strict_server):
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        elapsed = seconds_until_closed(sock, 5)
    assert REQUEST_TIMEOUT - 0.05 <= elapsed < REQUEST_TIMEOUT + SLACK


def test_a_slow_but_timely_request_is_answered(strict_server):
    request = b"GET /v1/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        for part in (request[:10], request[10:30], request[30:]):
            sock.sendall(part)
            time.sleep(REQUEST_TIMEOUT / 5)
        status, _, body = read_answer(sock)
    assert status == 404 and b'"error_code": 404' in body


def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(strict_server):
    request = b"GET /v1/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        sock.sendall(request)
        assert read_answer(sock)[0] == 404
        # Kept alive: a second request on the same connection, after a pause
        # longer than the request deadline but shorter than the idle timeout.
        time.sleep(REQUEST_TIMEOUT + 0.2)
        sock.sendall(request)
        assert read_answer(sock)[0] == 404
        elapsed = seconds_until_closed(sock, 5)
    assert IDLE_TIMEOUT - 0.05 <= elapsed < IDLE_TIMEOUT + SLACK


def test_pipelined_requests_are_answered_in_order(strict_server):
    requests_ = b"".join(f"GET /v1/nothing/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                         for n in range(3))
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        sock.sendall(requests_ + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses = [read_answer(sock)[0] for _ in range(4)]
    assert statuses == [404, 404, 404, 200]


def test_a_body_over_the_cap_is_refused_before_it_is_read(strict_server):
    """413 as soon as the head declares it; the client, still sending, reads the answer."""
    head = (b"POST /v1/users/create HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 10000000\r\n\r\n")
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        sock.sendall(head)
        try:
            sock.sendall(b"name=" + b"x" * 200000)
        except OSError:
            pass  # the server may stop reading: the answer must still be there
        status, headers, body = read_answer(sock)
    assert (status, headers["connection"]) == (413, "close")
    assert b"too large" in body


@pytest.mark.parametrize("head, status", [
    (b"POST /v1/users HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    (b"POST /v1/users HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
    (b"GET /v1/users HTTP/1.1\r\nX-A: b\r\n folded\r\n\r\n", 400),
    (b"GET /v1/users HTTP/1.1\r\nX-A : b\r\n\r\n", 400),
    (b"GET /v1/users HTTP/2.0\r\n\r\n", 505),
    (b"GET /v1/users HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(101)) + b"\r\n",
     431),
    (b"GET /v1/users HTTP/1.1\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n", 431),
])
def test_ambiguous_or_oversized_heads_are_refused(strict_server, head, status):
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        sock.sendall(head)
        answer_status, headers, body = read_answer(sock)
    assert (answer_status, headers["content-type"]) == (status, "application/json")
    assert b'"error_code": %d' % status in body


def test_head_gets_405_without_a_body(strict_server):
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        sock.sendall(b"HEAD /v1/users HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 405 ")
        assert head.endswith(b"\r\n\r\n") and seconds_until_closed(sock, 5) >= 0


# -- TLS ----------------------------------------------------------------------------------

def test_a_silent_tls_client_is_bounded_and_does_not_stall_others():
    args = ("--request-timeout", str(REQUEST_TIMEOUT))
    with RunningServer(tls=True, serve_args=args) as server:
        silent = [socket.create_connection(address(server), timeout=5) for _ in range(20)]
        half_hello = socket.create_connection(address(server), timeout=5)
        half_hello.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        try:
            started = time.monotonic()
            response = requests.get(f"{server.url}/users", auth=OAuth1(server.key, server.secret),
                                    verify=server.ca_cert_path, timeout=5)
            assert response.status_code == 200
            assert time.monotonic() - started < 1.0  # the handshakes in progress did not block it
            for sock in [*silent, half_hello]:
                assert seconds_until_closed(sock, 5) < REQUEST_TIMEOUT + SLACK
        finally:
            close_all([*silent, half_hello])
        assert time.monotonic() - started >= REQUEST_TIMEOUT - 0.05


def test_tls_keep_alive_and_pipelining():
    with RunningServer(tls=True) as server:
        context = ssl.create_default_context(cafile=server.ca_cert_path)
        with context.wrap_socket(socket.create_connection(address(server), timeout=5),
                                 server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            assert [read_answer(sock)[0] for _ in range(2)] == [200, 200]
            sock.sendall(b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock)[0] == 404


# -- health ---------------------------------------------------------------------------

def test_health_answers_unsigned_and_skips_fault_switches(strict_server):
    strict_server.phone.fault("503")
    try:
        response = requests.get(strict_server.url.replace("/v1", "/health"), timeout=5)
        assert (response.status_code, response.text) == (200, "ok\n")
        assert response.headers["Content-Type"] == "text/plain"
        assert response.headers["Cache-Control"] == "no-store"
        # The fault is still there for the API.
        assert strict_server.client().get("users").status_code == 503
    finally:
        strict_server.phone.clear_faults()
    assert requests.post(strict_server.url.replace("/v1", "/health"), timeout=5).status_code == 405


def test_health_says_503_when_the_database_does_not_answer(tmp_path):
    store = Store(str(tmp_path / "t.db"))
    dispatcher = Dispatcher(store)
    request = Request("GET", "/health", http11.parse_head(b"GET / HTTP/1.1\r\n\r\n", 0).headers,
                      b"", "http://127.0.0.1:1", "127.0.0.1")
    assert dispatcher(request).status == 200
    store.close()
    answer = dispatcher(request)
    assert (answer.status, answer.body) == (503, b"unavailable\n")


def test_one_dispatch_point_takes_another_route(tmp_path):
    """The web app's one-line route: its (status, headers, body) becomes a Response."""
    store = Store(str(tmp_path / "t.db"))
    dispatcher = Dispatcher(store)
    seen = []

    def webapp(request: Request):
        seen.append(request.client_address)
        return 200, [("Content-Type", "text/html; charset=utf-8"), ("X-Frame-Options", "DENY")], b"hi"

    dispatcher.add_route("/app/", lambda r: Response.from_parts(*webapp(r)))
    headers = http11.parse_head(b"GET / HTTP/1.1\r\n\r\n", 0).headers
    answer = dispatcher(Request("GET", "/app/x?y=1", headers, b"", "http://h", "192.0.2.9"))
    assert (answer.status, answer.content_type, answer.headers, answer.body) == (
        200, "text/html; charset=utf-8", (("X-Frame-Options", "DENY"),), b"hi")
    assert seen == ["192.0.2.9"]
    # Everything else still goes to the Toopher API.
    assert dispatcher(Request("GET", "/apple", headers, b"", "http://h", "x")).status == 404
    store.close()


# -- behind a reverse proxy ----------------------------------------------------------------

def signed_for(url: str, key: str, secret: str) -> dict:
    """The OAuth headers a client sends for ``url`` (requests_oauthlib signs)."""
    prepared = requests.Request("GET", url, auth=OAuth1(key, secret)).prepare()
    return {"Authorization": prepared.headers["Authorization"]}


@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_headers_count_only_from_a_trusted_proxy(trusted):
    proxy = "127.0.0.1" if trusted else "192.0.2.1"
    with RunningServer(serve_args=("--trusted-proxy", proxy)) as server:
        host, port = address(server)
        # The client spoke https to the proxy, which forwards plain http.
        headers = signed_for(f"https://{host}:{port}/v1/users", server.key, server.secret)
        headers.update({"X-Forwarded-For": "203.0.113.66, 198.51.100.7",
                        "X-Forwarded-Proto": "https"})
        response = requests.get(f"{server.url}/users", headers=headers, timeout=5)
        time.sleep(0.1)
        log = server.log()
    if trusted:
        assert response.status_code == 200
        assert "198.51.100.7 GET /v1/users 200" in log and "203.0.113.66" not in log
    else:
        assert response.status_code == 401  # signed for https, arrived as http
        assert "127.0.0.1 GET /v1/users 401" in log and "198.51.100.7" not in log


@pytest.mark.parametrize("peer, chain, expected", [
    ("10.0.0.5", ["1.2.3.4"], "10.0.0.5"),                        # not a proxy: header ignored
    ("127.0.0.1", ["1.2.3.4"], "1.2.3.4"),
    ("127.0.0.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),               # the client wrote 6.6.6.6
    ("127.0.0.1", ["1.2.3.4, 10.1.1.1"], "1.2.3.4"),              # 10.1.1.1 is a trusted hop
    ("127.0.0.1", ["garbage"], "127.0.0.1"),
    ("127.0.0.1", [], "127.0.0.1"),
    ("::ffff:127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
])
def test_client_address(peer, chain, expected):
    trusted = forwarded.parse_trusted(["127.0.0.1", "10.1.0.0/16"])
    assert forwarded.client_address(peer, chain, trusted) == expected


def test_bad_trusted_proxy_is_a_usage_error():
    from tests.test_server_cli import run
    result = run("serve", "--db", "/nonexistent/x.db", "--trusted-proxy", "example.com")
    assert result.returncode == 2
    assert "--trusted-proxy: not an IP address or network: 'example.com'" in result.stderr


# -- the systemd unit -----------------------------------------------------------------------

UNIT = Path(__file__).resolve().parents[1] / "packaging/deb/toopher-server.service"


def unit_settings() -> dict:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            name, _, value = line.partition("=")
            settings.setdefault(name, []).append(value)
    return settings


def test_systemd_unit_verifies_and_is_sandboxed(tmp_path):
    unit = tmp_path / UNIT.name
    # verify checks that ExecStart's program exists; the package is not installed here.
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/bin/toopher-server",
                                             "ExecStart=/bin/true"))
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                              capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stderr) == (0, "")
    # systemd's own score: 0 is fully sandboxed, 10 not at all.
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20",
                               str(unit)], capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-2000:]


def test_systemd_unit_limits_fit_the_servers_defaults():
    settings = unit_settings()
    defaults = ConnectionLimits()
    assert int(settings["LimitNOFILE"][0]) >= defaults.max_connections + FD_RESERVE
    assert int(settings["TasksMax"][0]) >= defaults.workers + 16
    # Only the one capability its default port 765 needs (docs/debian.md).
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    for setting in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert settings[setting] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == ["/var/lib/toopher-server"]
    assert settings["User"] == ["toopher-server"]


def test_expect_100_continue_is_answered_before_the_body(strict_server):
    head = (b"POST /v1/users/create HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Expect: 100-continue\r\nContent-Length: 6\r\n\r\n")
    with socket.create_connection(address(strict_server), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"name=x")
        status, _, body = read_answer(sock)
    assert status == 401  # unsigned: the body reached the API


# -- the connection cap ------------------------------------------------------------------------

def test_at_the_cap_the_longest_waiting_connection_makes_room():
    with RunningServer(serve_args=("--max-connections", "20")) as server:
        idle = connect_many(server, 20)
        try:
            time.sleep(0.2)
            assert ok(server.client().get("users")) == []
            time.sleep(0.2)
            # The first connections (the longest waiting) were closed, the last ones kept.
            assert closed_by_peer(idle[:1]) == 1 and closed_by_peer(idle[-5:]) == 0
        finally:
            close_all(idle)


def test_when_every_connection_is_answered_new_ones_wait_in_the_listen_queue():
    """Busy connections are never closed to make room: a newcomer waits in the kernel's
    listen queue until one is answered, then takes the place of an idle one."""
    with RunningServer(serve_args=("--max-connections", "3")) as server:
        server.phone.fault("slow", count=3, seconds=1.0)
        sessions = [requests.Session() for _ in range(3)]  # kept open: idle after answering
        answers = []

        def slow_call(session):
            answers.append(session.get(f"{server.url}/nothing", timeout=10).status_code)

        threads = [threading.Thread(target=slow_call, args=(session,)) for session in sessions]
        try:
            for thread in threads:
                thread.start()
            time.sleep(0.3)
            started = time.monotonic()
            assert requests.get(f"{server.url}/nothing", timeout=10).status_code == 404
            waited = time.monotonic() - started
            for thread in threads:
                thread.join(10)
        finally:
            for session in sessions:
                session.close()
        assert answers == [404, 404, 404]
        assert 0.4 < waited < 0.7 + SLACK


def test_the_log_has_no_queries_bodies_or_credentials():
    with RunningServer() as server:
        api = server.client()
        api.get("users", name="query-secret-1")
        api.post("users/create", name="body-secret-2")
        requests.get(f"{server.url}/users?x=query-secret-3", timeout=5,
                     headers={"Authorization": "OAuth oauth_signature=header-secret-4",
                              "X-Forwarded-For": "198.51.100.99"})
        time.sleep(0.1)
        log = server.log()
    for secret in ("query-secret", "body-secret", "header-secret", server.secret,
                   "oauth_signature", "198.51.100.99"):
        assert secret not in log
    logged = [line for line in log.splitlines() if not line.startswith("database: ")]
    assert logged == ["127.0.0.1 GET /v1/users 200", "127.0.0.1 POST /v1/users/create 200",
                        "127.0.0.1 GET /v1/users 401"]


def test_a_low_hard_file_limit_lowers_the_cap_with_a_warning(tmp_path):
    def limit_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    process = subprocess.Popen(server_command("serve", "--db", str(tmp_path / "t.db"), "--port", "0"),
                               cwd=REPO_ROOT, env=server_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=limit_files)
    try:
        assert process.stdout.readline().startswith("listening on http://127.0.0.1:")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stderr.splitlines()[0] == ("toopher-server: warning: the open-file limit 200 allows "
                                      "136 connections, not 4096 (raise LimitNOFILE or ulimit -n)")
    assert stderr.splitlines()[1:] == [f"database: sqlite {tmp_path / 't.db'}"]
