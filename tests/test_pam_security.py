"""Issue 14's module-side findings, each through the real PAM library
(pamtester) or the real sudo, with an unprivileged local user as attacker."""

import os
import socket
import subprocess
import time

import pytest

from tests.support.impostor import Impostor
from tests.support.server import RunningServer
from tests.test_pam import ready, settings

pytestmark = pytest.mark.usefixtures("root_only")
SERVER_TLS = True  # srv (tests/conftest.py) over https


def free_port(family=socket.AF_INET, host="127.0.0.1", below=None):
    """A port free on ``host``; with ``below``, a privileged one."""
    candidates = range(below - 1, 600, -1) if below else [0]
    for port in candidates:
        with socket.socket(family) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


# ------------------------------------------ item 1: loopback http impersonation

def refused_as_impersonable(scene, impostor, url, words):
    scene.install_service(args=[f"audit_log={scene.audit_path}"])
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_SERVICE_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "config_error", audit
    assert url in audit["reason"] or "api_url" in audit["reason"]
    assert "must use https://" in audit["reason"] and words in audit["reason"], audit
    assert impostor.requests() == []  # never even asked


def test_a_users_server_on_ipv6_localhost_is_not_believed(scene):
    """The real server holds 127.0.0.1:P over plain http; a local user
    answers on [::1]:P, which the name localhost means too (and first)."""
    with RunningServer() as plain, Impostor("::1", plain.port) as impostor:
        url = f"http://localhost:{plain.port}/v1"
        ready(scene, plain, rule="deny", failmode="safe", api_url=url, ca_bundle=None)
        refused_as_impersonable(scene, impostor, url, "not to the name localhost")
        url = f"http://[::1]:{plain.port}/v1"
        scene.audit_path.unlink()
        scene.write_config(**settings(plain, failmode="safe", ca_bundle=None, api_url=url))
        refused_as_impersonable(scene, impostor, url, f"port {plain.port} can be served by any")


def test_a_users_server_on_a_freed_loopback_port_is_not_believed(scene, srv):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with Impostor("127.0.0.1", port) as impostor:
        ready(scene, srv, rule="deny", failmode="safe", api_url=url, ca_bundle=None)
        refused_as_impersonable(scene, impostor, url, f"port {port} can be served by any")


def test_the_impostor_would_grant_to_a_module_that_believed_it(scene, srv):
    """The tests above can fail: the impostor does answer 'granted'."""
    from pam_toopher.api import ToopherApi

    port = free_port()
    with Impostor("127.0.0.1", port) as impostor, \
            ToopherApi("k", "s", f"http://127.0.0.1:{port}/v1") as api:
        status = api.authenticate("alice", "host1", action_name="log in")
        assert status.granted and not status.pending
        assert impostor.requests()


def test_plain_http_to_a_port_only_root_can_bind_is_accepted(scene, tmp_path):
    from pam_toopher.config import unprivileged_port_start

    start = unprivileged_port_start()
    with RunningServer() as plain:  # started once to make its requester, then moved
        plain.stop()
        plain.port = free_port(below=start)
        plain.start()
        assert plain.url == f"http://127.0.0.1:{plain.port}/v1" and plain.port < start
        ready(scene, plain, ca_bundle=None)
        result = scene.pamtester([scene.user.password, ""])
    assert result.ok, result
    assert scene.audit()["outcome"] == "granted"


# --------------------------------------- items 6 and 7: the audit file in sudo

