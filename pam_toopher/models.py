"""The typed results of the Toopher API: one frozen dataclass per object.

Each is built from the service's JSON by ``from_json``, which checks every
field it reads: a missing or mistyped field is a MalformedResponseError
naming the field, never a KeyError or TypeError deep in the flow.  ``raw``
keeps the whole object for fields the models do not name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, TypeVar

from pam_toopher.errors import MalformedResponseError

__all__ = ["UserStatus", "PairingStatus", "TerminalStatus", "AuthenticationStatus",
           "expect_id"]


class _Fields:
    """Typed access to one JSON object; a missing or mistyped field is a
    MalformedResponseError naming the field, never a KeyError or TypeError."""

    def __init__(self, raw: Any, what: str):
        if not isinstance(raw, Mapping):
            raise MalformedResponseError(f"expected a JSON object for {what}")
        self.raw, self.what = raw, what

    def get(self, name: str, kind: type, default: Any = ...) -> Any:
        value = self.raw.get(name, None)
        if value is None:
            if default is ...:
                raise MalformedResponseError(f"{self.what} has no '{name}'")
            return default
        # bool is an int in Python; a protocol int must not accept true/false.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MalformedResponseError(f"{self.what} field '{name}' has the wrong type")
        return value

    def nested(self, name: str, required: bool = True) -> "_Fields":
        value = self.raw.get(name)
        if value is None and not required:
            return _Fields({}, f"{self.what}.{name}")
        return _Fields(value, f"{self.what}.{name}")


@dataclass(frozen=True)
class UserStatus:
    id: str
    name: str
    toopher_authentication_enabled: bool
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "UserStatus":
        f = _Fields(raw, "user")
        return cls(f.get("id", str), f.get("name", str),
                   f.get("toopher_authentication_enabled", bool, True), raw)


@dataclass(frozen=True)
class PairingStatus:
    id: str
    enabled: bool
    pending: bool
    user_id: str
    user_name: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "PairingStatus":
        f = _Fields(raw, "pairing")
        user = f.nested("user")
        return cls(f.get("id", str), f.get("enabled", bool), f.get("pending", bool, False),
                   user.get("id", str), user.get("name", str), raw)


@dataclass(frozen=True)
class TerminalStatus:
    id: str
    name: str
    requester_specified_id: Optional[str]
    user_id: Optional[str]
    user_name: Optional[str]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "TerminalStatus":
        f = _Fields(raw, "terminal")
        user = f.nested("user", required=False)
        return cls(f.get("id", str), f.get("name", str),
                   f.get("requester_specified_id", str, None),
                   user.get("id", str, None), user.get("name", str, None), raw)


@dataclass(frozen=True)
class AuthenticationStatus:
    id: str
    pending: bool
    granted: bool
    automated: bool
    reason: str
    reason_code: Optional[int]
    terminal_id: str
    terminal_name: str
    action_name: Optional[str]
    user_id: Optional[str]
    user_name: Optional[str]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> "AuthenticationStatus":
        f = _Fields(raw, "authentication request")
        terminal = f.nested("terminal")
        action = f.nested("action", required=False)
        user = f.nested("user", required=False)
        return cls(
            id=f.get("id", str),
            pending=f.get("pending", bool),
            granted=f.get("granted", bool),
            automated=f.get("automated", bool, False),
            reason=f.get("reason", str, ""),
            reason_code=f.get("reason_code", int, None),
            terminal_id=terminal.get("id", str),
            terminal_name=terminal.get("name", str),
            action_name=action.get("name", str, None),
            user_id=user.get("id", str, None),
            user_name=user.get("name", str, None),
            raw=raw,
        )


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


Result = TypeVar("Result", bound=_HasId)


def expect_id(result: Result, expected_id: str) -> Result:
    """An answer about another object than the one asked for must not be trusted."""
    if result.id != expected_id:
        raise MalformedResponseError("the answer is about a different id than the one asked for")
    return result
