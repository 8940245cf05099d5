"""Concurrent logins at the API level against one or more server instances,
answered by the phone's rules, with an instance killed mid-wait.

The driver of tests/test_server_instances.py and tools/bench-instances:

    users = prepare_users(store, requester_id, 40, "load")   # paired, terminal, rule
    report = run_logins([a.url, b.url], key, secret, users, kill=(0.5, a.kill))
    report.check(store)                                       # raises on any wrong outcome

Each login is one thread: ``initiate`` on its instance (users alternate
between the URLs), then long polls until decided.  When its instance stops
answering (refused, reset, timeout), the login goes on polling the same
request on the next URL -- what a client with several service URLs does;
the module's own failover is not used here.  User ``i`` is approved when
``i`` is even and denied when odd, ``rule_delay`` seconds after its request
was made; that moment (the request's ``auto_at``) is the approval, and the
approval-to-decision time is measured from it to the client's decision.

``PamLogins`` runs a share of the logins through the module itself
(pamtester, root only): throwaway local users, one PAM service whose config
lists every instance's URL in ``api_url``, so that after the kill the
module's own failover moves the wait to the next instance.
"""
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import requests
from requests_oauthlib import OAuth1

from pam_toopher.server.phone import Phone
from pam_toopher.server.store import Store
from tests.support.pam import (LocalUser, PamResult, PamService, config_text,
                               create_local_user, delete_local_user, parse_audit_line,
                               password_then_toopher, run_pamtester, write_hook,
                               write_private_file)

TERMINAL = "load-host"
LONG_POLL = "10"
#: Per HTTP call; a long poll answers within LONG_POLL seconds.
CALL_TIMEOUT = (3.0, 25.0)


@dataclass
class Login:
    user: str
    expected: bool
    url: str                      # the instance it started on
    request_id: Optional[str] = None
    granted: Optional[bool] = None
    decided_at: Optional[float] = None   # time.time() of the decision
    failed_over: bool = False
    polls: int = 0
    errors: List[str] = field(default_factory=list)


@dataclass
class Report:
    logins: List[Login]
    started: float
    initiated: float  # when the last initiate was answered
    finished: float
    approvals: Dict[str, float]  # request id -> auto_at (the rule's answer)

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def per_second(self) -> float:
        return len(self.logins) / self.seconds if self.seconds > 0 else 0.0

    @property
    def initiates_per_second(self) -> float:
        spent = self.initiated - self.started
        return len(self.logins) / spent if spent > 0 else 0.0

    @property
    def failed_over(self) -> int:
        return sum(login.failed_over for login in self.logins)

    def latencies(self) -> List[float]:
        """Seconds from each approval (the rule's due time) to the client's decision."""
        return sorted(login.decided_at - self.approvals[login.request_id]
                      for login in self.logins
                      if login.decided_at is not None and login.request_id in self.approvals)

    def p95(self) -> float:
        values = self.latencies()
        return values[min(len(values) - 1, int(0.95 * len(values)))] if values else float("nan")

    def problems(self, store: Store) -> List[str]:
        """Every way the run went wrong: undecided, wrong, lost or doubled logins."""
        found = []
        for login in self.logins:
            if login.granted is None:
                found.append(f"{login.user}: not decided: {login.errors[-3:]}")
            elif login.granted != login.expected:
                found.append(f"{login.user}: granted={login.granted}, expected {login.expected}")
        # One request per login, each answered once and as the client saw it.
        rows = _requests_by_user(store, [login.user for login in self.logins])
        for login in self.logins:
            made = rows.get(login.user, [])
            if len(made) != 1:
                found.append(f"{login.user}: {len(made)} requests made, expected 1")
            elif made[0] != (login.request_id, 0, int(login.expected)):
                found.append(f"{login.user}: stored {made[0]}, client saw {login.request_id}")
        return found


