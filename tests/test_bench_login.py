"""tools/bench-login runs, and a login goes through within 250 ms (p95) of the
phone's approval, with nothing typed after the password (docs/pam.md, "Speed")."""
import re
import subprocess

from tests.conftest import REPO_ROOT, require_root


def test_the_approval_alone_logs_in_within_250_ms():
    require_root()
    completed = subprocess.run([str(REPO_ROOT / "tools" / "bench-login"), "--approvals", "4"],
                               capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    row = re.search(r"\| pam_toopher, default settings \| (\d+) ms \| (\d+) ms \| (\d+) ms \|",
                    completed.stdout)
    assert row, completed.stdout
    assert int(row[2]) <= 250, completed.stdout
