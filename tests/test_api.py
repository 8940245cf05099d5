"""The Toopher client over real HTTP(S) on loopback, against a scripted server
that checks every request's OAuth signature independently.

These tests cover what the project's own server does not produce on its
own (redirects, wrong ids, missing fields, oversized or cut-off answers,
stalls, bad certificates); tests/test_api_server.py runs the client against
the project's Toopher-compatible server for every endpoint and error code.
"""
import re
import socket
import ssl
import threading
import time
import uuid

import pytest
import requests

import pam_toopher as toopher
from pam_toopher.api import (MAX_RESPONSE_BYTES, DeadlineExceededError, MalformedResponseError,
                             PairingDeactivatedError,
                             TerminalUnknownError, ToopherApi, ToopherApiError, ToopherRefusedError,
                             ToopherTLSError,
                             ToopherUnavailableError, UserDisabledError, UserUnknownError,
                             oauth1_signer)
from tests.support.scripted_http import KEY, SECRET, Answer, ScriptedServer
from tests.support.server import make_ca, make_server_cert

REQUEST_ID = str(uuid.uuid4())


def auth_request(request_id=REQUEST_ID, **overrides):
    body = {"id": request_id, "pending": True, "granted": False, "automated": False,
            "reason": "", "reason_code": 0,
            "terminal": {"id": str(uuid.uuid4()), "name": "host1", "requester_specified_id": "host1",
                         "user": {"id": str(uuid.uuid4()), "name": "alice",
                                  "toopher_authentication_enabled": True}},
            "user": {"id": str(uuid.uuid4()), "name": "alice", "toopher_authentication_enabled": True},
            "action": {"id": str(uuid.uuid4()), "name": "log in"}}
    body.update(overrides)
    return body


def client(server, **kwargs):
    kwargs.setdefault("timeout", (2.0, 2.0))
    kwargs.setdefault("retry_budget", 3.0)
    return ToopherApi(KEY, SECRET, server.url, **kwargs)


def serve(*answers):
    """A scripted server answering with ``answers`` in order, the last one repeating."""
    queue = list(answers)

    def script(_received):
        return queue.pop(0) if len(queue) > 1 else queue[0]
    return ScriptedServer(script)


# ---------------------------------------------------------------- signing


def test_signature_matches_the_protocol_check_value():
    auth = oauth1_signer("dpf43f3p2l4k3l03", "kd94hf93k423kf44",
                         nonce="kllo9940pd9333jh", timestamp="1191242096")
    prepared = requests.Request(
        "POST", "http://127.0.0.1:8765/v1/authentication_requests/initiate",
        data={"user_name": "alice", "terminal_name_extra": "host1", "action_name": "SSH login"},
        auth=auth).prepare()
    header = prepared.headers["Authorization"]
    header = header.decode() if isinstance(header, bytes) else header
    assert 'oauth_signature="GQMjnYpXnUnKAE3RaHhQzH1SAVc%3D"' in header
    assert 'oauth_consumer_key="dpf43f3p2l4k3l03"' in header


def test_every_request_is_signed_and_names_the_client():
    with serve(Answer(body=auth_request())) as server:
        api = client(server)
        api.authenticate_by_user_name("alice", "host1", "SSH login", automation_allowed=False)
        api.get_authentication_status(REQUEST_ID)
    post, get = server.received
    assert post.signature_valid and get.signature_valid
    assert post.method == "POST" and post.path == "/v1/authentication_requests/initiate"
    assert dict(post.form) == {"user_name": "alice", "terminal_name_extra": "host1",
                               "action_name": "SSH login", "automation_allowed": "false"}
    assert get.method == "GET" and get.path == f"/v1/authentication_requests/{REQUEST_ID}"
    assert get.headers["User-Agent"].startswith(f"pam_toopher/{toopher.__version__} ")


def test_a_wrong_secret_does_not_verify():
    with serve(Answer(body=auth_request())) as server:
        ToopherApi(KEY, "not-the-secret", server.url).get_authentication_status(REQUEST_ID)
    assert not server.received[0].signature_valid


