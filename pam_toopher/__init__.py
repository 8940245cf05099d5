"""pam_toopher: Toopher push two-factor authentication for PAM.

The package root stays import-light on purpose: the PAM hook imports
``pam_toopher.config`` and ``pam_toopher.flow`` on every sudo and ssh login,
and a user the policy skips must not pay for importing requests.  The client
names are therefore loaded lazily on first attribute access.
"""

__version__ = "0.1.0"

# What the package root re-exports from the client; api.__all__ builds on it.
CLIENT_NAMES = (
    "ToopherApi",
    "ToopherApiError",
    "ToopherUnavailableError",
    "ToopherRefusedError",
    "ToopherTLSError",
    "DeadlineExceededError",
    "MalformedResponseError",
    "AnswerLostError",
    "RequestNotSentError",
    "UserDisabledError",
    "UserUnknownError",
    "TerminalUnknownError",
    "PairingDeactivatedError",
    "LimitRefusedError",
    "OtpLockedError",
    "PushLimitedError",
    "PairingStatus",
    "AuthenticationStatus",
    "UserStatus",
    "TerminalStatus",
)

__all__ = ["__version__", *CLIENT_NAMES]


def __getattr__(name: str) -> object:
    if name in CLIENT_NAMES:
        # An error class needs no HTTP stack: take it from the cheap module.
        from pam_toopher import errors

        if name in errors.__all__:
            return getattr(errors, name)
        from pam_toopher import api

        return getattr(api, name)
    raise AttributeError(f"module 'pam_toopher' has no attribute {name!r}")
