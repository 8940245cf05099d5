"""The Debian packages, end to end (root only).

Builds libpam-toopher and toopher-server with tools/build-deb from a clean
clone of this repository's HEAD (uncommitted changes are not in it, on
purpose: the package is what a commit builds), requires lintian to report
no error and no warning, installs both with apt-get so dependencies
resolve, then checks the installed files, logs in through the INSTALLED
module with pamtester (the PAM line names it by its short name,
pam_toopher.py, as an admin's would), enables and removes the
pam-auth-update profile, and purges.

The module-scoped fixture builds and installs once; its teardown purges the
packages whatever happened, and puts back /etc/pam.d/common-* if anything
changed them.  The pam-auth-update round trip runs on a copy of the PAM
configuration (``pam-auth-update --root``), never on the machine's own
common-auth: other tests (sshd, sudo) may be logging in through it at the
same moment, and an enabled profile would send them a push.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest

from pam_toopher.hook_file import render_hook
from tests.conftest import require_root
from tests.support.pam import PamScene, PamService, run_pamtester
from tests.support.server import RunningServer

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("libpam-toopher", "toopher-server")
CONF = Path("/etc/security/toopher.conf")
HOOK = Path("/lib/security/pam_toopher.py")
PROFILE = Path("/usr/share/pam-configs/toopher")
PROFILE_LINE = "auth\trequired\tpam_python.so pam_toopher.py"
SERVER_USER = "toopher-server"
SERVER_HOME = Path("/var/lib/toopher-server")
UNIT = Path("/lib/systemd/system/toopher-server.service")
AUTH_TIMEOUT = 3
OTP_PROMPT_AFTER = 1  # below auth_timeout, as the config requires
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"]
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive",
           PATH="/usr/sbin:/usr/bin:/sbin:/bin")


def run(command: List[str], timeout: float = 120, check: bool = True, **kwargs):
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                               env=kwargs.pop("env", ENV), **kwargs)
    if check and completed.returncode != 0:
        raise AssertionError(f"{' '.join(command)}: exit {completed.returncode}\n"
                             f"stdout: {completed.stdout}\nstderr: {completed.stderr}")
    return completed


def pam_state() -> Dict[str, bytes]:
    """/etc/pam.d/common-* and pam-auth-update's records, byte for byte."""
    files = sorted(Path("/etc/pam.d").glob("common-*")) + sorted(Path("/var/lib/pam").iterdir())
    return {str(path): path.read_bytes() for path in files if path.is_file()}


def installed(package: str) -> bool:
    """True unless dpkg has no trace of the package (config-files counts as installed)."""
    status = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return status.returncode == 0 and status.stdout.strip() not in ("", "un")


def purge() -> None:
    present = [p for p in PACKAGES if installed(p)]
    if present:
        run(APT + ["purge", *present], timeout=300)


def restore_common(before: Dict[str, bytes]) -> None:
    for name, data in before.items():
        if name.startswith("/etc/pam.d/") and Path(name).read_bytes() != data:
            Path(name).write_bytes(data)


pytestmark = pytest.mark.usefixtures("root_only")


@pytest.fixture(scope="module")
def build():
    """tools/build-deb in a clean clone of HEAD: (the .deb paths, its output)."""
    require_root()
    with tempfile.TemporaryDirectory(prefix="toopher-deb-test-") as tmp:
        clone = Path(tmp) / "clone"
        run(["git", "clone", "--quiet", "--no-local", str(REPO_ROOT), str(clone)])
        built = run([str(clone / "tools" / "build-deb")], timeout=300, check=False)
        assert built.returncode == 0, f"tools/build-deb failed:\n{built.stdout}\n{built.stderr}"
        debs = {p: sorted((clone / "out").glob(f"{p}_*_all.deb")) for p in PACKAGES}
        assert all(len(found) == 1 for found in debs.values()), debs
        yield {p: found[0] for p, found in debs.items()}, built.stdout + built.stderr


@pytest.fixture(scope="module")
def system(build):
    """Both packages installed; purged again at the end whatever happens.

    Packages of these names already on the machine are purged first (a run
    that was killed may have left them): do not run this on a machine where
    they are in real use."""
    debs, _ = build
    purge()  # a previous run that was killed may have left them
    before = pam_state()
    try:
        run(APT + ["install", *[str(path) for path in debs.values()]], timeout=300)
        yield before
    finally:
        try:
            purge()
        finally:
            restore_common(before)


@pytest.fixture(scope="module")
def srv(system):
    with RunningServer(tls=True) as server:  # the module refuses impersonable http
        yield server


# ------------------------------------------------------------------- build

def test_lintian_reports_no_error_and_no_warning(build):
    _, output = build
    assert "build-deb: lintian: no errors, no warnings" in output
    tags = [line for line in output.splitlines() if line[:3] in ("E: ", "W: ")]
    assert tags == [], "\n".join(tags)


