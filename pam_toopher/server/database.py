"""Where the server's state lives: SQLite on one host, PostgreSQL for several instances.

:class:`~.store.Store` holds all SQL, written once in a small portable
dialect; a backend here runs it.  ``open_database(target)`` picks the backend
by the target: ``postgresql://…`` (or ``postgres://…``) is PostgreSQL
through psycopg 3, imported only then; anything else is an SQLite file (or
``":memory:"``).  Each backend gives the Store the same four things:

* ``transaction(write, notify)``: a context yielding a connection whose
  ``execute(sql, args)`` returns a cursor (``fetchone``, ``fetchall``,
  ``rowcount``) with rows readable by name and by index.  A write
  transaction excludes every other write transaction on the database, in
  every process and on every instance -- SQLite's ``BEGIN IMMEDIATE``;
  on PostgreSQL a transaction-level advisory lock taken first -- so a
  method's read-then-write is as safe on one as on the other;
* ``wait_for_change(timeout, since)`` and ``change_mark()``: a long poll's
  wake-up, from writes in this process at once and, on PostgreSQL, from
  every other instance through LISTEN/NOTIFY (``poll_interval`` says how
  often a waiter must still re-read: SQLite cannot signal other processes);
* ``migrate(migrations)``: versioned schema migrations, run once under a
  lock so that instances starting together do not race;
* ``close()``.

Rules for a Store method to run on both backends (follow them in new code;
porting older code is mechanical):

1. All SQL goes through ``with self._tx() as db: db.execute(SQL, ARGS)``;
   placeholders are ``?`` only (translated to psycopg's ``%s``; a literal
   ``%`` in SQL is fine, a ``?`` inside a string literal is not).  Pass
   values as parameters, never formatted in.  Only ``execute`` exists (no
   ``executescript``, ``lastrowid``): make ids in Python (``_new_id()``) or
   use ``RETURNING``, which both accept.
2. Pass values of the column's type: PostgreSQL refuses what SQLite would
   store anyway (a word in an INTEGER column).  Booleans are INTEGER 0/1
   columns: compare ``= 1`` / ``= 0``, read with ``bool(row["x"])``;
   Python ``bool`` arguments are sent as 0/1 by both.  Times are REAL
   seconds from ``self.clock()``, passed as parameters (no
   ``datetime('now')``, ``strftime`` or other SQLite-only functions; use
   COALESCE, not IFNULL; ``LIKE`` ignores ASCII case on SQLite only, so
   compare with ``=``).
3. ``INSERT OR IGNORE INTO t …`` is accepted (rewritten as ``INSERT … ON
   CONFLICT DO NOTHING``); ``INSERT OR REPLACE`` is not: write
   ``INSERT INTO t (…) VALUES (…) ON CONFLICT (key) DO UPDATE SET
   col = excluded.col``, which both accept.  Name the columns in new
   INSERTs (PostgreSQL tables carry an extra ``rowid`` column, see 6).
4. Anything single-use (a nonce, a code step, a phrase, a token, a
   challenge, a pending request's answer) is taken by ONE conditional
   statement whose ``rowcount`` says who won: ``UPDATE … SET used = 1 WHERE
   id = ? AND used = 0`` or ``INSERT … ON CONFLICT DO NOTHING``.  The
   write lock makes read-then-write safe too, but the conditional
   statement says what is meant and survives a weaker lock.
5. Write in a write transaction (the default ``self._tx()``); a
   ``write=False`` transaction is READ ONLY on PostgreSQL and a write in it
   fails there.  Pass ``quiet=True`` for writes that cannot end a long poll's
   wait (store.py's ``_tx`` says which).  ``exclusive=False`` skips the
   write lock on PostgreSQL: only for a method whose every statement stands
   alone (no read it depends on; rule 4), as recording a nonce.  Nested
   ``self._tx()`` calls join the outer one.
6. Schema changes are a new entry at the end of ``MIGRATIONS`` in store.py,
   never an edit of an applied one.  Write the DDL in SQLite's dialect with
   the types TEXT, INTEGER, REAL, BLOB and ``INTEGER PRIMARY KEY
   AUTOINCREMENT``; :func:`postgres_ddl` translates it (BIGINT, DOUBLE
   PRECISION, BYTEA, BIGSERIAL) and gives each PostgreSQL table a
   ``rowid BIGSERIAL`` column, so ``ORDER BY rowid`` (insertion order)
   works on both.  Use ``rowid`` for nothing else.  ``ALTER TABLE t ADD
   COLUMN c TYPE`` works on both; ``WITHOUT ROWID``, ``STRICT`` and
   ``COLLATE NOCASE`` are SQLite's only.  ``DROP TRIGGER IF EXISTS name``
   (SQLite's form) removes a trigger an SQLite database made by an earlier
   version holds; it is skipped on PostgreSQL, where no version made one.
   Write no new triggers: record in the Store's own statements instead.
   tests/test_server_database.py and a second run of the server tests on
   PostgreSQL (tools/test) check a new method on both backends.
"""
import re
import select
import sqlite3
import threading
import time
import urllib.parse
from contextlib import contextmanager
from functools import lru_cache
from queue import Empty, LifoQueue
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type


