"""Building records by the ten thousand: fast positional constructors.

A frozen dataclass's generated ``__init__`` sets every field through ``object.__setattr__``, a large share
of a big netlink decode (benchmarks/README.md has the figures). The constructor
made here fills an instance of a twin class, a subclass of the record that adds no slot and takes ordinary
attribute stores (object's own ``__setattr__``), then switches the instance's class to the real one. Python
allows that switch only between identical layouts and raises otherwise, and :func:`record_twin` checks once
that the result equals what ``cls(*args)`` builds, so the objects are the real records, field for field,
several times faster to make. If the check fails (a future Python, a changed record), a twin with slots of
its own is tried, then the plain class constructor is used instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")


def record_twin(cls: type[T]) -> tuple[type, Callable[[Any], T] | None]:
    """For filling ``cls`` records attribute by attribute in a hot loop: a class whose instances take plain
    stores into the slots of ``cls`` (its fields), and None when a filled instance may simply become a ``cls``
    (``obj.__class__ = cls``: checked once here on distinct sentinels against ``cls(*values)``), else the
    function that makes the real record from a filled instance (through the class constructor)."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    plain = type(f"_{cls.__name__}Twin", (), {"__slots__": names, "__module__": __name__})
    fields_of = attrgetter(*names) if len(names) > 1 else lambda obj: (getattr(obj, names[0]),)

    def rebuild(obj: Any) -> T:
        return cls(*fields_of(obj))

    if getattr(cls, "__slots__", None) != names or cls.__bases__ != (object,) or hasattr(cls, "__post_init__"):
        return plain, rebuild
    # The twin is a subclass that adds nothing but object's own __setattr__ (plain stores into the record's
    # slots): Python then lets an instance become a cls by comparing the two types' bases only, where a twin
    # with slots of its own has its __slots__ compared with cls's, name by name, at every switch (~500
    # instructions a record)
    twin = type(
        f"_{cls.__name__}Twin",
        (cls,),
        {"__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__, "__module__": __name__},
    )
    if _switches(twin, cls, names):
        return twin, None
    return (plain, None) if _switches(plain, cls, names) else (plain, rebuild)


def _switches(twin: type, cls: type, names: tuple[str, ...]) -> bool:
    """Does a filled ``twin`` become a ``cls`` equal, field for field, to ``cls(*values)``?"""
    probe = tuple(object() for _ in names)  # distinct sentinels: a misplaced field cannot go unnoticed
    try:
        made = object.__new__(twin)
        for name, value in zip(names, probe, strict=True):
            setattr(made, name, value)
        made.__class__ = cls
        reference = cls(*probe)
    except (TypeError, AttributeError):
        return False
    return type(made) is cls and all(getattr(made, n) is getattr(reference, n) for n in names)


def positional_maker(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of ``cls`` positionally (in field order) and returning a ``cls``."""
    twin, rebuild = record_twin(cls)
    if rebuild is not None:
        return cls
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    arguments = ", ".join(names)
    stores = "".join(f"    obj.{name} = {name}\n" for name in names)
    source = f"def make({arguments}):\n    obj = new(twin)\n{stores}    obj.__class__ = cls\n    return obj\n"
    namespace: dict[str, Any] = {"new": object.__new__, "twin": twin, "cls": cls}
    exec(source, namespace)  # generated like dataclasses' own __init__, with the field names as parameters
    return namespace["make"]
