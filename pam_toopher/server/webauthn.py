"""Passkeys (WebAuthn) for the phone web app, verified by python-fido2.

Every check of what the browser sends — client data type, origin, challenge,
rp_id hash, user presence and verification flags, attestation format,
signature — is python-fido2's (``Fido2Server.register_complete`` and
``authenticate_complete``).  This module adds only what fido2 leaves to the
relying party: building a challenge bound to what the user approves,
decoding the browser's base64url fields with size limits, and the sign-count
rule.  Any failure while parsing or verifying is a refusal
(:class:`PasskeyError`, answered 400): nothing here fails open.

Written for Debian 12's python3-fido2 0.9.1; the unit tests also pass with
fido2 1.2 (where the positional ``authenticate_complete`` form is deprecated
but kept).  fido2 2.x removed that form and is not supported.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity

try:  # fido2 >= 1.0 keeps the WebAuthn data types in fido2.webauthn
    from fido2.webauthn import (
        AttestationObject,
        AttestedCredentialData,
        AuthenticatorData,
    )
    from fido2.webauthn import CollectedClientData as ClientData
except ImportError:  # fido2 0.9 (Debian 12)
    from fido2.client import ClientData
    from fido2.ctap2 import AttestationObject, AttestedCredentialData, AuthenticatorData

from .errors import BadRequest

USER_VERIFICATION = "required"
#: How long the browser lets the user take to answer the passkey prompt (ms).
PROMPT_TIMEOUT_MS = 120_000
NONCE_BYTES = 32

# Upper bounds on what a browser sends; real values are far smaller.  Larger
# input is refused before any parsing.
MAX_CLIENT_DATA = 4096
MAX_ATTESTATION_OBJECT = 16384
MAX_AUTHENTICATOR_DATA = 1024
MAX_SIGNATURE = 1024
MAX_CREDENTIAL_ID = 1023  # the WebAuthn limit

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}\Z")


class PasskeyError(BadRequest):
    """The browser's WebAuthn data was malformed or did not verify (400)."""


@dataclass(frozen=True)
class NewCredential:
    """A verified registration: what is kept for later assertions."""

    credential_id: bytes
    credential_data: bytes  # fido2 AttestedCredentialData: AAGUID, id, COSE public key
    sign_count: int


