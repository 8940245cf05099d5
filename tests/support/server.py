"""A real Toopher-compatible server in a subprocess, for tests.

    from tests.support.server import RunningServer
    # fixtures in tests/conftest.py: toopher_server (per test), srv (per
    # module), toopher_tls_server

    def test_login(srv):                   # started, with a requester
        srv.url, srv.key, srv.secret       # "http://127.0.0.1:PORT/v1", credentials
        srv.phone.make_pairing_phrase("alice")

    with RunningServer(serve_args=["--max-pending", "50"]) as srv:  # other options
    with RunningServer(tls=True) as srv:   # HTTPS with a throwaway CA (make-cert)
        srv.ca_cert_path                   # trust this one (the module's ca_bundle)
        srv.untrusted_ca_cert_path         # a different CA: verification must fail

The subprocess is ``/usr/bin/python3 -m pam_toopher.server serve`` on a free
port; it is killed at teardown, also when the test fails.

PostgreSQL: ``RunningServer(database="postgresql")`` puts the state in a
fresh database of the test process's own PostgreSQL server
(tests/support/postgres.py) instead of an SQLite file; with the environment
variable ``TOOPHER_TEST_DATABASE=postgresql`` every RunningServer does (that
is how tools/test runs the server tests a second time).  ``db_path`` is then
the database's URL, which every ``toopher-server`` command and ``Phone``
accept as well; a second RunningServer given the same ``directory`` shares
the database, as it shares the SQLite file.
"""
import os
import random
import re
import resource
import select
import sqlite3
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

import requests
from requests_oauthlib import OAuth1

from pam_toopher.server.phone import Phone
from pam_toopher.server.store import Store

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
START_TIMEOUT = 15.0
#: "postgresql" runs every RunningServer on PostgreSQL (tools/test's second pass).
DATABASE_ENV = "TOOPHER_TEST_DATABASE"
#: PostgreSQL databases by the RunningServer directory that made them (for twins).
_POSTGRES_DATABASES: Dict[str, str] = {}


def default_database() -> str:
    """"sqlite" or "postgresql", as $TOOPHER_TEST_DATABASE says (sqlite if unset)."""
    backend = os.environ.get(DATABASE_ENV, "sqlite") or "sqlite"
    if backend not in ("sqlite", "postgresql"):
        raise RuntimeError(f"{DATABASE_ENV} must be sqlite or postgresql, not {backend!r}")
    return backend


@contextmanager
def scratch_database() -> Iterator[str]:
    """A throwaway database for an in-process Store: ":memory:", or a fresh
    PostgreSQL database under TOOPHER_TEST_DATABASE=postgresql."""
    if default_database() != "postgresql":
        yield ":memory:"
        return
    from tests.support.postgres import cluster

    url = cluster().create_database()
    try:
        yield url
    finally:
        cluster().drop_database(url)


def server_command(*args: str) -> list:
    """argv of ``toopher-server ARGS`` from this checkout."""
    return [PYTHON, "-m", "pam_toopher.server", *args]


