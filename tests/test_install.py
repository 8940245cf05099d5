"""The README's install from a checkout, run as written, and the module it gives
inside a real sshd.

The README installs with Debian's pip into /usr/local/lib/python3.11/dist-packages
and writes /lib/security/pam_toopher.py with ``toopher-pam install-hook``.  The
test runs the same pip command with ``--prefix`` added (Debian's pip then uses
PREFIX/local/lib/python3.11/dist-packages, the same layout one level down, and
just as invisible to the interpreter pam_python starts inside sshd), then the
installed ``toopher-pam install-hook``, and logs in through a real sshd whose
PAM stack names the hook file it wrote.  Nothing on the machine is changed.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pam_toopher.hook_file import (HookError, check_hook, install_hook, render_hook,
                                   write_file_atomically)
from tests.conftest import REPO_ROOT, require_root
from tests.support.pam import toopher_only
from tests.support.system import system_env
from tests.test_pam import pair, settings
from tests.test_sshd import PASSWORD_PROMPT, PUSH_PROMPT, explain, finish, marker, \
    password_stack, start_sshd
from tests.test_syslog import listening_on_dev_log, receive_all

SERVER_TLS = True  # srv: the module believes only https (tests/conftest.py)

README = (REPO_ROOT / "README.md").read_text()
PIP = ["/usr/bin/python3", "-m", "pip", "install", "--break-system-packages", "--no-deps",
       "--no-build-isolation", "."]
# What sshd's interpreter searches (no PATH, prefix /): seen in sshd, and
# what check_hook reproduces.
SSHD_SYS_PATH = ["/lib/python311.zip", "/lib/python3.11", "/lib/python3.11/lib-dynload",
                 "/lib/python3/dist-packages"]


class Install:
    def __init__(self, root: Path):
        self.root = root
        self.site = root / "prefix" / "local" / "lib" / "python3.11" / "dist-packages"
        self.script = root / "prefix" / "local" / "bin" / "toopher-pam"
        self.hook = root / "pam_toopher.py"

    def toopher_pam(self, *args: str) -> subprocess.CompletedProcess:
        """The installed command, finding its package as a --prefix install does."""
        return subprocess.run([str(self.script), *args], capture_output=True, text=True,
                              timeout=60, cwd="/",
                              env=system_env({"PYTHONPATH": str(self.site), "LC_ALL": "C"}))


def test_the_readme_gives_the_commands_this_test_runs():
    assert " ".join(PIP) in README
    assert "toopher-pam install-hook" in README
    assert "printf 'from pam_toopher.pam_hook import *" not in README


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The README's install of a copy of this checkout under a fresh prefix."""
    require_root()
    root = tmp_path_factory.mktemp("install")
    source = root / "src"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "out", "*.egg-info", "__pycache__", ".pytest_cache"))
    completed = subprocess.run(PIP + ["--prefix", str(root / "prefix"), "--quiet"],
                               cwd=source, capture_output=True, text=True, timeout=300,
                               env=system_env())
    assert completed.returncode == 0, completed.stderr
    made = Install(root)
    assert (made.site / "pam_toopher" / "pam_hook.py").is_file()
    written = made.toopher_pam("install-hook", str(made.hook))
    assert written.returncode == 0, written.stderr
    assert written.stdout == (f"{made.hook}: written; it loads {made.site}/pam_toopher "
                              f"(from {made.site}) as sshd runs it\n")
    return made


def test_the_hook_names_where_pip_put_the_package(installed):
    assert installed.hook.read_text() == render_hook(str(installed.site))
    assert installed.hook.stat().st_mode & 0o777 == 0o644
    report = check_hook(str(installed.hook))
    assert report.module == f"{installed.site}/pam_toopher/__init__.py"
    # Only the hook's entry makes it visible there: sshd searches nothing else of ours.
    assert [p for p in report.sys_path if p != str(installed.site)] == SSHD_SYS_PATH


