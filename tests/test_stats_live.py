"""``portscope stats`` against ``ss -s``, ``/proc/net/sockstat`` and ``ss -tuanx`` in a test-made namespace.

How the kernel counts (Linux 6.x), which these tests pin:

- per namespace: ``sockets: used`` (every full socket: TCP ones without TIME-WAIT and request socks,
  UDP, UNIX, netlink...), every ``inuse`` (hashed sockets: TCP listening and connected ones, also those
  waiting to be accepted, but neither bound-only, TIME-WAIT nor request socks), ``tw`` (timewait socks),
  ``Tcp: CurrEstab`` (ESTABLISHED and CLOSE-WAIT);
- host-wide: TCP ``orphan``, ``alloc`` and every ``mem``.
- ``sockets: used`` also counts netlink sockets, and a closed one until an RCU grace period has passed:
  the tests wait for it to settle after each dump of their own. ``ss -s``'s TCP total and "closed" are made
  from ``alloc``, so they move with every TCP socket on the host: compared within two readings around ss.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from netns_util import new_netns, ss_sockets
from portscope.cli import cli
from portscope.commands.stats import ss_summary
from portscope.sources.sockstat import parse_snmp_value, parse_sockstat
from socket_mix import build_mix

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def counted():
    with new_netns("psstats") as ns:
        mix = build_mix(ns)
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
            with ns.inside():
                ns.sockets.extend(socket.socketpair(socket.AF_UNIX, kind))
        listener = ns.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(b"\0portscope-stats")
        listener.listen(1)
        yield mix


def stats_json(ns_name: str, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["stats", "--json", "--netns", ns_name, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def parse_ss_summary(text: str) -> dict:
    total = int(re.search(r"^Total: (\d+)", text, re.M).group(1))
    tcp = re.search(r"^TCP:\s+(\d+) \(estab (\d+), closed (\d+), orphaned (\d+), timewait (\d+)\)", text, re.M)
    rows = {}
    for name in ("RAW", "UDP", "TCP", "INET", "FRAG"):
        match = re.search(rf"^{name}\s+(\d+)\s+(\d+)\s+(\d+)", text, re.M)
        rows[name] = tuple(map(int, match.groups()))
    return {"total": total, "tcp": tuple(map(int, tcp.groups())), "rows": rows}


def sockets_used(ns) -> int:
    with ns.inside(), open("/proc/thread-self/net/sockstat") as handle:
        return int(handle.readline().split()[2])  # "sockets: used N"


def settle(ns) -> None:
    """Wait until ``sockets: used`` stops moving: a netlink socket (ours, for a dump) counts until it is
    freed after an RCU grace period, a while after it is closed."""
    readings: list[int] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        readings.append(sockets_used(ns))
        if len(readings) >= 4 and len(set(readings[-4:])) == 1:
            return
        time.sleep(0.05)


def test_summary_equals_ss_s(counted):
    ns = counted.ns
    for _attempt in range(5):
        settle(ns)
        before = stats_json(ns.name, "--no-processes")["summary"]  # sockstat read before its own dumps
        settle(ns)
        theirs = parse_ss_summary(ns.run("ss", "-s").stdout)  # ss -s reads files only
        settle(ns)
        after = stats_json(ns.name, "--no-processes")["summary"]
        # per namespace: exactly
        for ours in (before, after):
            assert ours["total"] == theirs["total"]
            assert (ours["tcp_estab"], ours["tcp_timewait"]) == (theirs["tcp"][1], theirs["tcp"][4])
            assert {row["name"]: (row["total"], row["ipv4"], row["ipv6"]) for row in ours["transport"]} == theirs[
                "rows"
            ]
        # host-wide (TCP alloc and orphan): ss read between our two readings, unless the host moved
        keys = ("tcp_total", "tcp_closed", "tcp_orphaned")
        if all(
            min(before[key], after[key]) <= theirs["tcp"][index] <= max(before[key], after[key])
            for key, index in zip(keys, (0, 2, 3), strict=True)
        ):
            return
    pytest.fail(f"ss -s {theirs['tcp']} never between two readings of the host-wide counters ({before}, {after})")


def test_counts_by_state_equal_ss_and_sockstat(counted):
    ns = counted.ns
    document = stats_json(ns.name)
    counts = {(c["proto"], c["kind"]): c for c in document["counts"]}
    for entry in counts.values():
        assert entry["total"] == sum(entry["states"].values())
    # every socket ss lists, by protocol, family and state; ss 6.1 cannot list bound-only sockets
    theirs = Counter(
        (row.proto, family, row.state)
        for family, flag in (("ipv4", "-4"), ("ipv6", "-6"))
        for row in ss_sockets(ns, "-a", flag)
    )
    ours = Counter(
        {
            (proto, kind, state): count
            for (proto, kind), entry in counts.items()
            if proto != "unix"
            for state, count in entry["states"].items()
            if state != "bound"
        }
    )
    assert ours == theirs
    unix = Counter()
    types = {"u_str": "stream", "u_dgr": "dgram", "u_seq": "seqpacket"}
    states = {"ESTAB": "established", "LISTEN": "listen", "UNCONN": "unconn"}
    for line in ns.run("ss", "-xaH").stdout.splitlines():
        netid, state = line.split()[:2]
        unix[(types[netid], states[state])] += 1
    assert (
        Counter(
            {
                (kind, state): n
                for (proto, kind), e in counts.items()
                if proto == "unix"
                for state, n in e["states"].items()
            }
        )
        == unix
    )

    # the kernel's counters, as it keeps them, from the listed sockets
    settle(ns)
    document = stats_json(ns.name)  # the counters read with no netlink socket of ours still counted
    sockstat = document["sockstat"]

    def listed(proto, family, exclude=("time-wait", "syn-recv", "bound")):
        return sum(n for state, n in counts[(proto, family)]["states"].items() if state not in exclude)

    assert sockstat["TCP"]["inuse"] == listed("tcp", "ipv4")
    assert sockstat["TCP6"]["inuse"] == listed("tcp", "ipv6")
    assert sockstat["UDP"]["inuse"] == listed("udp", "ipv4", ()) and sockstat["UDP6"]["inuse"] == listed(
        "udp", "ipv6", ()
    )
    assert sockstat["TCP"]["tw"] == document["time_wait"] == 1
    full_tcp = sum(listed("tcp", family, ("time-wait", "syn-recv")) for family in ("ipv4", "ipv6"))
    udp = sum(counts[("udp", family)]["total"] for family in ("ipv4", "ipv6"))
    unix_total = sum(counts[("unix", kind)]["total"] for kind in ("stream", "dgram", "seqpacket"))
    assert sockstat["sockets"]["used"] == full_tcp + udp + unix_total
    estab = sum(counts[("tcp", f)]["states"].get(s, 0) for f in ("ipv4", "ipv6") for s in ("established", "close-wait"))
    assert document["summary"]["tcp_estab"] == estab


def test_busiest_ports_and_bound_only(counted):
    document = stats_json(counted.ns.name)
    busiest = {busy["port"]: busy for busy in document["busiest"]}
    listen4 = busiest[counted.ports["listen4"]]
    # one accepted connection, two waiting to be accepted, one half-closed (close-wait)
    assert (listen4["connections"], listen4["established"]) == (4, 3)
    assert [busy["connections"] for busy in document["busiest"]] == sorted(
        (busy["connections"] for busy in document["busiest"]), reverse=True
    )
    assert all(listener["processes"] for listener in listen4["listeners"])
    assert {(s["local_address"], s["local_port"]) for s in document["bound_only"]} == set(counted.bound_only)
    assert all(s["processes"] and s["state"] == "bound" for s in document["bound_only"])
    assert document["bound_visible"] is True
    text = CliRunner().invoke(cli, ["stats", "--netns", counted.ns.name]).stdout
    assert "Busiest listening ports" in text and f"{counted.ports['listen4']}" in text
    assert re.search(r"^TCP:\s+\d+ \(estab \d+, closed \d+, orphaned \d+, timewait 1\)", text, re.M)


SOCKSTAT = """sockets: used 26
TCP: inuse 13 orphan 0 tw 1 alloc 43 mem 144
UDP: inuse 2 mem 0
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
"""
SOCKSTAT6 = "TCP6: inuse 6\nUDP6: inuse 3\nUDPLITE6: inuse 0\nRAW6: inuse 0\nFRAG6: inuse 0 memory 0\n"


def test_ss_arithmetic_from_counters():
    counters = parse_sockstat(SOCKSTAT, "sockstat") | parse_sockstat(SOCKSTAT6, "sockstat6")
    summary = ss_summary(counters, 11)
    assert (summary.total, summary.tcp_total, summary.tcp_estab, summary.tcp_closed) == (26, 44, 11, 25)
    rows = {row.name: (row.total, row.ipv4, row.ipv6) for row in summary.transport}
    assert rows == {"RAW": (0, 0, 0), "UDP": (5, 2, 3), "TCP": (19, 13, 6), "INET": (24, 15, 9), "FRAG": (0, 0, 0)}
    without_ipv6 = ss_summary(parse_sockstat(SOCKSTAT, "sockstat"), None)
    assert without_ipv6.transport[2] == type(without_ipv6.transport[2])("TCP", 13, 13, 0)
    assert without_ipv6.tcp_estab is None


def test_counter_parsers_refuse_garbage():
    from portscope.errors import SourceError

    with pytest.raises(SourceError):
        parse_sockstat("TCP: inuse x\n", "test")
    with pytest.raises(SourceError):
        parse_sockstat("TCP inuse 1\n", "test")
    snmp = "Ip: Forwarding\nIp: 1\nTcp: RtoAlgorithm CurrEstab\nTcp: 1 7\n"
    assert parse_snmp_value(snmp, "Tcp", "CurrEstab") == 7
    assert parse_snmp_value(snmp, "Udp", "InDatagrams") is None
