"""Failover across several service URLs (issue 13), at the client, over
real loopback servers: the project's server over https with its test CA,
and scripted or hostile servers for what it does not do on its own.

An outage of one URL moves the call to the next only when the call may be
sent again (a read, or a request that surely was not processed); a TLS
failure, a refusal, a malformed answer or a lost answer never does: each
test that says so checks the next URL received nothing.
"""
import socket
import time
import uuid

import pytest

from pam_toopher.client import ToopherApi, preference_order
from pam_toopher.errors import (AnswerLostError, DeadlineExceededError, MalformedResponseError,
                                ToopherRefusedError, ToopherTLSError, ToopherUnavailableError,
                                UserUnknownError)
from pam_toopher.transport import may_send_again
from tests.support.hostile_tcp import HostileServer, read_request
from tests.support.scripted_http import KEY, SECRET, Answer, ScriptedServer
from tests.support.server import RunningServer
from tests.test_api import auth_request

SERVER_TLS = True   # the srv fixture (tests/conftest.py) serves https
REQUEST_ID = str(uuid.uuid4())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_url(scheme: str = "https") -> str:
    """A URL where nothing listens: the connection is refused."""
    return f"{scheme}://127.0.0.1:{closed_port()}/v1"


def unique(prefix: str = "fo") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def first():
    """Another instance with its own database and CA: the first URL, made to
    misbehave with its fault switches (or to refuse srv's credentials)."""
    with RunningServer(tls=True) as server:
        yield server


@pytest.fixture
def server(srv, first):
    srv.phone.clear_faults()
    first.phone.clear_faults()
    return srv


@pytest.fixture
def both_cas(tmp_path, srv, first):
    """A CA bundle that verifies both instances."""
    bundle = tmp_path / "both-cas.pem"
    bundle.write_text(open(srv.ca_cert_path).read() + open(first.ca_cert_path).read())
    return str(bundle)


@pytest.fixture
def recorder():
    """A next URL that answers every call and records it: proves whether a
    call was failed over to it."""
    with ScriptedServer(lambda received: Answer(body=auth_request(REQUEST_ID))) as server:
        yield server


def api_of(urls, key=KEY, secret=SECRET, **kwargs):
    kwargs.setdefault("timeout", (2.0, 5.0))
    kwargs.setdefault("retry_budget", 3.0)
    return ToopherApi(key, secret, urls, **kwargs)


def srv_api(server, urls, **kwargs):
    return api_of(urls, server.key, server.secret, **kwargs)


def paired_request(server, api, user):
    """A pending authentication request for a paired ``user``, made through ``api``."""
    pairing = api.pair(server.phone.make_pairing_phrase(user), user)
    server.phone.accept_pairing(pairing.id)
    return api.authenticate(pairing.id, "host-1", "log in")


# ------------------------------------------------------------ the decision


@pytest.mark.parametrize("error, idempotent, expected", [
    (ToopherUnavailableError("refused", not_processed=True), False, True),
    (ToopherUnavailableError("429", status=429, not_processed=True), False, True),
    (ToopherUnavailableError("503", status=503), True, True),
    (ToopherUnavailableError("503", status=503), False, False),    # a POST maybe processed
    (ToopherUnavailableError("no answer in time"), False, False),
    (ToopherTLSError("certificate"), True, False),
    (ToopherRefusedError("401", status=401), True, False),
    (MalformedResponseError("html"), True, False),
    (AnswerLostError("closed"), False, False),
    (DeadlineExceededError("deadline"), True, False),
])
def test_what_may_be_sent_to_another_instance(error, idempotent, expected):
    assert may_send_again(error, idempotent) is expected


def test_the_instance_that_answered_last_is_tried_first():
    assert preference_order(1, 0) == (0,)
    assert preference_order(3, 0) == (0, 1, 2)
    assert preference_order(3, 2) == (2, 0, 1)


def test_one_url_keeps_the_single_url_client():
    api = ToopherApi(KEY, SECRET, "https://a.example.com/v1")
    assert (api.api_url, api.api_urls) == ("https://a.example.com/v1/",
                                           ("https://a.example.com/v1/",))
    several = ToopherApi(KEY, SECRET, ["https://a.example.com/v1", "https://b.example.com/v1/"])
    assert several.api_url == "https://a.example.com/v1/"
    assert several.api_urls[1] == "https://b.example.com/v1/" and several.failover_url() is None
    with pytest.raises(ValueError):
        ToopherApi(KEY, SECRET, [])


# ----------------------------------------- outages: the next URL answers


def test_a_refused_first_url_fails_over_and_the_login_completes_on_the_next(server):
    user = unique()
    api = srv_api(server, [dead_url(), server.url], ca_bundle=server.ca_cert_path)
    started = time.monotonic()
    request = paired_request(server, api, user)          # three POSTs, each failed over
    assert time.monotonic() - started < 2.0             # no backoff before the next URL
    assert request.pending and api.failover_url() == server.url + "/"
    server.phone.approve(request.id)
    status = api.get_authentication_status(request.id)
    assert status.granted and status.id == request.id