def test_toopher_pam_check_from_the_install(installed, srv, tmp_path):
    config = tmp_path / "toopher.conf"
    options = settings(srv)
    write_file_atomically(str(config), "[toopher]\n" + "".join(
        f"{key} = {value}\n" for key, value in options.items()), mode=0o600)
    result = installed.toopher_pam("--config", str(config), "check", "--hook",
                                   str(installed.hook))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == \
        f"{installed.hook}: loads {installed.site}/pam_toopher as sshd runs it"
    assert result.stdout.endswith(": credentials accepted\n")


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_a_real_sshd_decides_through_the_readme_install(installed, srv, scene, answer):
    scene.hook = installed.hook  # the file install-hook wrote, not the test's own
    pair(srv, scene.user.name)
    scene.write_config(**settings(srv, auth_timeout=10, otp_prompt_after=5))
    command, word = marker()
    with start_sshd(scene, password_stack(scene)) as sshd:
        assert str(installed.hook) in scene.service.path.read_text()
        child = sshd.ssh(scene.user.name, command)
        child.expect(PASSWORD_PROMPT)
        child.sendline(scene.user.password)
        child.expect(PUSH_PROMPT)
        child.sendline("")
        request = srv.phone.wait_for_request(scene.user.name, timeout=5)
        getattr(srv.phone, answer)(request["id"])
        output, status = finish(child)
    audit = scene.audit()
    if answer == "approve":
        assert status == 0 and word in output, explain(scene, sshd, child)
        assert audit["outcome"] == "granted", audit
    else:
        assert status == 255 and word not in output, explain(scene, sshd, child)
        assert audit["outcome"] == "denied", audit
    assert audit["request"] == request["id"]


def test_a_hook_that_cannot_import_says_why_in_syslog_and_refuses(scene, tmp_path):
    site = tmp_path / "site"
    (site / "pam_toopher").mkdir(parents=True)
    (site / "pam_toopher" / "__init__.py").write_text("raise ImportError('a broken install')\n")
    hook = tmp_path / "broken_hook.py"
    write_file_atomically(str(hook), render_hook(str(site)))
    scene.install_service(toopher_only(hook, scene.config_path))
    with listening_on_dev_log(tmp_path) as (sock, prefix):
        completed = subprocess.run(
            prefix + ["pamtester", "-v", scene.service.name, scene.user.name, "authenticate"],
            input="", text=True, capture_output=True, timeout=60, env=system_env())
        packets = receive_all(sock)
    assert completed.returncode != 0 and "Error in service module" in completed.stderr, \
        completed.stderr
    assert "Toopher: the module cannot be loaded; see the system log." in completed.stderr
    ours = [p for p in packets if f"user={scene.user.name} " in p]
    assert len(ours) == 1, packets
    match = re.fullmatch(r"<(\d+)>pam_toopher\[\d+\]: (.*)", ours[0])
    assert match and int(match[1]) == (10 << 3) | 3, ours  # authpriv.err
    assert match[2].startswith(f"outcome=internal_error user={scene.user.name} "
                               f"service={scene.service.name} reason=cannot import "
                               "pam_toopher (ImportError: a broken install); sys.path=")
    assert f"every login through {hook} is refused" in match[2]


def test_install_hook_refuses_a_directory_others_can_change(tmp_path):
    site = tmp_path / "site"
    (site / "pam_toopher").mkdir(parents=True)
    site.chmod(0o777)
    hook = tmp_path / "pam_toopher.py"
    with pytest.raises(HookError, match=f"refusing to make every login import code from {site}"):
        install_hook(str(hook), str(site))
    assert not hook.exists()
    if os.geteuid() == 0:
        site.chmod(0o755)
        os.chown(site / "pam_toopher", 65534, -1)
        with pytest.raises(HookError, match="is owned by uid 65534, not root"):
            install_hook(str(hook), str(site))
        assert not hook.exists()


def test_the_debian_package_ships_the_same_hook():
    shipped = REPO_ROOT / "packaging" / "deb" / "hook" / "pam_toopher.py"
    assert shipped.read_text() == render_hook(None)


def test_the_hook_template_is_valid_python_under_the_pam_interpreter(tmp_path):
    hook = tmp_path / "hook.py"
    hook.write_text(render_hook("/nonexistent"))
    subprocess.run(["/usr/bin/python3", "-m", "py_compile", str(hook)], check=True)
    assert sys.version_info >= (3, 9)
