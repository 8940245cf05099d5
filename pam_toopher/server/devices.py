"""Enrolled phones: enrolment links, passkeys, sessions, single-use challenges, answers.

The tables live in the server's database next to :mod:`.store`'s (created by
its migration 2) and are written through the same backend
(:meth:`Store.transaction`), so an answer from a phone wakes the module's
long poll like any other write, on SQLite as on PostgreSQL (several
instances: a link, a challenge or an answer is used once on all of them).
The SQL follows :mod:`.database`'s portability rules.  Every
single-use thing (enrolment token, WebAuthn challenge) is consumed by one
conditional ``UPDATE ... WHERE used = 0`` whose row count decides, inside the
transaction that also answers the request: of two concurrent uses one wins,
and a refusal leaves nothing changed.

Phones belong to a *user name*, across requesters, like the simulator's
rules: one toopher-server serves one organisation.

Secrets here (enrolment tokens, session cookies) are stored as SHA-256
hashes only; a stolen database does not yield a working link or session.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .errors import BadRequest, Conflict, NotFound, ServerError, Unauthorized
from .push import Subscription
from .store import REASON_USER, Store
from .webauthn import NONCE_BYTES, NewCredential

#: An enrolment link works once, within this many seconds by default.
ENROL_TOKEN_SECONDS = 15 * 60
#: A phone's session cookie; after it, the phone is enrolled again.
SESSION_SECONDS = 90 * 24 * 3600
#: A WebAuthn challenge must be answered within this (the prompt's own timeout).
CHALLENGE_SECONDS = 120
#: Pending requests older than this are not shown and cannot be approved: the
#: module stopped waiting long before (auth_timeout stays below 120 s).
REQUEST_MAX_AGE = 300

_REQUEST_FOR_PHONE = """
SELECT r.id, r.pending, r.auto_at, u.name AS user_name, t.name AS terminal_name,
       a.name AS action_name, q.name AS requester_name, r.created AS created
