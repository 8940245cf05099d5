"""Shared pytest setup.

Under CI (CI=true) a skipped test is a failure: the tests that need root,
sshd or sudo skip with a printed reason on a developer's machine, but CI is
set up to run all of them, so a skip there means something is missing.
"""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {reason}"


def require_root():
    """Skip (with the reason printed by -ra) unless running as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates users and PAM service files")


# Fixtures: the project's Toopher-compatible server (tests/support/server.py)
# and, for modules that drive real PAM (pamtester, sshd, sudo, the package),
# a throwaway scene; such modules say pytestmark = pytest.mark.usefixtures("root_only").

@pytest.fixture
def root_only():
    require_root()


def _running_server(**options):
    from tests.support.server import RunningServer  # only the tests that use it pay

    return RunningServer(**options)


@pytest.fixture
def toopher_server():
    """A fresh server (own database, own port) for one test."""
    with _running_server() as server:
        yield server


@pytest.fixture(scope="module")
def srv(request):
    """One server shared by a test module (use distinct user names per test).
    Over https (verify with ca_cert_path) in a module that says
    ``SERVER_TLS = True``: the module's config believes no http server a
    local user could impersonate, so every test that drives it uses https."""
    with _running_server(tls=getattr(request.module, "SERVER_TLS", False)) as server:
        yield server


@pytest.fixture
def toopher_tls_server():
    """Like toopher_server, over HTTPS; see ca_cert_path and untrusted_ca_cert_path."""
    with _running_server(tls=True) as server:
        yield server


@pytest.fixture
def scene(tmp_path):
    """A throwaway user, hook file and config for one test (tests/support/pam.py)."""
    require_root()
    from tests.support.pam import PamScene

    with PamScene(tmp_path) as made:
        yield made