def test_package_metadata(build):
    debs, _ = build
    depends = dependencies(debs["libpam-toopher"])
    assert {"libpam-python", "python3-requests", "python3-requests-oauthlib"} <= set(depends)
    version = run(["/usr/bin/python3", "-c", "import pam_toopher; print(pam_toopher.__version__)"],
                  cwd=REPO_ROOT).stdout.strip()
    assert run(["dpkg-deb", "-f", str(debs["libpam-toopher"]), "Version"]).stdout.strip() \
        == version
    server = dependencies(debs["toopher-server"])
    assert "python3-oauthlib" in server and server["libpam-toopher"] == f"(= {version})"


def dependencies(deb: Path) -> Dict[str, str]:
    """{package: version constraint} of a .deb's Depends field."""
    field = run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    result = {}
    for item in field.split(","):
        name, _, constraint = item.strip().partition(" ")
        result[name] = constraint
    return result


# ----------------------------------------------------------- installed files

def test_config_is_a_root_only_conffile(system):
    info = CONF.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0 and info.st_gid == 0
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "libpam-toopher"]).stdout
    assert str(CONF) in conffiles
    assert CONF.read_text() == (REPO_ROOT / "config" / "toopher.conf.example").read_text()


def test_installing_enables_nothing(system):
    before = system
    after = pam_state()
    changed = [name for name in before if before[name] != after.get(name)]
    # pam-auth-update --package records the new profile as seen; nothing else moves.
    assert changed in ([], ["/var/lib/pam/seen"]), changed
    assert "pam_toopher" not in Path("/etc/pam.d/common-auth").read_text()
    profile = PROFILE.read_text()
    assert "Default: no" in profile and "Auth-Type: Additional" in profile


def test_files_are_where_pam_python_and_admins_look(system):
    assert HOOK.read_text() == render_hook(None)  # the template toopher-pam install-hook writes
    # The interpreter pam_python embeds imports the installed package, not a checkout.
    where = run(["/usr/bin/python3", "-I", "-c",
                 "import pam_toopher.pam_hook, pam_toopher.server.cli as s; "
                 "print(pam_toopher.pam_hook.__file__); print(s.__file__)"], cwd="/").stdout
    assert where.split() == ["/usr/lib/python3/dist-packages/pam_toopher/pam_hook.py",
                             "/usr/lib/python3/dist-packages/pam_toopher/server/cli.py"]
    for command in ("toopher-pam", "toopher-server"):
        assert shutil.which(command, path="/usr/bin") == f"/usr/bin/{command}"
        assert run([f"/usr/bin/{command}", "--help"]).stdout.startswith("usage: ")
    for page in ("toopher-pam", "toopher.conf", "toopher-server"):
        assert run(["man", "-w", page]).stdout.strip().startswith("/usr/share/man/")


def test_server_user_exists_and_unit_is_not_enabled(system):
    user = pwd.getpwnam(SERVER_USER)
    assert user.pw_uid < 1000 and user.pw_dir == str(SERVER_HOME)
    assert user.pw_shell in ("/usr/sbin/nologin", "/bin/false")
    home = SERVER_HOME.stat()
    assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (user.pw_uid, 0o750)
    assert UNIT.exists()
    assert not list(Path("/etc/systemd/system").glob("*.wants/toopher-server.service"))
    assert run(["systemctl", "is-enabled", "toopher-server"], check=False).stdout.strip() \
        == "disabled"
    assert run(["pgrep", "-u", SERVER_USER], check=False).returncode == 1  # nothing running
    # The installed server works as its user, on its database.
    made = run(["runuser", "-u", SERVER_USER, "--", "toopher-server", "--db",
                str(SERVER_HOME / "toopher.db"), "requester", "create", "deb-test"]).stdout
    assert made.startswith("key=")


# ------------------------------------------------- logins through the package

def installed_module_stack(config: Path) -> List[str]:
    """The sshd-like stack, naming the module as the package installs it."""
    return ["auth requisite pam_unix.so",
            f"auth required pam_python.so {HOOK.name} config={config}",
            "account required pam_permit.so"]


def pair_with_installed_cli(server: RunningServer, config: Path, user: str) -> None:
    server.phone.set_pairing_rule(user, "accept")
    phrase = server.phone.make_pairing_phrase(user)
    paired = run(["toopher-pam", "--config", str(config), "pair", user, "--phrase", phrase,
                  "--timeout", "10"], timeout=30)
    assert f"{user} is paired." in paired.stdout
    server.phone.clear_pairing_rule(user)


@pytest.fixture
def scene(system, srv, tmp_path):
    with PamScene(tmp_path) as made:
        made.write_config(api_url=srv.url, consumer_key=srv.key, consumer_secret=srv.secret,
                          ca_bundle=srv.ca_cert_path, auth_timeout=AUTH_TIMEOUT, http_timeout=5,
                          otp_prompt_after=OTP_PROMPT_AFTER)
        made.install_service(installed_module_stack(made.config_path))
        yield made


