"""A walk-through of the Toopher API, like the original library's demo.py:
pair a phone, then authenticate against it as often as you like.

    python3 -m pam_toopher.demo [--url URL] [--key KEY] [--ca-bundle FILE]

The key and URL may also come from TOOPHER_CONSUMER_KEY and TOOPHER_API_URL.
The secret is read from TOOPHER_CONSUMER_SECRET or asked for without echo,
never taken from the command line, where other users could read it.
"""
import argparse
import getpass
import os
import sys
import time
from functools import partial
from typing import Optional

from pam_toopher.api import DEFAULT_API_URL, ToopherApi, ToopherApiError
from pam_toopher.flow import SystemClock, wait_until_answered

PAIRING_WAIT = 90.0     # the original library's recommended limit
AUTH_WAIT = 60.0


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m pam_toopher.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("TOOPHER_API_URL", DEFAULT_API_URL))
    parser.add_argument("--key", default=os.environ.get("TOOPHER_CONSUMER_KEY"))
    parser.add_argument("--ca-bundle", default=None, help="CA file for a private server")
    args = parser.parse_args(argv)
    try:
        key = args.key or input("Toopher consumer key: ").strip()
        secret = os.environ.get("TOOPHER_CONSUMER_SECRET") or getpass.getpass(
            "Toopher consumer secret: ").strip()
        if not key or not secret:
            raise SystemExit("demo: a consumer key and secret are required")
        with ToopherApi(key, secret, args.url, ca_bundle=args.ca_bundle) as api:
            pairing_id = pair_a_phone(api)
            while authenticate_once(api, pairing_id):
                pass
    except ToopherApiError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print()
    return 0


def pair_a_phone(api: ToopherApi) -> str:
    print("Step 1: pair a phone. The Toopher app shows a pairing phrase.")
    while True:
        user_name = ask("User name to pair (e.g. alice@example.org): ")
        phrase = ask("Pairing phrase from the app: ")
        pairing = api.pair(phrase, user_name)
        print("Sent. Accept the pairing on the phone...")
        pairing = wait_for(partial(api.get_pairing_status, pairing.id), PAIRING_WAIT)
        if pairing.enabled:
            print(f"Paired {pairing.user_name} (pairing {pairing.id}).")
            return pairing.id
        print("The phone refused the pairing, or did not answer in time. Try again.")


def authenticate_once(api: ToopherApi, pairing_id: str) -> bool:
    print("\nStep 2: authenticate. Press Enter on an empty terminal name to stop.")
    terminal_name = input("Terminal name (e.g. my computer): ").strip()
    if not terminal_name:
        return False
    request = api.authenticate(pairing_id, terminal_name, "demo login")
    code = input("Approve on the phone and press Enter, or type the app's 6-digit code: ").strip()
    if code:
        status = api.authenticate_with_otp(request.id, code)
    else:
        status = wait_for(lambda poll: api.get_authentication_status(request.id, long_poll=poll),
                          AUTH_WAIT)
    if status.pending:
        print("No answer from the phone in time.")
    elif status.granted:
        print(f"Granted{' automatically' if status.automated else ''}. Reason: {status.reason!r}")
    else:
        print(f"Denied. Reason: {status.reason!r}")
    return True


def wait_for(fetch, limit: float):
    """``fetch(long_poll)`` until it is no longer pending or ``limit`` passes."""
    return wait_until_answered(fetch, time.monotonic() + limit, SystemClock())


def ask(prompt: str) -> str:
    while True:
        answer = input(prompt).strip()
        if answer:
            return answer


if __name__ == "__main__":
    sys.exit(main())