def test_long_poll_is_sent_as_a_query_parameter_and_extends_the_read_timeout():
    with serve(Answer(body=auth_request(), delay=1.5)) as server:
        api = client(server, timeout=(1.0, 1.0))
        status = api.get_authentication_status(REQUEST_ID, long_poll=2)
    assert status.id == REQUEST_ID
    assert server.received[0].path == f"/v1/authentication_requests/{REQUEST_ID}?long_poll=2"


# ---------------------------------------------------------------- models


def test_the_original_library_example_reads_the_same():
    pairing = {"id": str(uuid.uuid4()), "enabled": True, "pending": False,
               "user": {"id": "u1", "name": "username@yourservice.com",
                        "toopher_authentication_enabled": True}}
    granted = auth_request(pending=False, granted=True, reason="approved")

    def script(received):
        if received.path.startswith("/v1/pairings"):
            return Answer(body=pairing)
        return Answer(body=granted)
    with ScriptedServer(script) as server:
        api = toopher.ToopherApi(KEY, SECRET, server.url)
        pairing_status = api.pair("pairing phrase", "username@yourservice.com")
        auth = api.authenticate(pairing_status.id, "my computer")
        auth_status = api.get_authentication_status(auth.id)
    assert pairing_status.enabled and pairing_status.user_name == "username@yourservice.com"
    assert auth_status.pending == False and auth_status.granted == True  # noqa: E712
    assert auth_status.terminal_name == "host1" and auth_status.action_name == "log in"
    assert auth_status.raw["reason"] == "approved"
    assert dict(server.received[0].form) == {"pairing_phrase": "pairing phrase",
                                             "user_name": "username@yourservice.com"}


@pytest.mark.parametrize("broken", [
    {"pending": None},                      # missing field
    {"granted": "yes"},                     # wrong type
    {"pending": 1},                         # an int is not a bool
    {"terminal": None},                     # missing nested object
    {"terminal": {"id": "t"}},              # nested object missing a field
    {"terminal": "host1"},                  # nested object of the wrong type
])
def test_a_malformed_answer_is_a_clear_error(broken):
    with serve(Answer(body=auth_request(**broken))) as server:
        with pytest.raises(MalformedResponseError) as caught:
            client(server).get_authentication_status(REQUEST_ID)
    assert "authentication request" in str(caught.value)


def test_an_answer_about_another_request_is_refused():
    with serve(Answer(body=auth_request(request_id=str(uuid.uuid4()), granted=True,
                                        pending=False))) as server:
        with pytest.raises(MalformedResponseError, match="different id"):
            client(server).get_authentication_status(REQUEST_ID)


def test_an_answer_that_is_not_a_json_object_is_refused():
    with serve(Answer(body=[1, 2, 3])) as server:
        with pytest.raises(MalformedResponseError, match="JSON object"):
            client(server).get_authentication_status(REQUEST_ID)


def test_an_answer_that_is_not_json_is_refused():
    with serve(Answer(body=b"<html>gateway</html>")) as server:
        with pytest.raises(MalformedResponseError, match="not JSON") as caught:
            client(server).get_authentication_status(REQUEST_ID)
    assert caught.value.status == 200


def test_an_answer_that_does_not_decode_is_malformed_not_an_outage():
    # A body that claims gzip but is not: the service answered, wrongly.
    # Calling it an outage would let failmode = safe grant the login.
    with serve(Answer(body=b"this is not gzip at all", headers={"Content-Encoding": "gzip"},
                      declare_length=False)) as server:
        with pytest.raises(MalformedResponseError, match="could not be decoded") as caught:
            client(server, retry_budget=0).get_authentication_status(REQUEST_ID)
    assert not isinstance(caught.value, ToopherUnavailableError)
    assert caught.value.status == 200


def test_ids_cannot_change_the_request_path():
    api = ToopherApi(KEY, SECRET, "http://127.0.0.1:9/v1")
    for bad in ("../users", "a/b", "", "..", "id?x=1"):
        with pytest.raises(ValueError):
            api.get_authentication_status(bad)


# ---------------------------------------------------------------- error codes


