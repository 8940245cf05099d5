"""toopher-pam: what the administrator sees, with a fake and with the real server."""

import io
import os
import pwd
import socket
import subprocess

import pytest

from pam_toopher import api as toopher
from pam_toopher.cli import TerminalConversation, main, pair
from pam_toopher.config import Config, ConfigError, Secret, load_config
from pam_toopher.hook_file import render_hook, write_file_atomically
from tests.conftest import REPO_ROOT
from tests.support.fake_api import FakeClock, FakeToopher, factory_for
from tests.support.pam import config_text, write_private_file
from tests.support.server import RunningServer

ME = pwd.getpwuid(os.getuid()).pw_name
SECRET = "cli-secret-never-printed"
CONFIG = Config(path="/etc/security/toopher.conf", api_urls=("https://api.example.com/v1/",),
                consumer_key="key", consumer_secret=Secret(SECRET))


@pytest.fixture(scope="module")
def hook(tmp_path_factory):
    """A hook file naming this checkout, for check's look at the hook."""
    path = tmp_path_factory.mktemp("hook") / "pam_toopher.py"
    write_file_atomically(str(path), render_hook(str(REPO_ROOT)))
    return str(path)


class Run:
    """main() with a fake service and the fake's clock; keeps what was printed.
    The flow gets the fake's clock too: the fake compares the client's
    deadline with its own time, which must not meet the machine's uptime."""

    def __init__(self, fake=None, stdin=""):
        self.fake = fake or FakeToopher(FakeClock())
        self.stdin, self.out, self.err = io.StringIO(stdin), io.StringIO(), io.StringIO()

    def __call__(self, *argv, load=lambda path: CONFIG):
        self.code = main(list(argv), api_factory=factory_for(self.fake), load=load,
                         stdin=self.stdin, stdout=self.out, stderr=self.err,
                         clock=self.fake.clock)
        return self

    @property
    def output(self):
        return self.out.getvalue()

    @property
    def error(self):
        return self.err.getvalue()


def test_check_passes_when_the_service_knows_the_signature(hook):
    run = Run()
    run.fake.pairing = "unpaired"  # the dummy user is unknown: credentials worked
    run("check", "--hook", hook)
    assert run.code == 0, run.error
    assert run.output == (f"{hook}: loads {REPO_ROOT}/pam_toopher as sshd runs it\n"
                          "/etc/security/toopher.conf: syntax and permissions (file and "
                          "directories) OK\n"
                          "https://api.example.com/v1/: credentials accepted\n")
    assert run.fake.calls == [("find_user_by_name", "toopher-pam-credentials-check")]


@pytest.mark.parametrize("error, line", [
    (toopher.ToopherApiError("Not a valid OAuth signed request", status=401),
     "toopher-pam: error: https://api.example.com/v1/ refused the credentials (HTTP 401): "
     "check consumer_key and consumer_secret\n"),
    (toopher.ToopherTLSError("the certificate of https://api.example.com did not verify"),
     "toopher-pam: error: https://api.example.com/v1/: the certificate of "
     "https://api.example.com did not verify; check ca_bundle (not set: the system CAs are "
     "used)\n"),
    (toopher.ToopherUnavailableError("could not reach https://api.example.com"),
     "toopher-pam: error: https://api.example.com/v1/: cannot reach the service: could not "
     "reach https://api.example.com\n"),
])
def test_check_says_exactly_what_is_wrong(error, line, hook):
    run = Run()
    run.fake.error = error
    run("check", "--hook", hook)
    assert run.code == 1
    assert run.error == line
    assert SECRET not in run.output + run.error


def test_check_reports_a_hook_that_does_not_load_as_sshd_runs_it(tmp_path):
    """The hook names a directory whose package does not import (a copy
    elsewhere on the machine, such as the .deb's, must not hide that)."""
    (tmp_path / "site" / "pam_toopher").mkdir(parents=True)
    (tmp_path / "site" / "pam_toopher" / "__init__.py").write_text(
        "raise ImportError('a broken install')\n")
    broken = tmp_path / "pam_toopher.py"
    write_file_atomically(str(broken), render_hook(str(tmp_path / "site")))
    run = Run()
    run("check", "--hook", str(broken))
    assert run.code == 1 and run.output == ""
    assert run.error.startswith(f"toopher-pam: error: {broken} does not load as sshd runs it: "
                                "cannot import pam_toopher (ImportError: a broken install); "
                                "sys.path=['/lib/python311.zip', '/lib/python3.11', "), run.error
    assert run.fake.calls == []
    run("check", "--hook", str(tmp_path / "missing.py"))
    assert run.error.endswith(f"{tmp_path}/missing.py: no such file; run: toopher-pam "
                              f"install-hook {tmp_path}/missing.py\n")


