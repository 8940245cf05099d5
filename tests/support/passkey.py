"""A software passkey (WebAuthn authenticator plus browser), for unit tests.

It builds what a browser sends after ``navigator.credentials.create/get``:
clientDataJSON, an attestation object (format "none") or authenticator data,
and an ECDSA P-256 signature made with python3-cryptography.  The server
under test verifies all of it with python-fido2; this side only builds.

    key = SoftPasskey(origin="http://localhost:8765", rp_id="localhost")
    credential = key.register(options["publicKey"])      # for /app/api/enrol/complete
    credential = key.sign(options["publicKey"])          # for .../approve, .../accept
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256

FLAG_UP, FLAG_UV, FLAG_AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftPasskey:
    def __init__(self, origin: str, rp_id: str):
        self.origin, self.rp_id = origin, rp_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.counter = 0
        self.user_verified = True
        self.user_present = True

    def _flags(self) -> int:
        return (FLAG_UP if self.user_present else 0) | (FLAG_UV if self.user_verified else 0)

    def _client_data(self, kind: str, challenge: str, origin: str | None = None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge,
                           "origin": origin or self.origin, "crossOrigin": False}).encode()

    def register(self, options: dict[str, Any], origin: str | None = None) -> dict[str, str]:
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        public_key = ES256.from_cryptography_key(self.key.public_key())
        credential = (b"\0" * 16 + struct.pack(">H", len(self.credential_id))
                      + self.credential_id + cbor.encode(dict(public_key)))
        auth_data = (hashlib.sha256(self.rp_id.encode()).digest()
                     + struct.pack(">BI", self._flags() | FLAG_AT, self.counter) + credential)
        attestation = cbor.encode({"fmt": "none", "authData": auth_data, "attStmt": {}})
        return {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation)}

    def sign(self, options: dict[str, Any], origin: str | None = None,
             rp_id: str | None = None) -> dict[str, str]:
        self.counter += 1
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        auth_data = (hashlib.sha256((rp_id or self.rp_id).encode()).digest()
                     + struct.pack(">BI", self._flags(), self.counter))
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {"credentialId": b64url(self.credential_id),
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data), "signature": b64url(signature)}
