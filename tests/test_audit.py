"""The audit file (issue 14, items 6 and 7): written as root inside a
hostile user's login, so a FIFO, a link or a file of theirs planted there,
or their ``ulimit -f``, must neither hang the login nor suppress the record;
and a decision recorded nowhere is refused."""

import os
import resource
import stat
import subprocess
import sys
import time

import pytest

from pam_toopher import audit
from pam_toopher.audit import (
    AuditFileError,
    AuditTrail,
    append_to_audit_file,
    audit_file_problem,
)
from pam_toopher.flow import UNRECORDED_REASON, LoginRequest, Outcome, run
from tests.conftest import REPO_ROOT
from tests.support.fake_api import FakeClock, FakeConversation, FakeToopher, factory_for
from tests.test_flow import ME, make_config

pytestmark = pytest.mark.usefixtures("root_only")  # root's files, other users' files

OTHER_UID = 12345
LINE = b"2026-01-01T00:00:00Z pam_toopher[1]: outcome=granted\n"


def test_a_missing_file_is_created_0600_and_appended_to(tmp_path):
    path = tmp_path / "audit.log"
    append_to_audit_file(str(path), LINE)
    append_to_audit_file(str(path), LINE)
    assert path.read_bytes() == LINE * 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == 0


def test_a_fifo_without_reader_does_not_block(tmp_path):
    path = tmp_path / "audit.log"
    os.mkfifo(path, 0o600)
    started = time.monotonic()
    with pytest.raises(AuditFileError, match="it is a FIFO, not a regular file"):
        append_to_audit_file(str(path), LINE)
    assert time.monotonic() - started < 1


def test_a_fifo_with_a_reader_is_refused_unwritten(tmp_path):
    path = tmp_path / "audit.log"
    os.mkfifo(path, 0o600)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(AuditFileError, match="not a regular file"):
            append_to_audit_file(str(path), LINE)
        assert os.read(reader, 100) == b""  # nothing was written
    finally:
        os.close(reader)


@pytest.mark.parametrize("mode, uid, words", [
    (0o666, 0, r"writable by group or others \(mode 0666\)"),
    (0o620, 0, r"writable by group or others \(mode 0620\)"),
    (0o600, OTHER_UID, f"owned by uid {OTHER_UID}, not root"),
])
def test_a_file_others_can_write_is_refused(tmp_path, mode, uid, words):
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    path.chmod(mode)
    os.chown(path, uid, 0)
    with pytest.raises(AuditFileError, match=words):
        append_to_audit_file(str(path), LINE)
    assert path.read_bytes() == b""
    assert audit_file_problem(str(path)) is not None


def test_a_file_in_a_directory_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(AuditFileError, match=f"directory {shared} is writable by group"):
        append_to_audit_file(str(shared / "audit.log"), LINE)
    assert not (shared / "audit.log").exists()
    assert "writable by group or others" in audit_file_problem(str(shared / "audit.log"))


def test_a_users_entry_in_a_sticky_directory_is_refused(tmp_path):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "audit.log").symlink_to("/etc/shadow-never")
    os.lchown(sticky / "audit.log", OTHER_UID, OTHER_UID)
    with pytest.raises(AuditFileError, match="sticky, but the entry is not owned by root"):
        append_to_audit_file(str(sticky / "audit.log"), LINE)
    assert not os.path.exists("/etc/shadow-never")


def test_check_reports_nothing_for_a_safe_place(tmp_path):
    assert audit_file_problem(str(tmp_path / "not-yet.log")) is None
    assert not (tmp_path / "not-yet.log").exists()  # check creates nothing
    assert "no such directory" in audit_file_problem(str(tmp_path / "nope" / "a.log"))


def may_raise_hard_limits() -> bool:
    """Root normally holds CAP_SYS_RESOURCE; some containers drop it."""
    with open("/proc/self/status") as status:
        effective = int(next(line.split()[1] for line in status
                             if line.startswith("CapEff:")), 16)
    return bool(effective & (1 << 24))  # CAP_SYS_RESOURCE