@pytest.mark.parametrize("fault", ["500", "502", "503", "429", "truncate"])
def test_an_outage_of_the_first_url_on_a_read_fails_over(server, first, both_cas, fault):
    user = unique()
    request = paired_request(server, srv_api(server, server.url,
                                             ca_bundle=server.ca_cert_path), user)
    first.phone.fault(fault, count=1, seconds=1)
    api = srv_api(server, [first.url, server.url], ca_bundle=both_cas)
    assert api.get_authentication_status(request.id).id == request.id
    assert api.failover_url() == server.url + "/"
    assert first.query("SELECT count(*) FROM faults")[0][0] == 0   # the first one was asked


def test_a_push_answered_429_is_sent_to_the_next_url(server, first, both_cas):
    # 429: the service did not process the request, so even a POST may move on.
    user = unique()
    setup = srv_api(server, server.url, ca_bundle=server.ca_cert_path)
    pairing = setup.pair(server.phone.make_pairing_phrase(user), user)
    server.phone.accept_pairing(pairing.id)
    first.phone.fault("429", count=1, seconds=1)
    api = srv_api(server, [first.url, server.url], ca_bundle=both_cas)
    request = api.authenticate(pairing.id, "host-1", "log in")
    assert request.pending and [r["id"] for r in server.phone.pending_requests(user)] == [
        request.id]                                      # exactly one push


def test_a_read_that_times_out_fails_over():
    with ScriptedServer(lambda r: Answer(body=auth_request(REQUEST_ID), delay=3)) as slow, \
            ScriptedServer(lambda r: Answer(body=auth_request(REQUEST_ID))) as fast:
        api = api_of([slow.url, fast.url], timeout=(1.0, 0.5), retry_budget=0)
        assert api.get_authentication_status(REQUEST_ID).id == REQUEST_ID
    assert len(slow.received) == 1 and len(fast.received) == 1


def test_each_attempt_is_signed_for_its_own_url():
    with ScriptedServer(lambda r: Answer(status=503, body={"error_code": 503})) as down, \
            ScriptedServer(lambda r: Answer(body=auth_request(REQUEST_ID))) as up:
        api_of([down.url, up.url]).get_authentication_status(REQUEST_ID)
    # Each server checks the signature against its own URL.
    assert [r.signature_valid for r in down.received + up.received] == [True, True]
    nonces = {r.headers["Authorization"].split('oauth_nonce="')[1].split('"')[0]
              for r in down.received + up.received}
    assert len(nonces) == 2


def test_the_polls_of_a_login_go_to_the_url_that_answered_last():
    answers = iter([Answer(status=503, body={"error_code": 503})])

    def flaky(received):
        return next(answers, Answer(body=auth_request(REQUEST_ID)))
    with ScriptedServer(flaky) as a, \
            ScriptedServer(lambda r: Answer(body=auth_request(REQUEST_ID))) as b:
        api = api_of([a.url, b.url])
        for _ in range(3):
            api.get_authentication_status(REQUEST_ID)
        assert (len(a.received), len(b.received)) == (1, 3)
        # A new client (the next login) starts from the first URL again.
        api_of([a.url, b.url]).get_authentication_status(REQUEST_ID)
    assert (len(a.received), len(b.received)) == (2, 3)


def test_an_instance_that_refused_is_up_and_asked_first_next_time():
    # After a failover, the next instance's refusal (706: register the
    # terminal first) is its answer: the calls that follow go to it first.
    answers = iter([Answer(status=429, body={"error_code": 429})])

    def flaky(received):
        return next(answers, Answer(body=auth_request(REQUEST_ID)))

    def refuse_pushes(received):
        if received.method == "POST":
            return Answer(status=404, body={"error_code": 706, "error_message": "unknown"})
        return Answer(body=auth_request(REQUEST_ID))
    with ScriptedServer(flaky) as a, ScriptedServer(refuse_pushes) as b:
        api = api_of([a.url, b.url])
        with pytest.raises(ToopherRefusedError):
            api.authenticate_by_user_name("alice", "host-1")    # a: 429, b: 706
        api.get_authentication_status(REQUEST_ID)
    assert (len(a.received), [r.method for r in b.received]) == (1, ["POST", "GET"])


def test_a_status_poll_may_go_to_another_instance_of_the_same_database():
    """Two server processes on one database: the push goes through the
    first, which then dies; the poll is answered by the second."""
    with RunningServer() as one, RunningServer(directory=str(one.directory)) as two:
        user = unique()
        api = api_of([one.url, two.url], one.key, one.secret)
        request = paired_request(one, api, user)
        assert api.failover_url() is None
        one.stop()
        one.phone.approve(request.id)
        status = api.get_authentication_status(request.id)
        assert status.granted and api.failover_url() == two.url + "/"


# ----------------------------------------------- never moved to the next


def test_a_tls_failure_never_fails_over(server, first, recorder):
    # first's certificate is from a CA the bundle does not hold: someone may
    # be in the middle, and another URL answering would hide it.
    api = api_of([first.url, recorder.url], ca_bundle=server.ca_cert_path)
    with pytest.raises(ToopherTLSError):
        api.get_authentication_status(REQUEST_ID)
    with pytest.raises(ToopherTLSError):
        api.authenticate_with_otp(REQUEST_ID, "123456")
    assert recorder.received == [] and api.failover_url() is None


