"""The module's configuration file: read it safely, validate every option.

The file (default ``/etc/security/toopher.conf``) holds the consumer secret
and says whom to believe, so it must be owned by root and closed to group
and others, and so must every directory above it (pam_toopher.paths: like
sshd's StrictModes); the checks are made with ``fstat`` on the descriptors
walked and then read, so nothing can be swapped between check and use.
The format is a small INI dialect parsed here rather than by configparser,
so every error names the file, the line and the key, and a ``%`` in a secret means nothing special::

    [toopher]
    # comment
    key = value

Any problem raises :class:`ConfigError`; the module then refuses to run
(PAM_SERVICE_ERR) whatever ``failmode`` says, because a config that cannot
be trusted cannot tell us to fail open either.
"""

from __future__ import annotations

import os
import stat
from urllib.parse import urlsplit

from pam_toopher.paths import (ROOT_ONLY, UntrustedPathError, open_trusted,
                               writable_by_others)
from pam_toopher.text import sanitize

# typing only for the type checker: importing it costs every login ~3 ms
# (pam_toopher/record.py, docs/pam.md "Speed").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, FrozenSet, Optional, Tuple
    from typing import NamedTuple as Record
else:
    from pam_toopher.record import Record

__all__ = ["ConfigError", "Config", "Secret", "DEFAULT_PATH", "load_config", "parse_config",
           "ACTION_FIELDS", "LOGIN_GRACE_TIME_LIMIT", "OPTION_PARSERS"]

