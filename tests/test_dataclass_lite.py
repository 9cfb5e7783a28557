"""dataclass_lite makes the classes dataclasses.dataclass makes: each behaviour held against the real one."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections import Counter

import pytest

from portscope.model.dataclass_lite import dataclass_lite

DECORATORS = {"dataclasses": dataclasses.dataclass, "lite": dataclass_lite}


def make_classes(decorate):
    """The same class bodies under either decorator (the shapes portscope's records use)."""

    @decorate(frozen=True, slots=True)
    class Point:
        x: int
        y: int
        label: str | None = None
        tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)

        @property
        def total(self) -> int:
            return self.x + self.y

    @decorate(frozen=True)
    class Config:
        """A frozen class with a __dict__ and a check after __init__."""

        name: str
        limit: int = 10
        hidden: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

        def __post_init__(self) -> None:
            if self.limit < 0:
                raise ValueError("limit")

    @decorate
    class Tally:
        name: str
        counts: Counter = dataclasses.field(default_factory=Counter)
        seen: int = 0
        cache: dict | None = dataclasses.field(default=None, init=False, repr=False)

    @decorate(frozen=True, slots=True)
    class One:
        value: int

    @decorate(frozen=True, slots=True)
    class Empty:
        pass

    return Point, Config, Tally, One, Empty


REAL = make_classes(dataclasses.dataclass)
LITE = make_classes(dataclass_lite)
PAIRS = list(zip(REAL, LITE, strict=True))
EXAMPLES = {
    "Point": [((1, 2), {}), ((1, 2, "a"), {"tags": ("t",)}), ((), {"x": 3, "y": 4, "label": None})],
    "Config": [(("web",), {}), (("web", 3), {"hidden": {"a": 1}})],
    "Tally": [(("t",), {}), (("t", Counter(a=2), 5), {})],
    "One": [((7,), {}), ((), {"value": (1, 2)})],
    "Empty": [((), {})],
}


def test_lite_classes_are_not_made_by_dataclasses():
    # the point of the module: nothing compiled per class when it is defined
    for cls in LITE:
        assert "__lite_plan__" in cls.__dict__


@pytest.mark.parametrize(("real", "lite"), PAIRS, ids=lambda c: c.__name__)
def test_same_fields_params_slots_and_match_args(real, lite):
    assert dataclasses.is_dataclass(lite) and dataclasses.is_dataclass(real)
    for mine, theirs in zip(dataclasses.fields(lite), dataclasses.fields(real), strict=True):
        for attribute in ("name", "type", "default", "default_factory", "init", "repr", "hash", "compare", "kw_only"):
            assert getattr(mine, attribute) == getattr(theirs, attribute), attribute
    assert repr(lite.__dataclass_params__) == repr(real.__dataclass_params__)
    assert getattr(lite, "__slots__", None) == getattr(real, "__slots__", None)
    assert lite.__match_args__ == real.__match_args__
    assert lite.__qualname__ == real.__qualname__ and lite.__module__ == real.__module__
    assert lite.__doc__ == real.__doc__ or real.__doc__.startswith(real.__name__ + "(")  # generated there only
    assert (lite.__hash__ is None) == (real.__hash__ is None)
    assert hasattr(lite, "__replace__") == hasattr(real, "__replace__")  # copy.replace(), Python 3.13+
    for name in dir(real):  # class attributes (defaults left on non-slotted classes)
        if not name.startswith("__"):
            assert type(getattr(lite, name)) is type(getattr(real, name)), name


@pytest.mark.parametrize(("real", "lite"), PAIRS, ids=lambda c: c.__name__)
def test_same_instances(real, lite):
    for args, kwargs in EXAMPLES[real.__name__]:
        a, b = real(*args, **kwargs), lite(*args, **kwargs)
        assert repr(a).replace("make_classes.<locals>.", "") == repr(b).replace("make_classes.<locals>.", "")
        assert dataclasses.asdict(a) == dataclasses.asdict(b)
        assert dataclasses.astuple(a) == dataclasses.astuple(b)
        same = lite(*args, **kwargs)
        assert b == same and b.__ne__(same) is False
        assert b != a  # another class: never equal, as between two dataclasses
        if real.__hash__ is not None:
            assert hash(a) == hash(b) == hash(lite(*args, **kwargs))
        else:
            with pytest.raises(TypeError):
                hash(b)
        changed = dataclasses.replace(b)
        assert changed == b and type(changed) is lite
        assert copy.copy(b) == b and copy.deepcopy(b) == b
        if real.__module__ != __name__ or "<locals>" not in real.__qualname__:
            assert pickle.loads(pickle.dumps(b)) == b