def test_refused_credentials_never_fail_over(server, first, both_cas, recorder):
    # first does not know srv's requester: 401, as every instance would say.
    api = srv_api(server, [first.url, recorder.url], ca_bundle=both_cas)
    with pytest.raises(ToopherRefusedError) as caught:
        api.get_authentication_status(REQUEST_ID)
    assert caught.value.status == 401 and recorder.received == []


def test_a_refusal_is_the_services_answer(server, both_cas, recorder):
    api = srv_api(server, [server.url, recorder.url], ca_bundle=both_cas)
    with pytest.raises(UserUnknownError):
        api.authenticate_by_user_name(unique(), "host-1")
    assert recorder.received == []


def test_a_malformed_answer_never_fails_over(server, first, both_cas, recorder):
    first.phone.fault("html", count=1)
    api = srv_api(server, [first.url, recorder.url], ca_bundle=both_cas)
    with pytest.raises(MalformedResponseError):
        api.get_authentication_status(REQUEST_ID)
    assert recorder.received == []


def test_bytes_that_are_not_http_never_fail_over(recorder):
    def garbage(connection):
        read_request(connection)
        connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    with HostileServer(garbage) as hostile:
        api = api_of([hostile.url(), recorder.url])
        with pytest.raises(MalformedResponseError):
            api.get_authentication_status(REQUEST_ID)
    assert recorder.received == []


def test_a_post_lost_before_any_answer_never_fails_over(recorder):
    # The first instance may have sent the push: a second one would send another.
    with ScriptedServer(lambda r: Answer(drop=True)) as losing:
        api = api_of([losing.url, recorder.url])
        with pytest.raises(AnswerLostError):
            api.authenticate_by_user_name("alice", "host-1")
    assert len(losing.received) == 1 and recorder.received == []


@pytest.mark.parametrize("fault", ["503", "truncate"])
def test_a_post_that_may_have_been_processed_is_not_sent_to_the_next(server, first, both_cas,
                                                                     recorder, fault):
    # A 5xx or an answer cut mid-body: the push may exist at the first
    # instance.  An outage still (failmode applies), but only that one URL's.
    first.phone.fault(fault, count=1)
    api = srv_api(server, [first.url, recorder.url], ca_bundle=both_cas)
    with pytest.raises(ToopherUnavailableError) as caught:
        api.authenticate_by_user_name(unique(), "host-1")
    assert recorder.received == [] and "no service URL answered" not in str(caught.value)


# ------------------------------------------------ every URL down, deadline


def test_every_url_down_is_one_outage_naming_each_within_the_deadline():
    with ScriptedServer(lambda r: Answer(status=503, body={"error_code": 503})) as down:
        dead = dead_url("http")
        api = api_of([dead, down.url], retry_budget=30)
        api.deadline = time.monotonic() + 3.0
        started = time.monotonic()
        with pytest.raises(ToopherUnavailableError) as caught:
            api.get_authentication_status(REQUEST_ID)
        took = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith("no service URL answered: could not reach " + dead.rsplit("/", 1)[0])
    assert f"{down.url.rsplit('/', 1)[0]}: " in message and "HTTP 503" in message
    assert took < 3.0 and len(down.received) >= 2      # rounds, with backoff, in time


def test_every_url_refusing_connections_is_an_outage_for_a_push_too():
    api = api_of([dead_url("http"), dead_url("http")], retry_budget=0)
    with pytest.raises(ToopherUnavailableError) as caught:
        api.authenticate_by_user_name("alice", "host-1")
    assert caught.value.not_processed and str(caught.value).count("could not reach") == 2


def test_the_deadline_bounds_the_whole_failover():
    # The first URL takes 1 s to say 503; the second never answers: the call
    # ends at the deadline, as our own limit (a timeout, never an outage).
    with ScriptedServer(lambda r: Answer(status=503, body={}, delay=1.0)) as slow_down, \
            ScriptedServer(lambda r: Answer(body=auth_request(REQUEST_ID), delay=30)) as stall:
        api = api_of([slow_down.url, stall.url], timeout=(5.0, 20.0), retry_budget=30)
        api.deadline = time.monotonic() + 2.0
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            api.get_authentication_status(REQUEST_ID)
        took = time.monotonic() - started
        assert len(slow_down.received) == 1 and len(stall.received) == 1
    assert 1.9 < took < 2.7, took


def test_no_next_url_is_tried_after_the_deadline():
    with ScriptedServer(lambda r: Answer(status=503, body={}, delay=1.2)) as slow_down, \
            ScriptedServer(lambda r: Answer(body=auth_request(REQUEST_ID))) as up:
        api = api_of([slow_down.url, up.url], timeout=(5.0, 20.0))
        api.deadline = time.monotonic() + 1.0
        with pytest.raises(DeadlineExceededError):
            api.get_authentication_status(REQUEST_ID)
    assert up.received == []