def _requests_by_user(store: Store, users: Sequence[str]) -> Dict[str, List[Tuple]]:
    wanted = set(users)
    rows: Dict[str, List[Tuple]] = {}
    with store._tx(write=False) as db:
        for row in db.execute("SELECT u.name, r.id, r.pending, r.granted FROM auth_requests r"
                              " JOIN users u ON u.id = r.user_id").fetchall():
            if row[0] in wanted:
                rows.setdefault(row[0], []).append((row[1], row[2], row[3]))
    return rows


def pair_with_rule(store: Store, requester_id: str, names: Sequence[str],
                   rule_delay: float) -> List[Tuple[str, bool]]:
    """Pair each user (the phone accepting) and give it a phone rule: the
    ``i``-th approves when ``i`` is even, denies when odd, ``rule_delay`` s
    after each request.  [(name, approved?)]."""
    phone = Phone(store)
    users = []
    for index, name in enumerate(names):
        pairing = store.create_pairing(requester_id, name, "phrase",
                                       phone.make_pairing_phrase(name))
        phone.accept_pairing(pairing["id"])
        approve = index % 2 == 0
        phone.set_rule(name, "approve" if approve else "deny", delay=rule_delay)
        users.append((name, approve))
    return users


def prepare_users(store: Store, requester_id: str, count: int, prefix: str,
                  rule_delay: float) -> List[Tuple[str, bool]]:
    """``count`` users paired with a terminal and a phone rule: (name, approved?)."""
    users = pair_with_rule(store, requester_id, [f"{prefix}-{i}" for i in range(count)],
                           rule_delay)
    for name, _ in users:
        store.create_terminal(requester_id, name, "load terminal", TERMINAL)
    return users


def _login(login: Login, urls: Sequence[str], auth: OAuth1, started: threading.Barrier,
           initiated: threading.Semaphore, deadline: float) -> None:
    session = requests.Session()
    session.auth = auth
    told = False
    try:
        started.wait(timeout=60)
        response = session.post(f"{login.url}/authentication_requests/initiate",
                                data={"user_name": login.user, "terminal_name_extra": TERMINAL,
                                      "action_name": "load test"}, timeout=CALL_TIMEOUT)
        initiated.release()
        told = True
        if response.status_code != 200:
            login.errors.append(f"initiate: HTTP {response.status_code} {response.text}")
            return
        answer = response.json()
        login.request_id = answer["id"]
        position = list(urls).index(login.url)
        while answer["pending"] and time.time() < deadline:
            url = urls[position % len(urls)]
            try:
                response = session.get(f"{url}/authentication_requests/{login.request_id}",
                                       params={"long_poll": LONG_POLL}, timeout=CALL_TIMEOUT)
                login.polls += 1
            except requests.RequestException as failure:
                # The instance is gone (or hung): the same request, on the next one.
                login.errors.append(f"{url}: {type(failure).__name__}")
                position += 1
                login.failed_over = True
                continue
            if response.status_code >= 500:
                login.errors.append(f"{url}: HTTP {response.status_code}")
                position += 1
                login.failed_over = True
                continue
            if response.status_code != 200:
                login.errors.append(f"status: HTTP {response.status_code} {response.text}")
                return
            answer = response.json()
        if not answer["pending"]:
            login.granted, login.decided_at = bool(answer["granted"]), time.time()
    except Exception as failure:  # kept for the report: a thread's exception would be lost
        login.errors.append(f"{type(failure).__name__}: {failure}")
    finally:
        if not told:
            initiated.release()
        session.close()


