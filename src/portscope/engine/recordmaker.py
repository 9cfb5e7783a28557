"""Building records by the ten thousand: fast positional constructors.

A frozen dataclass's generated ``__init__`` sets every field through ``object.__setattr__``, a large share
of a big netlink decode (benchmarks/README.md has the figures). The constructor
made here fills an instance of a plain twin class that has the very same slots (ordinary attribute
stores), then switches the instance's class to the real one. Python allows that switch only between
identical layouts and raises otherwise, and :func:`positional_maker` checks once that the result equals
what ``cls(*args)`` builds, so the objects are the real records, field for field, several times faster to make.
If the check fails (a future Python, a changed record), the plain class constructor is used instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def positional_maker(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of ``cls`` positionally (in field order) and returning a ``cls``."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    if getattr(cls, "__slots__", None) != names or cls.__bases__ != (object,) or hasattr(cls, "__post_init__"):
        return cls
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": names, "__module__": __name__})
    arguments = ", ".join(names)
    stores = "".join(f"    obj.{name} = {name}\n" for name in names)
    source = f"def make({arguments}):\n    obj = new(twin)\n{stores}    obj.__class__ = cls\n    return obj\n"
    namespace: dict[str, Any] = {"new": object.__new__, "twin": twin, "cls": cls}
    exec(source, namespace)  # generated like dataclasses' own __init__, with the field names as parameters
    make = namespace["make"]
    probe = tuple(object() for _ in names)  # distinct sentinels: a misplaced field cannot go unnoticed
    try:
        made = make(*probe)
        reference = cls(*probe)
    except TypeError:
        return cls
    if type(made) is not cls or any(getattr(made, n) is not getattr(reference, n) for n in names):
        return cls
    return make
