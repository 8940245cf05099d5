"""The storage layer (pam_toopher/server/database.py) on both backends: the SQL
translation, schema migrations (also two instances starting at once), and
database URLs with passwords kept out of argv, logs and error messages."""
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pam_toopher.server.database import (StorageError, ddl_statements, postgres_ddl,
                                         postgres_sql, redact, scrub)
from pam_toopher.server.store import MIGRATIONS, Store
from tests.support import postgres
from tests.support.server import (REPO_ROOT, RunningServer, SignedClient, server_command,
                                  server_env)
from tests.test_server_api import ok, paired_with_terminal

# -- translation (pure) ----------------------------------------------------------------


def test_placeholders_and_percent_signs_are_translated():
    assert postgres_sql("SELECT * FROM t WHERE a = ? AND b LIKE 'x%'") == \
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%'"


def test_insert_or_ignore_becomes_on_conflict_do_nothing():
    assert postgres_sql("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)") == \
        "INSERT INTO nonces VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"


def test_insert_or_replace_is_refused_with_the_rule_to_follow():
    with pytest.raises(ValueError, match="ON CONFLICT"):
        postgres_sql("INSERT OR REPLACE INTO auth_rules VALUES (?, ?, ?, ?)")


def test_ddl_types_and_rowid():
    statement = postgres_ddl("CREATE TABLE IF NOT EXISTS t (\n"
                             "    seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL,\n"
                             "    at REAL, data BLOB, UNIQUE (n))")
    assert statement == ("CREATE TABLE IF NOT EXISTS t (\n"
                         "    seq BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL,\n"
                         "    at DOUBLE PRECISION, data BYTEA, UNIQUE (n),\n"
                         "    rowid BIGSERIAL)")
    assert postgres_ddl("CREATE INDEX IF NOT EXISTS i ON t (n)") == \
        "CREATE INDEX IF NOT EXISTS i ON t (n)"
    assert all(";" not in statement for statement in ddl_statements(MIGRATIONS[0][1]))


def test_passwords_are_redacted_and_scrubbed():
    url = "postgresql://toopher:s%40cret@db.example:5432/toopher?sslmode=require"
    assert redact(url) == "postgresql://toopher:***@db.example:5432/toopher?sslmode=require"
    assert redact("/var/lib/toopher-server/toopher.db") == "/var/lib/toopher-server/toopher.db"
    assert redact("postgresql://toopher@/toopher") == "postgresql://toopher@/toopher"
    assert scrub("bad password s@cret and s%40cret", url) == "bad password *** and ***"


# -- migrations, on both backends -----------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "toopher.db")
        return
    url = postgres.cluster().create_database()
    yield url
    postgres.cluster().drop_database(url)


#: Every version, as schema_version lists them once all migrations ran.
ALL_VERSIONS = [(version,) for version, _ in MIGRATIONS]


def _versions(target):
    store = Store(target)
    try:
        with store._tx(write=False) as db:
            return [tuple(row) for row in db.execute(
                "SELECT version FROM schema_version ORDER BY version").fetchall()]
    finally:
        store.close()


def test_instances_starting_together_migrate_once(empty_database):
    """Eight server processes' worth of Stores open a new database at once."""
    def open_and_use(index):
        store = Store(empty_database)
        try:
            return store.create_requester(f"r{index}")
        finally:
            store.close()

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(open_and_use, range(8)))
    assert len(set(keys)) == 8
    assert _versions(empty_database) == ALL_VERSIONS


def test_two_server_processes_start_together_on_a_new_database(empty_database):
    commands = [subprocess.Popen(server_command("requester", "create", f"r{index}", "--db",
                                                empty_database),
                                 cwd=REPO_ROOT, env=server_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for index in range(2)]
    for command in commands:
        out, err = command.communicate(timeout=60)
        assert command.returncode == 0 and err == "", err
        assert out.startswith("key=")
    assert _versions(empty_database) == ALL_VERSIONS


def test_a_newer_schema_is_refused(empty_database):
    Store(empty_database).close()
    store = Store(empty_database)
    with store._tx() as db:
        db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                   (99, time.time()))
    store.close()
    latest = MIGRATIONS[-1][0]
    with pytest.raises(StorageError, match=rf"newer than this program's \(version {latest}\)"):
        Store(empty_database)