DEFAULT_PATH = "/etc/security/toopher.conf"
SECTION = "toopher"
# sshd's default LoginGraceTime is 120 s; the wait for the phone plus one
# last HTTP call must end well before sshd kills the login.
LOGIN_GRACE_TIME = 120.0
LOGIN_GRACE_TIME_LIMIT = 110.0
MAX_HTTP_TIMEOUT = 60.0
MAX_FILE_BYTES = 64 * 1024
# The names an ``action`` template may use; see ``flow.describe_action``.
ACTION_FIELDS = frozenset({"service", "user", "rhost", "tty", "command", "host"})
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
DEFAULT_UNPRIVILEGED_PORT_START = 1024


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class Secret:
    """A string that never shows itself: repr and str are ``***``.

    Only :meth:`reveal` gives the value, at the one place that signs requests.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # never pickled into a crash dump or cache
        raise TypeError("a Secret cannot be pickled")


# Read once per process: a login is one short process (sshd's PAM child, sudo).
# (os.uname, not socket.gethostname: the same value, without importing socket.)
_HOST_NAME = os.uname().nodename


class Config(Record):
    """Validated settings; see config/toopher.conf.example for each option.

    A NamedTuple to the type checker, a pam_toopher.record.Record at run
    time, not a dataclass: every login, skipped ones included, builds one,
    and importing dataclasses and typing costs ~10 ms (docs/pam.md, Speed)."""

    path: str
    # The service's base URLs in order of preference (the key ``api_url``).
    api_urls: Tuple[str, ...]
    consumer_key: str
    consumer_secret: Secret
    ca_bundle: Optional[str] = None
    http_timeout: float = 10.0
    auth_timeout: float = 60.0
    failmode: str = "secure"
    users: Tuple[str, ...] = ("*",)
    groups: Tuple[str, ...] = ("*",)
    unpaired: str = "deny"
    terminal_id: str = _HOST_NAME
    terminal_name: str = _HOST_NAME
    action: Optional[str] = None
    automation_allowed: bool = False
    otp_fallback: bool = True
    otp_prompt_after: float = 15.0
    audit_log: Optional[str] = None
    debug: bool = False


# ------------------------------------------------------------ value parsers
# Each takes the stripped text of a value and returns the typed value or
# raises ValueError with a message that does not repeat the value (it may be
# the secret).

def _text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _secret(value: str) -> Secret:
    return Secret(_text(value))


_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be yes or no")


def _seconds(minimum: float, below: float, why: str = "") -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError("must be a number of seconds") from None
        if not minimum <= seconds < below:  # also rejects nan
            raise ValueError(f"must be at least {minimum:g} and below {below:g} seconds{why}")
        return seconds
    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value.lower()
    return parse


def _patterns(value: str) -> Tuple[str, ...]:
    patterns = tuple(value.split())
    if not patterns:
        raise ValueError("must name at least one pattern (use * for everyone)")
    if any(p == "!" for p in patterns):
        raise ValueError("a lone ! must be followed by a pattern")
    return patterns


def _api_urls(value: str) -> Tuple[str, ...]:
    """Space-separated base URLs of one service (its instances), in order
    of preference; each must pass :func:`_api_url`."""
    urls = tuple(value.split())
    if not urls:
        raise ValueError("must be an https:// URL such as https://api.toopher.com/v1/")
    for number, url in enumerate(urls, start=1):
        try:
            _api_url(url)
        except ValueError as exc:
            raise ValueError(str(exc) if len(urls) == 1 else f"URL {number} {exc}") from None
        if url.rstrip("/") in (other.rstrip("/") for other in urls[:number - 1]):
            raise ValueError(f"URL {number} repeats an earlier one")
    return urls


def _api_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL such as https://api.toopher.com/v1/")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not contain credentials, a query or a fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if parts.scheme == "http":
        why = _impersonable_http(parts.hostname, port or 80)
        if why:
            raise ValueError(f"must use https:// (with ca_bundle for a private CA, see "
                             f"toopher-server make-cert): plain http {why}")
    return value


def _impersonable_http(host: str, port: int) -> Optional[str]:
    """Why a local user could pose as the service at http://host:port, or
    None when only root can listen there.

    Plain http authenticates no one, so it is believed only where no other
    local user can answer: a literal loopback address (a name such as
    localhost resolves to 127.0.0.1 *and* ::1, and the user takes the one the
    server does not hold) on a port below the kernel's unprivileged-port
    start, which only root (CAP_NET_BIND_SERVICE) can bind.
    """
    import ipaddress  # only http:// URLs get here

    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (f"is accepted only to a literal loopback address (127.0.0.1 or [::1]), "
                f"not to the name {sanitize(host, 80)}")
    if not address.is_loopback:
        return "is accepted only to 127.0.0.1 or [::1]"
    start = unprivileged_port_start()
    if port >= start:
        return (f"to port {port} can be served by any local user (ports from {start} up "
                f"are unprivileged, {UNPRIVILEGED_PORT_START}); use a port below {start}")
    return None


def unprivileged_port_start(path: Optional[str] = None) -> int:
    """The first port an unprivileged process may bind (1024 by default)."""
    try:
        with open(path or UNPRIVILEGED_PORT_START) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return DEFAULT_UNPRIVILEGED_PORT_START


def _existing_path(value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError("must be an absolute path")
    if not os.path.exists(value):
        raise ValueError("names a file that does not exist")
    return value


def _absolute_path(value: str) -> str:
    if not os.path.isabs(value):
        raise ValueError("must be an absolute path")
    return value


def _action_template(value: str) -> str:
    try:
        import string  # only a config with an action template pays for it

        parsed = list(string.Formatter().parse(value))
    except ValueError:
        raise ValueError("has unbalanced { or }") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        # Plain names only: {user.__class__} or {0} would reach into objects.
        if name not in ACTION_FIELDS or spec or conversion:
            raise ValueError("may use only " + ", ".join(
                "{" + f + "}" for f in sorted(ACTION_FIELDS)))
    return value


OPTION_PARSERS: Dict[str, Callable[[str], object]] = {
    "api_url": _api_urls,
    "consumer_key": _text,
    "consumer_secret": _secret,
    "ca_bundle": _existing_path,
    "http_timeout": _seconds(1, MAX_HTTP_TIMEOUT),
    "auth_timeout": _seconds(
        1, LOGIN_GRACE_TIME_LIMIT,
        " (sshd's LoginGraceTime, 120 s by default, ends the login before a longer wait)"),
    "failmode": _choice("secure", "safe"),
    "users": _patterns,
    "groups": _patterns,
    "unpaired": _choice("deny", "pair", "allow"),
    "terminal_id": _text,
    "terminal_name": _text,
    "action": _action_template,
    "automation_allowed": _boolean,
    "otp_fallback": _boolean,
    "otp_prompt_after": _seconds(0, LOGIN_GRACE_TIME_LIMIT),
    "audit_log": _absolute_path,
    "debug": _boolean,
}
REQUIRED = ("api_url", "consumer_key", "consumer_secret")


# ------------------------------------------------------------------ parsing

def parse_config(text: str, path: str) -> Config:
    """The Config described by ``text`` (the contents of ``path``)."""
    values: Dict[str, object] = {}
    seen_at: Dict[str, int] = {}
    in_section = False
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        where = f"{path}, line {number}"
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"{where}: a section header must end with ]")
            name = line[1:-1].strip()
            if name != SECTION:
                raise ConfigError(f"{where}: unknown section [{sanitize(name, 40)}]; "
                                  f"the only section is [{SECTION}]")
            in_section = True
            continue
        key, equals, value = line.partition("=")
        key = key.strip().lower()
        if not equals or not key:
            raise ConfigError(f"{where}: expected 'key = value'")
        if not in_section:
            raise ConfigError(f"{where}: key '{sanitize(key, 40)}' comes before "
                              f"the [{SECTION}] section header")
        if key not in OPTION_PARSERS:
            raise ConfigError(f"{where}: unknown key '{sanitize(key, 40)}'")
        if key in seen_at:
            raise ConfigError(f"{where}: key '{key}' is already set on line {seen_at[key]}")
        try:
            values[key] = OPTION_PARSERS[key](value.strip())
        except ValueError as exc:
            raise ConfigError(f"{where}: key '{key}' {exc}") from None
        seen_at[key] = number
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise ConfigError(f"{path}: missing required key(s): {', '.join(missing)}")
    values["api_urls"] = values.pop("api_url")
    config = Config(path=path, **values)  # type: ignore[arg-type]
    # The last status call may run up to http_timeout past the end of the wait.
    if config.auth_timeout + config.http_timeout >= LOGIN_GRACE_TIME:
        at = seen_at.get("auth_timeout", seen_at.get("http_timeout"))
        raise ConfigError(f"{path}, line {at}: key 'auth_timeout' plus http_timeout must stay "
                          f"below {LOGIN_GRACE_TIME:g} seconds (sshd's LoginGraceTime)")
    # A prompt for the code that would come after the wait is over would leave
    # a user whose phone is offline no way in.
    if config.otp_fallback and config.otp_prompt_after >= config.auth_timeout:
        at = seen_at.get("otp_prompt_after", seen_at.get("auth_timeout"))
        raise ConfigError(f"{path}, line {at}: key 'otp_prompt_after' "
                          f"({config.otp_prompt_after:g} s) must be below auth_timeout "
                          f"({config.auth_timeout:g} s), or the prompt for the code never "
                          "comes (0 asks for it at once)")
    return config


def load_config(path: str = DEFAULT_PATH, *, require_root_owner: bool = True) -> Config:
    """Open, check and parse the configuration file at ``path``, and check
    the ``ca_bundle`` it names.

    Both are reached only through directories no other user can change
    (pam_toopher.paths); ``require_root_owner`` is for tests run as a normal
    user only (their own files count as root's); the module and the admin
    command always require root ownership.
    """
    owners = ROOT_ONLY if require_root_owner else frozenset({0, os.geteuid()})
    try:
        # O_NONBLOCK: a FIFO planted there cannot hang the login.
        fd, info = open_trusted(path, os.O_RDONLY | os.O_NONBLOCK, owners=owners)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (copy config/toopher.conf.example "
                          "there and fill in the credentials)") from None
    except UntrustedPathError as exc:
        raise ConfigError(f"{path}: refused: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        _check_file_is_private(info, path, owners)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not valid UTF-8") from None
    config = parse_config(text, path)
    if config.ca_bundle is not None:
        check_ca_bundle(config.ca_bundle, owners)
    return config


def check_ca_bundle(path: str, owners: FrozenSet[int] = ROOT_ONLY) -> None:
    """The CA bundle decides which server is believed: whoever may change it
    (or a directory above it) could make a certificate for a server of theirs."""
    where = f"ca_bundle {path}"
    try:
        fd, info = open_trusted(path, os.O_RDONLY | os.O_NONBLOCK, owners=owners)
        os.close(fd)
    except UntrustedPathError as exc:
        raise ConfigError(f"{where}: refused: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot open: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where}: not a regular file")
    if info.st_uid not in owners:
        raise ConfigError(f"{where}: must be owned by root (it is owned by uid {info.st_uid}); "
                          f"run: chown root:root {path}")
    if writable_by_others(info):
        raise ConfigError(f"{where}: must not be writable by group or others (mode is "
                          f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 644 {path}")


def _check_file_is_private(info: os.stat_result, path: str, owners: FrozenSet[int]) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file")
    if info.st_uid not in owners:
        raise ConfigError(f"{path}: must be owned by root (it is owned by uid {info.st_uid}); "
                          f"run: chown root:root {path}")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: must not be readable or writable by group or others "
                          f"(mode is {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}")
