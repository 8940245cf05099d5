"""pam_toopher.record.Record behaves as the typing.NamedTuple the type checker sees."""

import pickle
from typing import NamedTuple

import pytest

from pam_toopher.record import Record


class Point(Record):
    x: int
    y: int = 2
    label: str = "p"


class Twin(NamedTuple):
    x: int
    y: int = 2
    label: str = "p"


def test_construction_defaults_and_fields_as_namedtuple():
    assert Point(1) == (1, 2, "p") == Twin(1)
    assert Point(1, label="q").label == "q"
    assert Point(x=5, y=6) == (5, 6, "p")
    assert Point._fields == Twin._fields == ("x", "y", "label")
    assert Point._field_defaults == Twin._field_defaults == {"y": 2, "label": "p"}
    assert repr(Point(1)) == "Point(x=1, y=2, label='p')"
    assert Point(1)._asdict() == {"x": 1, "y": 2, "label": "p"}
    assert Point(1)._replace(y=9) == Point(1, 9)
    assert hash(Point(1)) == hash((1, 2, "p"))
    assert pickle.loads(pickle.dumps(Point(1, 3))) == Point(1, 3)


@pytest.mark.parametrize("args, kwargs, words", [
    ((), {}, "missing argument 'x'"),
    ((1, 2, "p", 4), {}, "takes 3 arguments, 4 given"),
    ((1,), {"z": 3}, "unexpected or repeated arguments ['z']"),
    ((1,), {"x": 1}, "unexpected or repeated arguments ['x']"),
])
def test_bad_arguments_are_refused(args, kwargs, words):
    with pytest.raises(TypeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        Point(*args, **kwargs)


def test_immutable():
    point = Point(1)
    with pytest.raises(AttributeError):
        point.x = 3
    with pytest.raises(AttributeError):
        point.other = 3


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="field 'b' without a default follows one"):
        class Broken(Record):
            a: int = 1
            b: int