def test_installed_cli_checks_the_config(scene):
    checked = run(["toopher-pam", "--config", str(scene.config_path), "check"])
    assert "credentials accepted" in checked.stdout


@pytest.mark.parametrize("answer, ok, outcome", [("approve", True, "granted"),
                                                 ("deny", False, "denied")])
def test_login_through_the_installed_module(scene, srv, answer, ok, outcome):
    pair_with_installed_cli(srv, scene.config_path, scene.user.name)
    srv.phone.set_rule(scene.user.name, answer, delay=0.3)
    result = scene.pamtester([scene.user.password, ""])
    assert result.ok is ok, scene.describe() + str(result)
    if not ok:
        assert result.failed_with("PAM_AUTH_ERR"), str(result)
    assert scene.audit()["outcome"] == outcome


# --------------------------------------------------------- pam-auth-update

@pytest.fixture
def pam_root(system, tmp_path):
    """A copy of the machine's PAM configuration for pam-auth-update --root."""
    root = tmp_path / "root"
    (root / "etc" / "pam.d").mkdir(parents=True)
    for path in Path("/etc/pam.d").glob("common-*"):
        shutil.copy2(path, root / "etc" / "pam.d")
    shutil.copytree("/var/lib/pam", root / "var" / "lib" / "pam")
    shutil.copytree("/usr/share/pam-configs", root / "usr" / "share" / "pam-configs")
    return root


def test_pam_auth_update_enables_after_the_password_and_removes(pam_root, srv, tmp_path):
    common_auth = pam_root / "etc" / "pam.d" / "common-auth"
    original = common_auth.read_text()
    machine_before = Path("/etc/pam.d/common-auth").read_bytes()
    run(["pam-auth-update", "--root", str(pam_root), "--enable", "toopher"])
    enabled = common_auth.read_text().splitlines()
    assert PROFILE_LINE in enabled
    # In the "Additional" block: after the primary modules and pam_permit,
    # so it runs only once a password module has succeeded.
    permit = enabled.index("auth\trequired\t\t\tpam_permit.so")
    assert enabled.index(PROFILE_LINE) > permit
    assert [l for l in enabled if l != PROFILE_LINE] == original.splitlines()

    # That stack logs in through the installed module with the installed
    # /etc/security/toopher.conf, once an admin has filled it in.
    (tmp_path / "scene").mkdir()
    with PamScene(tmp_path / "scene") as scene:
        CONF.write_text(f"[toopher]\napi_url = {srv.url}\nca_bundle = {srv.ca_cert_path}\n"
                        f"consumer_key = {srv.key}\n"
                        f"consumer_secret = {srv.secret}\nauth_timeout = {AUTH_TIMEOUT}\n"
                        f"otp_prompt_after = {OTP_PROMPT_AFTER}\n"
                        f"audit_log = {scene.audit_path}\n")
        service = PamService([f"@include {common_auth}", "account required pam_permit.so"])
        try:
            user = scene.user.name
            pair_with_installed_cli(srv, CONF, user)
            srv.phone.set_rule(user, "approve", delay=0.3)

            def run_login(password):
                return run_pamtester(service.name, user, [password, ""],
                                     items={"rhost": "203.0.113.5"})

            assert run_login(scene.user.password).ok
            wrong = run_login("not-the-password")
            assert not wrong.ok
            # A wrong password stops at pam_deny: no push, one audit line in all.
            assert [line["outcome"] for line in scene.audit_lines()] == ["granted"]
            srv.phone.set_rule(user, "deny", delay=0.3)
            assert run_login(scene.user.password).failed_with("PAM_AUTH_ERR")
        finally:
            service.remove()

    run(["pam-auth-update", "--root", str(pam_root), "--remove", "toopher"])
    assert common_auth.read_text() == original
    assert Path("/etc/pam.d/common-auth").read_bytes() == machine_before


# ------------------------------------------------------------------- purge

def test_purge_leaves_no_file_no_pam_change_no_user(system):
    before = system
    files = []
    for package in PACKAGES:
        files += run(["dpkg-query", "-L", package]).stdout.splitlines()
    ours = [f for f in files if f and not Path(f).is_dir()]
    assert str(CONF) in ours and str(HOOK) in ours and str(UNIT) in ours
    run(APT + ["purge", *PACKAGES], timeout=300)
    assert not [p for p in PACKAGES if installed(p)]
    left = [f for f in ours if os.path.lexists(f)]
    assert left == []
    for directory in ("/usr/lib/python3/dist-packages/pam_toopher",
                      "/usr/share/doc/libpam-toopher", "/usr/share/doc/toopher-server",
                      str(SERVER_HOME)):
        assert not os.path.lexists(directory), directory
    assert pam_state() == before
    with pytest.raises(KeyError):
        pwd.getpwnam(SERVER_USER)
    with pytest.raises(KeyError):
        grp.getgrnam(SERVER_USER)