@pytest.mark.parametrize("code, message, error_class", [
    (704, "The specified user has disabled Toopher authentication.", UserDisabledError),
    (705, "No matching user exists.", UserUnknownError),
    (706, "No matching terminal exists.", TerminalUnknownError),
    (707, "Pairing has been deactivated.", PairingDeactivatedError),
    (601, "Something else.", PairingDeactivatedError),
    (600, "Pairing has been deactivated", PairingDeactivatedError),
    (600, "PAIRING HAS NOT BEEN AUTHORIZED", PairingDeactivatedError),
    (600, "Another problem.", ToopherRefusedError),   # the category, never the root
])
def test_error_codes_map_to_their_exceptions(code, message, error_class):
    with serve(Answer(409, {"error_code": code, "error_message": message})) as server:
        with pytest.raises(error_class) as caught:
            client(server).authenticate_by_user_name("alice", "host1")
    assert type(caught.value) is error_class
    assert caught.value.status == 409 and caught.value.error_code == code
    assert caught.value.message == message


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_refusals_are_api_errors_but_not_outages(status):
    with serve(Answer(status, {"error_code": status, "error_message": "no"})) as server:
        with pytest.raises(ToopherApiError) as caught:
            client(server).get_authentication_status(REQUEST_ID)
    assert not isinstance(caught.value, ToopherUnavailableError)
    assert caught.value.status == status


def test_an_error_without_a_json_body_still_carries_its_status():
    with serve(Answer(403, b"forbidden")) as server:
        with pytest.raises(ToopherApiError) as caught:
            client(server).authenticate_by_user_name("alice", "host1")
    assert caught.value.status == 403 and caught.value.error_code is None


def test_a_redirect_is_not_followed():
    with serve(Answer(302, {}, headers={"Location": "http://127.0.0.1:9/v1/x"})) as server:
        with pytest.raises(ToopherApiError, match="redirect") as caught:
            client(server).get_authentication_status(REQUEST_ID)
    assert caught.value.status == 302 and len(server.received) == 1


def test_an_oversized_answer_is_refused():
    huge = b'{"id": "' + b"x" * (MAX_RESPONSE_BYTES + 10) + b'"}'
    with serve(Answer(body=huge)) as server:
        with pytest.raises(MalformedResponseError, match="larger than"):
            client(server).get_authentication_status(REQUEST_ID)


def test_an_oversized_answer_without_content_length_is_refused_while_reading():
    # The cap holds on what is read, not only on what is declared.
    body = b"[" + b"1," * MAX_RESPONSE_BYTES + b"1]"
    with serve(Answer(body=body, declare_length=False)) as server:
        with pytest.raises(MalformedResponseError, match="larger than"):
            client(server).get_authentication_status(REQUEST_ID)


# ---------------------------------------------------------------- outages and retries


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_an_outage():
    api = ToopherApi(KEY, SECRET, f"http://127.0.0.1:{unused_port()}/v1", retry_budget=0)
    with pytest.raises(ToopherUnavailableError, match="connection refused") as caught:
        api.authenticate_by_user_name("alice", "host1")
    assert caught.value.status is None


def test_an_unresolvable_host_is_an_outage():
    api = ToopherApi(KEY, SECRET, "http://no-such-host.invalid/v1", retry_budget=0)
    with pytest.raises(ToopherUnavailableError):
        api.get_authentication_status(REQUEST_ID)


def test_a_stalled_answer_times_out_as_an_outage_within_the_timeout():
    with serve(Answer(body=auth_request(), delay=3)) as server:
        api = client(server, timeout=(1.0, 0.5), retry_budget=0)
        started = time.monotonic()
        with pytest.raises(ToopherUnavailableError, match="did not answer in time"):
            api.authenticate_by_user_name("alice", "host1")
        assert time.monotonic() - started < 1.5


def test_an_answer_cut_off_mid_body_is_an_outage():
    with serve(Answer(body=auth_request(), cut_after=20)) as server:
        with pytest.raises(ToopherUnavailableError):
            client(server, retry_budget=0).authenticate_by_user_name("alice", "host1")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_an_outage(status):
    with serve(Answer(status, {"error_code": status, "error_message": "down"})) as server:
        with pytest.raises(ToopherUnavailableError) as caught:
            client(server, retry_budget=0).get_authentication_status(REQUEST_ID)
    assert caught.value.status == status


