"""``toopher-pam``: check the setup, pair users, try a login, manage users.

    toopher-pam [--config PATH] check [--hook PATH]
    toopher-pam install-hook [PATH]
    toopher-pam [--config PATH] pair USER [--phrase PHRASE] [--timeout SECONDS]
    toopher-pam [--config PATH] test USER [--service NAME] [--rhost HOST]
    toopher-pam [--config PATH] status|enable|disable|reset USER

Each command is a plain function taking the loaded config, an API client and
an output stream, so tests call them without argv.  :func:`main` catches
only this project's errors and prints them as one line on stderr (exit 1);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, TextIO, Tuple

from pam_toopher.audit import AuditTrail, audit_file_problem
from pam_toopher.config import DEFAULT_PATH, Config, ConfigError, load_config
from pam_toopher.errors import (ToopherApiError, ToopherRefusedError, ToopherTLSError,
                                ToopherUnavailableError, UserUnknownError)
from pam_toopher.flow import (ApiFactory, Clock, Outcome, LoginRequest, SystemClock,
                              ToopherClient, default_api_factory, run, wait_until_answered)
from pam_toopher.hook_file import DEFAULT_HOOK_PATH
from pam_toopher.text import sanitize

if TYPE_CHECKING:
    from pam_toopher.models import UserStatus

__all__ = ["main", "check", "check_url", "check_hook", "install_hook", "pair", "try_login",
           "status", "set_enabled", "reset", "TerminalConversation", "CliError"]

PROG = "toopher-pam"
# The recommended limit for a pairing to be accepted on the phone.
PAIRING_TIMEOUT = 90.0
# A user name no one has: the service answers "unknown user" only to a
# correctly signed request, which is what check wants to know.
CHECK_USER = "toopher-pam-credentials-check"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """A failure explained in one line for the administrator."""


class TerminalConversation:
    """The flow's Conversation on a terminal (for ``test``)."""

    def __init__(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr):
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def info(self, text: str) -> None:
        print(sanitize(text), file=self.stdout, flush=True)

    def error(self, text: str) -> None:
        print(sanitize(text), file=self.stderr, flush=True)

    def prompt_echo_on(self, text: str) -> Optional[str]:
        self.stdout.write(sanitize(text))
        self.stdout.flush()
        line = self.stdin.readline()
        return line.rstrip("\n") if line else None

    def prompt_echo_off(self, text: str) -> Optional[str]:
        try:
            return getpass.getpass(sanitize(text))
        except EOFError:
            return None


# ---------------------------------------------------------------- commands

def check(config: Config, api_factory: ApiFactory, out: TextIO) -> None:
    """The config loaded (syntax, permissions); now one signed call to each
    service URL, each on its own (a login would fail over and hide a broken
    one).  Fails naming every URL that is not OK."""
    # load_config refused anything another user could change (issue 14).
    print(f"{config.path}: syntax and permissions (file and directories) OK", file=out)
    if config.ca_bundle:
        print(f"ca_bundle {config.ca_bundle}: permissions (file and directories) OK", file=out)
    if config.audit_log:
        problem = audit_file_problem(config.audit_log)
        if problem:
            print(f"warning: audit_log {config.audit_log} will not be written ({problem}); "
                  "decisions go to syslog only", file=out)
    broken = []
    for url in config.api_urls:
        api = api_factory(config._replace(api_urls=(url,)))
        try:
            state, line = check_url(config, url, api)
        finally:
            api.close()
        if state != URL_OK and len(config.api_urls) == 1:
            raise CliError(line)
        print(line, file=out)
        if state != URL_OK:
            broken.append(f"{url} ({state})")
    if broken:
        raise CliError(f"{len(broken)} of {len(config.api_urls)} service URLs failed the "
                       f"check: {', '.join(broken)}")


URL_OK = "OK"


