"""Run-time stand-ins for ``typing.NamedTuple`` and ``typing.Protocol``.

The modules every login runs (config, flow, pam_hook, audit) import these
under the names the type checker knows::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import NamedTuple as Record, Protocol
    else:
        from pam_toopher.record import Record, Protocol

so mypy checks real NamedTuples and Protocols, while at run time the
``typing`` module (~3 ms) and ``collections.namedtuple``'s code generation
(~0.3 ms a class) are not paid by every sudo and ssh login -- a user the
policy skips included (docs/pam.md, "Speed").
"""

from __future__ import annotations

from operator import itemgetter

__all__ = ["Record", "Protocol"]


class Protocol:
    """At run time a protocol is only documentation: nothing checks it."""

    __slots__ = ()


class Record(tuple):
    """An immutable record like ``typing.NamedTuple``: the fields are the
    subclass's annotations in order, a class attribute of the same name is
    the field's default; a tuple underneath, so equality, hashing and
    unpacking behave as a NamedTuple's.  ``_replace``, ``_asdict``,
    ``_fields`` and ``_field_defaults`` as there."""

    __slots__ = ()
    _fields: tuple = ()
    _field_defaults: dict = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = {}
        for index, name in enumerate(names):
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            elif defaults:
                raise TypeError(f"{cls.__name__}: field {name!r} without a default "
                                "follows one with a default")
            setattr(cls, name, property(itemgetter(index), doc=f"field {index}: {name}"))
        cls._fields, cls._field_defaults = names, defaults

    def __new__(cls, *args: object, **kwargs: object) -> Record:
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, "
                            f"{len(args)} given")
        values = list(args)
        for name in fields[len(args):]:
            if name in kwargs:
                values.append(kwargs.pop(name))
            elif name in cls._field_defaults:
                values.append(cls._field_defaults[name])
            else:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
        if kwargs:  # unknown names, or a field given twice
            raise TypeError(f"{cls.__name__}() got unexpected or repeated arguments "
                            f"{sorted(kwargs)}")
        return tuple.__new__(cls, values)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self)) + ")"

    def __getnewargs__(self) -> tuple:
        return tuple(self)

    def _asdict(self) -> dict:
        return dict(zip(self._fields, self))

    def _replace(self, **changes: object) -> Record:
        return type(self)(**{**self._asdict(), **changes})