def decode_field(value: Any, name: str, limit: int) -> bytes:
    """Strict base64url of one field the page sent, at most ``limit`` bytes decoded."""
    if not isinstance(value, str) or not value or len(value) > (limit * 4) // 3 + 4:
        raise PasskeyError(f"Missing or oversized field: {name}")
    if not _BASE64URL.match(value):
        raise PasskeyError(f"Not base64url: {name}")
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise PasskeyError(f"Not base64url: {name}") from None
    if len(decoded) > limit:
        raise PasskeyError(f"Oversized field: {name}")
    return decoded


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def to_json(value: Any) -> Any:
    """fido2's option objects as JSON: bytes become base64url strings."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (bytes, bytearray)):
        return b64url(bytes(value))
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def bound_challenge(nonce: bytes, fields: Mapping[str, str]) -> bytes:
    """nonce || SHA-256 of a canonical encoding of what the user answers.

    The server calls this with fields read from its own records, never with
    what the page sent; an assertion over one request's challenge therefore
    cannot answer another request, another user's request, or the same
    request with another word ("approve" vs "accept").
    """
    canonical = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode("utf-8")
    return nonce + hashlib.sha256(canonical).digest()


def sign_count_ok(stored: int, received: int) -> bool:
    """WebAuthn's cloned-authenticator rule: the counter must grow.

    Authenticators without a counter (many synced passkeys) always send 0;
    that is accepted while the stored value is 0 too.
    """
    if stored == 0 and received == 0:
        return True
    return received > stored


class RelyingParty:
    """The server as a WebAuthn relying party: one origin, one rp_id."""

    def __init__(self, origin: str, rp_id: str, name: str = "pam_toopher"):
        self.origin, self.rp_id = origin, rp_id
        # The origin must equal the public URL's exactly: fido2's default check
        # would also take subdomains, and refuses http://localhost.
        self._server = Fido2Server(PublicKeyCredentialRpEntity(id=rp_id, name=name),
                                   attestation="none", verify_origin=self._origin_ok)
        self._server.timeout = PROMPT_TIMEOUT_MS

    def _origin_ok(self, origin: Any) -> bool:
        return isinstance(origin, str) and origin == self.origin

    # -- registration ---------------------------------------------------------------

    def registration_options(self, user_handle: bytes, user_name: str, challenge: bytes,
                             exclude: list[bytes]) -> dict:
        options, _ = self._server.register_begin(
            {"id": user_handle, "name": user_name, "displayName": user_name},
            credentials=[_descriptor(credential_id) for credential_id in exclude],
            user_verification=USER_VERIFICATION, challenge=challenge)
        return to_json(options["publicKey"])

    def verify_registration(self, challenge: bytes, response: Mapping[str, Any]) -> NewCredential:
        client_data = decode_field(response.get("clientDataJSON"), "clientDataJSON",
                                   MAX_CLIENT_DATA)
        attestation = decode_field(response.get("attestationObject"), "attestationObject",
                                   MAX_ATTESTATION_OBJECT)
        _, state = self._server.register_begin(
            {"id": b"-", "name": "-", "displayName": "-"},
            user_verification=USER_VERIFICATION, challenge=challenge)
        try:
            auth_data = self._server.register_complete(state, ClientData(client_data),
                                                       AttestationObject(attestation))
            credential = auth_data.credential_data
            if credential is None:
                raise ValueError("no credential in the attestation")
            return NewCredential(bytes(credential.credential_id), bytes(credential),
                                 int(auth_data.counter))
        except Exception as error:  # noqa: BLE001 -- any parse or verification failure refuses
            raise PasskeyError(f"The passkey registration did not verify: {_why(error)}") from None

    # -- assertions -------------------------------------------------------------------

    def assertion_options(self, challenge: bytes, credential_ids: list[bytes]) -> dict:
        options, _ = self._server.authenticate_begin(
            [_descriptor(credential_id) for credential_id in credential_ids],
            user_verification=USER_VERIFICATION, challenge=challenge)
        return to_json(options["publicKey"])

    def verify_assertion(self, challenge: bytes, credential_data: bytes,
                         response: Mapping[str, Any]) -> int:
        """Check an assertion over ``challenge`` by the stored credential; its sign count."""
        credential_id = decode_field(response.get("credentialId"), "credentialId",
                                     MAX_CREDENTIAL_ID)
        client_data = decode_field(response.get("clientDataJSON"), "clientDataJSON",
                                   MAX_CLIENT_DATA)
        auth_data = decode_field(response.get("authenticatorData"), "authenticatorData",
                                 MAX_AUTHENTICATOR_DATA)
        signature = decode_field(response.get("signature"), "signature", MAX_SIGNATURE)
        _, state = self._server.authenticate_begin(user_verification=USER_VERIFICATION,
                                                   challenge=challenge)
        try:
            parsed = AuthenticatorData(auth_data)
            self._server.authenticate_complete(
                state, [AttestedCredentialData(credential_data)], credential_id,
                ClientData(client_data), parsed, signature)
            return int(parsed.counter)
        except Exception as error:  # noqa: BLE001 -- any parse or verification failure refuses
            raise PasskeyError(f"The passkey signature did not verify: {_why(error)}") from None


def _descriptor(credential_id: bytes) -> dict:
    return {"type": "public-key", "id": credential_id}


def _why(error: Exception) -> str:
    """fido2's own reason when it gave one (e.g. "Wrong challenge in response.")."""
    if isinstance(error, ValueError) and error.args and isinstance(error.args[0], str):
        return error.args[0][:200]
    return "malformed data"