def test_check_calls_each_service_url_on_its_own(hook):
    run = Run()
    run.fake.pairing = "unpaired"
    urls = ("https://a.example.com/v1/", "https://b.example.com/v1/")
    seen = []
    factory = factory_for(run.fake)

    def each(config):
        seen.append(config.api_urls)
        return factory(config)
    run.code = main(["check", "--hook", hook], api_factory=each,
                    load=lambda path: CONFIG._replace(api_urls=urls),
                    stdin=run.stdin, stdout=run.out, stderr=run.err)
    assert run.code == 0, run.error
    assert seen == [(urls[0],), (urls[1],)]              # never both in one client
    assert run.output.endswith("https://a.example.com/v1/: credentials accepted\n"
                               "https://b.example.com/v1/: credentials accepted\n")


def test_a_config_error_is_one_line():
    def broken(path):
        raise ConfigError(f"{path}, line 4: unknown key 'colour'")
    run = Run()("--config", "/etc/x.conf", "check", load=broken)
    assert run.code == 1
    assert run.error == "toopher-pam: error: /etc/x.conf, line 4: unknown key 'colour'\n"


def test_a_real_missing_config_gives_one_line_and_no_traceback():
    result = subprocess.run(["/usr/bin/python3", "-m", "pam_toopher.cli", "--config",
                             "/nonexistent/toopher.conf", "check"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("toopher-pam: error: /nonexistent/toopher.conf: no such "
                                    "file")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_pair_with_a_phrase():
    run = Run()("pair", "alice", "--phrase", "correct horse")
    assert run.code == 0, run.error
    assert "Waiting up to 90 s for alice to accept" in run.output
    assert run.output.endswith("alice is paired.\n")


def test_pair_asks_for_the_phrase():
    run = Run(stdin="correct horse\n")("pair", "alice")
    assert run.code == 0, run.error
    assert run.output.startswith("Pairing phrase shown in alice's Toopher app: ")
    assert run.fake.calls[0] == ("pair", "correct horse", "alice")


def test_pair_refused_phrase_and_refused_phone():
    run = Run()("pair", "alice", "--phrase", "wrong")
    assert (run.code, run.error) == (1, "toopher-pam: error: unknown pairing phrase "
                                        "(HTTP 400, error 400)\n")
    run = Run()
    run.fake.pairing_answer = "refuse"
    run("pair", "alice", "--phrase", "correct horse")
    assert (run.code, run.error) == (1, "toopher-pam: error: the pairing was refused on "
                                        "alice's phone\n")


def test_pair_shows_progress_and_gives_up_at_the_timeout():
    clock = FakeClock()
    fake = FakeToopher(clock)
    fake.pairing_answer = "never"
    fake.pair("correct horse", "alice")  # only to make the pairing id
    out = io.StringIO()
    from pam_toopher.cli import CliError
    with pytest.raises(CliError, match="did not accept the pairing within 25 s"):
        pair(fake, "alice", "correct horse", out, timeout=25, clock=clock)
    assert "still waiting (15 s left)" in out.getvalue()
    assert "still waiting (5 s left)" in out.getvalue()


def test_status_enable_disable_reset():
    run = Run()
    run("status", "alice")
    assert run.output == "user: alice\nid: u1\nToopher enabled: yes\n"
    run("disable", "alice")
    assert run.fake.pairing == "disabled" and "Toopher disabled for alice." in run.output
    run("enable", "alice")
    assert run.fake.pairing == "paired" and "Toopher enabled for alice." in run.output
    run("reset", "alice")
    assert run.fake.pairing == "unpaired" and "alice must pair again" in run.output
    run("status", "alice")
    assert run.code == 1
    assert run.error == ("toopher-pam: error: alice is not known to Toopher (never paired); "
                         "run: toopher-pam pair alice\n")


@pytest.mark.parametrize("phone, answer, code, outcome", [
    ("approve", "", 0, "granted"),
    ("deny", "", 1, "denied"),
    ("never", "123456", 0, "granted"),
    ("never", "000000", 1, "wrong_otp"),
])
def test_the_test_command_runs_the_module_flow(phone, answer, code, outcome, tmp_path):
    run = Run(stdin=answer + "\n")
    run.fake.phone = phone
    # Recorded like a real login (a grant recorded nowhere is refused): in a file.
    audited = CONFIG._replace(audit_log=str(tmp_path / "audit.log"))
    run("test", ME, "--service", "sshd", "--rhost", "192.0.2.1", load=lambda path: audited)
    assert f"outcome={outcome} " in (tmp_path / "audit.log").read_text()
    assert run.code == code
    assert f"outcome: {outcome} " in run.output
    assert "approve the request on your phone" in run.output
    assert run.fake.calls[0][3] == "sshd login from 192.0.2.1"


def test_terminal_conversation_sanitizes_what_it_shows():
    out, err = io.StringIO(), io.StringIO()
    talk = TerminalConversation(io.StringIO(""), out, err)
    talk.info("hi\x1b[2J")
    talk.error("no\x07")
    assert talk.prompt_echo_on("code\x1b: ") is None  # end of input
    assert out.getvalue() == "hi\\x1b[2J\ncode\\x1b: " and err.getvalue() == "no\\x07\n"


# ------------------------------------------------- against the real server

@pytest.fixture(scope="module")
def srv():
    with RunningServer(tls=True) as server:  # the module's config refuses impersonable http
        yield server


def _config_file(tmp_path, server, secret=None, **options):
    text = config_text(dict(dict(api_url=server.url, consumer_key=server.key,
                                 consumer_secret=secret or server.secret,
                                 ca_bundle=server.ca_cert_path), **options))
    return str(write_private_file(tmp_path / "toopher.conf", text))


def _load(path):  # a non-root developer owns the file; the rest is checked
    return load_config(path, require_root_owner=os.geteuid() == 0)


def test_check_against_the_real_server(tmp_path, srv, hook):
    run = Run()
    run.code = main(["--config", _config_file(tmp_path, srv), "check", "--hook", hook],
                    load=_load,
                    stdout=run.out, stderr=run.err)
    assert run.code == 0, run.error
    assert run.output.endswith(": credentials accepted\n")


def test_check_reports_the_ca_bundle_and_warns_about_an_unsafe_audit_file(tmp_path, srv, hook):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    path = _config_file(tmp_path, srv, audit_log=shared / "audit.log")
    run = Run()
    run.code = main(["--config", path, "check", "--hook", hook], load=_load,
                    stdout=run.out, stderr=run.err)
    assert run.code == 0, run.error
    assert f"ca_bundle {srv.ca_cert_path}: permissions (file and directories) OK" in run.output
    assert (f"warning: audit_log {shared}/audit.log will not be written (directory {shared} is "
            "writable by group or others (mode 0777)") in run.output


def test_check_refuses_an_impersonable_url(tmp_path, srv, hook):
    path = _config_file(tmp_path, srv, api_url="http://localhost:8765/v1")
    run = Run()
    run.code = main(["--config", path, "check", "--hook", hook], load=_load,
                    stdout=run.out, stderr=run.err)
    assert run.code == 1 and "syntax" not in run.output
    assert "key 'api_url' must use https://" in run.error and "localhost" in run.error


def test_check_reports_each_urls_state_and_fails_naming_the_broken_ones(tmp_path, srv, hook):
    with RunningServer(tls=True) as other:   # another database, and a CA not in the bundle
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            dead = f"https://127.0.0.1:{sock.getsockname()[1]}/v1"
        path = _config_file(tmp_path, srv, api_url=f"{srv.url} {dead} {other.url}")
        run = Run()
        run.code = main(["--config", path, "check", "--hook", hook], load=_load, stdout=run.out, stderr=run.err)
        assert run.code == 1
        lines = run.output.splitlines()[-3:]
        assert lines[0] == f"{srv.url}: credentials accepted"
        assert lines[1].startswith(f"{dead}: cannot reach the service: could not reach ")
        assert lines[2].startswith(f"{other.url}: the certificate of ") and "check ca_bundle" in lines[2]
        assert run.error == (f"toopher-pam: error: 2 of 3 service URLs failed the check: "
                             f"{dead} (unreachable), {other.url} (TLS error)\n")

        # With both CAs trusted, the other instance answers, and refuses srv's credentials.
        bundle = write_private_file(tmp_path / "cas.pem", open(srv.ca_cert_path).read()
                                    + open(other.ca_cert_path).read(), mode=0o644)
        path = _config_file(tmp_path, srv, api_url=f"{other.url} {srv.url}", ca_bundle=bundle)
        run = Run()
        run.code = main(["--config", path, "check", "--hook", hook], load=_load, stdout=run.out, stderr=run.err)
    assert run.code == 1
    assert run.output.splitlines()[-2:] == [
        f"{other.url} refused the credentials (HTTP 401): check consumer_key and consumer_secret",
        f"{srv.url}: credentials accepted"]
    assert run.error == (f"toopher-pam: error: 1 of 2 service URLs failed the check: "
                         f"{other.url} (refused credentials)\n")
    assert srv.secret not in run.output + run.error


def test_check_with_a_wrong_secret_against_the_real_server(tmp_path, srv, hook):
    run = Run()
    run.code = main(["--config", _config_file(tmp_path, srv, secret="wrong"), "check",
                     "--hook", hook],
                    load=_load, stdout=run.out, stderr=run.err)
    assert run.code == 1
    assert "refused the credentials (HTTP 401)" in run.error


def test_pair_and_status_against_the_real_server(tmp_path, srv):
    path = _config_file(tmp_path, srv)
    srv.phone.set_pairing_rule("carol", "accept", delay=1.2)
    run = Run()
    run.code = main(["--config", path, "pair", "carol", "--phrase",
                     srv.phone.make_pairing_phrase("carol")], load=_load,
                    stdout=run.out, stderr=run.err)
    assert run.code == 0, run.error
    assert "carol is paired." in run.output
    run.code = main(["--config", path, "status", "carol"], load=_load, stdout=run.out,
                    stderr=run.err)
    assert "user: carol" in run.output and "Toopher enabled: yes" in run.output
