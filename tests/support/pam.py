"""Drive the module through the real PAM library (root only).

Everything made here has a unique name and is removed on exit, also when a
test fails: a throwaway local user, a PAM service file in /etc/pam.d, the
hook file pam_python runs (written by ``toopher-pam install-hook``'s code, naming
this checkout), a private config file.

    from tests.support.pam import PamScene

    with PamScene(tmp_path) as scene:                   # user + hook; no service yet
        scene.write_config(api_url=srv.url, consumer_key=srv.key,
                           consumer_secret=srv.secret, auth_timeout=3)
        scene.install_service()                         # pam_unix, then this module
        result = scene.pamtester([scene.user.password, ""], rhost="203.0.113.5")
        assert result.ok and scene.audit()["outcome"] == "granted"

Lower-level pieces (used by PamScene, reusable for sshd/sudo tests):
``create_local_user``/``delete_local_user``, ``write_hook``,
``toopher_line``, ``PamService``, ``write_private_file``, ``run_pamtester``,
``parse_audit_line``.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from tests.support.system import system_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PAM_DIR = Path("/etc/pam.d")
PAM_PYTHON = "pam_python.so"
NAME_PREFIX = "tphr"

# pamtester prints pam_strerror() of the stack's result; these name the codes.
PAM_MESSAGES = {
    "PAM_AUTH_ERR": "Authentication failure",
    "PAM_AUTHINFO_UNAVAIL": "Authentication service cannot retrieve authentication info",
    "PAM_SERVICE_ERR": "Error in service module",
    "PAM_USER_UNKNOWN": "User not known to the underlying authentication module",
    # Every module answered PAM_IGNORE: libpam refuses with this.
    "PAM_PERM_DENIED": "Permission denied",
}


def unique_name(prefix: str = NAME_PREFIX) -> str:
    """A name no parallel test uses: short enough for useradd (32)."""
    return f"{prefix}{secrets.token_hex(4)}"


# ------------------------------------------------------------ local users

@dataclass(frozen=True)
class LocalUser:
    name: str
    password: str


def create_local_user(name: Optional[str] = None, groups: Sequence[str] = ()) -> LocalUser:
    """A local account with a password pam_unix accepts, and no home."""
    user = LocalUser(name or unique_name(), "pw-" + secrets.token_urlsafe(12))
    command = ["useradd", "--no-create-home", "--shell", "/bin/sh", "--user-group"]
    if groups:
        command += ["--groups", ",".join(groups)]
    subprocess.run(command + [user.name], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{user.name}:{user.password}\n", text=True,
                       check=True, capture_output=True)
    except BaseException:
        delete_local_user(user.name)
        raise
    return user


def delete_local_user(name: str) -> None:
    subprocess.run(["userdel", "--force", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)  # left if userdel kept it


def create_group(name: Optional[str] = None) -> str:
    name = name or unique_name("tphg")
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    return name


def delete_group(name: str) -> None:
    subprocess.run(["groupdel", name], capture_output=True)


# ------------------------------------------------------ module and service

def write_hook(directory: Path, package_directory: Path = REPO_ROOT) -> Path:
    """The file pam_python executes, written by the code behind
    ``toopher-pam install-hook`` (the README's install), naming this
    checkout as the directory the package is in: the code under test is the
    checkout's, loaded the way an installed copy is."""
    from pam_toopher.hook_file import install_hook

    hook = Path(directory) / "pam_toopher_hook.py"
    install_hook(str(hook), str(package_directory))
    return hook


def toopher_line(hook: Path, config: Optional[Path], control: str = "required",
                 args: Iterable[str] = (), facility: str = "auth") -> str:
    words = [facility, control, PAM_PYTHON, str(hook)]
    if config is not None:
        words.append(f"config={config}")
    words.extend(args)
    return " ".join(words)


class PamService:
    """/etc/pam.d/<name> with the given lines; removed by ``remove()``."""

    def __init__(self, lines: Sequence[str], name: Optional[str] = None):
        self.name = name or unique_name()
        self.path = PAM_DIR / self.name
        if self.path.exists():
            raise FileExistsError(self.path)
        self.path.write_text("\n".join(lines) + "\n")

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def password_then_toopher(hook: Path, config: Optional[Path], args: Iterable[str] = (),
                          control: str = "required") -> List[str]:
    """The sshd-like stack: the password first (requisite: a wrong password
    sends no push), then the second factor."""
    return ["auth requisite pam_unix.so",
            toopher_line(hook, config, control, args),
            "account required pam_permit.so"]


def toopher_only(hook: Path, config: Optional[Path], args: Iterable[str] = ()) -> List[str]:
    """This module alone: its own result becomes the stack's, so PAM_IGNORE
    is visible (libpam answers PAM_PERM_DENIED when no module decided)."""
    return [toopher_line(hook, config, "required", args), "account required pam_permit.so"]


def write_private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)
    return path


