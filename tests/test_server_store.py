"""Unit tests of the server's parts in one process, with a frozen clock: TOTP, rules, long poll."""
import base64
import threading
import time

import pytest

from pam_toopher.server import totp
from pam_toopher.server.app import Api, Params
from pam_toopher.server.errors import BadRequest, Conflict, NotFound
from pam_toopher.server.phone import Phone
from pam_toopher.server.store import Store
from tests.support.server import scratch_database

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize("when, code", [
    (59, "287082"), (1111111109, "081804"), (1111111111, "050471"),
    (1234567890, "005924"), (2000000000, "279037"), (20000000000, "353130"),
])
def test_totp_rfc6238_vectors(when, code):
    # RFC 6238 appendix B (SHA1), last six of its eight digits.
    assert totp.code_at(RFC_SECRET, when) == code


def test_totp_accepts_one_step_either_side_only():
    now = 1111111111
    for offset, accepted in ((-60, False), (-30, True), (0, True), (30, True), (60, False)):
        step = totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, now + offset), now)
        assert (step is not None) == accepted
    assert totp.matching_step(RFC_SECRET, "", now) is None
    assert totp.matching_step(RFC_SECRET, "not a code", now) is None


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def world():
    """A store with a requester whose user 'alice' is paired and has terminal 'h1'."""
    clock = Clock()
    with scratch_database() as target:  # PostgreSQL under TOOPHER_TEST_DATABASE
        store = Store(target, clock=clock)
        key, _ = store.create_requester("r")
        requester_id = store.requester_by_key(key)["id"]
        phone = Phone(store)
        pairing = store.create_pairing(requester_id, "alice", "phrase", phone.make_pairing_phrase("alice"))
        phone.accept_pairing(pairing["id"])
        store.create_terminal(requester_id, "alice", "Host 1", "h1")
        yield store, requester_id, phone, clock, pairing
        store.close()


def login(store, requester_id, **extra):
    return store.initiate(requester_id, user_name="alice", terminal_id="h1", **extra)


def test_otp_step_cannot_be_reused_even_with_an_older_code(world):
    store, requester_id, phone, clock, _ = world
    old = phone.otp("alice")
    clock.now += 30
    assert login(store, requester_id, otp=phone.otp("alice"))["granted"] is True
    # The previous step's code is still in the window, but it is older than the used one.
    assert login(store, requester_id, otp=old)["granted"] is False


def test_delayed_rule_applies_when_due(world):
    store, requester_id, phone, clock, _ = world
    phone.set_rule("alice", "approve", delay=10, automated=True)
    request = login(store, requester_id)
    assert store.request_wake_at(request["id"]) == clock.now + 10
    clock.now += 9.9
    assert store.get_request(requester_id, request["id"])["pending"] is True
    assert phone.pending_requests("alice")[0]["id"] == request["id"]
    clock.now += 0.1
    answered = store.get_request(requester_id, request["id"])
    assert (answered["pending"], answered["granted"], answered["automated"],
            answered["reason"]) == (False, True, True, "approved by rule")
    assert phone.pending_requests("alice") == []


def test_phone_errors(world):
    store, requester_id, phone, _, pairing = world
    with pytest.raises(NotFound):
        phone.approve("00000000-0000-4000-8000-000000000000")
    with pytest.raises(Conflict):
        phone.accept_pairing(pairing["id"])
    with pytest.raises(BadRequest):
        phone.set_rule("alice", "maybe")
    with pytest.raises(BadRequest):
        phone.fault("teapot")
    with pytest.raises(TimeoutError):
        phone.wait_for_request("alice", timeout=0.05)


def test_in_process_long_poll_wakes_on_the_write(world):
    """Within one process the writer notifies the waiter, without the 50 ms poll."""
    store, requester_id, phone, _, _ = world
    request = login(store, requester_id)
    api = Api(store)
    threading.Timer(0.2, phone.approve, args=(request["id"],)).start()
    started = time.monotonic()
    answer = api._long_poll(Params([("long_poll", "5")]),
                            lambda: store.get_request(requester_id, request["id"]),
                            lambda: store.request_wake_at(request["id"]))
    assert answer["granted"] is True
    assert 0.19 < time.monotonic() - started < 0.3


@pytest.mark.parametrize("text, expected", [
    ("true", True), ("True", True), ("TRUE", True), ("1", True),
    ("false", False), ("False", False), ("0", False), ("", None),
])
def test_booleans_parse_case_insensitively(text, expected):
    assert Params([("flag", text)]).boolean("flag") is expected


def test_params_aliases_and_empty_strings():
    params = Params([("pairing_id", ""), ("terminal_id", "t"), ("oauth_nonce", "n")])
    assert params.get("pairing_id") is None
    assert params.get("terminal_name_extra", "requester_specified_terminal_id", "terminal_id") == "t"
    assert params.get("oauth_nonce") is None
    with pytest.raises(BadRequest):
        Params([("name", "x" * 1001)])
    assert Params([("long_poll", "99")]).seconds("long_poll", 25) == 25
