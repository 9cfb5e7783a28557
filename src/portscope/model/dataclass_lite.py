"""``@dataclass`` without its start-up cost: the same classes, nothing compiled at import.

``dataclasses.dataclass`` writes the source of six methods for each class and compiles them one by one,
and for a class without a docstring it also computes ``inspect.signature``: about 5 million instructions
per class, measured with callgrind, when the interpreter's whole start-up is 38 million. ``portscope ls``
defines 26 record classes on its way, so they cost more than the interpreter itself.

:func:`dataclass_lite` makes the class ``dataclass`` makes (``frozen`` and ``slots`` as there) from parts
shared by every class: ``__eq__``, ``__hash__``, ``__repr__`` and the frozen ``__setattr__`` read the fields
through one :func:`operator.attrgetter` per class, and ``__init__`` is compiled on the class's first
instantiation only (most classes a command defines are never instantiated in a given run). Each class gets the
real ``dataclasses.Field`` objects, so ``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass``
work on it unchanged. What it does not reproduce (inheritance, ``ClassVar``, ``InitVar``, ``kw_only``,
``order``, a hand-written ``__eq__`` or ``__hash__``...) is handed to ``dataclasses.dataclass`` itself.
Differences that remain: no generated docstring, and ``inspect.signature(cls)`` reads ``(*args, **kwargs)``
until :data:`COMPILED_AFTER` instances are made. tests/test_dataclass_lite.py holds each behaviour against
``dataclasses``.
"""

from __future__ import annotations

import dataclasses
import sys
from operator import attrgetter

_FIELD = getattr(dataclasses, "_FIELD", None)  # the marker dataclasses.fields() looks for
_MISSING = dataclasses.MISSING
_HAS_DEFAULT_FACTORY = getattr(dataclasses, "_HAS_DEFAULT_FACTORY", _MISSING)  # shown "<factory>" in signatures
_FrozenInstanceError = dataclasses.FrozenInstanceError
_set = object.__setattr__


class _Plan:
    """What the shared methods need to know about one class."""

    __slots__ = ("fields", "hash_key", "init", "key", "names", "shown")

    def __init__(self, fields: list[dataclasses.Field]) -> None:
        self.fields = fields
        self.names = tuple(f.name for f in fields)
        self.key = _tuple_getter([f.name for f in fields if f.compare])
        self.hash_key = _tuple_getter([f.name for f in fields if (f.compare if f.hash is None else f.hash)])
        self.shown = tuple(f.name for f in fields if f.repr)


