"""The demo behind tools/demo: one real login through PAM, with you as the phone.

Run by tools/demo (as root, under /usr/bin/python3).  Everything it makes is
recorded as it is made and undone in ``finally`` -- also on an error, on
Ctrl-C (KeyboardInterrupt) and on SIGTERM/SIGHUP (turned into SystemExit).
"""

import argparse
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pam_toopher.api import ToopherApi  # noqa: E402
from pam_toopher.hook_file import install_hook  # noqa: E402
from pam_toopher.server.phone import Phone  # noqa: E402
from pam_toopher.server.store import Store  # noqa: E402
from tests.support.server import privileged_port  # noqa: E402  (shared with the tests)

PYTHON = "/usr/bin/python3"
PAM_DIR = Path("/etc/pam.d")
# pam_python's interpreter follows PATH to its standard library: with pyenv or
# conda first on the caller's PATH, pamtester would load the wrong Python.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n== {text}")


class Demo:
    def __init__(self, answer: str, auth_timeout: int, web_phone: bool = False):
        self.answer = answer            # "ask", "yes" or "no"
        self.web = web_phone            # the phone is the web app in headless Chromium
        self.web_phone = None
        self.auth_timeout = auth_timeout
        self.name = f"toopher-demo-{secrets.token_hex(2)}"
        self.password = "demo-" + secrets.token_urlsafe(9)
        self.host = socket.gethostname()
        self.tmp = None
        self.server = None
        self.user_made = False
        self.service_path = None
        self.phone = None
        self.ca_bundle = None           # the server's private CA, when it speaks https

    # --------------------------------------------------------------- setup

    def start_server(self) -> None:
        step("starting the project's Toopher-compatible server")
        self.db = str(self.tmp / "toopher.db")
        store = Store(self.db)
        try:
            self.key, self.secret = store.create_requester("pam_toopher demo")
        finally:
            store.close()
        # The module believes only a server no local user can pose as: https,
        # with a private CA the server makes itself (the module's ca_bundle);
        # or, for the web phone (passkeys need https on a DNS name or
        # http://localhost), plain http on a port below 1024, which only root binds.
        if self.web:
            port, listen = privileged_port(), ["--public-url", "http://localhost"]
        else:
            tls = self.tmp / "tls"
            subprocess.run([PYTHON, "-m", "pam_toopher.server", "make-cert", "--dir", str(tls),
                            "--name", "127.0.0.1"], cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
            self.ca_bundle = str(tls / "ca.pem")
            say(f"   toopher-server make-cert --dir {tls} --name 127.0.0.1")
            port, listen = 0, ["--tls-cert", str(tls / "server.pem"),
                               "--tls-key", str(tls / "server.key")]
        with open(self.tmp / "server.log", "wb") as server_log:  # shown if it fails to start
            self.server = subprocess.Popen(
                [PYTHON, "-m", "pam_toopher.server", "serve", "--db", self.db,
                 "--host", "127.0.0.1", "--port", str(port)] + listen,
                cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1"),
                stdout=subprocess.PIPE, stderr=server_log)
        ready, _, _ = select.select([self.server.stdout], [], [], 15)
        line = self.server.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("listening on "):
            log = (self.tmp / "server.log").read_text(errors="replace").strip()[-800:]
            raise RuntimeError(f"the server did not start: {line or 'no answer'}"
                               + (f"; its log: {log}" if log else ""))
        self.url = line[len("listening on "):]
        self.phone = Phone(self.db)
        say(f"   {self.url} (database {self.db}, pid {self.server.pid})")

    def create_user(self) -> None:
        step(f"creating the throwaway user {self.name}")
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", self.name], check=True)
        self.user_made = True
        subprocess.run(["chpasswd"], input=f"{self.name}:{self.password}\n", text=True,
                       check=True)
        say(f"   password: {self.password}")

    def install_service(self) -> None:
        self.config = self.tmp / "toopher.conf"
        self.audit = self.tmp / "audit.log"
        fd = os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("[toopher]\n"
                         f"api_url = {self.url}\n"
                         + (f"ca_bundle = {self.ca_bundle}\n" if self.ca_bundle else "") +
                         f"consumer_key = {self.key}\n"
                         f"consumer_secret = {self.secret}\n"
                         f"auth_timeout = {self.auth_timeout}\n"
                         f"otp_prompt_after = {min(15, self.auth_timeout // 2)}\n"
                         f"terminal_name = {self.host}\n"
                         f"audit_log = {self.audit}\n")
        # The hook file as "toopher-pam install-hook" writes it, naming this checkout.
        hook = self.tmp / "pam_toopher.py"
        install_hook(str(hook), str(REPO))
        path = PAM_DIR / self.name
        lines = ["auth requisite pam_unix.so",
                 f"auth required pam_python.so {hook} config={self.config}",
                 "account required pam_unix.so"]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.service_path = path
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        step(f"PAM service {path} (the password, then the push)")
        for line in lines:
            say(f"   {line}")

    def enrol_web_phone(self) -> None:
        from demo_web_phone import WebPhone  # Selenium and Chromium only for --web-phone

        step(f"enrolling a phone for {self.name}: the web app in headless Chromium")
        self.web_phone = WebPhone(self.db, self.name, self.tmp, say)
        self.web_phone.enrol()

    def pair(self) -> None:
        step(f"pairing {self.name} with the {'web app' if self.web else 'simulated'} phone")
        if self.web_phone:
            phrase = self.web_phone.pairing_phrase()
        else:
            phrase = self.phone.make_pairing_phrase(self.name)
            self.phone.set_pairing_rule(self.name, "accept")
        say(f"   the phone app shows the pairing phrase: {phrase}")
        with ToopherApi(self.key, self.secret, self.url, ca_bundle=self.ca_bundle) as api:
            pairing = api.pair(phrase, self.name)
            if self.web_phone:
                self.web_phone.accept_pairing(pairing.id)
            pairing = api.get_pairing_status(pairing.id, long_poll=5)
        self.phone.clear_pairing_rule(self.name)
        if not pairing.enabled:
            raise RuntimeError("the pairing was not accepted")
        say("   paired (accepted on the phone)")

    # --------------------------------------------------------------- login

    def login(self) -> str:
        """The last line of the demo: what happened, said as it is."""
        step("logging in through PAM; this terminal plays the phone")
        command = ["pamtester", "-v", "-I", "rhost=127.0.0.1", self.name, self.name,
                   "authenticate"]
        say(f"   $ echo '{self.password}' | PATH={SYSTEM_PATH} {' '.join(command)}")
        say("     (the password; then the phone's answer is all it takes)")
        login = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 env=dict(os.environ, PATH=SYSTEM_PATH))
        login.stdin.write(f"{self.password}\n")
        login.stdin.close()
        approved = self.play_phone(login)
        output = login.stdout.read()  # ends when pamtester does: the module's wait is bounded
        login.wait()
        login.stdout.close()
        for line in output.splitlines():
            say(f"   pamtester| {line}")
        step("outcome")
        if login.returncode == 0:
            say("   PAM result: PAM_SUCCESS -- login allowed")
        else:
            said = [line for line in output.splitlines() if line.startswith("pamtester: ")]
            last = said[-1] if said else ""
            say(f"   PAM result: {last.split('pamtester: ')[-1] or 'error'} "
                f"(pamtester exit {login.returncode}) -- login refused")
        say("   audit line:")
        audit = self.audit.read_text().splitlines() if self.audit.exists() else []
        for line in audit:
            say(f"   {line}")
        return verdict(login.returncode, output, audit, approved)

    def play_phone(self, login: subprocess.Popen) -> bool:
        deadline = time.monotonic() + self.auth_timeout
        if self.web_phone:
            return self.web_phone.answer(lambda shown: self.decide(shown, deadline),
                                         self.auth_timeout)
        request = None
        while request is None and time.monotonic() < deadline and login.poll() is None:
            pending = self.phone.pending_requests(self.name)
            request = pending[-1] if pending else None
            time.sleep(0.05)
        if request is None:
            say("   (no push arrived)")
            return False
        approved = self.decide(request, deadline)
        if approved:
            self.phone.approve(request["id"], "approved in the demo")
        else:
            self.phone.deny(request["id"], "denied in the demo")
        return approved

    def decide(self, request: dict, deadline: float) -> bool:
        say("")
        say(f"   [phone] {self.name} wants to log in to {self.host} from 127.0.0.1 "
            f"\u2014 approve? [y/n]")
        say(f"   [phone] ({request['action']})")
        if self.answer == "ask":
            return self.ask(deadline)
        approved = self.answer == "yes"
        say(f"   [phone] answering {'y' if approved else 'n'} (--{self.answer})")
        return approved

    @staticmethod
    def ask(deadline: float) -> bool:
        while True:
            sys.stdout.write("   [phone] > ")
            sys.stdout.flush()
            ready, _, _ = select.select([sys.stdin], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                say("\n   [phone] no answer in time")
                return False
            answer = sys.stdin.readline().strip().lower()
            if answer in ("y", "yes"):
                return True
            if answer in ("n", "no", ""):
                return False

    # ------------------------------------------------------------- cleanup

    def cleanup(self) -> None:
        step("cleaning up")
        if self.web_phone is not None:
            self.web_phone.close()
            say("   closed the browser")
        if self.phone is not None:
            self.phone.close()
        if self.server is not None:
            if self.server.poll() is None:
                self.server.terminate()
                try:
                    self.server.wait(5)
                except subprocess.TimeoutExpired:
                    self.server.kill()
                    self.server.wait()
            self.server.stdout.close()
            say(f"   stopped the server (pid {self.server.pid})")
        if self.service_path is not None:
            try:
                self.service_path.unlink()
            except FileNotFoundError:
                pass
            say(f"   removed {self.service_path}")
        if self.user_made:
            subprocess.run(["userdel", "--force", self.name], capture_output=True)
            subprocess.run(["groupdel", self.name], capture_output=True)
            say(f"   removed the user {self.name}")
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            say(f"   removed {self.tmp}")

    def run(self) -> int:
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix="toopher-demo-"))
            self.tmp.chmod(0o700)
            self.start_server()
            self.create_user()
            self.install_service()
            if self.web:
                self.enrol_web_phone()
            self.pair()
            result = self.login()
        finally:
            self.cleanup()
        say(f"\n{result}")
        return 0 if result.startswith("demo finished:") else 1


