"""tools/demo, the README's first command: it must work non-interactively
(--yes, --no, and stdin not a terminal) and leave nothing behind."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_root


def leftovers(output: str) -> list:
    """What the demo made (named in its output) that still exists."""
    found = []
    for name in set(re.findall(r"toopher-demo-[0-9a-f]{4}\b", output)):
        if subprocess.run(["id", name], capture_output=True).returncode == 0:
            found.append(f"user {name}")
        if Path("/etc/pam.d", name).exists():
            found.append(f"/etc/pam.d/{name}")
    for directory in set(re.findall(r"/tmp/toopher-demo-\w+", output)):
        if Path(directory).exists():
            found.append(directory)
        running = subprocess.run(["pgrep", "-f", directory], capture_output=True, text=True)
        if running.stdout.strip():
            found.append(f"process {running.stdout.split()} using {directory}")
    return found


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO_ROOT / "tools" / "demo"), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, approved", [
    (["--yes"], True), (["--no"], False), ([], True),
    # the phone is the web app in headless Chromium, answering by clicks
    (["--web-phone", "--yes"], True), (["--web-phone", "--no"], False),
])
def test_demo_logs_in_as_the_phone_says_and_cleans_up(args, approved):
    require_root()
    result = run_demo(*args)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert re.search(r"toopher-demo-\w+ wants to log in to \S+ from 127\.0\.0\.1 "
                     r"\u2014 approve\? \[y/n\]", output), output
    assert "demo finished: the login followed the phone's answer" in output
    if approved:
        assert "PAM result: PAM_SUCCESS" in output and "outcome=granted" in output, output
    else:
        assert "PAM result: Authentication failure" in output, output
        assert "outcome=denied" in output and "PAM_SUCCESS" not in output, output
    assert "rhost=127.0.0.1" in output
    if "--web-phone" in args:
        assert f"[phone] clicked {'Approve' if approved else 'Deny'}" in output, output
    assert leftovers(output) == [], output


def test_demo_never_touches_the_real_sshd_and_sudo_services():
    require_root()
    watched = [Path("/etc/pam.d/sshd"), Path("/etc/pam.d/sudo"), Path("/etc/ssh/sshd_config")]
    before = {p: p.read_bytes() if p.exists() else None for p in watched}
    result = run_demo("--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p: p.read_bytes() if p.exists() else None for p in watched} == before
    assert "/etc/pam.d/sshd" not in result.stdout and "/etc/pam.d/sudo" not in result.stdout