def spawn_sudo_with(srv, scene, command, prefix=(), shell_setup="", timeout=30):
    """The phone set to approve, then sudo -k -S COMMAND as the scene's user
    on a pty, after ``shell_setup``
    (e.g. ``ulimit -f 0``) run as that user, optionally under ``prefix``
    (the mount namespace in which /dev/log is the test's socket)."""
    import pwd

    import pexpect

    srv.phone.set_rule(scene.user.name, "approve", delay=0.2)
    entry = pwd.getpwnam(scene.user.name)
    argv = [*prefix, "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
            "--clear-groups", "--", "/bin/sh", "-c", f'{shell_setup or ":"}; exec "$@"', "sh",
            "/usr/bin/sudo", "-k", "-S", *command]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "USER": scene.user.name,
           "LOGNAME": scene.user.name, "LC_ALL": "C", "TERM": "dumb"}
    child = pexpect.spawn(argv[0], argv[1:], env=env, cwd="/", encoding="utf-8",
                          timeout=timeout)
    child.expect(r"\[sudo\] password for \w+: ")
    child.sendline(scene.user.password)
    return child


def finish(child, bound=15):
    import pexpect

    started = time.monotonic()
    child.expect(pexpect.EOF, timeout=bound)  # a hang fails here, bounded
    child.close()
    return child.before, child.exitstatus, time.monotonic() - started


def syslog_lines(sock, user):
    from tests.test_syslog import PACKET, receive_all

    return [PACKET.fullmatch(p).group(3) for p in receive_all(sock)
            if "pam_toopher[" in p and (f"user={user} " in p or "audit file" in p)]


@pytest.fixture
def shared_directory():
    """A world-writable sticky directory that any local user can reach (like /tmp)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="tphr-shared-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


def test_a_fifo_planted_as_the_audit_file_does_not_hang_sudo(scene, srv, tmp_path,
                                                             shared_directory):
    """A user's mkfifo where the audit file goes (a world-writable directory):
    sudo ends at once, and syslog says what was decided and why the file was not."""
    from tests.test_sudo import sudo_scene
    from tests.test_syslog import listening_on_dev_log

    fifo = shared_directory / "audit.log"
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "mkfifo", "-m", "0666", str(fifo)], check=True)
    with sudo_scene(scene, srv, audit_log=fifo, otp_fallback=False), \
            listening_on_dev_log(tmp_path) as (sock, prefix):
        child = spawn_sudo_with(srv, scene, ["/usr/bin/id", "-u"], prefix)
        output, status, took = finish(child)
        lines = syslog_lines(sock, scene.user.name)
    assert status == 0 and output.strip().splitlines()[-1] == "0", output
    assert took < 10
    assert any(line.startswith("outcome=granted ") for line in lines), lines
    assert f"audit file {fifo} not written: it is a FIFO, not a regular file" in lines, lines


def test_ulimit_f_0_before_sudo_is_recorded_or_refused(scene, srv, tmp_path):
    """``ulimit -f 0`` lowers the hard limit too.  Root with CAP_SYS_RESOURCE
    lifts it and writes the file; without it the line goes to syslog, and with
    no syslog either the approval is refused: nothing unrecorded gets in."""
    from tests.test_audit import may_raise_hard_limits
    from tests.test_sudo import sudo_scene
    from tests.test_syslog import listening_on_dev_log

    with sudo_scene(scene, srv, otp_fallback=False):
        with listening_on_dev_log(tmp_path) as (sock, prefix):
            child = spawn_sudo_with(srv, scene, ["/usr/bin/id", "-u"], prefix, "ulimit -f 0")
            output, status, _took = finish(child)
            lines = syslog_lines(sock, scene.user.name)
        assert status == 0 and output.strip().splitlines()[-1] == "0", output
        assert any(line.startswith("outcome=granted ") for line in lines), lines
        if may_raise_hard_limits():
            assert scene.audit()["outcome"] == "granted"
            return
        assert not scene.audit_path.exists() or scene.audit_path.read_text() == ""
        assert any("file size limit (0 bytes, ulimit -f) could not be lifted" in line
                   for line in lines), lines

        # Nowhere to record it: no syslog socket at all (a private /dev/log nobody reads).
        empty = tmp_path / "no-daemon"
        empty.write_text("")
        prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  f'[ -e /dev/log ] && mount --bind {empty} /dev/log; exec "$@"', "sh"]
        child = spawn_sudo_with(srv, scene, ["/usr/bin/id", "-u"], prefix, "ulimit -f 0")
        output, status, _took = finish(child)
    assert status != 0 and "Toopher: internal error" in output, output
    assert not output.strip().endswith("0")


# ------------------------------- item 9: the config's directory and ca_bundle

def as_nobody(*command):
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command],
                   check=True, capture_output=True)


def test_a_config_swapped_in_an_open_directory_is_refused_not_failed_open(
        scene, srv, shared_directory):
    """/etc/security at 0777: a user renames another root-owned config (one
    that says failmode = safe and names no reachable server) over the real one."""
    from tests.support.pam import config_text, write_private_file

    security = shared_directory / "security"
    security.mkdir()
    security.chmod(0o777)
    config = security / "toopher.conf"
    ready(scene, srv, rule="deny")
    write_private_file(config, scene.config_path.read_text())
    write_private_file(security / "toopher.conf.old", config_text(settings(
        srv, failmode="safe", api_url=f"https://127.0.0.1:{free_port()}/v1")))
    as_nobody("mv", str(security / "toopher.conf.old"), str(config))
    scene.config_path = config
    scene.install_service(args=[f"audit_log={scene.audit_path}"])
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_SERVICE_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "config_error", audit
    assert (f"{config}: refused: directory {security} is writable by group or others "
            "(mode 0777)") in audit["reason"]


def test_a_ca_bundle_a_user_can_write_is_refused(scene, srv):
    """A ca_bundle that a user owns (mode 0666) could name the user's own CA."""
    import shutil

    bundle = scene.directory / "ca.pem"
    shutil.copy(srv.ca_cert_path, bundle)
    bundle.chmod(0o666)
    os.chown(bundle, 65534, 65534)
    ready(scene, srv, rule="approve", ca_bundle=bundle)
    scene.install_service(args=[f"audit_log={scene.audit_path}"])  # the config is refused
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_SERVICE_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "config_error", audit
    assert f"ca_bundle {bundle}: must be owned by root" in audit["reason"]