def _tuple_getter(names: list[str]) -> Any:
    """obj -> a tuple of these attributes (attrgetter returns a bare value for a single name)."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        get = attrgetter(names[0])
        return lambda obj: (get(obj),)
    return lambda obj: ()


def _plan_of(cls: type) -> _Plan:
    plan: _Plan = cls.__lite_plan__  # type: ignore[attr-defined]
    return plan


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = _plan_of(self.__class__).key
        return key(self) == key(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_plan_of(self.__class__).hash_key(self))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _plan_of(self.__class__).shown)
    return f"{self.__class__.__qualname__}({shown})"


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise _FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise _FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: Any) -> list[Any]:  # slotted classes have no __dict__ for pickle and copy to use
    return [getattr(self, name) for name in _plan_of(self.__class__).names]


def _setstate(self: Any, state: list[Any]) -> None:
    for name, value in zip(_plan_of(self.__class__).names, state, strict=True):
        _set(self, name, value)


def _replace(self: Any, /, **changes: Any) -> Any:  # copy.replace() (Python 3.13+), as dataclasses gives it
    return dataclasses.replace(self, **changes)


COMPILED_AFTER = 32  # instances a class makes through the generic __init__ before its own is compiled


def _first_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """The first instance of a class installs its generic ``__init__`` (:func:`_generic_init`)."""
    owner = next(c for c in type(self).__mro__ if "__lite_plan__" in c.__dict__)
    init = _generic_init(owner)
    if owner.__dict__.get("__init__") is _first_init:
        type.__setattr__(owner, "__init__", init)
    init(self, *args, **kwargs)


def _generic_init(cls: type) -> Any:
    """An ``__init__`` that reads the fields from the class's plan: compiling a class's own ``__init__`` costs
    about 200 µs, and most classes a command uses make a few instances (``who`` instantiates 32 of them). After
    :data:`COMPILED_AFTER` instances the class gets its compiled ``__init__`` (:func:`_compile_init`); any call
    that is not a plain one (a missing, unknown or repeated argument) takes it at once, and its error."""
    plan = _plan_of(cls)
    store = _set if cls.__dataclass_params__.frozen else setattr  # type: ignore[attr-defined]
    fields = [(f.name, f.init, f.default, f.default_factory) for f in plan.fields]
    parameters = [f.name for f in plan.fields if f.init]
    accepted = frozenset(parameters)
    required = frozenset(
        f.name for f in plan.fields if f.init and f.default is _MISSING and f.default_factory is _MISSING
    )
    post_init = "__post_init__" in cls.__dict__
    made = 0

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal made
        made += 1
        values = dict(zip(parameters, args, strict=False))  # more args than parameters: checked below
        if (
            made > COMPILED_AFTER
            or len(args) > len(parameters)
            or not accepted.issuperset(kwargs)
            or (kwargs and not values.keys().isdisjoint(kwargs))
        ):
            _compiled(cls)(self, *args, **kwargs)
            return
        values.update(kwargs)
        if not required.issubset(values):  # a required argument missing: the compiled __init__ raises the error
            _compiled(cls)(self, *args, **kwargs)
            return
        for name, init, default, factory in fields:
            if init and name in values:
                store(self, name, values[name])
            elif default is not _MISSING:
                store(self, name, default)
            elif factory is not _MISSING:
                store(self, name, factory())
        if post_init:
            self.__post_init__()

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    return __init__


def _compiled(cls: type) -> Any:
    """The class's compiled ``__init__``, installed once made."""
    init = cls.__dict__.get("__init__")
    if getattr(init, "__lite_compiled__", False):
        return init
    init = _compile_init(cls)
    init.__lite_compiled__ = True
    type.__setattr__(cls, "__init__", init)
    return init


def _compile_init(cls: type) -> Any:
    """``__init__`` as dataclasses writes it: the fields as parameters in order, defaults and factories."""
    plan = _plan_of(cls)
    frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    namespace: dict[str, Any] = {"__set": _set, "__FACTORY": _HAS_DEFAULT_FACTORY}
    parameters, stores = [], []
    for index, f in enumerate(plan.fields):
        if f.default_factory is not _MISSING:
            namespace[f"__factory{index}"] = f.default_factory
            if f.init:
                parameters.append(f"{f.name}=__FACTORY")
                value = f"__factory{index}() if {f.name} is __FACTORY else {f.name}"
            else:
                value = f"__factory{index}()"
        elif f.default is not _MISSING:
            namespace[f"__default{index}"] = f.default
            if f.init:
                parameters.append(f"{f.name}=__default{index}")
                value = f.name
            else:
                value = f"__default{index}"
        else:
            parameters.append(f.name)
            value = f.name
        stores.append(f"    __set(self, {f.name!r}, {value})" if frozen else f"    self.{f.name} = {value}")
    if "__post_init__" in cls.__dict__:
        stores.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(parameters)}):\n" + ("\n".join(stores) or "    pass") + "\n"
    exec(source, namespace)  # as dataclasses does, with the field names as parameters
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init


TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:  # type checkers and editors know dataclasses.dataclass; the classes are the same
    from dataclasses import dataclass as dataclass_lite
    from typing import Any
else:

    def dataclass_lite(cls: type | None = None, /, *, frozen: bool = False, slots: bool = False) -> Any:
        """``@dataclass``, ``@dataclass(frozen=True)``, ``@dataclass(frozen=True, slots=True)``: the same class."""

        def wrap(cls: type) -> type:
            made = _make(cls, frozen=frozen, slots=slots)
            return made if made is not None else dataclasses.dataclass(frozen=frozen, slots=slots)(cls)

        return wrap if cls is None else wrap(cls)


