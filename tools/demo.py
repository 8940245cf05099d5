"""The demo behind tools/demo: one real login through PAM, with you as the phone.

Run by tools/demo (as root, under /usr/bin/python3).  Everything it makes is
recorded as it is made and undone in ``finally`` -- also on an error, on
Ctrl-C (KeyboardInterrupt) and on SIGTERM/SIGHUP (turned into SystemExit).
"""

import argparse
import os
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
from pam_toopher.server.phone import Phone  # noqa: E402
from pam_toopher.server.store import Store  # noqa: E402

PYTHON = "/usr/bin/python3"
PAM_DIR = Path("/etc/pam.d")


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

    # --------------------------------------------------------------- setup

    def start_server(self) -> None:
        step("starting the project's Toopher-compatible server")
        self.db = str(self.tmp / "toopher.db")
        store = Store(self.db)
        try:
            self.key, self.secret = store.create_requester("pam_toopher demo")
        finally:
            store.close()
        self.server = subprocess.Popen(
            [PYTHON, "-m", "pam_toopher.server", "serve", "--db", self.db,
             "--host", "127.0.0.1", "--port", "0"]
            + (["--public-url", "http://localhost"] if self.web else []),
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ready, _, _ = select.select([self.server.stdout], [], [], 15)
        line = self.server.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"the server did not start: {line or 'no answer'}")
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
                         f"consumer_key = {self.key}\n"
                         f"consumer_secret = {self.secret}\n"
                         f"auth_timeout = {self.auth_timeout}\n"
                         f"terminal_name = {self.host}\n"
                         f"audit_log = {self.audit}\n")
        shim = self.tmp / "pam_toopher_shim.py"
        shim.write_text(f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
                        "from pam_toopher.pam_hook import *\n")
        path = PAM_DIR / self.name
        lines = ["auth requisite pam_unix.so",
                 f"auth required pam_python.so {shim} config={self.config}",
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
        with ToopherApi(self.key, self.secret, self.url) as api:
            pairing = api.pair(phrase, self.name)
            if self.web_phone:
                self.web_phone.accept_pairing(pairing.id)
            pairing = api.get_pairing_status(pairing.id, long_poll=5)
        self.phone.clear_pairing_rule(self.name)
        if not pairing.enabled:
            raise RuntimeError("the pairing was not accepted")
        say("   paired (accepted on the phone)")

    # --------------------------------------------------------------- login

    def login(self) -> bool:
        step("logging in through PAM; this terminal plays the phone")
        command = ["pamtester", "-v", "-I", "rhost=127.0.0.1", self.name, self.name,
                   "authenticate"]
        say(f"   $ printf '%s\\n\\n' '{self.password}' | {' '.join(command)}")
        say("     (the password, then Enter at the Toopher prompt)")
        login = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        login.stdin.write(f"{self.password}\n\n")
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
            last = output.strip().splitlines()[-1] if output.strip() else ""
            say(f"   PAM result: {last.split('pamtester: ')[-1] or 'error'} "
                f"(pamtester exit {login.returncode}) -- login refused")
        say("   audit line:")
        for line in (self.audit.read_text().splitlines() if self.audit.exists() else []):
            say(f"   {line}")
        return (login.returncode == 0) == approved

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
            ok = self.login()
        finally:
            self.cleanup()
        say("\ndemo " + ("finished: the login followed the phone's answer" if ok
                         else "FAILED: the login did not follow the phone's answer"))
        return 0 if ok else 1


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
