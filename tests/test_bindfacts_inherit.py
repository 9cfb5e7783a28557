"""TIME-WAIT sockets of a server take the options of the listener that still exists, only when that is safe."""

from __future__ import annotations

import time
from dataclasses import replace

from portscope.model.records import Family, Holder, Process, Proto, State
from portscope.rules.bind import Owner
from portscope.sources.bindfacts import _inherited


def process(started: float) -> Process:
    return Process(pid=10, ppid=1, name="server", uid=0, user="root", cmdline=("server",), start_time=started)


NOW = time.time()
LISTENER = Owner(
    Proto.TCP,
    Family.IPV4,
    "0.0.0.0",
    80,
    State.LISTEN,
    uid=0,
    reuseaddr=True,
    reuseport=False,
    holders=(Holder(process(NOW - 3600), (3,)),),
)
TIME_WAIT = Owner(Proto.TCP, Family.IPV4, "127.0.0.1", 80, State.TIME_WAIT, timewait=True, timer_ms=50_000)


def test_a_listener_older_than_the_connection_lends_its_options():
    settled = _inherited(TIME_WAIT, [LISTENER, TIME_WAIT], NOW)
    assert (settled.reuseaddr, settled.reuseport) == (True, False)


def test_no_inheritance_when_it_could_be_wrong():
    # the server started after the connection ended: the TIME-WAIT is left over from an earlier one
    young = replace(LISTENER, holders=(Holder(process(NOW - 5), (3,)),))
    assert _inherited(TIME_WAIT, [young, TIME_WAIT], NOW).reuseaddr is None
    # two listeners that could have accepted it, with other options
    other = replace(LISTENER, address="127.0.0.1", reuseaddr=False)
    assert _inherited(TIME_WAIT, [LISTENER, other, TIME_WAIT], NOW).reuseaddr is None
    # no listener covers its address, or the listener's options are unknown
    assert (
        _inherited(replace(TIME_WAIT, address="10.0.0.1"), [replace(LISTENER, address="127.0.0.1")], NOW).reuseaddr
        is None
    )
    assert _inherited(TIME_WAIT, [replace(LISTENER, reuseaddr=None)], NOW).reuseaddr is None
    # an established socket keeps its own (readable) options
    child = replace(TIME_WAIT, state=State.ESTABLISHED, timewait=False)
    assert _inherited(child, [LISTENER], NOW) is child


def test_only_a_listener_that_could_have_accepted_it_lends_its_options():
    dual = replace(LISTENER, family=Family.IPV6, address="::", v6only=False)
    mapped = replace(TIME_WAIT, family=Family.IPV6, address="::ffff:127.0.0.1")
    assert _inherited(mapped, [dual], NOW).reuseaddr is True  # an IPv4 connection of a dual-stack listener
    # a v6-only listener never accepts IPv4: a TIME-WAIT at a v4-mapped address is someone else's
    assert _inherited(mapped, [replace(dual, v6only=True)], NOW).reuseaddr is None
    assert _inherited(replace(mapped, address="::1"), [replace(dual, v6only=True)], NOW).reuseaddr is True
    # accepted sockets have their listener's family: an AF_INET TIME-WAIT is no [::] listener's
    assert _inherited(TIME_WAIT, [dual], NOW).reuseaddr is None
    assert _inherited(mapped, [LISTENER], NOW).reuseaddr is None
