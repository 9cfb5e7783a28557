"""The fast record constructors build exactly what the dataclass constructors build."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from portscope.engine.recordmaker import positional_maker
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