def test_a_read_is_retried_after_a_server_error():
    with serve(Answer(503, {}), Answer(body=auth_request())) as server:
        status = client(server).get_authentication_status(REQUEST_ID)
    assert status.id == REQUEST_ID and len(server.received) == 2


def test_a_push_is_not_sent_twice_after_a_server_error():
    with serve(Answer(502, {}), Answer(body=auth_request())) as server:
        with pytest.raises(ToopherUnavailableError):
            client(server).authenticate_by_user_name("alice", "host1")
    assert len(server.received) == 1


def test_429_is_retried_after_the_time_the_server_asks_for():
    with serve(Answer(429, {"error_code": 429, "error_message": "slow down"},
                      headers={"Retry-After": "1"}),
               Answer(body=auth_request())) as server:
        started = time.monotonic()
        status = client(server).authenticate_by_user_name("alice", "host1")
        waited = time.monotonic() - started
    assert status.id == REQUEST_ID and len(server.received) == 2
    assert 1.0 <= waited < 2.5


def test_429_beyond_the_retry_budget_is_an_outage_at_once():
    with serve(Answer(429, {"error_code": 429, "error_message": "slow down"},
                      headers={"Retry-After": "30"})) as server:
        started = time.monotonic()
        with pytest.raises(ToopherUnavailableError) as caught:
            client(server, retry_budget=5).authenticate_by_user_name("alice", "host1")
    assert caught.value.status == 429 and caught.value.retry_after == 30
    assert time.monotonic() - started < 1 and len(server.received) == 1


def test_retries_stop_when_the_budget_is_spent():
    with serve(Answer(500, {})) as server:
        started = time.monotonic()
        with pytest.raises(ToopherUnavailableError):
            client(server, retry_budget=2.0).get_authentication_status(REQUEST_ID)
    assert time.monotonic() - started < 2.5
    assert 2 <= len(server.received) <= 3   # 0.5 s, then 1 s of backoff fit in 2 s


# ---------------------------------------------------------------- TLS


def tls_server(tmp_path, script, alt_names="IP:127.0.0.1,DNS:localhost"):
    """A scripted HTTPS server; returns the path of the CA that signed it, and the server."""
    ca = make_ca(tmp_path, "good-ca")
    cert, key = make_server_cert(tmp_path, ca, alt_names=alt_names)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return ca[0], ScriptedServer(script, tls_context=context)


def test_tls_with_the_right_ca_bundle_works(tmp_path):
    ca_cert, server = tls_server(tmp_path, lambda r: Answer(body=auth_request()))
    with server:
        status = client(server, ca_bundle=str(ca_cert)).get_authentication_status(REQUEST_ID)
    assert status.id == REQUEST_ID and server.received[0].signature_valid


@pytest.mark.parametrize("bundle", ["other-ca", "system"])
def test_a_certificate_that_does_not_verify_is_a_tls_error_not_an_outage(tmp_path, bundle):
    other_ca, _ = make_ca(tmp_path, "other-ca")
    _, server = tls_server(tmp_path, lambda r: Answer(body=auth_request()))
    with server:
        ca_bundle = str(other_ca) if bundle == "other-ca" else None
        with pytest.raises(ToopherTLSError, match="did not verify") as caught:
            client(server, ca_bundle=ca_bundle).authenticate_by_user_name("alice", "host1")
    assert not isinstance(caught.value, ToopherUnavailableError)
    assert server.received == []


def test_a_certificate_for_another_host_is_a_tls_error(tmp_path):
    ca_cert, server = tls_server(tmp_path, lambda r: Answer(body=auth_request()),
                                 alt_names="DNS:toopher.example.org")
    with server:
        with pytest.raises(ToopherTLSError):
            client(server, ca_bundle=str(ca_cert)).get_authentication_status(REQUEST_ID)