# -------------------------- item 8: the command the phone shows is the command

def action_of(srv, audit):
    (name,), = srv.query("SELECT a.name FROM auth_requests r JOIN actions a "
                         "ON a.id = r.action_id WHERE r.id = ?", audit["request"])
    return name


@pytest.mark.parametrize("filler, shown", [(" " * 160, " [160 spaces] "),
                                           ("\u3164" * 10, "\\u3164" * 10),
                                           ("\u2800\u200b\u202e", "\\u2800\\u200b\\u202e")])
def test_the_phone_sees_what_follows_blank_filler_in_a_sudo_command(scene, srv, tmp_path,
                                                                    filler, shown):
    """``sudo /bin/sh -c "id -u<160 spaces>; touch X"`` showed ``... -c id -u
    ...`` on the phone, and the touch ran as root once approved."""
    import pexpect

    from tests.support.pam import PamService, toopher_line, unique_name
    from tests.support.sudo import SudoRule, spawn_sudo_as
    from tests.test_pam import pair

    marker = tmp_path / "touched"
    pair(srv, scene.user.name)
    srv.phone.set_rule(scene.user.name, "deny", delay=0.2)
    scene.write_config(**settings(srv, otp_fallback=False))
    scene.service = PamService(["auth requisite pam_unix.so",
                                toopher_line(scene.hook, scene.config_path),
                                "account required pam_unix.so"], name=f"sudo-{unique_name()}")
    command = ["/bin/sh", "-c", f"id -u{filler}; touch {marker}"]
    with SudoRule(scene.user.name, scene.service.name, ["/bin/sh"]):
        child = spawn_sudo_as(scene.user.name, command)
        child.expect(r"\[sudo\] password for \w+: ")
        child.sendline(scene.user.password)
        child.expect(pexpect.EOF, timeout=20)
        child.close()
    audit = scene.audit()
    assert audit["outcome"] == "denied" and child.exitstatus != 0
    action = action_of(srv, audit)
    assert action == (f"{scene.service.name}: -k -S /bin/sh -c 'id -u{shown}; "
                      f"touch {marker}'"), action
    assert not marker.exists()