def server_env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    env.pop("TOOPHER_SERVER_DB", None)
    return env


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Tuple[Path, Path]:
    """A self-signed CA certificate and key in ``directory``."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_server_cert(directory: Path, ca: Tuple[Path, Path], name: str = "server",
                     alt_names: str = "IP:127.0.0.1,DNS:localhost") -> Tuple[Path, Path]:
    """A certificate for ``alt_names`` (127.0.0.1 and localhost) signed by ``ca``."""
    cert, key, csr = (directory / f"{name}.pem", directory / f"{name}.key",
                      directory / f"{name}.csr")
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName={alt_names}\n"
                          "basicConstraints=critical,CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\n"
                          "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
    return cert, key


def privileged_port() -> int:
    """A free 127.0.0.1 port below 1024: the only plain http the module
    believes (no local user can bind it).  Root only, as the tests that
    drive the module are.  Tried in random order, so that two runs at once
    rarely probe the same port before either binds it."""
    for port in random.sample(range(600, 1024), 424):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 1024 on 127.0.0.1")


class RunningServer:
    """``toopher-server serve`` in a subprocess, with a requester and a Phone.

    Attributes: url, db_path, key, secret, phone, port, tls, ca_cert_path,
    untrusted_ca_cert_path (TLS only), log_path (the server's stderr).
    """

    def __init__(self, directory: Optional[str] = None, tls: bool = False,
                 serve_args: Sequence[str] = (), open_files: Optional[int] = None,
                 port: int = 0, database: Optional[str] = None):
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="toopher-server-")
        self.directory = Path(directory or self._tmp.name)
        self.backend = database or default_database()
        self._owns_database = False
        if self.backend == "postgresql":
            self.db_path = self._postgres_database()
        else:
            self.db_path = str(self.directory / "toopher.db")
        self.log_path = str(self.directory / "server.log")
        self.tls = tls
        self.serve_args = tuple(serve_args)  # more `serve` options, e.g. ("--idle-timeout", "1")
        self.open_files = open_files  # the soft RLIMIT_NOFILE it starts with (systemd's is 1024)
        self.app_url: Optional[str] = None  # the phone web app, with --public-url
        self.port = port  # 0: a free one; privileged_port() for plain http the module believes
        self.url = None
        self.ca_cert_path = self.untrusted_ca_cert_path = None
        self._cert = None
        self._process = None
        self.returncode = None
        if tls:
            # The certificates an admin would make (toopher-server make-cert).
            from pam_toopher.server.certs import make_certificates

            made = make_certificates(str(self.directory / "tls"), ["127.0.0.1", "localhost"],
                                     days=2)
            self._cert = (made.server_cert, made.server_key)
            self.ca_cert_path = str(made.ca_cert)
            self.untrusted_ca_cert_path = str(make_certificates(
                str(self.directory / "other-tls"), ["127.0.0.1", "localhost"], days=2).ca_cert)
        self.phone = Phone(self.db_path)
        self.key, self.secret = self.new_requester("test requester")

    def _postgres_database(self) -> str:
        from tests.support.postgres import cluster

        known = _POSTGRES_DATABASES.get(str(self.directory))
        if known is not None:
            return known
        url = cluster().create_database()
        _POSTGRES_DATABASES[str(self.directory)] = url
        self._owns_database = True
        return url

    def new_requester(self, name: str) -> Tuple[str, str]:
        """Credentials (key, secret) of a new requester."""
        store = Store(self.db_path)
        try:
            return store.create_requester(name)
        finally:
            store.close()

    def start(self) -> "RunningServer":
        args = ["serve", "--db", self.db_path, "--host", "127.0.0.1", "--port", str(self.port)]
        if self._cert:
            args += ["--tls-cert", str(self._cert[0]), "--tls-key", str(self._cert[1])]
        args += self.serve_args
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(server_command(*args), cwd=REPO_ROOT, env=server_env(),
                                             stdout=subprocess.PIPE, stderr=log,
                                             preexec_fn=self._limit_open_files)
        line = self._read_line(START_TIMEOUT)
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}; log: {self.log()}")
        self.url = line[len("listening on "):]
        # Kept, so restart() comes back at the same URL clients were given.
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        if "--public-url" in self.serve_args:
            self.app_url = self._app_url()
        return self

    def _limit_open_files(self) -> None:
        if self.open_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, hard))

    def _app_url(self) -> str:
        """The "phone web app at URL" line the server logs to stderr when it starts."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"phone web app at (\S+)", self.log())
            if found:
                return found.group(1)
            time.sleep(0.02)
        raise RuntimeError(f"no web app URL in the log: {self.log()}")

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        pipe = self._process.stdout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], 0.1)
            if ready:
                return pipe.readline().decode(errors="replace").strip()
            if self._process.poll() is not None:
                return f"exited with status {self._process.returncode}"
        return "timed out"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.returncode = process.returncode
        process.stdout.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash: no cleanup, connections cut mid-answer)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same port and database."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def client(self, key: Optional[str] = None, secret: Optional[str] = None) -> "SignedClient":
        """An independent OAuth1 client (requests_oauthlib), not the project's."""
        return SignedClient(self.url, key or self.key, secret or self.secret, self.ca_cert_path)

    def query(self, sql: str, *args) -> list:
        """Rows of a read-only SQL query on the server's database (for assertions)."""
        if self.backend == "postgresql":
            return [tuple(row) for row in self._postgres_rows(sql, args)]
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def _postgres_rows(self, sql: str, args=()) -> list:
        import psycopg

        from pam_toopher.server.database import postgres_sql

        with psycopg.connect(self.db_path, autocommit=True,
                             cursor_factory=psycopg.ClientCursor) as db:
            return db.execute(postgres_sql(sql), args).fetchall()

    def snapshot(self) -> list:
        """The database's objects (not nonces or fault switches): equal snapshots, no state change."""
        if self.backend == "postgresql":
            tables = [name for name, in self._postgres_rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                " AND table_name NOT IN ('nonces', 'faults') ORDER BY table_name")]
            return [f"{table}: {row!r}" for table in tables
                    for row in self._postgres_rows(f"SELECT * FROM {table} ORDER BY rowid")]
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return [line for line in db.iterdump() if 'INTO "nonces"' not in line
                    and 'INTO "faults"' not in line and "'faults'" not in line]
        finally:
            db.close()

    @property
    def pid(self) -> int:
        assert self._process is not None, "not running"
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace") if os.path.exists(self.log_path) else ""

    def close(self) -> None:
        self.stop()
        self.phone.close()
        if self._owns_database:
            from tests.support.postgres import cluster

            _POSTGRES_DATABASES.pop(str(self.directory), None)
            cluster().drop_database(self.db_path)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "RunningServer":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()


class SignedClient:
    """Signs with requests_oauthlib.OAuth1; returns plain ``requests.Response`` objects."""

    def __init__(self, url: str, key: str, secret: str, ca_cert_path: Optional[str] = None):
        self.url = url
        self.session = requests.Session()
        self.session.auth = OAuth1(key, secret)
        # Per request, not session.verify: requests lets $REQUESTS_CA_BUNDLE
        # override a session's verify setting.
        self.verify = ca_cert_path or True

    def get(self, path: str, **params) -> requests.Response:
        return self.session.get(f"{self.url}/{path}", params=params, verify=self.verify, timeout=30)

    def post(self, path: str, **data) -> requests.Response:
        return self.session.post(f"{self.url}/{path}", data=data, verify=self.verify, timeout=30)

    def close(self) -> None:
        self.session.close()

