"""The long_poll extension, restarts, and many concurrent clients."""
import threading
import time

import pytest

from tests.test_server_api import (api, error, initiate, ok,  # noqa: F401 (fixtures)
                                   paired_with_terminal, server)
from tests.support.server import RunningServer


def _poll_in_thread(api, path, seconds):
    result = {}

    def poll():
        response = api.get(path, long_poll=str(seconds))
        result.update(answer=ok(response), returned=time.monotonic())

    thread = threading.Thread(target=poll)
    thread.start()
    return thread, result


def test_long_poll_returns_promptly_after_the_phone_answers(server, api):
    paired_with_terminal(server, api, "lp-alice")
    request = ok(initiate(api, "lp-alice"))
    # The test process is not the server's: the approval arrives by the database.
    thread, result = _poll_in_thread(api, f"authentication_requests/{request['id']}", 10)
    time.sleep(0.3)
    assert "answer" not in result
    server.phone.approve(request["id"])
    approved = time.monotonic()
    thread.join(5)
    assert result["answer"]["granted"] is True and result["answer"]["pending"] is False
    assert result["returned"] - approved < 0.15


def test_long_poll_on_a_pairing(server, api):
    pairing = ok(api.post("pairings/create/qr", user_name="lp-bob"))
    thread, result = _poll_in_thread(api, f"pairings/{pairing['id']}", 10)
    time.sleep(0.2)
    server.phone.accept_pairing(pairing["id"])
    accepted = time.monotonic()
    thread.join(5)
    assert result["answer"]["enabled"] is True
    assert result["returned"] - accepted < 0.15


def test_long_poll_wakes_for_a_delayed_rule(server, api):
    paired_with_terminal(server, api, "lp-carol")
    server.phone.set_rule("lp-carol", "approve", delay=0.4, automated=True)
    request = ok(initiate(api, "lp-carol"))
    started = time.monotonic()
    answer = ok(api.get(f"authentication_requests/{request['id']}", long_poll="5"))
    elapsed = time.monotonic() - started
    assert (answer["pending"], answer["granted"], answer["automated"]) == (False, True, True)
    assert 0.3 < elapsed < 0.6


def test_long_poll_times_out_with_the_pending_object(server, api):
    paired_with_terminal(server, api, "lp-dave")
    request = ok(initiate(api, "lp-dave"))
    started = time.monotonic()
    answer = ok(api.get(f"authentication_requests/{request['id']}", long_poll="0.5"))
    assert 0.45 < time.monotonic() - started < 1.0
    assert answer == request


def test_long_poll_answers_an_answered_request_at_once(server, api):
    paired_with_terminal(server, api, "lp-erin")
    request = ok(initiate(api, "lp-erin", otp="000000"))
    started = time.monotonic()
    ok(api.get(f"authentication_requests/{request['id']}", long_poll="20"))
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_long_poll_value_must_be_seconds(api, value):
    error(api.get("authentication_requests/00000000-0000-4000-8000-000000000000",
                  long_poll=value), 400)


def test_restart_keeps_state():
    with RunningServer() as server:
        api = server.client()
        pairing = paired_with_terminal(server, api, "restart-user")
        request = ok(initiate(api, "restart-user"))
        url = server.url
        server.restart()
        assert server.url == url
        api = server.client()
        assert ok(api.get(f"pairings/{pairing['id']}"))["enabled"] is True
        assert ok(api.get(f"authentication_requests/{request['id']}")) == request
        server.phone.approve(request["id"])
        assert ok(api.get(f"authentication_requests/{request['id']}"))["granted"] is True


CLIENTS = 50


def test_fifty_concurrent_clients_lose_nothing(server):
    """Each client pairs, names a terminal, logs in and long-polls while the phone answers."""
    outcomes, failures = {}, []
    names = [f"crowd-{index}" for index in range(CLIENTS)]
    phrases = {name: server.phone.make_pairing_phrase(name) for name in names}
    done = threading.Event()

    deadline = time.monotonic() + 30

    def phone_worker():
        try:
            while not done.is_set():
                for pending in server.phone.pending_pairings():
                    server.phone.accept_pairing(pending["id"])
                for pending in server.phone.pending_requests():
                    if not pending["user"].startswith("crowd-"):
                        continue  # left pending by an earlier test
                    index = int(pending["user"].split("-")[1])
                    (server.phone.approve if index % 2 == 0 else server.phone.deny)(pending["id"])
                time.sleep(0.01)
        except Exception as failure:
            failures.append(f"phone: {failure!r}")

    def client_worker(name):
        api = server.client()
        try:
            pairing = ok(api.post("pairings/create", user_name=name, pairing_phrase=phrases[name]))
            while ok(api.get(f"pairings/{pairing['id']}", long_poll="5"))["pending"]:
                assert time.monotonic() < deadline, "pairing never answered"
            ok(api.post("user_terminals/create", user_name=name, name="t", name_extra="h"))
            request = ok(initiate(api, name, identifier="h"))
            answer = request
            while answer["pending"]:
                assert time.monotonic() < deadline, "request never answered"
                answer = ok(api.get(f"authentication_requests/{request['id']}", long_poll="5"))
            outcomes[name] = answer["granted"]
        except Exception as failure:  # collected: a thread's assert would be lost
            failures.append(f"{name}: {failure!r}")
        finally:
            api.close()

    phone = threading.Thread(target=phone_worker)
    phone.start()
    clients = [threading.Thread(target=client_worker, args=(name,)) for name in names]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(60)
    done.set()
    phone.join(5)
    assert failures == []
    assert outcomes == {name: int(name.split("-")[1]) % 2 == 0 for name in names}
    assert server.query("SELECT count(*), sum(pending) FROM auth_requests r JOIN users u"
                        " ON u.id = r.user_id WHERE u.name LIKE 'crowd-%'") == [(CLIENTS, 0)]
