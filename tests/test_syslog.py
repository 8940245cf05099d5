"""The audit line reaches syslog: facility authpriv, ident pam_toopher, one
datagram per decision, through the same /dev/log socket a syslog daemon reads.

The integration test listens on /dev/log itself: where no syslog daemon runs
(CI) it creates the socket and removes it afterwards; where one runs, it
mounts its own socket over /dev/log in a private mount namespace, so the
daemon and the machine are left alone.
"""
import os
import re
import socket
import subprocess
from contextlib import contextmanager

from pam_toopher import audit
from tests.conftest import require_root
from tests.support.pam import PamScene, parse_audit_line
from tests.support.server import RunningServer
from tests.support.system import system_env
from tests.test_pam import ready

LOG_AUTHPRIV = 10 << 3
PACKET = re.compile(r"<(\d+)>pam_toopher\[(\d+)\]: (.*)")


def receive_all(sock):
    sock.setblocking(False)
    packets = []
    while True:
        try:
            packets.append(sock.recv(65536).decode())
        except BlockingIOError:
            return packets


def test_write_syslog_sends_one_authpriv_datagram(tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setattr(audit, "SYSLOG_SOCKET", path)
        audit.write_syslog(audit.LOG_WARNING, "outcome=failed_open user=alice")
        packets = receive_all(sock)
    assert packets == [f"<{LOG_AUTHPRIV | 4}>pam_toopher[{os.getpid()}]: "
                       "outcome=failed_open user=alice"]


def test_write_syslog_without_a_daemon_is_silent(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "SYSLOG_SOCKET", str(tmp_path / "nobody-listens"))
    audit.write_syslog(audit.LOG_ERR, "dropped")  # must not raise


@contextmanager
def listening_on_dev_log(tmp_path):
    """(socket, command prefix) so that a command's /dev/log is our socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    created = not os.path.exists("/dev/log")
    try:
        if created:
            sock.bind("/dev/log")
            prefix = []
        else:
            own = str(tmp_path / "syslog.sock")
            sock.bind(own)
            prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                      f'mount --bind {own} /dev/log && exec "$@"', "sh"]
        yield sock, prefix
    finally:
        sock.close()
        if created and os.path.exists("/dev/log"):
            os.unlink("/dev/log")


def test_a_login_writes_exactly_one_audit_line_to_syslog(tmp_path):
    require_root()
    with RunningServer(tls=True) as srv, PamScene(tmp_path) as scene, \
            listening_on_dev_log(tmp_path) as (sock, prefix):
        ready(scene, srv, rule="deny")
        completed = subprocess.run(
            prefix + ["pamtester", "-v", "-I", "rhost=198.51.100.7", scene.service.name,
                      scene.user.name, "authenticate"],
            input=f"{scene.user.password}\n\n", text=True, capture_output=True, timeout=60,
            env=system_env())
        packets = receive_all(sock)
    assert completed.returncode != 0, completed.stderr
    # Other processes on the machine may log meanwhile: keep this login's lines.
    ours = [PACKET.fullmatch(p) for p in packets
            if "pam_toopher[" in p and f"user={scene.user.name} " in p]
    assert len(ours) == 1, packets
    priority, _pid, line = ours[0].groups()
    assert int(priority) & ~7 == LOG_AUTHPRIV
    fields = parse_audit_line(line)
    assert (fields["outcome"], fields["user"], fields["service"], fields["rhost"]) == (
        "denied", scene.user.name, scene.service.name, "198.51.100.7")
    assert re.fullmatch(r"[0-9a-f-]{36}", fields["request"])
    assert re.fullmatch(r"\d+\.\d\ds", fields["elapsed"])
    assert fields == scene.audit()  # the audit file says the same
