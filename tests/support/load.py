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
"""
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import requests
from requests_oauthlib import OAuth1

from pam_toopher.server.phone import Phone
from pam_toopher.server.store import Store

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


def prepare_users(store: Store, requester_id: str, count: int, prefix: str,
                  rule_delay: float) -> List[Tuple[str, bool]]:
    """``count`` users paired with a terminal and a phone rule: (name, approved?)."""
    phone = Phone(store)
    users = []
    for index in range(count):
        name = f"{prefix}-{index}"
        pairing = store.create_pairing(requester_id, name, "phrase",
                                       phone.make_pairing_phrase(name))
        phone.accept_pairing(pairing["id"])
        store.create_terminal(requester_id, name, "load terminal", TERMINAL)
        approve = index % 2 == 0
        phone.set_rule(name, "approve" if approve else "deny", delay=rule_delay)
        users.append((name, approve))
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