@pytest.mark.parametrize(("real", "lite"), PAIRS, ids=lambda c: c.__name__)
def test_same_errors(real, lite):
    def outcome(cls, args, kwargs):
        try:
            cls(*args, **kwargs)
        except TypeError as exc:
            return str(exc).replace("make_classes.<locals>.", "")
        return None

    for args, kwargs in ((), {}), ((1, 2, 3, 4, 5, 6), {}), ((), {"nope": 1}), ((1,), {"x": 1, "value": 2}):
        assert outcome(lite, args, kwargs) == outcome(real, args, kwargs)
    args, kwargs = EXAMPLES[real.__name__][0]
    a, b = real(*args, **kwargs), lite(*args, **kwargs)
    if not dataclasses.fields(real):
        return  # (dataclasses' own frozen __setattr__ fails with a TypeError on a slotted class without fields)
    name = dataclasses.fields(real)[0].name
    if real.__dataclass_params__.frozen:
        for obj in (a, b):
            with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot assign to field '{name}'"):
                setattr(obj, name, 1)
            with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot delete field '{name}'"):
                delattr(obj, name)
    else:
        setattr(b, name, "changed")
        assert getattr(b, name) == "changed"
    if hasattr(real, "__slots__"):
        for obj in (a, b):
            with pytest.raises((AttributeError, TypeError)):
                obj.not_a_field = 1


def test_post_init_runs_and_defaults_are_fresh():
    Config = LITE[1]
    with pytest.raises(ValueError, match="limit"):
        Config("x", -1)
    first, second = Config("a"), Config("b")
    assert first.hidden is not second.hidden
    Tally = LITE[2]
    assert Tally("a").counts is not Tally("a").counts
    assert Tally("a").cache is None and "cache" not in [p for p in Tally.__match_args__]
    with pytest.raises(TypeError):
        Tally("a", Counter(), 0, {})  # init=False: not a parameter


def test_compare_false_fields_do_not_count():
    Config = LITE[1]
    assert Config("a", 1, {"x": 1}) == Config("a", 1, {"y": 2})
    assert hash(Config("a", 1, {"x": 1})) == hash(Config("a", 1, {"y": 2}))
    assert "hidden" not in repr(Config("a"))


def test_match_statement():
    Point = LITE[0]
    match Point(1, 2):
        case Point(1, y):
            assert y == 2
        case _:
            pytest.fail("no match")


def test_init_is_compiled_once_after_a_few_instances_and_signature_follows():
    @dataclass_lite(frozen=True, slots=True)
    class Fresh:
        a: int
        b: str = "b"
        c: list = dataclasses.field(default_factory=list)

    import inspect

    from portscope.model.dataclass_lite import COMPILED_AFTER

    assert str(inspect.signature(Fresh)).startswith("(*args")  # the documented difference, before use
    made = [Fresh(n) if n % 2 else Fresh(a=n, b="c") for n in range(COMPILED_AFTER)]  # the generic __init__
    assert str(inspect.signature(Fresh)).startswith("(*args")
    assert made[1] == Fresh(1, "b", []) and made[2].b == "c" and made[3].c is not made[5].c
    Fresh(1)
    init = Fresh.__init__
    Fresh(2, "c")
    assert Fresh.__init__ is init
    assert str(inspect.signature(Fresh)) == "(a, b='b', c=<factory>)"
    assert Fresh.__init__.__qualname__.endswith("Fresh.__init__")
    assert [Fresh(n) if n % 2 else Fresh(a=n, b="c") for n in range(COMPILED_AFTER)] == made


def test_unsupported_shapes_are_handed_to_dataclasses():
    @dataclass_lite(frozen=True)
    class Base:
        a: int

    @dataclass_lite(frozen=True)
    class Derived(Base):  # inheritance
        b: int = 0

    @dataclass_lite
    class Custom:
        a: int

        def __eq__(self, other):
            return True

    @dataclass_lite
    class KwOnly:
        a: int = dataclasses.field(kw_only=True)

    for cls in (Derived, Custom, KwOnly):
        assert "__lite_plan__" not in cls.__dict__ and dataclasses.is_dataclass(cls)
    assert Derived(1, 2) == Derived(1, 2) and Custom(1) == object()
    with pytest.raises(ValueError, match="mutable default"):

        @dataclass_lite
        class Mutable:
            a: list = []  # noqa: RUF012

    with pytest.raises(TypeError, match="non-default argument"):

        @dataclass_lite
        class Order:
            a: int = 0
            b: int
