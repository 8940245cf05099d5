"""``toopher-server``: run the server, manage requesters, play the phone, inject faults.

Every command is a plain function of the parsed arguments; :func:`main`
turns the project's errors (and OS/SQLite errors) into one line on stderr
and a non-zero exit status.
"""
import argparse
import os
import shlex
import signal
import sys
import time
from typing import List, Optional

from . import forwarded, push
from .dispatch import Response
from .database import database_errors, is_postgres, redact, scrub
from .errors import ServerError
from .httpd import ConnectionLimits, make_server, raise_file_limit
from .limits import Limits
from .phone import Phone
from .store import FAULT_KINDS, PAIRING_RULE_ANSWERS, RULE_ANSWERS, Store

PROG = "toopher-server"
#: Used when neither --db/--database nor --database-file is given: a path or a URL.
DB_ENV = "TOOPHER_SERVER_DB"


class UsageError(ServerError):
    """Bad command line; exit status 2 like argparse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the usage too; users get one line, and --help for more.
        raise UsageError(f"{message} (see {self.prog} --help)")


def _db(args) -> str:
    """The database: --db/--database, else --database-file's content, else $TOOPHER_SERVER_DB.

    A postgresql:// URL may hold a password; --database-file and the
    environment keep it out of argv (and libpq's PGPASSFILE out of the URL).
    """
    target = getattr(args, "db", None)
    if not target and getattr(args, "database_file", None):
        target = _read_database_file(args.database_file)
    target = target or os.environ.get(DB_ENV)
    if not target:
        raise UsageError(f"--db PATH or --database URL is required (or --database-file FILE, "
                         f"or set {DB_ENV})")
    return target


def _read_database_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            lines = [line.strip() for line in file if line.strip()
                     and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as error:
        raise ServerError(f"cannot read the database file {path}: "
                          f"{getattr(error, 'strerror', None) or error}") from None
    if len(lines) != 1:
        raise ServerError(f"the database file {path} must hold one line: a path or a "
                          "postgresql:// URL")
    return lines[0]


def _existing_db(args) -> str:
    """The database of a running (or ran) server: a typo must not make a new, empty one."""
    path = _db(args)
    if path != ":memory:" and not is_postgres(path) and not os.path.exists(path):
        raise ServerError(f"no database at {path} (start the server or create a requester first)")
    return path


def _quoted(view: dict) -> str:
    return " ".join(f"{name}={shlex.quote(str(value))}" for name, value in view.items()
                    if name != "id")


# -- commands ----------------------------------------------------------------------

def _serve_limits(args) -> ConnectionLimits:
    for name in ("max_connections", "workers"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("request_timeout", "idle_timeout"):
        if not 0 < getattr(args, name) <= 3600:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 3600 seconds")
    return ConnectionLimits(max_connections=args.max_connections, workers=args.workers,
                            request_timeout=args.request_timeout, idle_timeout=args.idle_timeout)


def cmd_serve(args) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    limits = _serve_limits(args)
    try:
        trusted = forwarded.parse_trusted(args.trusted_proxy)
    except ValueError as error:
        raise UsageError(f"--trusted-proxy: {error}") from None
    limits, warning = raise_file_limit(limits)
    if warning:
        print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)
    store = Store(_db(args), limits=_limits(args), log=_log)
    server = make_server(store, args.host, args.port, args.tls_cert, args.tls_key,
                         limits=limits, trusted_proxies=trusted)
    _log(f"database: {store.backend} {redact(store.path)}")
    pusher = _enable_webapp(server, store, args) if args.public_url else None

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    scheme = "https" if args.tls_cert else "http"
    try:
        # Inside the try: a SIGTERM right after this line must still exit cleanly.
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"listening on {scheme}://{host}:{server.server_address[1]}/v1", flush=True)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if pusher is not None:
            pusher.close()
        store.close()
    return 0


def _limits(args) -> Limits:
    try:
        return Limits(otp_max_failures=args.otp_max_failures, otp_lockout=args.otp_lockout,
                      otp_lockout_max=args.otp_lockout_max, max_pending=args.max_pending,
                      max_per_minute=args.max_pushes_per_minute)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _enable_webapp(server, store: Store, args):
    """Serve the phone web app under /app/ at ``--public-url``; the push sender, or None."""
    from .webapp import WebApp, parse_public_url  # fido2 is loaded only when needed

    try:
        public = parse_public_url(args.public_url, server.server_address[1])
        subject = args.vapid_subject and push.check_subject(args.vapid_subject)
    except (ServerError, ValueError) as error:
        server.server_close()
        raise UsageError(getattr(error, "message", str(error))) from None
    webapp = WebApp(store, public, push_allow_http_loopback=args.push_allow_http_loopback)
    webapp.devices.set_public_url(public.origin)
    pusher = None
    missing = "turned off (--no-push)" if args.no_push else push.available()
    if missing:
        _log(f"push notifications: off, {missing}")
    else:
        private_pem = webapp.devices.setting_once(push.VAPID_SETTING,
                                                  push.new_vapid_private_key)
        webapp.push_key = push.application_server_key(private_pem)
        pusher = push.PushSender(webapp.devices, private_pem, push.PushSettings(
            subject or push.default_subject(public.origin),
            allow_private=args.push_allow_http_loopback), _log)
        server.dispatcher.api.on_created = pusher.on_created
        _log("push notifications: on")
    # Fault switches are for API clients: the web app's route comes before them.
    for prefix in ("/app", "/app/"):
        server.dispatcher.add_route(prefix, lambda request: Response.from_parts(*webapp.handle(
            request.method, request.target, request.headers, request.body)))
    # stdout keeps its one "listening on" line; this is for the administrator.
    print(f"phone web app at {public.app_url}", file=sys.stderr, flush=True)
    return pusher


def _when(timestamp: Optional[float]) -> str:
    if timestamp is None:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def cmd_device(args) -> int:
    from .devices import DeviceStore  # no fido2 needed for these

    devices = DeviceStore(Store(_existing_db(args) if args.action != "enroll" else _db(args)))
    if args.action == "enroll":
        return _enroll(args, devices)
    if args.action == "list":
        for device in devices.list_devices(args.user):
            status = f"revoked={_when(device['revoked'])}" if device["revoked"] else "active"
            print(f"{device['id']} user={shlex.quote(device['user'])} "
                  f"name={shlex.quote(device['name'])} created={_when(device['created'])} "
                  f"last_used={_when(device['last_used'])} {status}")
    elif args.action == "revoke":
        devices.revoke(args.id)
        print(f"device {args.id} revoked")
    return 0


def _enroll(args, devices) -> int:
    from .webapp import parse_public_url

    url = args.public_url or devices.public_url()
    if not url:
        raise UsageError("no public URL known: give --public-url, or start"
                         " 'serve --public-url' once")
    public = parse_public_url(url)
    token = devices.create_enrol_token(args.user, args.name, args.minutes * 60)
    print(f"Open this link on {args.user}'s phone within {args.minutes:g} minutes"
          " (it works once):")
    print(public.enrol_link(token), flush=True)
    if not args.no_qr:
        import segno

        segno.make(public.enrol_link(token), error="m").terminal(compact=True)
    return 0


def cmd_answers(args) -> int:
    from .devices import DeviceStore

    for answer in DeviceStore(Store(_existing_db(args))).answers(args.user, args.limit):
        details = " ".join(f"{name}={shlex.quote(str(answer[name]))}"
                           for name in ("terminal", "action", "requester") if name in answer)
        proof = "passkey" if answer["assertion"] else "session"
        print(f"{_when(answer['at'])} {answer['answer']} {answer['kind']} {answer['id']}"
              f" user={shlex.quote(answer['user'])} device={answer['device_id']}"
              f" device_name={shlex.quote(answer['device'])} {details} proof={proof}")
    return 0


def cmd_requester_create(args) -> int:
    key, secret = Store(_db(args)).create_requester(args.name)
    print(f"key={key}\nsecret={secret}")
    return 0


def cmd_requester_list(args) -> int:
    for requester in Store(_db(args)).list_requesters():
        print(f"{requester['key']} {shlex.quote(requester['name'])}")
    return 0


def cmd_phone(args) -> int:
    phone = Phone(_existing_db(args))
    action = args.action
    if action == "phrase":
        print(phone.make_pairing_phrase(args.user))
    elif action == "list":
        for pairing in phone.pending_pairings():
            print(f"pairing {pairing['id']} {_quoted(pairing)}")
        for request in phone.pending_requests():
            print(f"request {request['id']} {_quoted(request)}")
    elif action == "approve":
        phone.approve(args.id, **({"reason": args.reason} if args.reason else {}))
    elif action == "deny":
        phone.deny(args.id, **({"reason": args.reason} if args.reason else {}))
    elif action == "accept-pairing":
        phone.accept_pairing(args.id)
    elif action == "refuse-pairing":
        phone.refuse_pairing(args.id)
    elif action == "rule":
        if args.answer == "clear":
            phone.clear_rule(args.user)
        else:
            phone.set_rule(args.user, args.answer, args.delay, args.automated)
    elif action == "pairing-rule":
        if args.answer == "clear":
            phone.clear_pairing_rule(args.user)
        else:
            phone.set_pairing_rule(args.user, args.answer, args.delay)
    elif action == "unpair":
        phone.delete_pairing(args.user)
    elif action == "otp":
        print(phone.otp(args.user))
    return 0


def cmd_call(args) -> int:
    """A signed request by hand, for docs and debugging (not the project's client)."""
    import requests  # only this command needs it
    from requests_oauthlib import OAuth1

    params = {}
    for pair in args.params:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"parameter {pair!r} is not NAME=VALUE")
        params[name] = value
    url = f"{args.url.rstrip('/')}/{args.path.lstrip('/')}"
    auth = OAuth1(args.key, args.secret)
    verify = args.ca or True
    try:
        if args.method == "GET":
            response = requests.get(url, params=params, auth=auth, verify=verify, timeout=60)
        else:
            response = requests.post(url, data=params, auth=auth, verify=verify, timeout=60)
    except requests.RequestException as error:
        raise ServerError(f"request failed: {error}") from None
    print(f"HTTP {response.status_code}")
    print(response.text)
    return 0


def cmd_make_cert(args) -> int:
    from .certs import make_certificates  # only this command needs cryptography

    made = make_certificates(args.dir, args.name, args.days)
    print(f"CA certificate (the module's ca_bundle): {made.ca_cert}\n"
          f"CA key (keep private, or delete):        {made.ca_key}\n"
          f"server certificate (serve --tls-cert):   {made.server_cert}\n"
          f"server key (serve --tls-key):            {made.server_key}")
    return 0


def cmd_fault(args) -> int:
    phone = Phone(_existing_db(args))
    if args.kind == "clear":
        phone.clear_faults()
    else:
        phone.fault(args.kind, args.count, args.seconds)
    return 0


# -- argument parsing ----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # --db is accepted before or after the subcommand; SUPPRESS keeps a
    # subparser's default from overwriting a value given earlier.
    db = _Parser(add_help=False)
    db.add_argument("--db", "--database", dest="db", default=argparse.SUPPRESS,
                    metavar="PATH|URL", help="SQLite database file, or postgresql://... for "
                    f"several instances (default: ${DB_ENV})")
    db.add_argument("--database-file", default=argparse.SUPPRESS, metavar="FILE",
                    help="read the database path or URL from FILE (keeps a password out of argv)")
    parser = _Parser(prog=PROG, parents=[db],
                     description="Toopher-compatible API server with a phone simulator")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", parents=[db], help="run the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    serve.add_argument("--tls-cert", metavar="CERT")
    serve.add_argument("--tls-key", metavar="KEY")
    serve.add_argument("--public-url", metavar="URL",
                       help="serve the phone web app under /app/ at this https URL"
                            " (http only for http://localhost); its host is the passkeys' rp_id")
    serve.add_argument("--vapid-subject", metavar="CONTACT",
                       help="Web Push contact sent to the browsers' push services:"
                            " mailto:ADDRESS or https://HOST (default: the --public-url host)")
    serve.add_argument("--no-push", action="store_true",
                       help="no push notifications to phones, even if pywebpush is installed")
    serve.add_argument("--push-allow-http-loopback", action="store_true",
                       help="accept http://127.0.0.1 push endpoints, and push to endpoints"
                            " on private or loopback addresses (for tests with a fake"
                            " push service; never in production)")
    defaults = Limits()
    serve.add_argument("--otp-max-failures", type=int, default=defaults.otp_max_failures,
                       metavar="N", help="wrong codes per pairing before codes are locked out")
    serve.add_argument("--otp-lockout", type=float, default=defaults.otp_lockout,
                       metavar="SECONDS", help="first lockout; each next one doubles")
    serve.add_argument("--otp-lockout-max", type=float, default=defaults.otp_lockout_max,
                       metavar="SECONDS", help="longest lockout")
    serve.add_argument("--max-pending", type=int, default=defaults.max_pending, metavar="N",
                       help="pending push requests per user")
    serve.add_argument("--max-pushes-per-minute", type=int, default=defaults.max_per_minute,
                       metavar="N", help="push requests per user in any 60 s")
    front = ConnectionLimits()
    serve.add_argument("--max-connections", type=int, default=front.max_connections,
                       metavar="N", help="open connections at most; when full, the one that has "
                       f"waited longest for a request is closed (default {front.max_connections})")
    serve.add_argument("--workers", type=int, default=front.workers, metavar="N",
                       help="requests answered at once, long polls included "
                       f"(default {front.workers})")
    serve.add_argument("--request-timeout", type=float, default=front.request_timeout,
                       metavar="S", help="total seconds to send a request (TLS handshake, headers, "
                       f"body) and to read the answer (default {front.request_timeout:g})")
    serve.add_argument("--idle-timeout", type=float, default=front.idle_timeout, metavar="S",
                       help=f"seconds a keep-alive connection may idle (default "
                       f"{front.idle_timeout:g})")
    serve.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDR",
                       help="address or network of a reverse proxy whose X-Forwarded-For and "
                       "X-Forwarded-Proto are believed (repeatable)")
    serve.set_defaults(func=cmd_serve)

    make_cert = commands.add_parser(
        "make-cert", help="make a private CA and a server certificate signed by it")
    make_cert.add_argument("--dir", required=True, help="where to write ca.pem, ca.key, "
                           "server.pem, server.key (existing files are never overwritten)")
    make_cert.add_argument("--name", action="append", required=True, metavar="HOST",
                           help="a host name or IP address the module's api_url uses "
                                "(repeat for several)")
    make_cert.add_argument("--days", type=int, default=825, help="validity (default 825)")
    make_cert.set_defaults(func=cmd_make_cert)


    device = commands.add_parser("device", parents=[db], help="enrolled phones (web app)")
    device.set_defaults(func=cmd_device)
    device_actions = device.add_subparsers(dest="action", required=True, parser_class=_Parser)
    enroll = device_actions.add_parser("enroll", parents=[db],
                                       help="print a one-time enrolment link and its QR code")
    enroll.add_argument("user")
    enroll.add_argument("--name", default="phone", help="the device's name (default: phone)")
    enroll.add_argument("--minutes", type=float, default=15.0,
                        help="how long the link works (default 15)")
    enroll.add_argument("--public-url", metavar="URL",
                        help="default: the one the server was last started with")
    enroll.add_argument("--no-qr", action="store_true", help="print the link only")
    device_actions.add_parser("list", parents=[db], help="enrolled phones"
                              ).add_argument("user", nargs="?")
    device_actions.add_parser("revoke", parents=[db], help="revoke a phone at once"
                              ).add_argument("id")

    answers = commands.add_parser("answers", parents=[db],
                                  help="who answered what, when, from which phone")
    answers.add_argument("--user")
    answers.add_argument("--limit", type=int, default=100)
    answers.set_defaults(func=cmd_answers)

    requester = commands.add_parser("requester", parents=[db], help="manage API credentials")
    requester_commands = requester.add_subparsers(dest="action", required=True,
                                                  parser_class=_Parser)
    create = requester_commands.add_parser("create", parents=[db],
                                           help="print key=... and secret=... lines")
    create.add_argument("name")
    create.set_defaults(func=cmd_requester_create)
    requester_commands.add_parser("list", parents=[db]).set_defaults(func=cmd_requester_list)

    phone = commands.add_parser("phone", parents=[db], help="act as the Toopher app")
    phone.set_defaults(func=cmd_phone)
    actions = phone.add_subparsers(dest="action", required=True, parser_class=_Parser)
    actions.add_parser("phrase", parents=[db], help="make a pairing phrase").add_argument("user")
    actions.add_parser("list", parents=[db], help="pending pairings and requests")
    for name in ("approve", "deny"):
        answer = actions.add_parser(name, parents=[db])
        answer.add_argument("id")
        answer.add_argument("--reason")
    for name in ("accept-pairing", "refuse-pairing"):
        actions.add_parser(name, parents=[db]).add_argument("id")
    rule = actions.add_parser("rule", parents=[db], help="answer new requests automatically")
    rule.add_argument("user")
    rule.add_argument("answer", choices=RULE_ANSWERS + ("clear",))
    rule.add_argument("--delay", type=float, default=0.0)
    rule.add_argument("--automated", action="store_true")
    pairing_rule = actions.add_parser("pairing-rule", parents=[db],
                                      help="answer new pairings automatically")
    pairing_rule.add_argument("user")
    pairing_rule.add_argument("answer", choices=PAIRING_RULE_ANSWERS + ("clear",))
    pairing_rule.add_argument("--delay", type=float, default=0.0)
    actions.add_parser("unpair", parents=[db], help="delete the pairing on the phone"
                       ).add_argument("user")
    actions.add_parser("otp", parents=[db], help="print the current OTP").add_argument("user")

    call = commands.add_parser("call", help="send one signed API request and print the answer")
    call.add_argument("--url", default=os.environ.get("TOOPHER_URL"), required=
                      not os.environ.get("TOOPHER_URL"), help="base URL (default: $TOOPHER_URL)")
    call.add_argument("--key", default=os.environ.get("TOOPHER_KEY"), required=
                      not os.environ.get("TOOPHER_KEY"), help="consumer key ($TOOPHER_KEY)")
    call.add_argument("--secret", default=os.environ.get("TOOPHER_SECRET"), required=
                      not os.environ.get("TOOPHER_SECRET"), help="consumer secret ($TOOPHER_SECRET)")
    call.add_argument("--ca", help="CA certificate file for https")
    call.add_argument("method", choices=("GET", "POST"))
    call.add_argument("path", help="e.g. authentication_requests/initiate")
    call.add_argument("params", nargs="*", metavar="NAME=VALUE")
    call.set_defaults(func=cmd_call)

    fault = commands.add_parser("fault", parents=[db], help="make the next answers misbehave")
    fault.add_argument("kind", choices=FAULT_KINDS + ("clear",))
    fault.add_argument("--count", type=int, default=1)
    fault.add_argument("--seconds", type=float, default=1.0)
    fault.set_defaults(func=cmd_fault)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as error:
        print(f"{PROG}: error: {error.message}", file=sys.stderr)
        return 2
    except ServerError as error:
        print(f"{PROG}: error: {error.message}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - only OS and database errors are ours
        if not isinstance(error, (OSError,) + database_errors()):
            raise
        # One line; a driver's message could quote the URL it was given, so
        # any password in it is cut out.
        text = " ".join(str(error).split())
        print(f"{PROG}: error: {scrub(text, _target_or_empty(args))}", file=sys.stderr)
        return 1


def _target_or_empty(args) -> str:
    try:
        return _db(args) if args is not None else os.environ.get(DB_ENV, "")
    except ServerError:
        return ""
