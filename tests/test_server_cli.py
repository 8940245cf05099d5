"""The toopher-server command as users see it: output lines, exit statuses, one-line errors."""
import re
import socket
import subprocess

import pytest

from pam_toopher.server.store import Store
from tests.support.server import REPO_ROOT, RunningServer, server_command, server_env
from tests.test_server_api import initiate, ok


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(server_command(*args), cwd=REPO_ROOT, env=server_env(),
                          capture_output=True, text=True, timeout=30)


def assert_one_line_error(result, status, message):
    assert result.returncode == status
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("toopher-server: error: ")
    assert message in result.stderr


@pytest.fixture(scope="module")
def server():
    with RunningServer() as running:
        yield running


def test_requester_create_and_list(tmp_path):
    db = str(tmp_path / "t.db")
    created = run("requester", "create", "Acme SSH", "--db", db)
    assert created.returncode == 0 and created.stderr == ""
    match = re.fullmatch(r"key=([A-Za-z0-9]{20})\nsecret=([A-Za-z0-9]{40})\n", created.stdout)
    assert match
    listed = run("--db", db, "requester", "list")
    assert listed.stdout == f"{match.group(1)} 'Acme SSH'\n"
    assert match.group(2) not in listed.stdout


def test_pair_and_approve_from_the_command_line(server):
    db = ("--db", server.db_path)
    api = server.client()
    phrase = run("phone", *db, "phrase", "cli-alice").stdout.strip()
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d{3}", phrase)
    pairing = ok(api.post("pairings/create", user_name="cli-alice", pairing_phrase=phrase))
    listed = run("phone", *db, "list").stdout
    assert f"pairing {pairing['id']} user=cli-alice requester='test requester'\n" in listed
    assert run("phone", *db, "accept-pairing", pairing["id"]).returncode == 0
    ok(api.post("user_terminals/create", user_name="cli-alice", name="web 1", name_extra="host1"))
    request = ok(initiate(api, "cli-alice"))
    listed = run("phone", *db, "list").stdout
    assert (f"request {request['id']} user=cli-alice terminal='web 1' action='SSH login'"
            f" requester='test requester'\n") in listed
    approved = run("phone", *db, "approve", request["id"], "--reason", "at my desk")
    assert (approved.returncode, approved.stdout, approved.stderr) == (0, "", "")
    answer = ok(api.get(f"authentication_requests/{request['id']}"))
    assert (answer["granted"], answer["reason"]) == (True, "at my desk")
    assert_one_line_error(run("phone", *db, "deny", request["id"]), 1, "is not pending")
    code = run("phone", *db, "otp", "cli-alice").stdout.strip()
    assert ok(initiate(api, "cli-alice", otp=code))["granted"] is True
    assert run("phone", *db, "rule", "cli-alice", "deny", "--delay", "0").returncode == 0
    assert ok(api.get(f"authentication_requests/{ok(initiate(api, 'cli-alice'))['id']}"))[
        "granted"] is False
    assert run("phone", *db, "unpair", "cli-alice").returncode == 0
    assert initiate(api, "cli-alice").json()["error_code"] == 707
    # Secrets and signatures never reach the log.
    assert server.secret not in server.log() and "oauth_signature" not in server.log()


def test_fault_command(server):
    assert run("fault", "--db", server.db_path, "503", "--count", "1").returncode == 0
    api = server.client()
    assert api.get("users").status_code == 503
    assert api.get("users").status_code == 200
    run("fault", "--db", server.db_path, "500", "--count", "9")
    assert run("fault", "clear", "--db", server.db_path).returncode == 0
    assert api.get("users").status_code == 200


@pytest.mark.parametrize("args, status, message", [
    (("phone", "list"), 2, "--db PATH or --database URL is required"),
    ((), 2, "required: command"),
    (("fly",), 2, "invalid choice: 'fly'"),
    (("requester", "create", "x", "--db", "/nonexistent/dir/t.db"), 1,
     "unable to open database file"),
    (("phone", "--db", "/nonexistent/t.db", "list"), 1, "no database at /nonexistent/t.db"),
    (("phone", "--db", "DB", "approve", "00000000-0000-4000-8000-000000000000"), 1,
     "No such authentication request"),
    (("phone", "--db", "DB", "otp", "nobody"), 1, "No active pairing for nobody"),
    (("fault", "--db", "DB", "slow", "--count", "0"), 1, "fault count must be at least 1"),
    (("serve", "--db", "DB", "--tls-cert", "x.pem"), 2, "--tls-cert and --tls-key go together"),
    (("serve", "--db", "DB", "--tls-cert", "/nonexistent.pem", "--tls-key", "/x.key"), 1,
     "No such file"),
])
def test_errors_are_one_line(tmp_path, args, status, message):
    db = tmp_path / "t.db"
    Store(str(db)).close()
    args = [str(db) if arg == "DB" else arg for arg in args]
    assert_one_line_error(run(*args), status, message)


def test_serve_on_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run("serve", "--db", str(tmp_path / "t.db"), "--port", str(busy.getsockname()[1]))
    assert_one_line_error(result, 1, "Address already in use")


def test_serve_prints_one_line_and_exits_cleanly_on_sigterm():
    server = RunningServer()
    try:
        server.start()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", server.url)
        server.stop()
        assert server.returncode == 0
        assert "Traceback" not in server.log()
    finally:
        server.close()


def test_call_sends_a_signed_request(server):
    result = run("call", "--url", server.url, "--key", server.key, "--secret", server.secret,
                 "GET", "users", "name=nobody")
    assert (result.returncode, result.stdout, result.stderr) == (0, "HTTP 200\n[]\n", "")
    assert_one_line_error(run("call", "--url", server.url, "--key", server.key, "--secret",
                              server.secret, "POST", "users/create", "oops"), 2, "NAME=VALUE")
