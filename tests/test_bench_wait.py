"""tools/bench-wait runs and the module's waiter keeps its promise: it
notices the phone within 250 ms (p95) and asks the service less often than
a plain one-second poller."""
import re
import subprocess

from tests.conftest import REPO_ROOT

ROW = re.compile(r"\| (?P<waiter>[^|]+?) \| (?P<p50>\d+) ms \| (?P<p95>\d+) ms \| "
                 r"(?P<max>\d+) ms \| (?P<rate>[\d.]+) \|")


def test_long_poll_is_faster_and_lighter_than_a_plain_poller():
    completed = subprocess.run(
        ["/usr/bin/python3", str(REPO_ROOT / "tools" / "bench-wait"),
         "--approvals", "3", "--wait", "3"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stderr
    rows = {m["waiter"]: m for m in ROW.finditer(completed.stdout)}
    ours, plain = rows["long poll (this module)"], rows["plain 1 s poller"]
    assert int(ours["p95"]) <= 250, completed.stdout
    assert float(ours["rate"]) < float(plain["rate"]), completed.stdout