def test_a_database_from_before_versions_is_brought_up_to_date(tmp_path):
    """0.1.0 had no schema_version and no limits tables; its data stays."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE requesters (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                                 key TEXT NOT NULL UNIQUE, secret TEXT NOT NULL);
        INSERT INTO requesters VALUES ('r1', 'old one', 'KEY0123456789', 'SECRET');
    """)
    old.close()
    store = Store(str(path))
    assert store.list_requesters() == [{"name": "old one", "key": "KEY0123456789"}]
    store.close()
    assert _versions(str(path)) == ALL_VERSIONS
    tables = {row[0] for row in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"otp_guards", "push_times", "auth_requests", "schema_version"} <= tables


def test_a_database_whose_web_app_tables_predate_migration_2_opens(tmp_path):
    """Before migration 2, devices.py made its tables itself on SQLite, with a
    trigger (julianday) filling request_times: the tables and their rows stay,
    the trigger and request_times go, and new requests carry their time."""
    path = tmp_path / "web.db"
    Store(str(path)).close()
    old = sqlite3.connect(path)
    old.executescript("""
        DELETE FROM schema_version WHERE version > 1;
        CREATE TABLE IF NOT EXISTS devices (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            user_name TEXT NOT NULL, name TEXT NOT NULL, credential_id BLOB NOT NULL UNIQUE,
            credential BLOB NOT NULL, user_handle BLOB NOT NULL, sign_count INTEGER NOT NULL,
            created REAL NOT NULL, last_used REAL, revoked REAL);
        INSERT INTO devices (id, user_name, name, credential_id, credential, user_handle,
                             sign_count, created) VALUES ('d1', 'alice', 'old phone', x'01',
                                                          x'02', x'03', 0, 1.0);
        CREATE TABLE IF NOT EXISTS request_times (request_id TEXT PRIMARY KEY,
                                                  created REAL NOT NULL);
        CREATE TRIGGER IF NOT EXISTS request_times_on_insert AFTER INSERT ON auth_requests
        BEGIN
            INSERT OR IGNORE INTO request_times
            VALUES (NEW.id, (julianday('now') - 2440587.5) * 86400.0);
        END;
    """)
    old.execute("ALTER TABLE auth_requests DROP COLUMN created")
    old.commit()
    old.close()
    store = Store(str(path), clock=lambda: 1234.5)
    try:
        key, _ = store.create_requester("Acme")
        requester_id = store.requester_by_key(key)["id"]
        pairing = store.create_pairing(requester_id, "alice", "phrase",
                                       store.make_pairing_phrase("alice"))
        store.answer_pairing(pairing["id"], True)
        request = store.initiate(requester_id, pairing_id=pairing["id"], terminal_name="t")
        with store._tx(write=False) as db:
            assert db.execute("SELECT created FROM auth_requests WHERE id = ?",
                              (request["id"],)).fetchone()[0] == 1234.5
            assert [tuple(row) for row in db.execute("SELECT id, name FROM devices")] == \
                [("d1", "old phone")]
    finally:
        store.close()
    assert _versions(str(path)) == ALL_VERSIONS
    names = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "request_times" not in names and "request_times_on_insert" not in names
    assert {"devices", "enrol_tokens", "webauthn_challenges", "push_subscriptions"} <= names


# -- secrets: a password in the database URL -------------------------------------------

def test_a_password_url_from_a_file_is_never_in_argv_or_the_log(tmp_path):
    pg = postgres.cluster()
    url = pg.create_database()
    password_url = pg.password_url(postgres.database_name(url))  # over TCP, scram-sha-256
    secret_file = tmp_path / "database"
    secret_file.write_text(f"# toopher-server's database\n{password_url}\n")
    secret_file.chmod(0o600)
    store = Store(url)
    key, secret = store.create_requester("file requester")
    store.close()
    log = tmp_path / "server.log"
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            server_command("serve", "--database-file", str(secret_file), "--port", "0"),
            cwd=REPO_ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=errors)
    try:
        line = process.stdout.readline().decode().strip()
        assert line.startswith("listening on http://127.0.0.1:"), log.read_text()
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        assert pg.password not in argv and str(secret_file) in argv
        client = SignedClient(line.split()[-1], key, secret)
        assert ok(client.get("users", name="nobody")) == []  # it reached the database
        client.close()
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()
    text = log.read_text()
    assert f"database: postgresql postgresql://postgres:***@127.0.0.1:{pg.port}/" in text
    assert pg.password not in text
    pg.drop_database(url)


