"""The state of the Toopher-compatible server: every rule about its objects, once.

The HTTP server and the phone simulator (often another process: a test, or
``toopher-server phone``) share one database, so every rule about the
objects lives here, once: the API handlers and the phone call the same
methods.  The database is an SQLite file (one host; WAL mode lets the
processes write concurrently) or PostgreSQL (several server instances);
:mod:`.database` runs the same SQL on both and lists the rules a method
must follow to stay portable.  Every method is one transaction, and a write
transaction excludes all other writes on the database, on every instance.

Automatic answers (the phone's rules) are stored on the object when it is
created (``auto_at``) and applied lazily by whoever reads it next, so nothing
needs a timer thread and a waiting long poll can wake exactly when one is due.
"""
import secrets
import string
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import totp
from .database import Migration, open_database
from .errors import (PAIRING_DEACTIVATED, PAIRING_NOT_AUTHORIZED, TERMINAL_UNKNOWN,
                     USER_DISABLED, USER_UNKNOWN, BadRequest, Conflict, Forbidden,
                     LimitExceeded, NotFound)
from .limits import (PENDING_WINDOW, RATE_WINDOW, Limits, lockout_seconds, otp_locked,
                     push_refusal)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requesters (
    id TEXT PRIMARY KEY, name TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nonces (
    key TEXT NOT NULL, nonce TEXT NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (key, nonce));
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, requester_id TEXT NOT NULL, name TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1, UNIQUE (requester_id, name));
CREATE TABLE IF NOT EXISTS phrases (
    phrase TEXT PRIMARY KEY, user_name TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS pairings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    requester_id TEXT NOT NULL, user_id TEXT NOT NULL, via TEXT NOT NULL,
    pending INTEGER NOT NULL DEFAULT 1, enabled INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    totp_secret TEXT NOT NULL, last_otp_step INTEGER NOT NULL DEFAULT -1,
    auto_accept INTEGER, auto_at REAL);
CREATE TABLE IF NOT EXISTS terminals (
    id TEXT PRIMARY KEY, requester_id TEXT NOT NULL, user_id TEXT NOT NULL,
    name TEXT NOT NULL, identifier TEXT, UNIQUE (user_id, identifier));
CREATE TABLE IF NOT EXISTS actions (
    id TEXT PRIMARY KEY, requester_id TEXT NOT NULL, name TEXT NOT NULL,
    UNIQUE (requester_id, name));
CREATE TABLE IF NOT EXISTS auth_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    requester_id TEXT NOT NULL, user_id TEXT NOT NULL, pairing_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL, action_id TEXT NOT NULL,
    pending INTEGER NOT NULL DEFAULT 1, granted INTEGER NOT NULL DEFAULT 0,
    automated INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
    reason_code INTEGER NOT NULL DEFAULT 0,
    automation_allowed INTEGER NOT NULL, challenge_required INTEGER NOT NULL,
    auto_grant INTEGER, auto_automated INTEGER, auto_at REAL);