def check_url(config: Config, url: str, api: ToopherClient) -> Tuple[str, str]:
    """(state, one line for the administrator) of one service URL: OK,
    unreachable, TLS error, refused credentials, refused, or failed."""
    try:
        api.find_user_by_name(CHECK_USER)
    except UserUnknownError:
        pass  # the service understood a signed request: the credentials work
    except ToopherTLSError as exc:
        return "TLS error", (f"{url}: {exc}; check ca_bundle "
                             f"({config.ca_bundle or 'not set: the system CAs are used'})")
    except ToopherUnavailableError as exc:
        return "unreachable", f"{url}: cannot reach the service: {exc}"
    except ToopherApiError as exc:  # refused, malformed, answer lost, not sent
        if exc.status == 401:
            return "refused credentials", (f"{url} refused the credentials (HTTP 401): check "
                                           "consumer_key and consumer_secret")
        if isinstance(exc, ToopherRefusedError):
            return "refused", f"{url} refused the check: {exc}"
        return "failed", f"{url}: the check failed: {exc}"
    return URL_OK, f"{url}: credentials accepted"


def check_hook(path: str, out: TextIO) -> None:
    """The hook file loads the module the way pam_python does inside sshd."""
    from pam_toopher import hook_file

    try:
        report = hook_file.check_hook(path)
    except hook_file.HookError as exc:
        raise CliError(str(exc)) from None
    print(f"{path}: loads {os.path.dirname(report.module)} as sshd runs it", file=out)


def install_hook(path: str, out: TextIO) -> None:
    """Write the hook file naming the directory this package was installed in."""
    from pam_toopher import hook_file

    try:
        directory = hook_file.install_hook(path)
        report = hook_file.check_hook(path)
    except hook_file.HookError as exc:
        raise CliError(str(exc)) from None
    print(f"{path}: written; it loads {os.path.dirname(report.module)} "
          f"(from {directory}) as sshd runs it", file=out)


def pair(api: ToopherClient, user: str, phrase: str, out: TextIO, *,
         timeout: float = PAIRING_TIMEOUT, clock: Clock = SystemClock()) -> None:
    """Submit the phrase the user's app shows, then wait for the phone to accept."""
    pairing = api.pair(phrase, user)
    print(f"Waiting up to {timeout:.0f} s for {user} to accept the pairing on the phone...",
          file=out, flush=True)
    pairing = wait_until_answered(
        lambda long_poll: api.get_pairing_status(pairing.id, long_poll=long_poll),
        clock.now() + timeout, clock,
        on_poll=lambda left: print(f"  still waiting ({left:.0f} s left)", file=out, flush=True))
    if pairing.pending:
        raise CliError(f"{user} did not accept the pairing within {timeout:.0f} s")
    if not pairing.enabled:
        raise CliError(f"the pairing was refused on {user}'s phone")
    print(f"{user} is paired.", file=out)


def try_login(config_path: str, user: str, service: str, rhost: Optional[str],
               conversation: Any, out: TextIO, api_factory: ApiFactory,
               load: Callable[[str], Config] = load_config,
               clock: Clock = SystemClock()) -> Outcome:
    """The module's own flow from a terminal; audited like a real login."""
    request = LoginRequest(user=user, service=service, rhost=rhost, tty=_tty())
    decision = run(request, conversation, config_path=config_path, audit=AuditTrail(),
                   api_factory=api_factory, load=load, clock=clock)
    print(f"outcome: {decision.outcome.value} ({sanitize(decision.reason, 200)})", file=out)
    return decision.outcome


def status(api: ToopherClient, user: str, out: TextIO) -> None:
    found = _find_user(api, user)
    enabled = "yes" if found.toopher_authentication_enabled else "no (the module steps aside)"
    print(f"user: {found.name}\nid: {found.id}\nToopher enabled: {enabled}", file=out)


def set_enabled(api: ToopherClient, user: str, enabled: bool, out: TextIO) -> None:
    _find_user(api, user)
    api.set_toopher_enabled_for_user(user, enabled)
    print(f"Toopher {'enabled' if enabled else 'disabled'} for {user}.", file=out)


def reset(api: ToopherClient, user: str, out: TextIO) -> None:
    _find_user(api, user)
    api.reset_user(user)
    print(f"{user}'s pairings are removed; {user} must pair again.", file=out)