#: A migration: (version, DDL in SQLite's dialect; see rule 6 above).
Migration = Tuple[int, str]

#: Target prefixes that select PostgreSQL.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: pg_notify channel of committed changes (long polls wake on it).
CHANGE_CHANNEL = "toopher_changed"
#: Advisory lock keys (arbitrary constants, unique to this program).
WRITE_LOCK_KEY = 0x70616D5F746F6F  # every write transaction
MIGRATION_LOCK_KEY = WRITE_LOCK_KEY + 1
#: Connections one PostgreSQL instance keeps at most (long polls hold none
#: while they wait, so this bounds concurrent transactions, not waiters).
POSTGRES_POOL_SIZE = 10
#: How often a long poll re-reads although nothing signalled a change.
#: SQLite cannot signal other processes (the phone command, a second server
#: on the file).  PostgreSQL delivers every committed notification to every
#: listening session, and a listener that reconnects wakes all waiters; the
#: re-read is only a backstop, and a costly one: 500 waiting logins
#: re-reading each second kept a busy 2-core machine's instance saturated.
SQLITE_POLL_INTERVAL = 0.05
POSTGRES_POLL_INTERVAL = 10.0
#: Seconds to wait for a SQLite write lock held by another process.
SQLITE_BUSY_TIMEOUT = 10
#: Every wait on PostgreSQL is bounded.  A transaction of the Store takes
#: milliseconds; one idle for seconds belongs to a stopped or cut-off
#: instance, and as it may hold the write lock, the server ends it.
POSTGRES_SESSION_SETTINGS = (
    ("idle_in_transaction_session_timeout", "5s"),  # frees a stuck holder's lock
    ("lock_timeout", "20s"),       # a writer waiting longer gives up (the request fails)
    ("statement_timeout", "20s"),
)
#: Seconds to connect, unless the URL says (connect_timeout=...).
POSTGRES_CONNECT_TIMEOUT = 10


class StorageError(Exception):
    """The database cannot be opened or used; the message holds no password.

    Not a :class:`~.errors.ServerError`: those are answers to API clients,
    and an unreachable database is no fault of the request (nor a detail a
    client should read); the command line reports it as one line.
    """


def is_postgres(target: str) -> bool:
    return target.startswith(POSTGRES_SCHEMES)


def redact(target: str) -> str:
    """The target with any password replaced by ``***``, for messages and logs."""
    if not is_postgres(target):
        return target
    parts = urllib.parse.urlsplit(target)
    if parts.password is None:
        return target
    user = urllib.parse.quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def scrub(message: str, target: str) -> str:
    """An error message with the target's password (raw or %-encoded) cut out."""
    if is_postgres(target):
        password = urllib.parse.urlsplit(target).password
        if password:
            for form in {password, urllib.parse.quote(password, safe=""),
                         urllib.parse.unquote(password)}:
                message = message.replace(form, "***")
    return message


def open_database(target: str) -> "Backend":
    """The backend for a path, ``":memory:"`` or a ``postgresql://`` URL."""
    if is_postgres(target):
        return PostgresBackend(target)
    return SqliteBackend(target)


def database_errors() -> Tuple[Type[BaseException], ...]:
    """Ours and the drivers' exception classes loaded so far (for the CLI's one-line errors)."""
    import sys

    psycopg = sys.modules.get("psycopg")
    return (StorageError, sqlite3.Error) + ((psycopg.Error,) if psycopg is not None else ())


# -- DDL --------------------------------------------------------------------------

