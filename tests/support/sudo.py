"""Run the real sudo with this module, without touching /etc/pam.d/sudo (root only).

    with SudoRule(user, pam_service="sudo-tphrXXXX", commands=["/usr/bin/id"]):
        child = spawn_sudo_as(user, ["/usr/bin/id", "-u"])   # pexpect, as the user

``SudoRule`` writes /etc/sudoers.d/<unique name> (checked with ``visudo -cf``
before it is put in place, removed on exit) with, for that user only::

    Defaults:USER pam_service=SERVICE, passwd_tries=1, lecture=never
    USER ALL=(root) COMMANDS

sudo (>= 1.8.8) then authenticates that user through /etc/pam.d/SERVICE, a
file of our own.  ``spawn_sudo_as`` starts sudo directly as the user (uid,
gid, groups dropped in the child), so the process pexpect sees, signals and
waits for is sudo itself.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import pexpect

SUDOERS_DIR = Path("/etc/sudoers.d")
SUDO = "/usr/bin/sudo"
TIMESTAMP_DIRS = (Path("/run/sudo/ts"), Path("/var/lib/sudo/lectured"))


class SudoRule:
    def __init__(self, user: str, pam_service: str, commands: Sequence[str],
                 passwd_tries: int = 1):
        self.user = user
        # sudo skips files in sudoers.d whose name has a "." or ends with "~".
        self.path = SUDOERS_DIR / f"tphr-{pam_service}"
        self.text = (f"Defaults:{user} pam_service={pam_service}, "
                     f"passwd_tries={passwd_tries}, lecture=never\n"
                     f"{user} ALL=(root) {', '.join(commands)}\n")

    def install(self) -> "SudoRule":
        if self.path.exists():
            raise FileExistsError(self.path)
        staged = SUDOERS_DIR.parent / f".{self.path.name}.new"
        staged.write_text(self.text)
        try:
            staged.chmod(0o440)
            check = subprocess.run(["visudo", "-cf", str(staged)], capture_output=True,
                                   text=True)
            if check.returncode != 0:
                raise RuntimeError(f"visudo refused the rule: {check.stdout}{check.stderr}")
            os.rename(staged, self.path)
        finally:
            if staged.exists():
                staged.unlink()
        return self

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        for directory in TIMESTAMP_DIRS:  # sudo's per-user state
            try:
                (directory / self.user).unlink()
            except (FileNotFoundError, IsADirectoryError):
                pass

    def __enter__(self) -> "SudoRule":
        try:
            return self.install()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc_info) -> None:
        self.remove()


def spawn_sudo_as(user: str, command: Sequence[str], options: Sequence[str] = ("-k", "-S"),
                  timeout: float = 30) -> pexpect.spawn:
    """``sudo OPTIONS COMMAND`` started as ``user`` on a pseudo-terminal.

    No ``-p``: with a custom prompt sudo shows that prompt in place of
    every PAM prompt, the module's included (seen)."""
    entry = pwd.getpwnam(user)

    def become_user() -> None:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "USER": user, "LOGNAME": user,
           "LC_ALL": "C", "TERM": "dumb"}
    return pexpect.spawn(SUDO, [*options, *command], env=env, cwd="/",
                         encoding="utf-8", timeout=timeout, preexec_fn=become_user)


def signal_state(pid: int) -> Optional[dict]:
    """SigBlk/SigIgn/SigCgt of a process, as ints (for diagnostics)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return {line.split(":")[0]: int(line.split()[1], 16) for line in text.splitlines()
            if line.startswith(("SigBlk", "SigIgn", "SigCgt"))}