def run_logins(urls: Sequence[str], key: str, secret: str, users: Sequence[Tuple[str, bool]],
               store: Store, kill: Optional[Tuple[float, Callable[[], None]]] = None,
               timeout: float = 60.0) -> Report:
    """All logins at once; ``kill=(seconds, stop)`` calls ``stop`` that long after
    every login has its request (mid-wait)."""
    logins = [Login(user, expected, urls[index % len(urls)])
              for index, (user, expected) in enumerate(users)]
    auth = OAuth1(key, secret)
    started = threading.Barrier(len(logins) + 1)
    initiated = threading.Semaphore(0)  # released once per login after its initiate
    deadline = time.time() + timeout
    threads = [threading.Thread(target=_login, args=(login, urls, auth, started, initiated,
                                                     deadline), daemon=True)
               for login in logins]
    for thread in threads:
        thread.start()
    started.wait(timeout=60)
    began = time.time()
    for _ in logins:
        initiated.acquire(timeout=60)
    all_initiated = time.time()
    if kill is not None:
        time.sleep(kill[0])
        kill[1]()
    for thread in threads:
        thread.join(max(0.0, deadline - time.time()) + 5)
    finished = time.time()
    approvals = {}
    with store._tx(write=False) as db:
        for row in db.execute("SELECT id, auto_at FROM auth_requests WHERE auto_at IS NOT NULL"
                              ).fetchall():
            approvals[row[0]] = row[1]
    return Report(logins, began, all_initiated, finished, approvals)


# ------------------------------------------------------ through pamtester

#: The module prompts for the code from the app this long into the wait; an
#: empty line (Enter) keeps waiting.  Spare empty lines cover a repeated prompt.
PAM_OTP_PROMPT_AFTER = 1
PAM_ANSWERS_AFTER_PASSWORD = 5
#: The module's wait must span the rule's delay and the kill, well inside
#: sshd's LoginGraceTime (auth_timeout + http_timeout < 120).
PAM_WAIT_MARGIN = 30.0
PAM_HTTP_TIMEOUT = 5


@dataclass
class PamLogin:
    user: LocalUser
    expected: bool
    result: Optional[PamResult] = None
    audit: Dict[str, str] = field(default_factory=dict)
    error: Optional[str] = None

    @property
    def granted(self) -> Optional[bool]:
        """What PAM answered, if the login ended (pamtester's exit status)."""
        return None if self.result is None else self.result.ok


