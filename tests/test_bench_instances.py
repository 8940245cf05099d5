"""A short run of tools/bench-instances: two instances on one PostgreSQL, one
SIGKILLed mid-wait, and SQLite's single instance as the baseline; every login
decided as the phone said, the killed instance's logins failed over."""
import re
import subprocess

from tests.conftest import REPO_ROOT

LOGINS = 40
ROW = re.compile(r"\| (?P<setup>[^|]+?) \| (?P<logins>\d+) \| (?P<rate>[\d.]+) \| "
                 r"(?P<made>\d+) \| (?P<p95>\d+) ms \| (?P<max>\d+) ms \| (?P<over>\d+) \| "
                 r"(?P<problems>\d+) \|")


def test_bench_instances_short_run():
    completed = subprocess.run(
        ["/usr/bin/python3", str(REPO_ROOT / "tools" / "bench-instances"),
         "--logins", str(LOGINS), "--delay", "3", "--kill-after", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = {m["setup"]: m for m in ROW.finditer(completed.stdout)}
    sqlite, postgres = rows["sqlite, 1 instance"], rows["postgresql, 2 instances, A killed"]
    for row in (sqlite, postgres):
        assert (int(row["logins"]), int(row["problems"])) == (LOGINS, 0), completed.stdout
        assert int(row["p95"]) < 1000, completed.stdout
        assert float(row["rate"]) > 0
    assert int(sqlite["over"]) == 0
    assert int(postgres["over"]) == LOGINS // 2, completed.stdout  # all of A's logins