def test_a_long_sudo_command_shows_its_beginning_and_its_end(scene, srv):
    import pexpect

    from pam_toopher.flow import MAX_ACTION_LENGTH
    from tests.support.pam import PamService, toopher_line, unique_name
    from tests.support.sudo import SudoRule, spawn_sudo_as
    from tests.test_pam import pair

    pair(srv, scene.user.name)
    srv.phone.set_rule(scene.user.name, "deny", delay=0.2)
    scene.write_config(**settings(srv, otp_fallback=False))
    scene.service = PamService(["auth requisite pam_unix.so",
                                toopher_line(scene.hook, scene.config_path),
                                "account required pam_unix.so"], name=f"sudo-{unique_name()}")
    with SudoRule(scene.user.name, scene.service.name, ["/usr/bin/id"]):
        child = spawn_sudo_as(scene.user.name, ["/usr/bin/id", "-u" + "x" * 300, "--the-end"])
        child.expect(r"\[sudo\] password for \w+: ")
        child.sendline(scene.user.password)
        child.expect(pexpect.EOF, timeout=20)
        child.close()
    action = action_of(srv, scene.audit())
    assert len(action) == MAX_ACTION_LENGTH
    assert action.startswith(f"{scene.service.name}: -k -S /usr/bin/id -uxxx")
    assert "chars cut]..." in action and action.endswith("xxx --the-end"), action


# ------------------------- item 10: PAM items that are not UTF-8, long host names

def test_a_non_utf8_rhost_and_tty_are_recorded_escaped(scene, srv):
    from tests.support.pam import run_pamtester

    ready(scene, srv)
    result = run_pamtester(scene.service.name, scene.user.name, [scene.user.password, ""],
                           items={"rhost": "host-\udcff.example", "tty": "pts/\udcfe"})
    assert result.ok, result
    audit = scene.audit()
    assert (audit["outcome"], audit["rhost"], audit["tty"]) == (
        "granted", "host-\\xff.example", "pts/\\xfe")
    assert action_of(srv, audit) == f"{scene.service.name} login from host-\\xff.example"


def test_a_non_utf8_user_name_is_refused_and_recorded(scene, srv):
    from tests.support.pam import PAM_MESSAGES, toopher_only

    ready(scene, srv)
    scene.install_service(toopher_only(scene.hook, scene.config_path))
    # pamtester echoes the name: read its output without decoding it as UTF-8.
    result = subprocess.run(["pamtester", "-v", scene.service.name, scene.user.name + "\udcff",
                             "authenticate"], input=b"\n", capture_output=True, timeout=60,
                            check=False)
    assert result.returncode != 0, result
    assert PAM_MESSAGES["PAM_USER_UNKNOWN"].encode() in result.stderr, result
    audit = scene.audit()
    assert audit["outcome"] == "user_unknown", audit
    assert audit["user"] == scene.user.name + "\\xff"
    assert audit["reason"] == "the user name is not valid UTF-8"


def test_a_long_rhost_keeps_its_domain_on_the_phone(scene, srv):
    rhost = "a" * 200 + ".attacker.example"  # 217 characters
    ready(scene, srv)
    result = scene.pamtester([scene.user.password, ""], rhost=rhost)
    assert result.ok, result
    audit = scene.audit()
    assert audit["rhost"] == rhost  # the audit line has room for all of it
    action = action_of(srv, audit)
    assert action.startswith(f"{scene.service.name} login from aaa")
    assert "chars cut]..." in action and action.endswith("aaa.attacker.example"), action