def test_the_password_from_the_environment_works_and_a_wrong_one_is_one_clean_line():
    pg = postgres.cluster()
    url = pg.create_database()
    password_url = pg.password_url(postgres.database_name(url))
    env = dict(server_env(), TOOPHER_SERVER_DB=password_url)
    made = subprocess.run(server_command("requester", "create", "from env"), cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    wrong = password_url.replace(pg.password, "not-the-password-4711")
    failed = subprocess.run(server_command("requester", "list"), cwd=REPO_ROOT,
                            env=dict(env, TOOPHER_SERVER_DB=wrong), capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1, failed.stderr
    assert failed.stderr.startswith("toopher-server: error: cannot connect to "
                                    "postgresql://postgres:***@127.0.0.1:"), failed.stderr
    assert "password authentication failed" in failed.stderr
    assert "not-the-password-4711" not in failed.stderr
    pg.drop_database(url)


def test_a_database_file_must_hold_one_line(tmp_path):
    empty = tmp_path / "database"
    empty.write_text("# nothing here\n")
    failed = subprocess.run(server_command("requester", "list", "--database-file", str(empty)),
                            cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True,
                            timeout=60)
    assert (failed.returncode, failed.stderr) == (
        1, f"toopher-server: error: the database file {empty} must hold one line: a path or a"
           " postgresql:// URL\n")


# -- backup and restore, as docs/server.md says ----------------------------------------

@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_backup_while_serving_and_restore(tmp_path, backend):
    with RunningServer(database=backend) as server:
        api = server.client()
        pairing = paired_with_terminal(server, api, "backup-user")
        if backend == "sqlite":
            backups = [tmp_path / "backup.db", tmp_path / "vacuumed.db"]
            for command in (f".backup '{backups[0]}'", f"VACUUM INTO '{backups[1]}'"):
                subprocess.run(["sqlite3", server.db_path, command], check=True, timeout=60)
        else:
            dump = tmp_path / "toopher.dump"
            subprocess.run([str(postgres.PG_BIN / "pg_dump"), "--format=custom",
                            f"--file={dump}", server.db_path], check=True, timeout=60)
            backups = [postgres.cluster().create_database()]
            subprocess.run([str(postgres.PG_BIN / "pg_restore"), "--no-owner",
                            f"--dbname={backups[0]}", str(dump)], check=True, timeout=60)
        server.phone.delete_pairing("backup-user")  # after the backup: not in it
        api.close()
        key = server.key
    for backup in backups:
        restored = Store(str(backup))
        try:
            requester = restored.requester_by_key(key)
            assert restored.get_pairing(requester["id"], pairing["id"])["enabled"] is True
            request = restored.initiate(requester["id"], user_name="backup-user",
                                        terminal_id="host1")
            assert request["pending"] is True
        finally:
            restored.close()
    if backend == "postgresql":
        postgres.cluster().drop_database(backups[0])


def test_psycopg_is_needed_only_for_postgresql(tmp_path):
    """As on a host without python3-psycopg (the package only suggests it)."""
    def without_psycopg(*args):
        code = ("import sys; sys.modules['psycopg'] = None\n"
                "from pam_toopher.server.cli import main\n"
                f"status = main({list(args)!r})\n"
                "assert 'psycopg' not in sys.modules or sys.modules['psycopg'] is None\n"
                "sys.exit(status)")
        return subprocess.run(["/usr/bin/python3", "-c", code], cwd=REPO_ROOT, env=server_env(),
                              capture_output=True, text=True, timeout=60)

    sqlite_run = without_psycopg("requester", "create", "r", "--db", str(tmp_path / "t.db"))
    assert sqlite_run.returncode == 0, sqlite_run.stderr
    postgres_run = without_psycopg("requester", "list", "--database",
                                   "postgresql://toopher:pw@127.0.0.1:1/toopher")
    assert (postgres_run.returncode, postgres_run.stderr) == (
        1, "toopher-server: error: a postgresql:// database needs psycopg 3: "
           "apt-get install python3-psycopg\n")