def ddl_statements(script: str) -> List[str]:
    """The statements of a DDL script (comments removed; no ';' inside strings)."""
    text = re.sub(r"--[^\n]*", "", script)
    return [statement.strip() for statement in text.split(";") if statement.strip()]


_PG_TYPES = ((r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", "BIGSERIAL PRIMARY KEY"),
             (r"\bINTEGER\b", "BIGINT"), (r"\bREAL\b", "DOUBLE PRECISION"),
             (r"\bBLOB\b", "BYTEA"))


def sqlite_only(statement: str) -> bool:
    """A DDL statement PostgreSQL skips: DROP TRIGGER removes a trigger an
    SQLite database of an earlier version holds; no version made one on PostgreSQL."""
    return re.match(r"DROP TRIGGER\b", statement, re.IGNORECASE) is not None


def postgres_ddl(statement: str) -> str:
    """One SQLite-dialect DDL statement in PostgreSQL's (rule 6)."""
    for pattern, replacement in _PG_TYPES:
        statement = re.sub(pattern, replacement, statement)
    if re.match(r"CREATE TABLE\b", statement, re.IGNORECASE):
        # Stands in for SQLite's implicit rowid (insertion order); last, so
        # an INSERT without a column list still fills the same columns.
        closing = statement.rindex(")")
        statement = statement[:closing].rstrip() + ",\n    rowid BIGSERIAL" + statement[closing:]
    return statement


# -- change signal (long polls) -------------------------------------------------------

class ChangeSignal:
    """A counter of committed changes that waiters can sleep on.

    A waiter takes ``mark()`` before it reads, then ``wait(timeout, mark)``
    returns at once if anything changed since -- so a change committed
    between the read and the wait is not slept through.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def mark(self) -> int:
        with self._condition:
            return self._generation

    def bump(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, timeout: float, since: Optional[int] = None) -> None:
        with self._condition:
            if since is None:
                self._condition.wait(max(0.0, timeout))
            else:
                self._condition.wait_for(lambda: self._generation != since, max(0.0, timeout))


class Backend:
    """What the two backends share: nesting, the change signal."""

    kind = ""
    poll_interval = SQLITE_POLL_INTERVAL

    def __init__(self) -> None:
        self.changes = ChangeSignal()
        self._local = threading.local()

    @contextmanager
    def transaction(self, write: bool = True, notify: bool = True,
                    exclusive: bool = True) -> Iterator[Any]:
        outer = getattr(self._local, "current", None)
        if outer is not None:  # rule 5: a nested transaction joins the outer one
            if write and not outer[1]:
                raise RuntimeError("a write transaction inside a read-only one")
            yield outer[0]
            return
        with self._begin(write, write and notify, exclusive) as connection:
            self._local.current = (connection, write)
            try:
                yield connection
            finally:
                self._local.current = None
        if write and notify:
            self._after_commit()

    def change_mark(self) -> int:
        return self.changes.mark()

    def wait_for_change(self, timeout: float, since: Optional[int] = None) -> None:
        self.changes.wait(timeout, since)

    def _begin(self, write: bool, notify: bool, exclusive: bool):  # pragma: no cover
        """A transaction; ``notify``: tell other processes at commit (if the backend can)."""
        raise NotImplementedError

    def _after_commit(self) -> None:
        """After a committed write that may end a wait: wake this process's waiters."""
        self.changes.bump()

    def migrate(self, migrations: Sequence[Migration]) -> int:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError


_SCHEMA_VERSION_DDL = ("CREATE TABLE IF NOT EXISTS schema_version ("
                       "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")


def _pending(migrations: Sequence[Migration], current: int) -> List[Migration]:
    versions = [version for version, _ in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError("migration versions must be increasing from 1")
    if versions and current > versions[-1]:
        raise StorageError(f"the database's schema (version {current}) is newer than this "
                           f"program's (version {versions[-1]}): upgrade toopher-server")
    return [(version, ddl) for version, ddl in migrations if version > current]


# -- SQLite -------------------------------------------------------------------------------

class SqliteBackend(Backend):
    """One connection per process behind a lock; WAL mode lets processes share the file."""

    kind = "sqlite"
    poll_interval = SQLITE_POLL_INTERVAL

    def __init__(self, path: str):
        super().__init__()
        self.target = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT * 1000}")
        self._set_wal()
        self._db.execute("PRAGMA synchronous = NORMAL")

    def _set_wal(self) -> None:
        # Switching a new file to WAL takes an exclusive lock, and SQLite can
        # answer "database is locked" at once, without the busy timeout,
        # while another process opens the same new file.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _begin(self, write: bool, notify: bool, exclusive: bool) -> Iterator[Any]:
        # Every write is exclusive on SQLite.  BEGIN IMMEDIATE takes the write
        # lock up front: a read that later writes would otherwise fail with
        # SQLITE_BUSY under concurrency.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteConnection(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def migrate(self, migrations: Sequence[Migration]) -> int:
        # One BEGIN IMMEDIATE transaction: a second process waits for it,
        # then finds the schema current.  SQLite's DDL is transactional.
        with self.transaction(notify=False) as db:
            db.execute(_SCHEMA_VERSION_DDL)
            current = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version"
                                 ).fetchone()[0]
            for version, script in _pending(migrations, current):
                for statement in ddl_statements(script):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                           (version, time.time()))
                current = version
        return current

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _SqliteConnection:
    """sqlite3's connection reduced to ``execute``, what PostgreSQL's offers too:
    code that needs more (``executescript``, ``lastrowid``) fails on SQLite as well."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, tuple(args))


# -- PostgreSQL -----------------------------------------------------------------------

class Row:
    """A result row like sqlite3.Row: by column name or index, ``keys()``, ``dict(row)``."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[Any], index: Dict[str, int]):
        self._values, self._index = tuple(values), index

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> List[str]:
        return list(self._index)

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values))!r})"