class PamLogins:
    """``count`` logins through pamtester, the real PAM stack and this
    checkout's module (root only).  A context manager: the local users, the
    PAM service and the private directory (hook, config, audit log) are
    removed on every way out.

        with PamLogins(4) as pam:
            pam.configure(store, requester_id, [a.url, b.url], key, secret, rule_delay=3)
            pam.start()
            pam.wait_requested(store, timeout=60)   # every push made
            ...                                     # kill A mid-wait
            pam.finish()
            pam.problems(store)                     # [] when all decided as the phone said
    """

    def __init__(self, count: int):
        self.count = count
        self.logins: List[PamLogin] = []
        self.service: Optional[PamService] = None
        self._tmp = tempfile.TemporaryDirectory(prefix="toopher-bench-pam-")
        self.directory = Path(self._tmp.name)
        self.directory.chmod(0o700)
        self.config_path = self.directory / "toopher.conf"
        self.audit_path = self.directory / "audit.log"
        self._pool: Optional[ThreadPoolExecutor] = None
        self._futures: List[Future] = []
        self.auth_timeout = 0

    def __enter__(self) -> "PamLogins":
        try:
            for _ in range(self.count):
                self.logins.append(PamLogin(create_local_user(), False))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            # pamtester ends by itself within auth_timeout; its users go after it.
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.service is not None:
            self.service.remove()
            self.service = None
        for login in self.logins:
            delete_local_user(login.user.name)
        self.logins = []
        self._tmp.cleanup()

    def configure(self, store: Store, requester_id: str, urls: Sequence[str], key: str,
                  secret: str, rule_delay: float, ca_bundle: Optional[str] = None) -> None:
        """Pair the users with phone rules, write the config (every URL in
        ``api_url``, in order) and the PAM service."""
        expected = dict(pair_with_rule(store, requester_id,
                                       [login.user.name for login in self.logins], rule_delay))
        for login in self.logins:
            login.expected = expected[login.user.name]
        self.auth_timeout = round(rule_delay + PAM_WAIT_MARGIN)
        options: Dict[str, object] = {
            "api_url": " ".join(urls), "consumer_key": key, "consumer_secret": secret,
            "ca_bundle": ca_bundle, "auth_timeout": self.auth_timeout,
            "http_timeout": PAM_HTTP_TIMEOUT, "otp_prompt_after": PAM_OTP_PROMPT_AFTER,
            "audit_log": str(self.audit_path)}
        write_private_file(self.config_path, config_text(options))
        hook = write_hook(self.directory)
        self.service = PamService(password_then_toopher(hook, self.config_path))

    def start(self) -> None:
        """Every pamtester at once, each in its own thread."""
        assert self.service is not None, "configure() first"
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.count))
        timeout = self.auth_timeout + 60  # pamtester's bound: the module's, with room
        for login in self.logins:
            answers = [login.user.password] + [""] * PAM_ANSWERS_AFTER_PASSWORD
            self._futures.append(self._pool.submit(
                run_pamtester, self.service.name, login.user.name, answers,
                items={"rhost": "203.0.113.5"}, timeout=timeout))

    def wait_requested(self, store: Store, timeout: float) -> bool:
        """True once every pamtester login has its request in the store."""
        names = [login.user.name for login in self.logins]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            made = _requests_by_user(store, names)
            if all(made.get(name) for name in names):
                return True
            if all(future.done() for future in self._futures):
                return False
            time.sleep(0.1)
        return False

    def finish(self) -> None:
        """Wait for every pamtester and read the audit lines."""
        for login, future in zip(self.logins, self._futures):
            try:
                login.result = future.result()
            except Exception as failure:  # a timeout: kept for the report
                login.error = f"{type(failure).__name__}: {failure}"
        lines = ([parse_audit_line(line) for line in self.audit_path.read_text().splitlines()]
                 if self.audit_path.exists() else [])
        by_user: Dict[str, List[Dict[str, str]]] = {}
        for line in lines:
            by_user.setdefault(line.get("user", ""), []).append(line)
        for login in self.logins:
            found = by_user.get(login.user.name, [])
            login.audit = found[0] if len(found) == 1 else {}
            if len(found) != 1:
                login.error = login.error or f"{len(found)} audit lines"

    def failed_over(self, first_url: str) -> int:
        """Logins the module decided through a URL other than the first."""
        return sum(bool(login.audit.get("answered_by"))
                   and not login.audit["answered_by"].startswith(first_url)
                   for login in self.logins)

    def problems(self, store: Store) -> List[str]:
        """Undecided, wrong, lost or doubled pamtester logins: PAM's answer
        and the audit line as the phone rule said, one request each,
        stored as decided."""
        found = []
        for login in self.logins:
            name = login.user.name
            outcome = "granted" if login.expected else "denied"
            if login.error or login.result is None:
                found.append(f"{name} (pamtester): {login.error}; {login.result}")
            elif login.granted != login.expected or login.audit.get("outcome") != outcome:
                found.append(f"{name} (pamtester): PAM ok={login.granted}, audit "
                             f"{login.audit}, expected {outcome}; {login.result}")
        rows = _requests_by_user(store, [login.user.name for login in self.logins])
        for login in self.logins:
            made = rows.get(login.user.name, [])
            if len(made) != 1:
                found.append(f"{login.user.name} (pamtester): {len(made)} requests made, "
                             "expected 1")
            elif (made[0][1:] != (0, int(login.expected))
                  or made[0][0] != login.audit.get("request")):
                found.append(f"{login.user.name} (pamtester): stored {made[0]}, audit "
                             f"{login.audit}")
        return found

    def correct(self, store: Store) -> int:
        """How many pamtester logins were decided as the phone said."""
        wrong = {problem.split(" ", 1)[0] for problem in self.problems(store)}
        return sum(login.user.name not in wrong for login in self.logins)