FROM auth_requests r JOIN users u ON u.id = r.user_id
JOIN terminals t ON t.id = r.terminal_id JOIN actions a ON a.id = r.action_id
JOIN requesters q ON q.id = r.requester_id
"""
# The phone's reads write nothing (a page polls every second): a request or
# pairing whose simulator rule is due counts as answered, as the store will
# record it on its next read.
_REQUEST_NO_RULE_DUE = "(r.auto_at IS NULL OR r.auto_at > ?)"
_PAIRING_NO_RULE_DUE = "(p.auto_at IS NULL OR p.auto_at > ?)"
# A challenge issued for exactly this id, purpose, subject and device (None
# for enrolment), unused and unexpired.  COALESCE: "IS ?" is SQLite's only.
_CHALLENGE_USABLE = ("id = ? AND purpose = ? AND subject = ? AND"
                     " COALESCE(device_id, '') = COALESCE(?, '') AND used = 0 AND expires > ?")
_PAIRING_FOR_PHONE = """
SELECT p.id, p.pending, p.auto_at, p.totp_secret, u.name AS user_name, q.name AS requester_name
FROM pairings p JOIN users u ON u.id = p.user_id JOIN requesters q ON q.id = p.requester_id
"""


#: A result row of either backend (sqlite3.Row or database.Row), read by column name.
Record = Any


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def request_binding(row: Record) -> dict[str, str]:
    """What an approval signs: the request as the server recorded it."""
    return {"answer": "approve", "request": row["id"], "user": row["user_name"],
            "terminal": row["terminal_name"], "action": row["action_name"],
            "requester": row["requester_name"]}


def pairing_binding(row: Record) -> dict[str, str]:
    """What accepting a pairing signs."""
    return {"answer": "accept", "pairing": row["id"], "user": row["user_name"],
            "requester": row["requester_name"]}


def _device_view(row: Record) -> dict:
    return {"id": row["id"], "user": row["user_name"], "name": row["name"],
            "created": row["created"], "last_used": row["last_used"],
            "revoked": row["revoked"]}


class DeviceStore:
    """Phones and their answers, on a :class:`Store`'s database."""

    def __init__(self, store: Store):
        self.store = store
        self.clock = store.clock

    # -- settings ---------------------------------------------------------------------

    def set_public_url(self, url: str) -> None:
        """Remembered by ``serve`` so that ``device enroll`` prints links to it."""
        with self.store.transaction() as db:
            db.execute("INSERT INTO web_settings (name, value) VALUES ('public_url', ?)"
                       " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (url,))

    def public_url(self) -> str | None:
        with self.store.transaction(write=False) as db:
            row = db.execute("SELECT value FROM web_settings WHERE name = 'public_url'").fetchone()
        return row["value"] if row else None

    def setting_once(self, name: str, make: Callable[[], str]) -> str:
        """The setting ``name``, made by ``make()`` the first time; whoever is
        first (another thread or server instance) wins, all then use its value."""
        with self.store.transaction(write=False) as db:
            row = db.execute("SELECT value FROM web_settings WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self.store.transaction(quiet=True) as db:
                db.execute("INSERT INTO web_settings (name, value) VALUES (?, ?)"
                           " ON CONFLICT (name) DO NOTHING", (name, make()))
                row = db.execute("SELECT value FROM web_settings WHERE name = ?",
                                 (name,)).fetchone()
        return str(row["value"])

    # -- enrolment ------------------------------------------------------------------------

    def create_enrol_token(self, user_name: str, device_name: str = "phone",
                           seconds: float = ENROL_TOKEN_SECONDS) -> str:
        """A one-time enrolment token; only its hash is stored."""
        if not user_name or not device_name:
            raise BadRequest("user name and device name must not be empty")
        if seconds <= 0:
            raise BadRequest("the link's lifetime must be positive")
        token, now = secrets.token_urlsafe(32), self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO enrol_tokens (token_hash, user_name, device_name, created,"
                       " expires) VALUES (?, ?, ?, ?, ?)",
                       (secret_hash(token), user_name, device_name, now, now + seconds))
        return token

    def enrolment(self, token: str) -> Record:
        """The unused, unexpired enrolment of ``token``; one message for every refusal."""
        with self.store.transaction(write=False) as db:
            row = db.execute("SELECT * FROM enrol_tokens WHERE token_hash = ? AND used = 0"
                             " AND expires > ?", (secret_hash(token), self.clock())).fetchone()
        if row is None:
            raise BadRequest("This enrolment link is invalid, expired or already used;"
                             " ask your administrator for a new one")
        return row

    def user_credential_ids(self, user_name: str) -> list[bytes]:
        with self.store.transaction(write=False) as db:
            rows = db.execute("SELECT credential_id FROM devices WHERE user_name = ? AND"
                              " revoked IS NULL", (user_name,)).fetchall()
        return [bytes(row["credential_id"]) for row in rows]

    def complete_enrolment(self, token: str, challenge_id: str, credential: NewCredential,
                           user_handle: bytes) -> tuple[str, str]:
        """Store the verified passkey as a device; (device id, session token)."""
        now, device_id = self.clock(), str(uuid.uuid4())
        session = secrets.token_urlsafe(32)
        token_hash = secret_hash(token)
        with self.store.transaction() as db:
            self._consume_challenge(db, challenge_id, "register", token_hash, None)
            enrolment = db.execute("SELECT * FROM enrol_tokens WHERE token_hash = ?",
                                   (token_hash,)).fetchone()
            used = db.execute("UPDATE enrol_tokens SET used = 1 WHERE token_hash = ? AND"
                              " used = 0 AND expires > ?", (token_hash, now))
            if used.rowcount != 1:
                raise BadRequest("This enrolment link is invalid, expired or already used;"
                                 " ask your administrator for a new one")
            # The id is new: only the credential id can already be there.
            added = db.execute(
                "INSERT OR IGNORE INTO devices (id, user_name, name, credential_id, credential,"
                " user_handle, sign_count, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, enrolment["user_name"], enrolment["device_name"],
                 credential.credential_id, credential.credential_data, user_handle,
                 credential.sign_count, now))
            if added.rowcount != 1:
                raise Conflict("This passkey is already registered")
            self._insert_session(db, session, device_id, now)
        return device_id, session

    # -- sessions -----------------------------------------------------------------------------

    @staticmethod
    def _insert_session(db, session: str, device_id: str, now: float) -> None:
        db.execute("DELETE FROM phone_sessions WHERE expires <= ?", (now,))
        db.execute("INSERT INTO phone_sessions (token_hash, device_id, created, expires)"
                   " VALUES (?, ?, ?, ?)",
                   (secret_hash(session), device_id, now, now + SESSION_SECONDS))

    def session_device(self, session: str | None) -> Record | None:
        """The active device of a session cookie, or None (unknown, expired, revoked)."""
        if not session:
            return None
        with self.store.transaction(write=False) as db:
            return db.execute(
                "SELECT d.* FROM phone_sessions s JOIN devices d ON d.id = s.device_id"
                " WHERE s.token_hash = ? AND s.expires > ? AND d.revoked IS NULL",
                (secret_hash(session), self.clock())).fetchone()

    # -- devices ---------------------------------------------------------------------------------

    def list_devices(self, user_name: str | None = None) -> list[dict]:
        with self.store.transaction(write=False) as db:
            rows = db.execute("SELECT * FROM devices WHERE (? IS NULL OR user_name = ?)"
                              " ORDER BY seq", (user_name, user_name)).fetchall()
        return [_device_view(row) for row in rows]

    def revoke(self, device_id: str) -> None:
        """The device can no longer answer; its sessions end at once."""
        with self.store.transaction() as db:
            revoked = db.execute("UPDATE devices SET revoked = ? WHERE id = ? AND revoked IS NULL",
                                 (self.clock(), device_id))
            if revoked.rowcount != 1:
                known = db.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone()
                raise (Conflict(f"Device {device_id} is already revoked") if known
                       else NotFound(f"No such device: {device_id}"))
            db.execute("DELETE FROM phone_sessions WHERE device_id = ?", (device_id,))
            db.execute("UPDATE webauthn_challenges SET used = 1 WHERE device_id = ?", (device_id,))
            db.execute("DELETE FROM push_subscriptions WHERE device_id = ?", (device_id,))

    # -- push subscriptions (push.py) -------------------------------------------------------------

    def save_push_subscription(self, device_id: str, subscription: Subscription) -> None:
        """The device's subscription, replacing its previous one (and any other
        device's with the same endpoint: one browser, one subscription)."""
        with self.store.transaction(quiet=True) as db:
            db.execute("DELETE FROM push_subscriptions WHERE device_id = ? OR endpoint = ?",
                       (device_id, subscription.endpoint))
            db.execute("INSERT INTO push_subscriptions (device_id, endpoint, p256dh, auth,"
                       " created) VALUES (?, ?, ?, ?, ?)",
                       (device_id, subscription.endpoint, subscription.p256dh,
                        subscription.auth, self.clock()))

    def delete_push_subscription(self, device_id: str, endpoint: str | None = None) -> None:
        """Forget the device's subscription (only if it is still ``endpoint``, when given)."""
        with self.store.transaction(quiet=True) as db:
            db.execute("DELETE FROM push_subscriptions WHERE device_id = ? AND"
                       " (? IS NULL OR endpoint = ?)", (device_id, endpoint, endpoint))

    def has_push_subscription(self, device_id: str) -> bool:
        with self.store.transaction(write=False) as db:
            return db.execute("SELECT 1 FROM push_subscriptions WHERE device_id = ?",
                              (device_id,)).fetchone() is not None

    def push_subscriptions(self, user_name: str) -> list[tuple[str, Subscription]]:
        """(device id, subscription) of the user's active devices that subscribed."""
        with self.store.transaction(write=False) as db:
            rows = db.execute(
                "SELECT s.device_id, s.endpoint, s.p256dh, s.auth FROM push_subscriptions s"
                " JOIN devices d ON d.id = s.device_id WHERE d.user_name = ? AND"
                " d.revoked IS NULL ORDER BY d.seq", (user_name,)).fetchall()
        return [(row["device_id"], Subscription(row["endpoint"], row["p256dh"], row["auth"]))
                for row in rows]

    # -- challenges ------------------------------------------------------------------------------

    def new_challenge(self, purpose: str, subject: str,
                      device_id: str | None) -> tuple[str, bytes]:
        """A single-use nonce for one purpose and subject: (challenge id, nonce)."""
        challenge_id, nonce, now = secrets.token_urlsafe(16), secrets.token_bytes(NONCE_BYTES), \
            self.clock()
        with self.store.transaction(quiet=True) as db:
            db.execute("DELETE FROM webauthn_challenges WHERE expires <= ?", (now,))
            db.execute("INSERT INTO webauthn_challenges (id, purpose, subject, device_id, nonce,"
                       " expires) VALUES (?, ?, ?, ?, ?, ?)",
                       (challenge_id, purpose, subject, device_id, nonce,
                        now + CHALLENGE_SECONDS))
        return challenge_id, nonce

    def challenge_nonce(self, challenge_id: Any, purpose: str, subject: str,
                        device_id: str | None) -> bytes:
        """The nonce of a usable challenge issued for exactly this purpose, subject, device."""
        if not isinstance(challenge_id, str) or len(challenge_id) > 64:
            raise BadRequest("Missing or malformed challenge id")
        with self.store.transaction(write=False) as db:
            row = db.execute(
                "SELECT nonce FROM webauthn_challenges WHERE " + _CHALLENGE_USABLE,
                (challenge_id, purpose, subject, device_id, self.clock())).fetchone()
        if row is None:
            raise BadRequest("This passkey prompt expired or was already used; try again")
        return bytes(row["nonce"])

    def _consume_challenge(self, db, challenge_id: str, purpose: str, subject: str,
                           device_id: str | None) -> None:
        used = db.execute(
            "UPDATE webauthn_challenges SET used = 1 WHERE " + _CHALLENGE_USABLE,
            (challenge_id, purpose, subject, device_id, self.clock()))
        if used.rowcount != 1:
            raise BadRequest("This passkey prompt expired or was already used; try again")

    def _record_use(self, db, device: Record, sign_count: int) -> None:
        """Move the device's sign count forward; refuses a revoked device or a stale count."""
        now = self.clock()
        updated = db.execute(
            "UPDATE devices SET sign_count = ?, last_used = ? WHERE id = ? AND revoked IS NULL"
            " AND (sign_count < ? OR (sign_count = 0 AND ? = 0))",
            (sign_count, now, device["id"], sign_count, sign_count))
        if updated.rowcount != 1:
            raise Unauthorized("This device is revoked, or its passkey's signature counter"
                               " went backwards (a cloned passkey?)")

    def _audit(self, db, device: Record, kind: str, subject_id: str, answer: str,
               detail: Mapping[str, str], assertion: Mapping[str, str] | None) -> None:
        db.execute("INSERT INTO phone_answers (at, user_name, device_id, device_name, kind,"
                   " subject_id, answer, detail, assertion) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (self.clock(), device["user_name"], device["id"], device["name"], kind,
                    subject_id, answer, json.dumps(dict(detail), sort_keys=True),
                    json.dumps(dict(assertion), sort_keys=True) if assertion else None))

    # -- authentication requests ----------------------------------------------------------------

    def _fresh(self, created: float | None) -> bool:
        return created is not None and self.clock() - created <= REQUEST_MAX_AGE

    def request_for_phone(self, request_id: str, user_name: str) -> Record:
        """A pending, recent request of this user, as the server recorded it."""
        with self.store.transaction(write=False) as db:
            row = db.execute(_REQUEST_FOR_PHONE + " WHERE r.id = ? AND u.name = ?",
                             (request_id, user_name)).fetchone()
        if row is None:
            raise NotFound("No such request for this user")
        if not self._open(row):
            raise Conflict("This request was already answered")
        if not self._fresh(row["created"]):
            raise Conflict("This request is too old to answer; start the login again")
        return row

    def pending_requests(self, user_name: str) -> list[dict]:
        """The user's pending, recent requests, newest first, as the page shows them."""
        with self.store.transaction(write=False) as db:
            rows = db.execute(_REQUEST_FOR_PHONE + " WHERE r.pending = 1 AND u.name = ?"
                              " AND r.created > ? AND " + _REQUEST_NO_RULE_DUE
                              + " ORDER BY r.seq DESC",
                              (user_name, self.clock() - REQUEST_MAX_AGE,
                               self.clock())).fetchall()
        now = self.clock()
        return [{"id": row["id"], "terminal": row["terminal_name"], "action": row["action_name"],
                 "requester": row["requester_name"], "age": max(0, int(now - row["created"]))}
                for row in rows]

    def answer_request(self, device: Record, request: Record,
                       granted: bool, challenge_id: str | None = None,
                       sign_count: int | None = None,
                       assertion: Mapping[str, str] | None = None) -> None:
        """Answer ``request`` from ``device`` in one transaction with its audit record.

        An approval consumes its challenge and moves the sign count; a request
        that is no longer pending (answered, resolved by OTP, or by a rule
        that came due) stays as it is.
        """
        now = self.clock()
        with self.store.transaction() as db:
            if granted:
                if challenge_id is None or sign_count is None:
                    raise ServerError("an approval needs a verified passkey assertion")
                self._consume_challenge(db, challenge_id, "approve", request["id"], device["id"])
                self._record_use(db, device, sign_count)
            answered = db.execute(
                "UPDATE auth_requests SET pending = 0, granted = ?, automated = 0, reason = ?,"
                " reason_code = ? WHERE id = ? AND pending = 1 AND (auto_at IS NULL OR"
                " auto_at > ?)",
                (int(granted), f"{'approved' if granted else 'denied'} on {device['name']}",
                 REASON_USER, request["id"], now))
            if answered.rowcount != 1:
                raise Conflict("This request was already answered")
            self._audit(db, device, "request", request["id"], "approve" if granted else "deny",
                        {"terminal": request["terminal_name"], "action": request["action_name"],
                         "requester": request["requester_name"]}, assertion)

    # -- pairings ---------------------------------------------------------------------------------

    def pairing_for_phone(self, pairing_id: str, user_name: str) -> Record:
        with self.store.transaction(write=False) as db:
            row = db.execute(_PAIRING_FOR_PHONE + " WHERE p.id = ? AND u.name = ?",
                             (pairing_id, user_name)).fetchone()
        if row is None:
            raise NotFound("No such pairing for this user")
        if not self._open(row):
            raise Conflict("This pairing was already answered")
        return row

    def pending_pairings(self, user_name: str) -> list[dict]:
        """The user's pending pairings, newest first."""
        with self.store.transaction(write=False) as db:
            rows = db.execute(_PAIRING_FOR_PHONE + " WHERE p.pending = 1 AND u.name = ? AND "
                              + _PAIRING_NO_RULE_DUE + " ORDER BY p.seq DESC",
                              (user_name, self.clock())).fetchall()
        return [{"id": row["id"], "requester": row["requester_name"]} for row in rows]

    def _open(self, row: Record) -> bool:
        """Pending, and no simulator rule has come due (it answers first)."""
        return bool(row["pending"]) and (row["auto_at"] is None or row["auto_at"] > self.clock())

    def answer_pairing(self, device: Record, pairing: Record,
                       accept: bool, challenge_id: str | None = None,
                       sign_count: int | None = None,
                       assertion: Mapping[str, str] | None = None) -> None:
        now = self.clock()
        with self.store.transaction() as db:
            if accept:
                if challenge_id is None or sign_count is None:
                    raise ServerError("accepting a pairing needs a verified passkey assertion")
                self._consume_challenge(db, challenge_id, "pair", pairing["id"], device["id"])
                self._record_use(db, device, sign_count)
            answered = db.execute(
                "UPDATE pairings SET pending = 0, enabled = ? WHERE id = ? AND pending = 1"
                " AND (auto_at IS NULL OR auto_at > ?)", (int(accept), pairing["id"], now))
            if answered.rowcount != 1:
                raise Conflict("This pairing was already answered")
            self._audit(db, device, "pairing", pairing["id"], "accept" if accept else "refuse",
                        {"requester": pairing["requester_name"]}, assertion)

    # -- the audit trail ------------------------------------------------------------

    def answers(self, user_name: str | None = None, limit: int = 100) -> list[dict]:
        """Newest first: who answered what, when, from which device, and the assertion."""
        with self.store.transaction(write=False) as db:
            rows = db.execute("SELECT * FROM phone_answers WHERE (? IS NULL OR user_name = ?)"
                              " ORDER BY seq DESC LIMIT ?",
                              (user_name, user_name, limit)).fetchall()
        return [{"at": row["at"], "user": row["user_name"], "device_id": row["device_id"],
                 "device": row["device_name"], "kind": row["kind"], "id": row["subject_id"],
                 "answer": row["answer"], **json.loads(row["detail"]),
                 "assertion": json.loads(row["assertion"]) if row["assertion"] else None}
                for row in rows]
