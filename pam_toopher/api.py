"""The Toopher API client, in one import: ``from pam_toopher.api import ...``.

The client is split by concern, as requests splits itself:

* :mod:`pam_toopher.errors` -- the error categories (imports no HTTP stack);
* :mod:`pam_toopher.models` -- the typed results;
* :mod:`pam_toopher.transport` -- signing, timeouts, retries, the deadline
  watchdog, capped body reading: the only code touching requests/urllib3;
* :mod:`pam_toopher.client` -- :class:`ToopherApi`, one method per endpoint.

This module re-exports every public name of those, so code written against
the single-module client (and ``import pam_toopher as toopher;
toopher.ToopherApi(...)``) keeps working.  Importing it imports requests;
code on the login path that only catches errors imports
:mod:`pam_toopher.errors` instead.
"""

from pam_toopher import CLIENT_NAMES
from pam_toopher.client import DEFAULT_API_URL, LONG_POLL_LIMIT, ToopherApi
from pam_toopher.errors import (AnswerLostError, DeadlineExceededError, LimitRefusedError,
                                MalformedResponseError, OtpLockedError, PairingDeactivatedError,
                                PushLimitedError, RequestNotSentError,
                                TerminalUnknownError, ToopherApiError, ToopherRefusedError,
                                ToopherTLSError, ToopherUnavailableError, UserDisabledError,
                                UserUnknownError, error_for_answer)
from pam_toopher.models import AuthenticationStatus, PairingStatus, TerminalStatus, UserStatus
from pam_toopher.transport import (DEFAULT_RETRY_BUDGET, DEFAULT_TIMEOUT, MAX_RESPONSE_BYTES,
                                   USER_AGENT, Timeout, oauth1_signer)

__all__ = ["DEFAULT_API_URL", "DEFAULT_TIMEOUT", "DEFAULT_RETRY_BUDGET", "MAX_RESPONSE_BYTES",
           "LONG_POLL_LIMIT", "USER_AGENT", "Timeout", "oauth1_signer", "error_for_answer",
           *CLIENT_NAMES]

