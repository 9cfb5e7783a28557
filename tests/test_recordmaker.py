"""The fast record constructors build exactly what the dataclass constructors build."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from portscope.model.recordmaker import positional_maker
from portscope.model.records import Family, Holder, Process, Proto, Socket, State

SOCKET_ARGS = (
    Proto.TCP,
    Family.IPV6,
    State.LISTEN,
    "::1",
    8080,
    None,
    None,
    0,
    128,
    1000,
    4242,
    1,
    "lo",
    True,
    None,
    None,
    4026531840,
    77,
)


@pytest.mark.parametrize(
    ("cls", "args"),
    [
        (Socket, SOCKET_ARGS),
        (Process, (12, 1, "nginx", 0, "root", ("nginx", "-g"), 1.5e9)),
        (Holder, (Process(1, 0, "init", 0, "root", (), None), (7,), 42)),
    ],
)
def test_made_records_are_the_real_records(cls, args):
    make = positional_maker(cls)
    assert make is not cls  # the fast path is in use for the records the hot paths build
    made, reference = make(*args), cls(*args)
    assert type(made) is cls
    assert made == reference and hash(made) == hash(reference)
    assert [getattr(made, f.name) for f in dataclasses.fields(cls)] == list(args)
    assert pickle.loads(pickle.dumps(made)) == reference
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, dataclasses.fields(cls)[0].name, None)


def test_made_sockets_fill_every_field_from_its_own_argument():
    make = positional_maker(Socket)
    values = tuple(range(len(SOCKET_ARGS)))
    made = make(*values)
    assert tuple(getattr(made, f.name) for f in dataclasses.fields(Socket)) == values


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


@dataclasses.dataclass(frozen=True)
class _NoSlots:
    value: int


@pytest.mark.parametrize("cls", [_Checked, _NoSlots])
def test_records_the_fast_path_cannot_reproduce_keep_their_constructor(cls):
    assert positional_maker(cls) is cls


def test_record_twin_is_switched_or_rebuilt():
    """The decoder's twin: a filled instance becomes the record by a class switch where Python allows it,
    else through the class constructor; both give the record ``cls(*args)`` gives."""
    from portscope.model.recordmaker import record_twin

    twin, rebuild = record_twin(Socket)
    # a subclass adding no slots and plain stores: the switch compares the bases, not the slot names
    assert rebuild is None and twin.__bases__ == (Socket,) and twin.__slots__ == ()
    assert twin.__setattr__ is object.__setattr__
    filled = object.__new__(twin)
    for field, value in zip(dataclasses.fields(Socket), SOCKET_ARGS, strict=True):
        setattr(filled, field.name, value)
    filled.__class__ = Socket
    assert type(filled) is Socket and filled == Socket(*SOCKET_ARGS) and hash(filled) == hash(Socket(*SOCKET_ARGS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        filled.local_port = 1

    @dataclasses.dataclass(frozen=True)
    class Unslotted:  # no __slots__: no class switch possible
        a: int
        b: str

    twin, rebuild = record_twin(Unslotted)
    assert rebuild is not None
    filled = object.__new__(twin)
    filled.a, filled.b = 1, "x"
    assert rebuild(filled) == Unslotted(1, "x") and type(rebuild(filled)) is Unslotted


def test_decoder_records_are_the_same_when_rebuilt(monkeypatch):
    """The decoder's fallback for a Python that refuses the class switch gives the same records."""
    from pathlib import Path

    from portscope.sources import netlink

    fixtures = Path(__file__).resolve().parent / "fixtures" / "mix"
    data = {(p, f): (fixtures / f"netlink_{p.value}_{f.value}.bin").read_bytes() for p in Proto for f in Family}

    def decoded():
        return [netlink.Decoder(p, f, 1, ifname=lambda index: "lo").decode(d, "test") for (p, f), d in data.items()]

    switched = decoded()
    names = [f.name for f in dataclasses.fields(Socket)]
    monkeypatch.setattr(netlink, "_REBUILD_SOCKET", lambda obj: Socket(*(getattr(obj, n) for n in names)))
    rebuilt = decoded()
    assert rebuilt == switched and all(type(s) is Socket for batch, _ in rebuilt for s in batch)
    assert sum(len(batch) for batch, _ in rebuilt) > 10