def append_under_limit(path, soft, hard):
    code = ("import resource\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({soft}, {hard}))\n"
            "from pam_toopher.audit import AuditFileError, append_to_audit_file\n"
            "try:\n"
            f"    append_to_audit_file({str(path)!r}, b'line\\n')\n"
            "except AuditFileError as exc:\n"
            "    print('refused:', exc)\n"
            "print(resource.getrlimit(resource.RLIMIT_FSIZE))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=30, check=False)


def test_a_callers_soft_file_size_limit_does_not_stop_the_record(tmp_path):
    """sudo keeps the caller's RLIMIT_FSIZE (``ulimit -Sf 0``): the line is
    written anyway, and the caller's limit is put back."""
    path = tmp_path / "audit.log"
    done = append_under_limit(path, 0, resource.RLIM_INFINITY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"(0, {resource.RLIM_INFINITY})"]
    assert path.read_text() == "line\n"


def test_a_callers_hard_file_size_limit(tmp_path):
    """``ulimit -f 0`` lowers the hard limit too: root lifts it with
    CAP_SYS_RESOURCE; without it the write is refused (said why) instead of
    SIGXFSZ killing the process, and the flow relies on syslog or refuses."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    path.chmod(0o600)
    done = append_under_limit(path, 0, 0)
    assert done.returncode == 0, done.stderr  # not killed by SIGXFSZ
    assert done.stdout.splitlines()[-1] == "(0, 0)"
    if may_raise_hard_limits():
        assert path.read_text() == "line\n"
    else:
        assert done.stdout.startswith("refused: the file size limit (0 bytes, ulimit -f) "
                                      "could not be lifted")
        assert path.read_text() == ""


# ------------------------------------------------ recorded somewhere, or refused

def login_recorded_by(syslog_result, audit_path):
    clock = FakeClock()
    api = FakeToopher(clock)
    api.phone = "approve"
    seen = []

    def syslog(severity, line):
        seen.append(line)
        return syslog_result
    decision = run(LoginRequest(user=ME, service="sshd", rhost="203.0.113.5", tty="ssh"),
                   FakeConversation(answers=[""]), config_path="/etc/test.conf",
                   audit=AuditTrail(syslog=syslog), api_factory=factory_for(api), clock=clock,
                   load=lambda path: make_config(audit_log=audit_path))
    return decision, seen


def test_a_grant_recorded_nowhere_is_refused(tmp_path):
    fifo = tmp_path / "audit.log"
    os.mkfifo(fifo, 0o600)
    decision, seen = login_recorded_by(False, str(fifo))
    assert decision.outcome is Outcome.INTERNAL_ERROR and decision.reason == UNRECORDED_REASON
    assert seen[0].startswith("outcome=granted")  # it was tried


@pytest.mark.parametrize("syslog_result, audit_ok", [(True, False), (None, False),
                                                     (False, True)])
def test_a_grant_recorded_in_one_place_stands(tmp_path, syslog_result, audit_ok):
    path = tmp_path / "audit.log"
    if not audit_ok:
        os.mkfifo(path, 0o600)
    decision, seen = login_recorded_by(syslog_result, str(path))
    assert decision.outcome is Outcome.GRANTED
    if audit_ok:
        assert "outcome=granted" in path.read_text()
    else:
        assert "audit file" in seen[-1] and "FIFO" in seen[-1]


def test_write_syslog_says_whether_a_daemon_took_the_line(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr(audit, "SYSLOG_SOCKET", str(tmp_path / "nobody"))
    assert audit.write_syslog(audit.LOG_INFO, "x") is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "log"))
        monkeypatch.setattr(audit, "SYSLOG_SOCKET", str(tmp_path / "log"))
        assert audit.write_syslog(audit.LOG_INFO, "x") is True