def test_the_environment_cannot_swap_the_ca_bundle(tmp_path, monkeypatch):
    ca_cert, server = tls_server(tmp_path, lambda r: Answer(body=auth_request()))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_cert))
    with server:
        with pytest.raises(ToopherTLSError):
            client(server).get_authentication_status(REQUEST_ID)


# ---------------------------------------------------------------- secrets


def test_the_secret_appears_in_no_repr_or_error(tmp_path):
    secret = "very-secret-value-1234"
    api = ToopherApi(KEY, secret, f"http://127.0.0.1:{unused_port()}/v1", retry_budget=0)
    assert secret not in repr(api) and secret not in str(vars(api))
    with pytest.raises(ToopherUnavailableError) as caught:
        api.authenticate_by_user_name("alice", "host1")
    chain, error = [], caught.value
    while error is not None:
        chain.append(f"{error!s} {error!r}")
        error = error.__cause__ or error.__context__
    assert secret not in " ".join(chain)


def test_key_and_secret_are_required():
    with pytest.raises(ValueError):
        ToopherApi("", "secret")
    with pytest.raises(ValueError):
        ToopherApi("key", "")


# ---------------------------------------------------------------- deadline


def test_the_deadline_trims_a_long_poll_and_stops_retries():
    with serve(Answer(body=auth_request(), delay=3)) as server:
        api = client(server, timeout=(2.0, 5.0), retry_budget=10)
        api.deadline = time.monotonic() + 1.0
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError) as caught:
            api.get_authentication_status(REQUEST_ID, long_poll=10)
        assert time.monotonic() - started < 1.6
        assert len(server.received) == 1
    # The timeout that fired was our deadline, not the service's: never an
    # outage, so failmode = safe cannot grant on it.
    assert not isinstance(caught.value, ToopherUnavailableError)


def test_no_call_starts_after_the_deadline():
    with serve(Answer(body=auth_request())) as server:
        api = client(server, deadline=time.monotonic() - 1)
        with pytest.raises(DeadlineExceededError) as caught:
            api.authenticate_by_user_name("alice", "host1")
    assert not isinstance(caught.value, ToopherUnavailableError)
    assert server.received == []


# ------------------------------------------------- deadline against a trickler
#
# Timeouts bound each socket read; a server sending a byte every 0.4 s never
# trips one.  The deadline watchdog must end the call anyway.

DEADLINE = 1.5
SLACK = 0.7
ONE_BYTE_EVERY = (1, 0.4)


def watchdogs():
    return [t for t in threading.enumerate() if isinstance(t, threading.Timer)]


def client_threads():
    """Threads that are not the scripted servers' own."""
    return {t for t in threading.enumerate()
            if not t.name.endswith("(process_request_thread)") and not t.name.startswith("raw-")}


def assert_cut_at_the_deadline(api, call):
    threads = client_threads()
    api.deadline = time.monotonic() + DEADLINE
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as caught:
        call(api)
    took = time.monotonic() - started
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK
    assert not isinstance(caught.value, ToopherUnavailableError)
    # The watchdog was joined before the call returned: nothing left running.
    assert watchdogs() == []
    assert client_threads() == threads


def get_status(api):
    return api.get_authentication_status(REQUEST_ID)


@pytest.mark.parametrize("answer", [
    Answer(body=auth_request(), trickle=ONE_BYTE_EVERY),
    Answer(body=auth_request(), trickle=ONE_BYTE_EVERY, declare_length=False),
    Answer(body=auth_request(), trickle_headers=ONE_BYTE_EVERY),
], ids=["body", "body-until-close", "headers"])
def test_a_trickling_server_is_cut_off_at_the_deadline(answer):
    with serve(answer) as server:
        assert_cut_at_the_deadline(client(server), get_status)


def test_a_trickling_server_is_cut_off_at_the_deadline_over_tls(tmp_path):
    ca_cert, server = tls_server(
        tmp_path, lambda r: Answer(body=auth_request(), trickle=ONE_BYTE_EVERY))
    with server:
        assert_cut_at_the_deadline(client(server, ca_bundle=ca_cert), get_status)


