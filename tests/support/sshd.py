"""A private sshd for tests (root only), and an OpenSSH client to drive it.

    with TestSshd(directory, pam_service="tphrXXXX") as sshd:   # 127.0.0.1, free port
        child = sshd.ssh(user, "echo hi")                        # pexpect.spawn of ssh

The daemon is Debian's /usr/sbin/sshd, started in the foreground (``-D -e``)
with its own host key, sshd_config and PidFile in ``directory``.  It is run
through a symlink named after the PAM service: sshd calls
``pam_start(__progname, ...)``, and ``__progname`` is the basename of
argv[0], so the symlink gives it a PAM service of our own and
/etc/pam.d/sshd is never read.  The machine's sshd and its config are not
touched.  ``stop()`` kills the daemon (also on a failed test, via ``with``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import pexpect

from tests.support.system import system_env

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")   # compiled into Debian's sshd; the package makes it at boot
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestSshd:
    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, pam_service: str, login_grace_time: int = 30,
                 authentication_methods: str = "keyboard-interactive",
                 extra: Optional[Dict[str, str]] = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pam_service = pam_service
        self.login_grace_time = login_grace_time
        self.port = 0
        self.host_key = self.directory / "ssh_host_ed25519_key"
        self.config_path = self.directory / "sshd_config"
        self.log_path = self.directory / "sshd.log"
        # sshd reads authorized keys as the user: not under the private test dir.
        self.authorized_keys_dir = Path(tempfile.mkdtemp(prefix="tphr-sshd-keys-"))
        self.authorized_keys_dir.chmod(0o755)
        self.program = self.directory / pam_service  # the symlink: its name is the PAM service
        self.authentication_methods = authentication_methods
        self.extra = dict(extra or {})
        self._process: Optional[subprocess.Popen] = None

    # ------------------------------------------------------------- setup

    def _write_files(self) -> None:
        if not self.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-host",
                            "-f", str(self.host_key)], check=True, capture_output=True)
        if not self.program.exists():
            self.program.symlink_to(SSHD)
        options = {
            "Port": str(self.port),
            "ListenAddress": "127.0.0.1",
            "HostKey": str(self.host_key),
            "PidFile": str(self.directory / "sshd.pid"),
            "UsePAM": "yes",
            "KbdInteractiveAuthentication": "yes",
            "PasswordAuthentication": "no",
            "PubkeyAuthentication": "yes",
            "AuthenticationMethods": self.authentication_methods,
            "AuthorizedKeysFile": str(self.authorized_keys_dir / "%u"),
            # The temp dir lives under /tmp (mode 1777), which StrictModes refuses.
            "StrictModes": "no",
            "LoginGraceTime": str(self.login_grace_time),
            "MaxAuthTries": "3",
            "UseDNS": "no",
            "LogLevel": "VERBOSE",  # logs "Partial publickey" of a first factor
            "PermitRootLogin": "no",
            "PrintMotd": "no",
            "PrintLastLog": "no",
            "X11Forwarding": "no",
            "Subsystem": "sftp internal-sftp",
        }
        options.update(self.extra)
        self.config_path.write_text("".join(f"{k} {v}\n" for k, v in options.items()))

    def authorize_key(self, user: str) -> Path:
        """A new client key pair whose public half may log in as ``user``."""
        key = self.directory / f"id_{user}"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", user,
                            "-f", str(key)], check=True, capture_output=True)
        keys = self.authorized_keys_dir / user
        keys.write_text(Path(f"{key}.pub").read_text())
        keys.chmod(0o644)
        return key

    # ------------------------------------------------------- start, stop

    def start(self) -> "TestSshd":
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        last = "not started"
        for _attempt in range(3):  # another process may take the free port first
            self.port = free_port()
            self._write_files()
            subprocess.run([str(self.program), "-t", "-f", str(self.config_path)], check=True,
                           capture_output=True, env=system_env())
            log = open(self.log_path, "ab")
            self._process = subprocess.Popen(
                [str(self.program), "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=system_env())
            log.close()
            last = self._wait_listening()
            if last == "listening":
                return self
            self.stop()
        raise RuntimeError(f"sshd did not start: {last}\n{self.log()}")

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return f"exited with status {self._process.returncode}"
            if f"Server listening on 127.0.0.1 port {self.port}" in self.log():
                return "listening"
            time.sleep(0.05)
        return "timed out"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # The whole session: the listener and any connection it forked.
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "TestSshd":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.authorized_keys_dir, ignore_errors=True)

    # ------------------------------------------------------------ client

    def ssh_command(self, user: str, command: str, key: Optional[Path] = None,
                    methods: str = "keyboard-interactive") -> Sequence[str]:
        argv = ["ssh", "-F", "/dev/null", "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", f"PreferredAuthentications={methods}",
                "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10",
                "-o", "BatchMode=no"]
        if key is not None:
            argv += ["-o", "IdentitiesOnly=yes", "-i", str(key)]
        else:
            argv += ["-o", "PubkeyAuthentication=no"]
        return argv + [f"{user}@127.0.0.1", command]

    def ssh(self, user: str, command: str, key: Optional[Path] = None,
            methods: str = "keyboard-interactive", timeout: float = 30) -> pexpect.spawn:
        argv = self.ssh_command(user, command, key, methods)
        return pexpect.spawn(argv[0], list(argv[1:]), encoding="utf-8", timeout=timeout,
                             env=dict(os.environ, LC_ALL="C"))
