"""Bad input gets a 4xx JSON answer and changes nothing; fault switches; TLS."""
import json
import socket
import time

import pytest
import requests
from requests_oauthlib import OAuth1

from tests.support.server import RunningServer
from tests.test_server_api import ok, paired_with_terminal


@pytest.fixture(scope="module")
def server():
    with RunningServer() as running:
        api = running.client()
        paired_with_terminal(running, api, "robust")
        api.close()
        yield running


def raw(server, request: bytes) -> tuple:
    """Send bytes, return (status, headers, body bytes) of the answer."""
    host, port = server.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if line)
            if "Content-Length" in headers and len(body) >= int(headers["Content-Length"]):
                break
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def http(method: str, path: str, body: bytes = b"", headers=()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding"))
                        for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


FORM = "Content-Type: application/x-www-form-urlencoded"
INITIATE = "/v1/authentication_requests/initiate"

BAD_REQUESTS = {
    "malformed body": (400, http("POST", INITIATE, b"user_name=robust&&x", [FORM])),
    "field without value": (400, http("POST", INITIATE, b"user_name", [FORM])),
    "invalid utf-8 body": (400, http("POST", INITIATE, b"user_name=\xff\xfe", [FORM])),
    "invalid utf-8 escape": (400, http("POST", INITIATE, b"user_name=%ff", [FORM])),
    "invalid utf-8 query": (400, http("GET", "/v1/users?name=%c3%28")),
    "huge body": (413, http("POST", INITIATE, b"a=" + b"x" * 70000, [FORM])),
    "huge declared body": (413, http("POST", INITIATE, b"", [FORM, "Content-Length: 999999999"])),
    "bad content length": (400, http("POST", INITIATE, b"", [FORM, "Content-Length: -5"])),
    "chunked body": (411, http("POST", INITIATE, b"0\r\n\r\n", [FORM, "Transfer-Encoding: chunked"])),
    "json body": (415, http("POST", INITIATE, b'{"user_name": "robust"}',
                            ["Content-Type: application/json"])),
    "unknown path": (404, http("GET", "/v1/nothing/here")),
    "outside /v1": (404, http("GET", "/admin")),
    "unknown method": (405, http("BREW", "/v1/users")),
    "wrong method": (405, http("DELETE", "/v1/users/create")),
    "post on get path": (405, http("POST", "/v1/users", b"name=x", [FORM])),
    "garbage request line": (400, b"\x16\x03\x01 garbage\r\n\r\n"),
    "bad http version": (400, b"GET /v1/users HTTX/1.1\r\n\r\n"),
    "unsigned": (401, http("POST", INITIATE, b"user_name=robust&terminal_name_extra=h", [FORM])),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_input_gets_a_json_4xx_and_changes_nothing(server, case):
    expected_status, request = BAD_REQUESTS[case]
    before = server.snapshot()
    status, headers, body = raw(server, request)
    assert status == expected_status
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert answer["error_code"] == expected_status and answer["error_message"]
    assert server.snapshot() == before
    assert "Traceback" not in server.log() and "connection error" not in server.log()


@pytest.mark.parametrize("params", [
    {"user_name": "robust", "terminal_name_extra": "h", "action_name": "x" * 10000},
    {"user_name": "robust", "terminal_name_extra": "h", "challenge_required": "perhaps"},
    {"user_name": "robust", "pairing_id": "also", "terminal_name": "h"},
    {"user_name": "", "pairing_id": ""},
])
def test_signed_bad_parameters_get_400_and_change_nothing(server, params):
    before = server.snapshot()
    response = server.client().post("authentication_requests/initiate", **params)
    assert response.status_code == 400
    assert response.json()["error_code"] == 400
    assert server.snapshot() == before


# -- fault switches -------------------------------------------------------------------

@pytest.fixture
def faults(server):
    yield server.phone
    server.phone.clear_faults()


def test_slow_fault(server, faults):
    faults.fault("slow", count=1, seconds=0.5)
    started = time.monotonic()
    assert ok(server.client().get("users", name="robust"))[0]["name"] == "robust"
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    ok(server.client().get("users"))
    assert time.monotonic() - started < 0.3


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_faults_count_down(server, faults, status):
    faults.fault(str(status), count=2)
    api = server.client()
    for _ in range(2):
        response = api.get("users")
        assert response.status_code == status
        assert response.json() == {"error_code": status, "error_message": "Simulated server error"}
    assert api.get("users").status_code == 200


def test_429_fault_says_when_to_retry(server, faults):
    faults.fault("429", seconds=3)
    response = server.client().get("users")
    assert (response.status_code, response.headers["Retry-After"]) == (429, "3")
    assert response.json()["error_code"] == 429


def test_html_fault(server, faults):
    faults.fault("html")
    response = server.client().get("users")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html"
    with pytest.raises(ValueError):
        response.json()


def test_truncate_fault_cuts_the_body(server, faults):
    faults.fault("truncate")
    status, headers, body = raw(server, http("GET", "/v1/users"))
    assert status == 200 and int(headers["Content-Length"]) > len(body)


def test_fault_does_not_change_state_and_clear_faults(server, faults):
    faults.fault("503", count=5)
    before = server.snapshot()
    assert server.client().post("users/create", name="never-created").status_code == 503
    assert server.snapshot() == before
    faults.clear_faults()
    assert server.client().post("users/create", name="created").status_code == 200


# -- TLS ------------------------------------------------------------------------------

def test_tls_server_with_trusted_and_untrusted_ca():
    with RunningServer(tls=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        auth = OAuth1(server.key, server.secret)
        response = requests.get(f"{server.url}/users", auth=auth, verify=server.ca_cert_path,
                                timeout=10)
        assert (response.status_code, response.json()) == (200, [])
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.url}/users", auth=auth, verify=server.untrusted_ca_cert_path,
                         timeout=10)
        # The refused handshake did not hurt the server.
        assert requests.get(f"{server.url}/users", auth=auth, verify=server.ca_cert_path,
                            timeout=10).status_code == 200
