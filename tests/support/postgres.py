"""A throwaway PostgreSQL server for tests: Debian's postgresql-15, no server before.

    from tests.support.postgres import cluster
    pg = cluster()                      # started once per test process, stopped at exit
    url = pg.create_database()          # a fresh, empty database: postgresql://...
    pg.drop_database(url)
    pg.password_url(name)               # over TCP with a password (for the secrets tests)

``initdb`` runs as an unprivileged user (``nobody`` when the tests run as
root; PostgreSQL refuses to run as root) in a temporary directory; the
server listens on a free loopback port, with its socket in that directory.
Local (socket) connections are trusted, which only root and that user can
reach; TCP connections need the superuser's password.  Everything is
stopped and removed when the test process exits.
"""
import atexit
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
import uuid
from pathlib import Path
from typing import List, Optional

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
#: Where to run initdb and the server when the tests run as root.
UNPRIVILEGED_USER = "nobody"


def database_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    def __init__(self) -> None:
        if not available():
            raise RuntimeError(f"PostgreSQL 15 is not installed ({PG_BIN}): run tools/install-deps")
        self.directory = Path(tempfile.mkdtemp(prefix="toopher-pg-"))
        self.data = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.socket_dir.mkdir()
        self.port = _free_port()
        self.password = secrets.token_hex(16)
        self._as_user: List[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            for path in (self.directory, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", UNPRIVILEGED_USER, "--"]
        os.chmod(self.directory, 0o700)
        password_file = self.directory / "superuser-password"
        password_file.write_text(self.password + "\n")
        if self._as_user:
            os.chown(password_file, pwd.getpwnam(UNPRIVILEGED_USER).pw_uid, -1)
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", SUPERUSER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8",
                  "--no-sync")
        password_file.unlink()
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.directory / "server.log",
                  "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
                  " -c fsync=off -c max_connections=300", "start")
        self._stopped = False

    def _run(self, *argv) -> None:
        completed = subprocess.run([*self._as_user, *map(str, argv)], capture_output=True,
                                   text=True, timeout=120, cwd="/")
        if completed.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {completed.stdout}{completed.stderr}")

    def url(self, database: str = "postgres") -> str:
        """The socket URL of a database (trusted: no password)."""
        query = urllib.parse.urlencode({"host": str(self.socket_dir), "port": self.port})
        return f"postgresql://{SUPERUSER}@/{database}?{query}"

    def password_url(self, database: str) -> str:
        """A TCP URL with the superuser's password in it."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql)

    def create_database(self, name: Optional[str] = None) -> str:
        name = name or f"toopher_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = database_name(url)
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


_cluster: Optional[PostgresCluster] = None
_cluster_lock = threading.Lock()


def cluster() -> PostgresCluster:
    """The test process's PostgreSQL server, started on first use."""
    global _cluster
    with _cluster_lock:
        if _cluster is None:
            _cluster = PostgresCluster()
            atexit.register(_cluster.stop)
        return _cluster
