"""RFC 6238 TOTP (SHA1, 6 digits, 30 s steps): what the Toopher app showed offline."""
import base64
import hashlib
import hmac
import secrets
import struct
from typing import Optional

STEP_SECONDS = 30
DIGITS = 6
#: Steps either side of now that still count, for phone and server clock skew.
WINDOW_STEPS = 1


def new_secret() -> str:
    """A fresh base32 secret, as an authenticator app would store it."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii")


def step_at(when: float) -> int:
    return int(when // STEP_SECONDS)


def code_for_step(secret: str, step: int) -> str:
    """RFC 4226 HOTP of the step counter: dynamic truncation, then 6 digits."""
    key = base64.b32decode(secret, casefold=True)
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** DIGITS).zfill(DIGITS)


def code_at(secret: str, when: float) -> str:
    return code_for_step(secret, step_at(when))


def matching_step(secret: str, code: str, when: float) -> Optional[int]:
    """The step within the window whose code equals ``code``, or None.

    Every candidate is compared in constant time so the answer time does not
    tell an attacker how many leading digits were right.
    """
    code = (code or "").strip()
    now = step_at(when)
    found = None
    for step in range(now - WINDOW_STEPS, now + WINDOW_STEPS + 1):
        if hmac.compare_digest(code_for_step(secret, step).encode(), code.encode()):
            found = step
    return found