def _row_factory(cursor) -> Callable[[Sequence[Any]], Row]:
    names = [column.name for column in cursor.description or ()]
    index: Dict[str, int] = {}
    for position, name in enumerate(names):
        index.setdefault(name, position)  # the first of duplicate names, as sqlite3.Row

    def make(values: Sequence[Any]) -> Row:
        return Row(values, index)

    return make


@lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    """Rule 1 and 3: ``?`` placeholders and ``INSERT OR IGNORE`` in psycopg's terms."""
    text = sql.replace("%", "%%")
    # No statement of the Store has '?' inside a string literal.
    text = text.replace("?", "%s")
    ignore = re.match(r"\s*INSERT\s+OR\s+IGNORE\s+INTO\b", text, re.IGNORECASE)
    if ignore:
        text = "INSERT INTO" + text[ignore.end():] + " ON CONFLICT DO NOTHING"
    if re.match(r"\s*INSERT\s+OR\s+REPLACE\b", text, re.IGNORECASE):
        raise ValueError("INSERT OR REPLACE is SQLite only: use INSERT ... ON CONFLICT (key) "
                         "DO UPDATE SET ... (pam_toopher/server/database.py, rule 3)")
    return text


def _postgres_args(args: Sequence[Any]) -> Tuple[Any, ...]:
    return tuple(int(value) if isinstance(value, bool) else value for value in args)


class _PostgresConnection:
    """A psycopg connection that takes the Store's SQL (rules 1-3)."""

    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql: str, args: Sequence[Any] = ()):
        cursor = self._connection.cursor()
        return cursor.execute(postgres_sql(sql), _postgres_args(args))


