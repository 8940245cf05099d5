"""A short run of tools/bench-instances: two instances on one PostgreSQL, one
SIGKILLed mid-wait, and SQLite's single instance as the baseline; every login
decided as the phone said, the killed instance's logins failed over -- the
API-level ones by the client's URL list, the pamtester ones by the module's
own failover (root: local users and a PAM service)."""
import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT

LOGINS = 40
PAMTESTER = 4
# Long enough that every login (pamtester's start included) still waits at the kill.
DELAY = 5
ROW = re.compile(r"\| (?P<setup>[^|]+?) \| (?P<logins>\d+) \| (?P<rate>[\d.]+) \| "
                 r"(?P<made>\d+) \| (?P<p95>\d+) ms \| (?P<max>\d+) ms \| (?P<over>\d+) \| "
                 r"(?P<problems>\d+) \|")
PAM_ROW = re.compile(r"pamtester logins \((?P<setup>[^)]+)\): (?P<logins>\d+), decided "
                     r"correctly (?P<correct>\d+), failed over (?P<over>\d+)")

pytestmark = pytest.mark.usefixtures("root_only")


def test_bench_instances_short_run():
    completed = subprocess.run(
        ["/usr/bin/python3", str(REPO_ROOT / "tools" / "bench-instances"),
         "--logins", str(LOGINS), "--pamtester", str(PAMTESTER), "--delay", str(DELAY),
         "--kill-after", "1"],
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
    pam = {m["setup"]: m for m in PAM_ROW.finditer(completed.stdout)}
    pam_sqlite, pam_postgres = pam["sqlite, 1 instance"], pam["postgresql, 2 instances, A killed"]
    for row in (pam_sqlite, pam_postgres):
        assert (int(row["logins"]), int(row["correct"])) == (PAMTESTER, PAMTESTER), \
            completed.stdout
    assert int(pam_sqlite["over"]) == 0
    # Every pamtester login started on A (the first URL) and was decided through B.
    assert int(pam_postgres["over"]) == PAMTESTER, completed.stdout