def config_text(options: Dict[str, object]) -> str:
    lines = ["[toopher]"]
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------- pamtester

@dataclass
class PamResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failed_with(self, code_name: str) -> bool:
        return self.returncode != 0 and PAM_MESSAGES[code_name] in self.stderr

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def run_pamtester(service: str, user: str, answers: Sequence[str], *,
                  items: Optional[Dict[str, str]] = None, timeout: float = 60,
                  operation: str = "authenticate") -> PamResult:
    """``pamtester -v`` with prompts answered from stdin, in order, under the
    system PATH (tests/support/system.py)."""
    command = ["pamtester", "-v"]
    for key, value in (items or {}).items():
        command += ["-I", f"{key}={value}"]
    command += [service, user, operation]
    completed = subprocess.run(command, input="".join(a + "\n" for a in answers), text=True,
                               capture_output=True, timeout=timeout, env=system_env())
    return PamResult(completed.returncode, completed.stdout, completed.stderr)


_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_audit_line(line: str) -> Dict[str, str]:
    """{"outcome": "granted", "user": ..., "reason": ...} from an audit line."""
    fields = {}
    for key, value in _FIELD.findall(line):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[key] = value
    return fields


# -------------------------------------------------------------- the scene

class PamScene:
    """A user, a hook file, a config and a service for one test; see the module doc."""

    def __init__(self, directory: Path, user_groups: Sequence[str] = ()):
        self.directory = Path(directory)
        self.directory.chmod(0o700)
        self.config_path = self.directory / "toopher.conf"
        self.audit_path = self.directory / "audit.log"
        self.hook = write_hook(self.directory)
        self.user_groups = user_groups
        self.user: Optional[LocalUser] = None
        self.service: Optional[PamService] = None

    def __enter__(self) -> "PamScene":
        self.user = create_local_user(groups=self.user_groups)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.service is not None:
            self.service.remove()
        if self.user is not None:
            delete_local_user(self.user.name)

    def write_config(self, mode: int = 0o600, **options) -> Path:
        """The config file, audit_log pointing into the scene unless given."""
        options.setdefault("audit_log", str(self.audit_path))
        return write_private_file(self.config_path, config_text(options), mode)

    def install_service(self, lines: Optional[Sequence[str]] = None,
                        args: Iterable[str] = ()) -> PamService:
        if self.service is not None:
            self.service.remove()
        self.service = PamService(lines or password_then_toopher(self.hook, self.config_path,
                                                                 args))
        return self.service

    def pamtester(self, answers: Sequence[str], rhost: Optional[str] = "203.0.113.5",
                  timeout: float = 60, user: Optional[str] = None) -> PamResult:
        items = {"rhost": rhost} if rhost else {}
        return run_pamtester(self.service.name, user or self.user.name, answers, items=items,
                             timeout=timeout)

    def audit_lines(self) -> List[Dict[str, str]]:
        if not self.audit_path.exists():
            return []
        return [parse_audit_line(line) for line in self.audit_path.read_text().splitlines()]

    def audit(self) -> Dict[str, str]:
        """The one audit line this scene's login wrote (fails if not exactly one)."""
        lines = self.audit_lines()
        assert len(lines) == 1, f"expected one audit line, got {lines}"
        return lines[0]

    def describe(self) -> str:
        return (f"service {self.service.name if self.service else None}:\n"
                + (self.service.path.read_text() if self.service else "")
                + f"\naudit: {self.audit_path.read_text() if self.audit_path.exists() else ''}"
                + f"\ncommand: pamtester -v {shlex.quote(self.service.name) if self.service else ''}")