class PostgresBackend(Backend):
    """A pool of psycopg connections, an advisory write lock, LISTEN/NOTIFY wake-ups.

    Parameters are bound client-side (psycopg's ClientCursor, correctly
    quoted by libpq): SQLite-style SQL such as ``? IS NULL`` needs no type
    annotations then.
    """

    kind = "postgresql"
    poll_interval = POSTGRES_POLL_INTERVAL

    def __init__(self, url: str, pool_size: int = POSTGRES_POOL_SIZE):
        super().__init__()
        try:
            import psycopg  # only PostgreSQL users need it installed
        except ImportError:
            raise StorageError("a postgresql:// database needs psycopg 3: "
                               "apt-get install python3-psycopg") from None
        self._psycopg = psycopg
        self.target = url
        self._idle: "LifoQueue[Any]" = LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._closed = False
        self._listener: Optional[threading.Thread] = None
        self._listener_lock = threading.Lock()
        self._idle.put(self._connect())  # fail now, with a clear message, if unreachable

    def _connect(self):
        psycopg = self._psycopg
        try:
            extra = {}
            if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(self.target):
                extra["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT
            connection = psycopg.connect(self.target, autocommit=True,
                                         row_factory=_row_factory,
                                         cursor_factory=psycopg.ClientCursor,
                                         application_name="toopher-server", **extra)
            for name, value in POSTGRES_SESSION_SETTINGS:
                connection.execute(f"SET {name} = '{value}'")
            return connection
        except psycopg.Error as error:
            raise StorageError(f"cannot connect to {redact(self.target)}: "
                               f"{scrub(str(error).strip(), self.target)}") from None

    def _acquire(self):
        self._slots.acquire()
        try:
            while True:
                try:
                    connection = self._idle.get_nowait()
                except Empty:
                    return self._connect()
                if not connection.closed and not connection.broken:
                    return connection
        except BaseException:
            self._slots.release()
            raise

    def _release(self, connection, healthy: bool = True) -> None:
        if healthy and not self._closed and not connection.closed:
            self._idle.put(connection)
        else:
            connection.close()
        self._slots.release()

    @contextmanager
    def _begin(self, write: bool, notify: bool, exclusive: bool) -> Iterator[Any]:
        args: Tuple[int, ...] = ()
        if not write:
            begin = "BEGIN READ ONLY"
        elif exclusive:
            # Every write transaction, on every instance, one at a time:
            # SQLite's BEGIN IMMEDIATE.  (One round trip for both.)
            begin, args = "BEGIN; SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,)
        else:
            begin = "BEGIN"
        connection = self._acquire()
        healthy = False
        try:
            try:
                connection.execute(begin, args)
            except self._psycopg.OperationalError:
                # An idle pooled connection the server closed (a restart, a
                # failover, an idle timeout): nothing was done yet, so begin
                # once more on a new one rather than fail the request.
                connection.close()
                connection = self._connect()
                connection.execute(begin, args)
            try:
                yield _PostgresConnection(connection)
            except BaseException:
                try:
                    connection.execute("ROLLBACK")
                    healthy = True
                except self._psycopg.Error:
                    pass  # a lost connection: the server rolled it back; drop it
                raise
            if notify:
                # Delivered at COMMIT, to every instance's listener (this one's too).
                connection.execute("SELECT pg_notify(%s, ''); COMMIT", (CHANGE_CHANNEL,))
            else:
                connection.execute("COMMIT")
            healthy = True
        finally:
            self._release(connection, healthy and not connection.broken)

    def _after_commit(self) -> None:
        # This process's waiters wake through the listener like every other
        # instance's (a millisecond later): a local wake-up as well would
        # make each of them re-read twice per write.
        if self._listener is None:
            self.changes.bump()  # no listener yet: nobody waits, but keep marks moving

    def wait_for_change(self, timeout: float, since: Optional[int] = None) -> None:
        self._start_listener()
        super().wait_for_change(timeout, since)

    def _start_listener(self) -> None:
        with self._listener_lock:
            if self._listener is None and not self._closed:
                self._listener = threading.Thread(target=self._listen, daemon=True,
                                                  name="toopher-listen")
                self._listener.start()

    def _listen(self) -> None:
        """Turn other instances' notifications into this process's wake-ups."""
        while not self._closed:
            connection = None
            try:
                connection = self._connect()
                connection.execute(f"LISTEN {CHANGE_CHANNEL}")
                self.changes.bump()  # anything missed while (re)connecting
                while not self._closed:
                    ready, _, _ = select.select([connection.fileno()], [], [], 1.0)
                    if not ready:
                        continue
                    connection.pgconn.consume_input()
                    woke = False
                    while connection.pgconn.notifies() is not None:
                        woke = True
                    if woke:
                        self.changes.bump()
            except Exception:  # noqa: BLE001 - reconnect; waiters re-read meanwhile
                time.sleep(0.5)
            finally:
                if connection is not None:
                    connection.close()

    def migrate(self, migrations: Sequence[Migration]) -> int:
        # A session lock around the whole run: an instance starting at the
        # same time waits here, then finds the schema current.
        connection = self._connect()
        try:
            connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            with connection.transaction():
                connection.execute(postgres_ddl(_SCHEMA_VERSION_DDL))
                current = connection.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            for version, script in _pending(migrations, current):
                with connection.transaction():
                    for statement in ddl_statements(script):
                        if not sqlite_only(statement):
                            connection.execute(postgres_ddl(statement))
                    connection.execute("INSERT INTO schema_version (version, applied_at)"
                                       " VALUES (%s, %s)", (version, time.time()))
                current = version
            connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            return current
        finally:
            connection.close()

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except Empty:
                break