def verdict(returncode: int, output: str, audit: list, approved: bool) -> str:
    """One line: the login's real outcome, and whether it is what the phone said."""
    fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', audit[-1])) if audit else {}
    outcome = fields.get("outcome", "")
    reason = fields.get("reason", "").strip('"')
    answer = "approved" if approved else "denied"
    if returncode == 0 and outcome == "granted" and approved:
        return "demo finished: login granted -- the phone approved"
    if returncode != 0 and outcome == "denied" and not approved:
        return "demo finished: login denied -- the phone denied"
    if outcome:
        return (f"demo FAILED: the phone {answer}, but the login ended with outcome={outcome} "
                f"({reason}), pamtester exit {returncode}")
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return (f"demo FAILED: the phone {answer}, but the module recorded no decision "
            f"(error: {last}), pamtester exit {returncode}")


def _exit_on(signum, frame):
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(prog="tools/demo", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--yes", action="store_true", help="the phone approves")
    group.add_argument("--no", action="store_true", help="the phone denies")
    parser.add_argument("--web-phone", action="store_true",
                        help="the phone is the web app (toopher-server --public-url) in headless"
                             " Chromium with a virtual passkey, instead of the simulator")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root")
    if args.yes or args.no:
        answer = "yes" if args.yes else "no"
    else:
        answer = "ask" if sys.stdin.isatty() else "yes"
    signal.signal(signal.SIGTERM, _exit_on)
    signal.signal(signal.SIGHUP, _exit_on)
    try:
        return Demo(answer, auth_timeout=60 if answer == "ask" else 10,
                    web_phone=args.web_phone).run()
    except KeyboardInterrupt:
        say("\ninterrupted; everything made was removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())