def _find_user(api: ToopherClient, user: str) -> UserStatus:
    try:
        return api.find_user_by_name(user)
    except UserUnknownError:
        raise CliError(f"{user} is not known to Toopher (never paired); "
                       f"run: {PROG} pair {user}") from None


def _tty() -> Optional[str]:
    try:
        return os.ttyname(0)
    except OSError:
        return None


# -------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Toopher two-factor login for PAM: "
                                     "check the setup, pair users, try a login.")
    parser.add_argument("--config", default=DEFAULT_PATH,
                        help=f"configuration file (default {DEFAULT_PATH})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    checking = commands.add_parser("check", help="validate the hook file, the config file and "
                                   "the credentials")
    checking.add_argument("--hook", default=DEFAULT_HOOK_PATH,
                          help=f"the file pam_python runs (default {DEFAULT_HOOK_PATH})")
    hooking = commands.add_parser("install-hook", help="write the file pam_python runs, naming "
                                  "the directory this package is installed in")
    hooking.add_argument("path", nargs="?", default=DEFAULT_HOOK_PATH,
                         help=f"where (default {DEFAULT_HOOK_PATH})")
    pairing = commands.add_parser("pair", help="pair USER with the Toopher app")
    pairing.add_argument("user")
    pairing.add_argument("--phrase", help="the pairing phrase the app shows (else asked)")
    pairing.add_argument("--timeout", type=float, default=PAIRING_TIMEOUT,
                         help=f"seconds to wait for the phone (default {PAIRING_TIMEOUT:g})")
    testing = commands.add_parser("test", help="run the module's login flow for USER; "
                                  "exit 0 only when granted")
    testing.add_argument("user")
    testing.add_argument("--service", default=PROG, help="service name the phone is shown")
    testing.add_argument("--rhost", help="remote host the phone is shown")
    for name, text in (("status", "show USER at Toopher"),
                       ("enable", "require Toopher for USER again"),
                       ("disable", "switch Toopher off for USER (the module steps aside)"),
                       ("reset", "forget USER's pairings so the user can pair anew")):
        commands.add_parser(name, help=text).add_argument("user")
    return parser


def main(argv: Optional[Sequence[str]] = None, *, api_factory: ApiFactory = default_api_factory,
         load: Callable[[str], Config] = load_config, stdin: TextIO = sys.stdin,
         stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr,
         clock: Clock = SystemClock()) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "install-hook":  # comes before any config exists
            install_hook(args.path, stdout)
            return EXIT_OK
        if args.command == "test":
            outcome = try_login(args.config, args.user, args.service, args.rhost,
                                 TerminalConversation(stdin, stdout, stderr), stdout,
                                 api_factory, load, clock)
            return EXIT_OK if outcome is Outcome.GRANTED else EXIT_FAILED
        config = load(args.config)
        if args.command == "check":  # the hook as sshd loads it, then a client per service URL
            check_hook(args.hook, stdout)
            check(config, api_factory, stdout)
            return EXIT_OK
        api = api_factory(config)
        try:
            _dispatch(args, config, api, stdin, stdout)
        finally:
            api.close()
        return EXIT_OK
    except (CliError, ConfigError, ToopherApiError) as exc:
        print(f"{PROG}: error: {sanitize(exc)}", file=stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=stderr)
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace, config: Config, api: ToopherClient, stdin: TextIO,
              out: TextIO) -> None:
    if args.command == "pair":
        phrase = args.phrase
        if phrase is None:
            out.write(f"Pairing phrase shown in {args.user}'s Toopher app: ")
            out.flush()
            phrase = stdin.readline().strip()
        if not phrase:
            raise CliError("no pairing phrase given")
        pair(api, args.user, phrase, out, timeout=args.timeout)
    elif args.command == "status":
        status(api, args.user, out)
    elif args.command in ("enable", "disable"):
        set_enabled(api, args.user, args.command == "enable", out)
    elif args.command == "reset":
        reset(api, args.user, out)


if __name__ == "__main__":
    sys.exit(main())
