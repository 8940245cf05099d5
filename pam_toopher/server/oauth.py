"""OAuth 1.0a two-legged HMAC-SHA1 verification: oauthlib checks, we hold state.

oauthlib's ``SignatureOnlyEndpoint`` does the protocol (base string,
signature, mandatory parameters); :class:`ToopherValidator` supplies storage
and policy.  Its defaults are relaxed where they would refuse historical
Toopher clients (plain http to a test server, 16-character keys and nonces,
nonces with punctuation) and tightened where they were lax (HMAC-SHA1 only).
"""
import string
import time
from typing import Callable, Mapping, Optional

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint

from .store import Store

#: Seconds a request's oauth_timestamp may differ from the server's clock.
TIMESTAMP_WINDOW = 300
_DUMMY_KEY = "dummy-client-key-for-timing"
_DUMMY_SECRET = "dummy-client-secret-which-never-verifies-anything"


class ToopherValidator(RequestValidator):
    """Client lookup, timestamp window and nonce memory for the endpoint."""

    enforce_ssl = False  # test servers and the check value use plain http
    allowed_signature_methods = ("HMAC-SHA1",)
    client_key_length = (8, 64)
    nonce_length = (8, 128)
    # Old clients use uuids or base64 for nonces; storage is parameterised, so
    # these characters are harmless.
    safe_characters = set(string.ascii_letters + string.digits + "-_.~+/=")
    # oauthlib compares timestamps against time.time() itself; we disable
    # that and apply TIMESTAMP_WINDOW with our own (injectable) clock below.
    timestamp_lifetime = 10 ** 12

    def __init__(self, store: Store, clock: Optional[Callable[[], float]] = None,
                 window: Optional[float] = TIMESTAMP_WINDOW):
        super().__init__()
        self.store = store
        self.clock = clock or time.time
        self.window = window

    @property
    def dummy_client(self) -> str:
        return _DUMMY_KEY

    def validate_client_key(self, client_key, request) -> bool:
        requester = self.store.requester_by_key(client_key)
        request.requester = requester
        return requester is not None

    def get_client_secret(self, client_key, request) -> str:
        # Unknown keys are verified against a dummy secret so that they take
        # as long as known ones and reveal nothing.
        requester = getattr(request, "requester", None)
        return requester["secret"] if requester is not None else _DUMMY_SECRET

    def validate_timestamp_and_nonce(self, client_key, timestamp, nonce, request,
                                     request_token=None, access_token=None) -> bool:
        # Only checks: the nonce is recorded once the signature verified, so
        # unsigned junk cannot fill the table (see Verifier.verify).
        if self.window is not None and abs(self.clock() - int(timestamp)) > self.window:
            return False
        return not self.store.nonce_seen(client_key, nonce)


class Verifier:
    """Verifies one HTTP request; returns the requester row or None."""

    def __init__(self, store: Store, clock: Optional[Callable[[], float]] = None,
                 window: Optional[float] = TIMESTAMP_WINDOW):
        self.store = store
        self.endpoint = SignatureOnlyEndpoint(ToopherValidator(store, clock, window))

    def verify(self, uri: str, method: str, body: str, headers: Mapping[str, str]):
        try:
            ok, request = self.endpoint.validate_request(uri, method, body, dict(headers))
        except ValueError:  # oauthlib refuses some malformed parameters by raising
            return None
        if not ok or not self.store.use_nonce(request.client_key, request.nonce):
            return None
        return request.requester