def test_a_push_to_a_trickling_server_is_cut_off_at_the_deadline():
    with serve(Answer(body=auth_request(), trickle_headers=ONE_BYTE_EVERY)) as server:
        assert_cut_at_the_deadline(
            client(server), lambda api: api.authenticate_by_user_name("alice", "host1"))
    assert len(server.received) == 1   # cut short by us: never sent again


class RawServer:
    """A TCP listener that runs ``serve(connection, stopping)`` for each client."""

    def __init__(self, serve):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.connections = []

        def accept():
            while not self.stopping.is_set():
                try:
                    connection, _ = self.listener.accept()
                except OSError:
                    return
                self.connections.append(connection)
                threading.Thread(target=serve, args=(connection, self.stopping),
                                 name="raw-handler", daemon=True).start()
        self.thread = threading.Thread(target=accept, name="raw-server", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()


def silent(connection, stopping):
    stopping.wait()


def trickled_tls_handshake(connection, stopping):
    # A TLS record header announcing 16 KiB of handshake, then one byte at a
    # time: the client's handshake keeps waiting for the rest of the record.
    try:
        connection.recv(4096)
        connection.sendall(b"\x16\x03\x03\x40\x00")
        while not stopping.wait(ONE_BYTE_EVERY[1]):
            connection.sendall(b"\x02")
    except OSError:
        pass


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_server_that_accepts_but_never_answers_is_cut_off_at_the_deadline(scheme):
    with RawServer(silent) as server:
        api = ToopherApi(KEY, SECRET, f"{scheme}://127.0.0.1:{server.port}/v1",
                         timeout=(5.0, 5.0))
        assert_cut_at_the_deadline(api, get_status)


def test_a_trickled_tls_handshake_is_cut_off_at_the_deadline():
    with RawServer(trickled_tls_handshake) as server:
        api = ToopherApi(KEY, SECRET, f"https://127.0.0.1:{server.port}/v1",
                         timeout=(5.0, 5.0))
        assert_cut_at_the_deadline(api, get_status)


def test_after_the_watchdog_fired_the_next_call_gets_a_fresh_connection():
    answers = [Answer(body=auth_request()), Answer(body=auth_request()),
               Answer(body=auth_request(), trickle=ONE_BYTE_EVERY),
               Answer(body=auth_request())]
    with ScriptedServer(lambda r: answers.pop(0)) as server:
        api = client(server)
        get_status(api)
        get_status(api)
        # Kept alive between calls, so the next check means something.
        assert server.received[0].client_port == server.received[1].client_port
        assert_cut_at_the_deadline(api, get_status)
        api.deadline = time.monotonic() + 5
        assert get_status(api).id == REQUEST_ID
        assert watchdogs() == []
    cut, after = server.received[2], server.received[3]
    assert cut.client_port == server.received[1].client_port
    assert after.client_port != cut.client_port


def test_a_slow_answer_within_the_deadline_is_not_cut():
    with serve(Answer(body=auth_request(), trickle=(40, 0.05))) as server:
        api = client(server, deadline=time.monotonic() + 5)
        assert get_status(api).id == REQUEST_ID
        assert watchdogs() == []


def test_without_a_deadline_no_watchdog_runs():
    seen = []
    with serve(Answer(body=auth_request(), trickle=(40, 0.05))) as server:
        api = client(server)
        original = api._session.request

        def request(*args, **kwargs):
            seen.append(watchdogs())
            return original(*args, **kwargs)
        api._session.request = request
        threads = client_threads()
        assert get_status(api).id == REQUEST_ID
        assert client_threads() == threads
    assert seen == [[]]


def test_the_watchdog_thread_takes_no_signal_from_the_host():
    """Inside sudo the hook unblocks SIGINT to end the wait; a helper thread
    that could receive it would leave the waiting thread blocked in recv."""
    import signal

    from pam_toopher.transport import _Watch
    unblocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    try:
        watch = _Watch(30)
        try:
            status = open(f"/proc/self/task/{watch._timer.native_id}/status").read()
        finally:
            watch.stop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
    blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    assert blocked & (1 << (signal.SIGINT - 1)), hex(blocked)