# Methods a class may not write itself here (dataclasses' rules for them are intricate): handed to dataclasses.
_HANDED_OVER_IF_WRITTEN = frozenset({"__eq__", "__hash__", "__init__", "__setattr__", "__delattr__", "__slots__"})


def _make(cls: type, *, frozen: bool, slots: bool) -> type | None:
    namespace = cls.__dict__
    if _FIELD is None or cls.__bases__ != (object,) or not _HANDED_OVER_IF_WRITTEN.isdisjoint(namespace):
        return None
    params = _params(frozen, slots)
    if params is None:
        return None
    fields: list[dataclasses.Field] = []
    seen_default = False
    for name, annotation in namespace.get("__annotations__", {}).items():
        text = annotation if isinstance(annotation, str) else repr(annotation)
        if "ClassVar" in text or "InitVar" in text or "KW_ONLY" in text:
            return None
        value = namespace.get(name, _MISSING)
        if isinstance(value, dataclasses.Field):
            if value.kw_only is True:
                return None
            spec = value
        else:
            if isinstance(value, (list, dict, set)):
                return None  # dataclasses raises its "mutable default" ValueError
            spec = dataclasses.field(default=value)
        has_default = spec.default is not _MISSING or spec.default_factory is not _MISSING
        if spec.init and not has_default and seen_default:
            return None  # dataclasses raises its "non-default argument follows default argument" TypeError
        seen_default = seen_default or (spec.init and has_default)
        spec.name, spec.type, spec.kw_only = name, annotation, False
        spec._field_type = _FIELD  # type: ignore[attr-defined]
        fields.append(spec)

    added: dict[str, Any] = {
        "__dataclass_fields__": {f.name: f for f in fields},
        "__dataclass_params__": params,
        "__lite_plan__": _Plan(fields),
        "__init__": _first_init,
        "__eq__": _eq,
        "__hash__": _hash if frozen else None,  # mutable and compared by value: unhashable, as with dataclasses
    }
    if "__match_args__" not in namespace:
        added["__match_args__"] = tuple(f.name for f in fields if f.init)
    if "__repr__" not in namespace:
        added["__repr__"] = _repr
    if sys.version_info >= (3, 13):
        added["__replace__"] = _replace
    if frozen:
        added["__setattr__"] = _frozen_setattr
        added["__delattr__"] = _frozen_delattr
    if slots:  # a class gets its slots when it is made: make it again, as dataclasses does
        body = {key: value for key, value in namespace.items() if key not in ("__dict__", "__weakref__")}
        for f in fields:
            body.pop(f.name, None)  # a default may not stay a class attribute beside its slot
        body.update(added, __slots__=tuple(f.name for f in fields), __getstate__=_getstate, __setstate__=_setstate)
        made: type = type(cls)(cls.__name__, cls.__bases__, body)
        made.__qualname__ = cls.__qualname__
        return made
    for f in fields:  # dataclasses leaves plain defaults on the class and removes field() objects
        if f.default is not _MISSING:
            setattr(cls, f.name, f.default)
        elif f.name in namespace:
            delattr(cls, f.name)
    for name, value in added.items():
        setattr(cls, name, value)
    return cls


_PARAMS_BY_KEY: dict[tuple[bool, bool], Any] = {}


def _params(frozen: bool, slots: bool) -> Any:
    """What ``__dataclass_params__`` holds (its arguments grew over Python versions)."""
    if (frozen, slots) in _PARAMS_BY_KEY:
        return _PARAMS_BY_KEY[frozen, slots]
    made_by = getattr(dataclasses, "_DataclassParams", None)
    given = dict(init=True, repr=True, eq=True, order=False, unsafe_hash=False, frozen=frozen)
    params = None
    for extra in (
        dict(match_args=True, kw_only=False, slots=slots, weakref_slot=False),
        dict(match_args=True, kw_only=False, slots=slots),
        {},
    ):
        try:
            params = made_by(**given, **extra) if made_by is not None else None
            break
        except TypeError:
            continue
    _PARAMS_BY_KEY[frozen, slots] = params
    return params
