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
    if approved:
        assert output.endswith("\ndemo finished: login granted -- the phone approved\n"), output
        assert "PAM result: PAM_SUCCESS" in output and "outcome=granted" in output, output
    else:
        assert output.endswith("\ndemo finished: login denied -- the phone denied\n"), output
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


def load_demo_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_script", REPO_ROOT / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("returncode, output, audit, approved, line", [
    (0, "", ['pam_toopher[1]: outcome=granted user=u reason="approved"'], True,
     "demo finished: login granted -- the phone approved"),
    (7, "", ['pam_toopher[1]: outcome=denied user=u reason="no"'], False,
     "demo finished: login denied -- the phone denied"),
    # The module failed: the demo says so, whatever the phone answered.
    (7, "", ['pam_toopher[1]: outcome=internal_error user=u reason="unexpected '
             'ModuleNotFoundError"'], False,
     "demo FAILED: the phone denied, but the login ended with outcome=internal_error "
     "(unexpected ModuleNotFoundError), pamtester exit 7"),
    (7, "pamtester: Error in service module\n", [], True,
     "demo FAILED: the phone approved, but the module recorded no decision "
     "(error: pamtester: Error in service module), pamtester exit 7"),
    (0, "", ['pam_toopher[1]: outcome=failed_open user=u reason="down"'], True,
     "demo FAILED: the phone approved, but the login ended with outcome=failed_open (down), "
     "pamtester exit 0"),
])
def test_the_last_line_states_the_real_outcome(returncode, output, audit, approved, line):
    assert load_demo_script().verdict(returncode, output, audit, approved) == line