CREATE INDEX IF NOT EXISTS auth_requests_due ON auth_requests (pending, auto_at);
CREATE TABLE IF NOT EXISTS auth_rules (
    user_name TEXT PRIMARY KEY, answer TEXT NOT NULL,
    delay REAL NOT NULL, automated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pairing_rules (
    user_name TEXT PRIMARY KEY, answer TEXT NOT NULL, delay REAL NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
    remaining INTEGER NOT NULL, seconds REAL NOT NULL);
-- The limits (limits.py).  Tables of their own rather than new columns, so
-- that a database made by an earlier version gets them from this script.
CREATE TABLE IF NOT EXISTS otp_guards (
    pairing_id TEXT PRIMARY KEY, failures INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0, lockouts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS push_times (
    request_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS push_times_user ON push_times (user_id, created_at);
"""

#: Version 2: the phone web app (devices.py) and Web Push (push.py).
#: IF NOT EXISTS: an SQLite database made before versions were recorded may
#: hold these tables already (devices.py created them itself).  Such a
#: database also holds a trigger that recorded each request's creation time
#: in request_times; the time is now the request's own ``created`` column,
#: written by initiate(), so the trigger and its table go (the few requests
#: pending during the upgrade are then not shown on the phone page: no time,
#: no approval).  DROP TRIGGER is skipped on PostgreSQL (database.py, rule 6).
WEB_APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS web_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS enrol_tokens (
    token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, device_name TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS devices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user_name TEXT NOT NULL,
    name TEXT NOT NULL, credential_id BLOB NOT NULL UNIQUE, credential BLOB NOT NULL,
    user_handle BLOB NOT NULL, sign_count INTEGER NOT NULL, created REAL NOT NULL,
    last_used REAL, revoked REAL);
CREATE TABLE IF NOT EXISTS phone_sessions (
    token_hash TEXT PRIMARY KEY, device_id TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS webauthn_challenges (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, subject TEXT NOT NULL, device_id TEXT,
    nonce BLOB NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS phone_answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, user_name TEXT NOT NULL,
    device_id TEXT NOT NULL, device_name TEXT NOT NULL, kind TEXT NOT NULL,
    subject_id TEXT NOT NULL, answer TEXT NOT NULL, detail TEXT NOT NULL, assertion TEXT);
-- Web Push (push.py): one subscription per device, deleted with the device's
-- revocation or when the push service says it is gone (404/410).
CREATE TABLE IF NOT EXISTS push_subscriptions (
    device_id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, p256dh TEXT NOT NULL,
    auth TEXT NOT NULL, created REAL NOT NULL);
-- When the request was made: its age on the phone page, the approval deadline.
ALTER TABLE auth_requests ADD COLUMN created REAL;
DROP TRIGGER IF EXISTS request_times_on_insert;
DROP TABLE IF EXISTS request_times;
"""

#: The schema's versions, applied in order at start (database.py, rule 6).
#: Version 1 is the schema of 0.1.0 plus the limits' tables; its
#: CREATE ... IF NOT EXISTS also brings a database made before versions
#: were recorded up to date.  A later change is a new (3, DDL) entry.
MIGRATIONS: Tuple[Migration, ...] = (
    (1, SCHEMA),
    (2, WEB_APP_SCHEMA),
)

#: Seconds a nonce is remembered; must cover the OAuth timestamp window.
NONCE_MEMORY_SECONDS = 900
#: Phone rule answers.
RULE_ANSWERS = ("approve", "deny", "never")
PAIRING_RULE_ANSWERS = ("accept", "refuse", "never")
FAULT_KINDS = ("slow", "500", "502", "503", "429", "html", "truncate")

# reason_code values (the historical numbering is not documented anywhere).
REASON_PENDING = 0
REASON_USER = 100
REASON_RULE = 101
REASON_OTP_VALID = 102
REASON_OTP_INVALID = 103
REASON_OTP_LOCKED = 104

_KEY_ALPHABET = string.ascii_letters + string.digits
_PHRASE_WORDS = ("apple", "river", "cobalt", "maple", "tiger", "orbit", "lemon", "harbor",
                 "violet", "falcon", "pepper", "canyon", "silver", "meadow", "rocket", "walnut")

_REQUEST_SELECT = """
SELECT r.*, u.name AS user_name, u.enabled AS user_enabled,
       t.name AS terminal_name, t.identifier AS terminal_identifier,
       a.name AS action_name, q.name AS requester_name
FROM auth_requests r JOIN users u ON u.id = r.user_id
JOIN terminals t ON t.id = r.terminal_id JOIN actions a ON a.id = r.action_id
JOIN requesters q ON q.id = r.requester_id
"""
_PAIRING_SELECT = """
SELECT p.*, u.name AS user_name, u.enabled AS user_enabled, q.name AS requester_name
FROM pairings p JOIN users u ON u.id = p.user_id JOIN requesters q ON q.id = p.requester_id
"""


def _new_id() -> str:
    return str(uuid.uuid4())


def _token(length: int) -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(length))


def user_obj(user_id: str, name: str, enabled) -> dict:
    return {"id": user_id, "name": name, "toopher_authentication_enabled": bool(enabled)}


def _pairing_obj(row) -> dict:
    return {"id": row["id"], "enabled": bool(row["enabled"]), "pending": bool(row["pending"]),
            "user": user_obj(row["user_id"], row["user_name"], row["user_enabled"])}


def _terminal_obj(terminal_id, name, identifier, user: dict) -> dict:
    return {"id": terminal_id, "name": name, "requester_specified_id": identifier or "",
            "user": user}


def _request_obj(row) -> dict:
    user = user_obj(row["user_id"], row["user_name"], row["user_enabled"])
    return {
        "id": row["id"], "pending": bool(row["pending"]), "granted": bool(row["granted"]),
        "automated": bool(row["automated"]), "reason": row["reason"],
        "reason_code": row["reason_code"],
        "terminal": _terminal_obj(row["terminal_id"], row["terminal_name"],
                                  row["terminal_identifier"], user),
        "user": user, "action": {"id": row["action_id"], "name": row["action_name"]},
    }


def _phone_view(row) -> dict:
    """What the phone app shows for a pending request (or pairing)."""
    view = {"id": row["id"], "user": row["user_name"]}
    if "terminal_name" in row.keys():
        view.update(terminal=row["terminal_name"], action=row["action_name"])
    view["requester"] = row["requester_name"]
    return view


class Store:
    """All state of the server, in one database: an SQLite path (or ``":memory:"``)
    or a ``postgresql://`` URL (see :mod:`.database`)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time,
                 limits: Optional[Limits] = None,
                 log: Callable[[str], None] = lambda line: None):
        self.path = str(path)  # may hold a password: never log it (database.redact)
        self.clock = clock
        self.limits = limits or Limits()
        self.log = log  # security events (a lockout, a refused push): the server's log
        self._backend = open_database(self.path)
        try:
            self._backend.migrate(MIGRATIONS)
        except BaseException:
            self._backend.close()
            raise

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._backend.kind

    @property
    def poll_interval(self) -> float:
        """How often a long poll re-reads though nothing signalled a change."""
        return self._backend.poll_interval

    def close(self) -> None:
        self._backend.close()

    @contextmanager
    def _tx(self, write: bool = True, quiet: bool = False,
            exclusive: bool = True) -> Iterator[Any]:
        # A write wakes every long poll of every instance, and each re-reads
        # its object: writes that cannot end a wait -- nonces, faults, new
        # objects nobody waits on yet, rules applied at their due time, which
        # a waiter wakes for by itself (request_wake_at) -- pass quiet=True,
        # so that many waiting clients do not wake each other for nothing.
        # exclusive=False: see database.py, rule 5.
        with self._backend.transaction(write=write, notify=not quiet,
                                       exclusive=exclusive) as db:
            yield db

    def ping(self) -> None:
        """Raise unless the database answers a read (the /health check)."""
        with self._tx(write=False) as db:
            db.execute("SELECT 1 FROM requesters LIMIT 1").fetchall()

    def transaction(self, write: bool = True, quiet: bool = False):
        """A transaction, for the stores of other tables (``devices.py``); it
        wakes long polls like the store's own."""
        return self._tx(write=write, quiet=quiet)

    def change_mark(self) -> int:
        """Take before reading; wait_for_change(timeout, mark) then returns at
        once if something changed since (the read may have missed it)."""
        return self._backend.change_mark()

    def wait_for_change(self, timeout: float, since: Optional[int] = None) -> None:
        """Sleep until a write is committed, or ``timeout`` passes.

        Writes in this process wake the waiter at once; on PostgreSQL, writes
        by every other instance and process too (LISTEN/NOTIFY).  On SQLite,
        waiters re-read every ``poll_interval`` for other processes' writes.
        """
        self._backend.wait_for_change(timeout, since)

    # -- requesters and OAuth ------------------------------------------------

    def create_requester(self, name: str, key: Optional[str] = None,
                         secret: Optional[str] = None) -> Tuple[str, str]:
        """A requester's new credentials; key and secret can be given (for known-answer tests)."""
        key, secret = key or _token(20), secret or _token(40)
        with self._tx() as db:
            db.execute("INSERT INTO requesters VALUES (?, ?, ?, ?)", (_new_id(), name, key, secret))
        return key, secret

    def list_requesters(self) -> List[dict]:
        with self._tx(write=False) as db:
            rows = db.execute("SELECT name, key FROM requesters ORDER BY rowid").fetchall()
        return [dict(row) for row in rows]

    def requester_by_key(self, key: str) -> Any:
        with self._tx(write=False) as db:
            return db.execute("SELECT * FROM requesters WHERE key = ?", (key,)).fetchone()

    def nonce_seen(self, key: str, nonce: str) -> bool:
        with self._tx(write=False) as db:
            return db.execute("SELECT 1 FROM nonces WHERE key = ? AND nonce = ?",
                              (key, nonce)).fetchone() is not None

    def use_nonce(self, key: str, nonce: str) -> bool:
        """Record a nonce of a verified request; False if it was used before."""
        now = self.clock()
        # Two statements that each stand alone: no write lock needed.
        with self._tx(quiet=True, exclusive=False) as db:
            db.execute("DELETE FROM nonces WHERE ts < ?", (now - NONCE_MEMORY_SECONDS,))
            cursor = db.execute("INSERT OR IGNORE INTO nonces VALUES (?, ?, ?)", (key, nonce, now))
            return cursor.rowcount == 1

    # -- ownership helpers -----------------------------------------------------

    @staticmethod
    def _owned(row, requester_id: str, what: str):
        if row is None:
            raise NotFound(f"No such {what}")
        if row["requester_id"] != requester_id:
            raise Forbidden(f"This {what} belongs to another requester")
        return row

    @staticmethod
    def _user_row(db, requester_id: str, name: str):
        return db.execute("SELECT * FROM users WHERE requester_id = ? AND name = ?",
                          (requester_id, name)).fetchone()

    def _ensure_user(self, db, requester_id: str, name: str):
        row = self._user_row(db, requester_id, name)
        if row is None:
            db.execute("INSERT INTO users (id, requester_id, name) VALUES (?, ?, ?)",
                       (_new_id(), requester_id, name))
            row = self._user_row(db, requester_id, name)
        return row

    # -- users -------------------------------------------------------------------

    def create_user(self, requester_id: str, name: str) -> dict:
        with self._tx() as db:
            if self._user_row(db, requester_id, name) is not None:
                raise Conflict("A user with this name already exists")
            row = self._ensure_user(db, requester_id, name)
        return user_obj(row["id"], row["name"], row["enabled"])

    def find_users(self, requester_id: str, name: Optional[str] = None) -> List[dict]:
        with self._tx(write=False) as db:
            if name is None:
                rows = db.execute("SELECT * FROM users WHERE requester_id = ? ORDER BY rowid",
                                  (requester_id,)).fetchall()
            else:
                rows = [row for row in [self._user_row(db, requester_id, name)] if row]
        return [user_obj(row["id"], row["name"], row["enabled"]) for row in rows]

    def get_user(self, requester_id: str, user_id: str) -> dict:
        with self._tx(write=False) as db:
            row = db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
            self._owned(row, requester_id, "user")
        return user_obj(row["id"], row["name"], row["enabled"])

    def set_user_enabled(self, requester_id: str, user_id: str, enabled: bool) -> dict:
        with self._tx() as db:
            self._owned(db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone(),
                        requester_id, "user")
            db.execute("UPDATE users SET enabled = ? WHERE id = ?", (int(enabled), user_id))
        return self.get_user(requester_id, user_id)

    def reset_user(self, requester_id: str, name: str) -> None:
        """Forget the user's pairings, terminals and their requests."""
        with self._tx() as db:
            user = self._user_row(db, requester_id, name)
            if user is None:
                raise NotFound("No such user")
            for table in ("auth_requests", "pairings", "terminals"):
                db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user["id"],))

    # -- pairings ---------------------------------------------------------------

    def make_pairing_phrase(self, user_name: str) -> str:
        """A phrase as the phone app displays it, valid for one pairing."""
        while True:
            phrase = "-".join([secrets.choice(_PHRASE_WORDS), secrets.choice(_PHRASE_WORDS),
                               str(secrets.randbelow(900) + 100)])
            with self._tx(quiet=True) as db:
                cursor = db.execute("INSERT OR IGNORE INTO phrases (phrase, user_name) VALUES (?, ?)",
                                    (phrase, user_name))
                if cursor.rowcount == 1:
                    return phrase

    def create_pairing(self, requester_id: str, user_name: str, via: str,
                       phrase: Optional[str] = None) -> dict:
        """A pending pairing; ``via`` is "phrase" (needs a phone phrase), "sms" or "qr"."""
        pairing_id = _new_id()
        # A new pairing: nobody waits on it yet, so no wake-up (see _tx).
        with self._tx(quiet=True) as db:
            if via == "phrase":
                # A phrase pairs the user whose phone made it, no one else: a
                # password holder typing another user's phrase at an inline
                # pairing must neither use it up nor pair with that phone.
                used = db.execute("UPDATE phrases SET used = 1 WHERE phrase = ? AND used = 0"
                                  " AND user_name = ?", ((phrase or "").strip().lower(),
                                                          user_name))
                if used.rowcount != 1:
                    raise BadRequest("Invalid or already used pairing phrase")
            user = self._ensure_user(db, requester_id, user_name)
            rule = db.execute("SELECT * FROM pairing_rules WHERE user_name = ?",
                              (user_name,)).fetchone()
            auto_accept = auto_at = None
            if rule is not None and rule["answer"] != "never":
                auto_accept, auto_at = int(rule["answer"] == "accept"), self.clock() + rule["delay"]
            db.execute("INSERT INTO pairings (id, requester_id, user_id, via, totp_secret,"
                       " auto_accept, auto_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (pairing_id, requester_id, user["id"], via, totp.new_secret(),
                        auto_accept, auto_at))
        return self.get_pairing(requester_id, pairing_id)

    def _due(self, object_id: Optional[str]) -> Tuple[str, list]:
        """WHERE clause and arguments of pending objects whose rule answer is due."""
        where = "pending = 1 AND auto_at IS NOT NULL AND auto_at <= ?"
        args: list = [self.clock()]
        if object_id is not None:
            where, args = where + " AND id = ?", args + [object_id]
        return where, args

    def _read_settled(self, query: str, object_id: str, settle):
        """One row by id, after applying its rule if due (a read that rarely writes)."""
        with self._tx(write=False) as db:
            row = db.execute(query, (object_id,)).fetchone()
        if row is not None and row["pending"] and row["auto_at"] is not None \
                and row["auto_at"] <= self.clock():
            # Quiet: the waiter on this object is the reader; others wake at
            # auto_at.  Not exclusive: the settling UPDATE is conditional and
            # stands alone, so due answers do not queue behind other writes.
            with self._tx(quiet=True, exclusive=False) as db:
                settle(db, object_id)
                row = db.execute(query, (object_id,)).fetchone()
        return row

    def _settle_pairings(self, db, pairing_id: Optional[str] = None) -> None:
        """Apply pairing rules that are due (all, or one pairing's)."""
        where, args = self._due(pairing_id)
        db.execute(f"UPDATE pairings SET pending = 0, enabled = auto_accept WHERE {where}", args)

    def _pairing_row(self, pairing_id: str):
        return self._read_settled(_PAIRING_SELECT + " WHERE p.id = ?", pairing_id,
                                  self._settle_pairings)

    def get_pairing(self, requester_id: str, pairing_id: str) -> dict:
        return _pairing_obj(self._owned(self._pairing_row(pairing_id), requester_id, "pairing"))

    def pairing_wake_at(self, pairing_id: str) -> Optional[float]:
        """When a pending pairing's rule will answer it (for long polls)."""
        row = self._pairing_row(pairing_id)
        return row["auto_at"] if row is not None and row["pending"] else None

    def pending_pairings(self, user_name: Optional[str] = None) -> List[dict]:
        # Settling due rules wakes nobody: a waiter wakes at its rule's time itself.
        with self._tx(quiet=True) as db:
            self._settle_pairings(db)
            rows = db.execute(_PAIRING_SELECT + " WHERE p.pending = 1 AND (? IS NULL OR u.name = ?)"
                              " ORDER BY p.seq", (user_name, user_name)).fetchall()
        return [_phone_view(row) for row in rows]

    def answer_pairing(self, pairing_id: str, accept: bool) -> None:
        with self._tx() as db:
            self._settle_pairings(db, pairing_id)
            row = db.execute("SELECT pending FROM pairings WHERE id = ?", (pairing_id,)).fetchone()
            if row is None:
                raise NotFound(f"No such pairing: {pairing_id}")
            answered = db.execute("UPDATE pairings SET pending = 0, enabled = ?"
                                  " WHERE id = ? AND pending = 1", (int(accept), pairing_id))
            if not row["pending"] or answered.rowcount != 1:
                raise Conflict(f"Pairing {pairing_id} is not pending")

    def deactivate_pairings(self, user_name: str) -> int:
        """The user deletes the pairing in the phone app; returns how many."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE pairings SET enabled = 0, deactivated = 1 WHERE enabled = 1 AND user_id IN"
                " (SELECT id FROM users WHERE name = ?)", (user_name,))
            if cursor.rowcount == 0:
                raise NotFound(f"No active pairing for {user_name}")
            return cursor.rowcount

    def current_otp(self, user_name: str) -> str:
        with self._tx(write=False) as db:
            row = db.execute(_PAIRING_SELECT + " WHERE u.name = ? AND p.enabled = 1"
                             " ORDER BY p.seq DESC LIMIT 1", (user_name,)).fetchone()
        if row is None:
            raise NotFound(f"No active pairing for {user_name}")
        return totp.code_at(row["totp_secret"], self.clock())

    def set_pairing_rule(self, user_name: str, answer: str, delay: float = 0.0) -> None:
        if answer not in PAIRING_RULE_ANSWERS:
            raise BadRequest(f"pairing rule answer must be one of {', '.join(PAIRING_RULE_ANSWERS)}")
        with self._tx() as db:
            db.execute("INSERT INTO pairing_rules (user_name, answer, delay) VALUES (?, ?, ?)"
                       " ON CONFLICT (user_name) DO UPDATE SET answer = excluded.answer,"
                       " delay = excluded.delay", (user_name, answer, float(delay)))

    def clear_pairing_rule(self, user_name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM pairing_rules WHERE user_name = ?", (user_name,))

    # -- terminals and actions ------------------------------------------------------

    def create_terminal(self, requester_id: str, user_name: str, name: str,
                        identifier: Optional[str]) -> dict:
        """Name the user's terminal; idempotent for a known identifier."""
        with self._tx() as db:
            user = self._user_row(db, requester_id, user_name)
            if user is None:
                raise Conflict("No matching user exists", code=USER_UNKNOWN)
            terminal = self._find_or_create_terminal(db, user, name, identifier, rename=True)
        return _terminal_obj(terminal["id"], terminal["name"], terminal["identifier"],
                             user_obj(user["id"], user["name"], user["enabled"]))

    @staticmethod
    def _find_terminal(db, user, name: Optional[str], identifier: Optional[str]):
        if identifier is not None:
            return db.execute("SELECT * FROM terminals WHERE user_id = ? AND identifier = ?",
                              (user["id"], identifier)).fetchone()
        return db.execute("SELECT * FROM terminals WHERE user_id = ? AND name = ?"
                          " ORDER BY rowid LIMIT 1", (user["id"], name)).fetchone()

    def _find_or_create_terminal(self, db, user, name, identifier, rename=False):
        row = self._find_terminal(db, user, name, identifier)
        if row is None:
            db.execute("INSERT INTO terminals VALUES (?, ?, ?, ?, ?)",
                       (_new_id(), user["requester_id"], user["id"], name or identifier, identifier))
        elif rename and name and row["name"] != name:
            db.execute("UPDATE terminals SET name = ? WHERE id = ?", (name, row["id"]))
        return self._find_terminal(db, user, name or identifier, identifier)

    def get_terminal(self, requester_id: str, terminal_id: str) -> dict:
        with self._tx(write=False) as db:
            row = self._owned(db.execute("SELECT * FROM terminals WHERE id = ?",
                                         (terminal_id,)).fetchone(), requester_id, "terminal")
            user = db.execute("SELECT * FROM users WHERE id = ?", (row["user_id"],)).fetchone()
        return _terminal_obj(row["id"], row["name"], row["identifier"],
                             user_obj(user["id"], user["name"], user["enabled"]))

    @staticmethod
    def _action_id(db, requester_id: str, name: str) -> str:
        db.execute("INSERT OR IGNORE INTO actions VALUES (?, ?, ?)", (_new_id(), requester_id, name))
        return db.execute("SELECT id FROM actions WHERE requester_id = ? AND name = ?",
                          (requester_id, name)).fetchone()["id"]

    # -- authentication requests -------------------------------------------------------

    def initiate(self, requester_id: str, *, pairing_id: Optional[str] = None,
                 user_name: Optional[str] = None, terminal_name: Optional[str] = None,
                 terminal_id: Optional[str] = None, action_name: str = "Log in",
                 automation_allowed: bool = True, challenge_required: bool = False,
                 otp: Optional[str] = None) -> dict:
        """Create an authentication request, by pairing id or (zero-storage) by user name."""
        request_id = _new_id()
        # A new request: nobody waits on it yet, so no wake-up (see _tx).
        with self._tx(quiet=True) as db:
            if pairing_id is not None:
                pairing = self._owned(db.execute("SELECT * FROM pairings WHERE id = ?",
                                                 (pairing_id,)).fetchone(), requester_id, "pairing")
                user = db.execute("SELECT * FROM users WHERE id = ?", (pairing["user_id"],)).fetchone()
                self._check_user_enabled(user)
                if pairing["deactivated"]:
                    raise Conflict("Pairing has been deactivated", code=PAIRING_DEACTIVATED)
                if not pairing["enabled"]:
                    raise Conflict("Pairing has not been authorized", code=PAIRING_NOT_AUTHORIZED)
                terminal = self._find_or_create_terminal(
                    db, user, terminal_name or "Unnamed terminal", terminal_id)
            else:
                user, pairing, terminal = self._resolve_zero_storage(
                    db, requester_id, user_name, terminal_name, terminal_id)
            if otp is None:  # a code sends no push; the OTP limit bounds those
                self._count_push(db, user, request_id)
            auto_grant = auto_automated = auto_at = None
            rule = db.execute("SELECT * FROM auth_rules WHERE user_name = ?",
                              (user["name"],)).fetchone()
            # A rule the app applies on its own (automated) is what the
            # requester forbids with automation_allowed=false.
            if rule is not None and rule["answer"] != "never" and \
                    (automation_allowed or not rule["automated"]):
                auto_grant, auto_automated = int(rule["answer"] == "approve"), rule["automated"]
                auto_at = self.clock() + rule["delay"]
            db.execute(
                "INSERT INTO auth_requests (id, requester_id, user_id, pairing_id, terminal_id,"
                " action_id, automation_allowed, challenge_required, auto_grant, auto_automated,"
                " auto_at, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request_id, requester_id, user["id"], pairing["id"], terminal["id"],
                 self._action_id(db, requester_id, action_name), int(automation_allowed),
                 int(challenge_required), auto_grant, auto_automated, auto_at, self.clock()))
            locked = None if otp is None else self._resolve_by_otp(db, request_id, pairing, otp)
        if locked is not None:
            raise locked
        return self.get_request(requester_id, request_id)

    def _count_push(self, db, user, request_id: str) -> None:
        """Record a new push for the user, or refuse it (limits.push_refusal)."""
        now = self.clock()
        self._settle_requests(db)  # a rule's answer that is due frees a place
        db.execute("DELETE FROM push_times WHERE created_at <= ?",
                   (now - max(PENDING_WINDOW, RATE_WINDOW),))
        earlier = db.execute(
            "SELECT t.created_at, COALESCE(r.pending, 0) FROM push_times t"
            " LEFT JOIN auth_requests r ON r.id = t.request_id WHERE t.user_id = ?",
            (user["id"],)).fetchall()
        refusal = push_refusal(((row[0], bool(row[1])) for row in earlier), now, self.limits)
        if refusal is not None:
            self.log(f"limit: push refused user={user['name']!r}: {refusal.message}")
            raise refusal
        db.execute("INSERT INTO push_times VALUES (?, ?, ?)", (request_id, user["id"], now))

    @staticmethod
    def _check_user_enabled(user) -> None:
        if not user["enabled"]:
            raise Conflict("Toopher authentication is disabled for this user", code=USER_DISABLED)

    def _resolve_zero_storage(self, db, requester_id, user_name, terminal_name, identifier):
        """The documented order: 704, 705, 706, 707, else the request can be made."""
        user = self._user_row(db, requester_id, user_name)
        if user is not None:
            self._check_user_enabled(user)
        # A pairing the phone deleted still counts here so that it answers 707, not 705.
        pairing = user and db.execute(
            "SELECT * FROM pairings WHERE user_id = ? AND pending = 0 AND"
            " (enabled = 1 OR deactivated = 1) ORDER BY seq DESC LIMIT 1", (user["id"],)).fetchone()
        if not pairing:
            raise Conflict("No matching user exists", code=USER_UNKNOWN)
        if identifier is None and terminal_name is None:
            raise BadRequest("A terminal identifier (terminal_name_extra) is required")
        terminal = self._find_terminal(db, user, terminal_name, identifier)
        if terminal is None:
            raise Conflict("The requester has no terminal with this identifier for the user",
                           code=TERMINAL_UNKNOWN)
        if pairing["deactivated"]:
            raise Conflict("Pairing has been deactivated", code=PAIRING_DEACTIVATED)
        return user, pairing, terminal

    def _resolve_by_otp(self, db, request_id: str, pairing, code: str) -> Optional[LimitExceeded]:
        """Answer the request by the code; while the pairing is locked out
        the code is not even checked: the request is closed as refused and
        the error to answer with is returned (raised after the commit)."""
        locked = self._claim_otp_guess(db, pairing)
        if locked is not None:
            db.execute("UPDATE auth_requests SET pending = 0, granted = 0, automated = 0,"
                       " reason = 'too many wrong codes', reason_code = ? WHERE id = ?"
                       " AND pending = 1", (REASON_OTP_LOCKED, request_id))
            return locked
        step = totp.matching_step(pairing["totp_secret"], code, self.clock())
        if step is not None:
            # Conditional update: of two concurrent uses of one code, one wins.
            used = db.execute("UPDATE pairings SET last_otp_step = ? WHERE id = ? AND"
                              " last_otp_step < ?", (step, pairing["id"], step))
            if used.rowcount != 1:
                step = None
        granted = step is not None
        if granted:
            db.execute("UPDATE otp_guards SET failures = 0, lockouts = 0, locked_until = 0"
                       " WHERE pairing_id = ?", (pairing["id"],))
        else:
            self._lock_if_exhausted(db, pairing)
        # Conditional: a rule's answer applied meanwhile (that takes no write
        # lock) stays the answer, and this whole transaction is undone.
        answered = db.execute(
            "UPDATE auth_requests SET pending = 0, granted = ?, automated = 0, reason = ?,"
            " reason_code = ? WHERE id = ? AND pending = 1",
            (int(granted), "valid otp" if granted else "invalid otp",
             REASON_OTP_VALID if granted else REASON_OTP_INVALID, request_id))
        if answered.rowcount != 1:
            raise BadRequest("Authentication request is no longer pending")
        return None

    def _claim_otp_guess(self, db, pairing) -> Optional[LimitExceeded]:
        """Take one of the pairing's guesses before the code is checked, or
        the refusal when none is left.

        One conditional UPDATE takes the guess (counted as a failure until a
        valid code clears the count), so however many calls race, at most
        otp_max_failures codes are checked per lockout period -- whether or
        not the transaction around it serialises them.
        """
        now, limits = self.clock(), self.limits
        db.execute("INSERT OR IGNORE INTO otp_guards (pairing_id) VALUES (?)", (pairing["id"],))
        taken = db.execute("UPDATE otp_guards SET failures = failures + 1 WHERE pairing_id = ?"
                           " AND locked_until <= ? AND failures < ?",
                           (pairing["id"], now, limits.otp_max_failures))
        if taken.rowcount == 1:
            return None
        guard = db.execute("SELECT locked_until FROM otp_guards WHERE pairing_id = ?",
                           (pairing["id"],)).fetchone()
        refusal = otp_locked(guard["locked_until"] - now)
        self.log(f"limit: otp refused {self._who(db, pairing)}: {refusal.message}")
        return refusal

    def _lock_if_exhausted(self, db, pairing) -> None:
        """After the last allowed wrong code: lock codes out, for longer each time."""
        guard = db.execute("SELECT failures, lockouts FROM otp_guards WHERE pairing_id = ?",
                           (pairing["id"],)).fetchone()
        if guard["failures"] < self.limits.otp_max_failures:
            return
        seconds = lockout_seconds(guard["lockouts"], self.limits)
        db.execute("UPDATE otp_guards SET failures = 0, lockouts = lockouts + 1,"
                   " locked_until = ? WHERE pairing_id = ?",
                   (self.clock() + seconds, pairing["id"]))
        self.log(f"limit: otp locked {self._who(db, pairing)}: {guard['failures']} wrong codes,"
                 f" codes refused for {seconds:g} s (lockout {guard['lockouts'] + 1})")

    @staticmethod
    def _who(db, pairing) -> str:
        """user=NAME pairing=ID for a log line; repr() keeps a hostile name on one line."""
        user = db.execute("SELECT name FROM users WHERE id = ?", (pairing["user_id"],)).fetchone()
        return f"user={user['name'] if user else '?'!r} pairing={pairing['id']}"

    def otp_auth(self, requester_id: str, request_id: str, code: str) -> dict:
        with self._tx() as db:
            row = self._owned(db.execute("SELECT * FROM auth_requests WHERE id = ?",
                                         (request_id,)).fetchone(), requester_id,
                              "authentication request")
            if not row["pending"]:
                raise BadRequest("Authentication request is no longer pending")
            pairing = db.execute("SELECT * FROM pairings WHERE id = ?", (row["pairing_id"],)).fetchone()
            locked = self._resolve_by_otp(db, request_id, pairing, code)
        if locked is not None:
            raise locked
        return self.get_request(requester_id, request_id)

    def _settle_requests(self, db, request_id: Optional[str] = None) -> None:
        """Apply phone rules whose delay has passed (all, or one request's)."""
        where, args = self._due(request_id)
        db.execute(
            "UPDATE auth_requests SET pending = 0, granted = auto_grant, automated = auto_automated,"
            " reason = CASE auto_grant WHEN 1 THEN 'approved by rule' ELSE 'denied by rule' END,"
            f" reason_code = {REASON_RULE} WHERE {where}", args)

    def _request_row(self, request_id: str):
        return self._read_settled(_REQUEST_SELECT + " WHERE r.id = ?", request_id,
                                  self._settle_requests)

    def get_request(self, requester_id: str, request_id: str) -> dict:
        row = self._owned(self._request_row(request_id), requester_id, "authentication request")
        return _request_obj(row)

    def request_wake_at(self, request_id: str) -> Optional[float]:
        """When a pending request's rule will answer it (for long polls)."""
        row = self._request_row(request_id)
        return row["auto_at"] if row is not None and row["pending"] else None

    def pending_requests(self, user_name: Optional[str] = None) -> List[dict]:
        # Settling due rules wakes nobody: a waiter wakes at its rule's time itself.
        with self._tx(quiet=True) as db:
            self._settle_requests(db)
            rows = db.execute(_REQUEST_SELECT + " WHERE r.pending = 1 AND (? IS NULL OR u.name = ?)"
                              " ORDER BY r.seq", (user_name, user_name)).fetchall()
        return [_phone_view(row) for row in rows]

    def answer_request(self, request_id: str, granted: bool, reason: str,
                       automated: bool = False) -> None:
        with self._tx() as db:
            self._settle_requests(db, request_id)
            row = db.execute("SELECT pending FROM auth_requests WHERE id = ?",
                             (request_id,)).fetchone()
            if row is None:
                raise NotFound(f"No such authentication request: {request_id}")
            # Conditional: answered once, whichever instance or process answers.
            answered = db.execute(
                "UPDATE auth_requests SET pending = 0, granted = ?, automated = ?,"
                " reason = ?, reason_code = ? WHERE id = ? AND pending = 1",
                (int(granted), int(automated), reason,
                 REASON_RULE if automated else REASON_USER, request_id))
            if not row["pending"] or answered.rowcount != 1:
                raise Conflict(f"Authentication request {request_id} is not pending")

    def set_rule(self, user_name: str, answer: str, delay: float = 0.0,
                 automated: bool = False) -> None:
        if answer not in RULE_ANSWERS:
            raise BadRequest(f"rule answer must be one of {', '.join(RULE_ANSWERS)}")
        with self._tx() as db:
            db.execute("INSERT INTO auth_rules (user_name, answer, delay, automated)"
                       " VALUES (?, ?, ?, ?) ON CONFLICT (user_name) DO UPDATE SET"
                       " answer = excluded.answer, delay = excluded.delay,"
                       " automated = excluded.automated",
                       (user_name, answer, float(delay), int(automated)))

    def clear_rule(self, user_name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM auth_rules WHERE user_name = ?", (user_name,))

    # -- fault switches ------------------------------------------------------------

    def add_fault(self, kind: str, count: int = 1, seconds: float = 1.0) -> None:
        if kind not in FAULT_KINDS:
            raise BadRequest(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if count < 1 or seconds < 0:
            raise BadRequest("fault count must be at least 1 and seconds not negative")
        with self._tx() as db:
            db.execute("INSERT INTO faults (kind, remaining, seconds) VALUES (?, ?, ?)",
                       (kind, int(count), float(seconds)))

    def take_fault(self) -> Optional[Dict[str, object]]:
        """Consume one use of the oldest active fault, if any."""
        with self._tx(write=False) as db:
            if db.execute("SELECT 1 FROM faults WHERE remaining > 0 LIMIT 1").fetchone() is None:
                return None
        with self._tx(quiet=True) as db:
            row = db.execute("SELECT * FROM faults WHERE remaining > 0 ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE faults SET remaining = remaining - 1 WHERE seq = ?", (row["seq"],))
            db.execute("DELETE FROM faults WHERE remaining <= 0")
        return {"kind": row["kind"], "seconds": row["seconds"]}

    def clear_faults(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM faults")
