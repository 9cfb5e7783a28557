"""The can-bind model as a pure function: the spec's tables and rules, no sockets, no kernel."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from portscope.commands.can_bind import _settle
from portscope.errors import UsageError
from portscope.model.endpoint import parse_target
from portscope.model.records import Family, Holder, Process, Proto, State
from portscope.render import bind_words
from portscope.rules.bind import (
    BindBucket,
    Ipv6Address,
    LocalRoute,
    Namespace,
    NewSocket,
    Owner,
    Stage,
    Verdict,
    autobind_ports,
    decide,
    fastpath_matches,
)
from portscope.rules.codes import ActionKind, BsdNote, ReasonCode, UncertaintyCode, action
from portscope.sources.probe import ProbeResult
from portscope.sources.services import parse_services

TCP, UDP = Proto.TCP, Proto.UDP
PORT = 8080

NS = Namespace(
    local_routes=(
        LocalRoute(ipaddress.IPv4Network("127.0.0.0/8"), "local"),
        LocalRoute(ipaddress.IPv4Network("127.255.255.255/32"), "broadcast"),
        LocalRoute(ipaddress.IPv4Network("10.0.0.5/32"), "local"),
        LocalRoute(ipaddress.IPv4Network("10.0.0.255/32"), "broadcast"),
        LocalRoute(ipaddress.IPv4Network("10.9.0.0/16"), "local"),  # AnyIP
    ),
    ipv6_addresses=(
        Ipv6Address(ipaddress.IPv6Address("::1"), 1, "host"),
        Ipv6Address(ipaddress.IPv6Address("fe80::1"), 2, "link"),
        Ipv6Address(ipaddress.IPv6Address("2001:db8::1"), 2, "global"),
        Ipv6Address(ipaddress.IPv6Address("2001:db8::2"), 2, "global", tentative=True),
        Ipv6Address(ipaddress.IPv6Address("2001:db8::3"), 2, "global", tentative=True, optimistic=True),
        Ipv6Address(ipaddress.IPv6Address("2001:db8::4"), 2, "global", tentative=True, dadfailed=True),
    ),
    interfaces=((1, "lo"), (2, "eth0"), (3, "eth1")),
)


def new(address: str = "127.0.0.1", proto: Proto = TCP, port: int = PORT, **options) -> NewSocket:
    family = Family.IPV6 if ":" in address else Family.IPV4
    return NewSocket(proto=proto, family=family, address=address, port=port, **options)


def owner(address: str = "127.0.0.1", state: State = State.LISTEN, proto: Proto = TCP, **fields) -> Owner:
    family = Family.IPV6 if ":" in address else Family.IPV4
    defaults = {
        "reuseaddr": False,
        "reuseport": False,
        "uid": 0,
        "v6only": False if family is Family.IPV6 else None,
        "owner_changed": False,
    }
    defaults.update(fields)
    return Owner(proto=proto, family=family, address=address, port=PORT, state=state, **defaults)


def codes(items) -> list[str]:
    return [item.code.value for item in items]


def answer(n: NewSocket, *owners: Owner, ns: Namespace = NS) -> tuple[str, str | None]:
    verdict = decide(n, owners, ns)
    return verdict.verdict.value, verdict.errno


# ---------------------------------------------------------------------------------------------------
# §1.3 overlap table: rows are the new socket, columns the existing one

NEW_CLASSES = {
    "W4": ("0.0.0.0", False),
    "M0": ("::ffff:0.0.0.0", False),
    "S4": ("127.0.0.1", False),
    "S4'": ("::ffff:127.0.0.1", False),
    "W6d": ("::", False),
    "W6o": ("::", True),
    "S6": ("::1", False),  # bind() forces v6only
}
OWNER_CLASSES = {
    "W4": ("0.0.0.0", State.LISTEN, None),
    "M0": ("::ffff:0.0.0.0", State.LISTEN, False),
    "S4": ("127.0.0.1", State.LISTEN, None),
    "S4other": ("127.0.0.2", State.LISTEN, None),
    "W6d": ("::", State.LISTEN, False),
    "W6o": ("::", State.LISTEN, True),
    "S6": ("::1", State.LISTEN, True),
    "S6d": ("::1", State.ESTABLISHED, False),  # a child of a dual-stack [::] listener
}
# (new class, owner class) -> overlaps, from the spec's table (S4 vs S6d is the UDP-only 127.0.0.6 cell)
OVERLAP = {
    "W4": {"W4", "M0", "S4", "S4other", "W6d", "S6d"},
    "M0": {"W4", "M0", "S4", "S4other", "W6d"},
    "S4": {"W4", "M0", "S4", "W6d"},
    "S4'": {"W4", "M0", "S4", "W6d"},
    "W6d": set(OWNER_CLASSES),
    "W6o": {"W6d", "W6o", "S6", "S6d"},
    "S6": {"W6d", "W6o", "S6", "S6d"},
}


@pytest.mark.parametrize("proto", [TCP, UDP])
@pytest.mark.parametrize("new_class", list(NEW_CLASSES))
@pytest.mark.parametrize("owner_class", list(OWNER_CLASSES))
def test_overlap_table(proto, new_class, owner_class):
    address, v6only = NEW_CLASSES[new_class]
    o_address, state, o_v6only = OWNER_CLASSES[owner_class]
    if proto is UDP:
        state = State.ESTABLISHED if state is State.ESTABLISHED else State.UNCONN
    n = new(address, proto, v6only=v6only)
    b = owner(o_address, state, proto, v6only=o_v6only)
    expected = ("no", "EADDRINUSE") if owner_class in OVERLAP[new_class] else ("yes", None)
    assert answer(n, b) == expected


def test_loopback4_ipv6_oddity_is_udp_only():
    """V22/V23: AF_INET6 sockets store 127.0.0.6 as their IPv4 address; only UDP compares it."""
    child = owner("::1", State.ESTABLISHED, v6only=False)
    assert answer(new("127.0.0.6"), child) == ("yes", None)
    udp = owner("::1", State.ESTABLISHED, UDP, v6only=False)
    own_table = replace(NS, udp_table_shared=False)  # the primary slot for sure (see the hash2 test)
    assert answer(new("127.0.0.6", UDP), udp, ns=own_table) == ("no", "EADDRINUSE")
    assert answer(new("127.0.0.5", UDP), udp) == ("yes", None)


def test_tcp_and_udp_tables_are_separate():
    assert answer(new("0.0.0.0", UDP), owner("0.0.0.0")) == ("yes", None)


# ---------------------------------------------------------------------------------------------------
# Address checks, privileged ports, and the order of errors


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.9.9.9", ("yes", None)),  # all of 127/8
        ("10.0.0.5", ("yes", None)),
        ("10.0.0.255", ("yes", None)),  # broadcast
        ("10.9.1.2", ("yes", None)),  # AnyIP prefix
        ("224.0.0.1", ("yes", None)),  # multicast, even for TCP
        ("255.255.255.255", ("yes", None)),
        ("10.0.0.6", ("no", "EADDRNOTAVAIL")),
        ("0.1.2.3", ("no", "EADDRNOTAVAIL")),  # only 0.0.0.0 itself is "zeronet"
    ],
)
def test_ipv4_address_must_be_local(address, expected):
    assert answer(new(address)) == expected


def test_nonlocal_bind_and_freebind():
    assert answer(new("192.0.2.1", freebind=True)) == ("yes", None)
    assert answer(new("192.0.2.1"), ns=replace(NS, ipv4_nonlocal_bind=True)) == ("yes", None)
    assert answer(new("2001:db8::99", freebind=True)) == ("yes", None)
    assert answer(new("2001:db8::99"), ns=replace(NS, ipv6_nonlocal_bind=True)) == ("yes", None)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("::1", ("yes", None)),
        ("2001:db8::1", ("yes", None)),
        ("2001:db8::2", ("no", "EADDRNOTAVAIL")),  # tentative
        ("2001:db8::3", ("yes", None)),  # optimistic counts
        ("2001:db8::4", ("no", "EADDRNOTAVAIL")),  # DAD failed
        ("2001:db8::99", ("no", "EADDRNOTAVAIL")),
        ("fe80::1", ("no", "EINVAL")),  # link-local without a scope
        ("::ffff:10.0.0.5", ("yes", None)),
        ("::ffff:192.0.2.1", ("no", "EADDRNOTAVAIL")),
    ],
)
def test_ipv6_address_checks(address, expected):
    assert answer(new(address)) == expected


def test_tentative_explanation():
    verdict = decide(new("2001:db8::2"), (), NS)
    assert verdict.rule == "R-ADDR6" and codes(verdict.reasons) == ["address-tentative"]
    assert "tentative" in bind_words.explanation(verdict.reasons)
    assert verdict.actions[0] == action(ActionKind.WAIT, until="dad-finishes")


def test_scope_and_device():
    assert answer(new("fe80::1", scope_id=2)) == ("yes", None)
    assert answer(new("fe80::1", device=2)) == ("yes", None)
    assert answer(new("fe80::1", scope_id=3)) == ("no", "EADDRNOTAVAIL")  # not on eth1
    assert answer(new("::1", device=2)) == ("no", "EADDRNOTAVAIL")  # host scope, other device (A13)
    assert answer(new("2001:db8::1", device=3)) == ("yes", None)  # global addresses: any device (X04)
    # the scope id becomes the bound device for the device rule
    on_eth0 = owner("fe80::1", device=2, v6only=True)
    assert answer(new("fe80::1", scope_id=2), on_eth0) == ("no", "EADDRINUSE")
    on_eth1 = owner("::", device=3, v6only=True)
    assert answer(new("fe80::1", scope_id=2), on_eth1) == ("yes", None)


def test_v4_mapped_on_v6only_and_multicast():
    assert decide(new("::ffff:127.0.0.1", v6only=True), (), NS).rule == "R-V6ONLY-MAPPED"
    assert answer(new("::ffff:127.0.0.1", v6only=True)) == ("no", "EINVAL")
    assert answer(new("ff02::1", scope_id=2)) == ("no", "EINVAL")  # multicast on TCP
    assert answer(new("ff02::1", UDP)) == ("no", "EINVAL")  # link-local multicast needs a scope
    assert answer(new("ff02::1", UDP, scope_id=2)) == ("yes", None)
    assert answer(new("ff0e::1", UDP)) == ("yes", None)


def test_privileged_ports_and_error_order():
    user = {"privileged": False, "uid": 1000}
    assert answer(new(port=80, **user)) == ("no", "EACCES")
    refused = decide(new(port=80, **user), (), NS)
    assert refused.reasons[0].params == {"port": 80, "unprivileged_port_start": 1024}
    assert codes(refused.actions) == ["grant-capability", "set-sysctl", "use-another-port"]
    assert refused.actions[2]["at_least"] == 1024 and refused.bsd_note is BsdNote.PRIVILEGED_PORTS
    assert answer(new("::1", UDP, port=80, **user)) == ("no", "EACCES")
    assert answer(new(port=80)) == ("yes", None)  # with CAP_NET_BIND_SERVICE
    assert answer(new(port=0, **user)) == ("yes", None)  # port 0 is exempt
    assert answer(new(port=600, **user), ns=replace(NS, unprivileged_port_start=500)) == ("yes", None)
    # IPv4 checks the address first (P06), IPv6 the port first (P07); EACCES wins over EADDRINUSE (P08)
    assert answer(new("192.0.2.1", port=80, **user)) == ("no", "EADDRNOTAVAIL")
    assert answer(new("2001:db8::99", port=80, **user)) == ("no", "EACCES")
    busy = Owner(TCP, Family.IPV4, "127.0.0.1", 80, State.LISTEN, uid=0, reuseaddr=False, reuseport=False)
    assert answer(new(port=80, **user), busy) == ("no", "EACCES")


def test_port_zero_autobinds():
    verdict = decide(new(port=0), (owner(),), NS)
    assert (verdict.verdict, verdict.rule) == (Verdict.YES, "R-AUTOBIND")
    assert decide(new(port=0, proto=UDP), (), NS).rule == "R-AUTOBIND-UDP"


# ---------------------------------------------------------------------------------------------------
# The TCP pair rule


@pytest.mark.parametrize(
    ("state", "o_flags", "n_flags", "expected"),
    [
        (State.LISTEN, (True, False), (True, False), "no"),  # SO_REUSEADDR never next to a listener
        (State.BOUND, (True, False), (True, False), "yes"),
        (State.ESTABLISHED, (True, False), (True, False), "yes"),
        (State.BOUND, (False, False), (True, False), "no"),  # both need it
        (State.BOUND, (True, False), (False, False), "no"),
        (State.LISTEN, (False, True), (False, True), "yes"),  # same uid
        (State.LISTEN, (True, True), (True, False), "no"),
        (State.CLOSE_WAIT, (False, False), (False, False), "no"),
    ],
)
def test_tcp_pair_rule(state, o_flags, n_flags, expected):
    b = owner(state=state, reuseaddr=o_flags[0], reuseport=o_flags[1])
    assert answer(new(reuseaddr=n_flags[0], reuseport=n_flags[1]), b)[0] == expected


def test_reuseport_needs_the_same_uid_and_root_gets_no_exemption():
    b = owner(reuseport=True, uid=1000)
    verdict = decide(new(reuseport=True, uid=0), (b,), NS)
    assert (verdict.verdict, verdict.rule) == (Verdict.NO, "R-TCP-REUSEPORT")
    assert answer(new(reuseport=True, uid=1000), b) == ("yes", None)


def test_time_wait_is_exempt_from_the_uid_but_needs_the_flag():
    tw = owner(state=State.TIME_WAIT, timewait=True, reuseport=True, uid=None)
    assert answer(new(reuseport=True, uid=1000), tw) == ("yes", None)
    tw_plain = owner(state=State.TIME_WAIT, timewait=True, uid=None)
    assert answer(new(reuseport=True, uid=1000), tw_plain)[0] in ("no", "uncertain")


def test_hidden_time_wait_flags_give_uncertainty_only_when_they_matter():
    tw = owner(state=State.TIME_WAIT, timewait=True, reuseaddr=None, reuseport=None, uid=None, timer_ms=47_000)
    plain = decide(new(), (tw,), NS)
    assert (plain.verdict, plain.errno) == (Verdict.NO, "EADDRINUSE")  # no flag on the new socket: blocked anyway
    assert action(ActionKind.WAIT, until="time-wait-expires", seconds=47) in plain.actions
    assert "wait 47 s for TIME-WAIT to expire" in bind_words.fixes(plain.actions)
    # SO_REUSEADDR on the new socket is offered, but only as far as the old socket's flag allows
    (conditional,) = [a for a in plain.actions if a.code is ActionKind.SET_OPTION and a["option"] == "SO_REUSEADDR"]
    assert conditional["on"] == "new" and conditional["if_existing_has_it"]
    assert any("helps only if" in fix for fix in bind_words.fixes(plain.actions))
    hoping = decide(new(reuseaddr=True), (tw,), NS)
    assert hoping.verdict is Verdict.UNCERTAIN
    (hidden,) = hoping.uncertainty
    assert hidden.code is UncertaintyCode.HIDDEN_FLAGS and hidden["why"] == "time-wait"
    assert "SO_REUSEADDR" in hidden["options"] and hidden["socket"] is tw
    assert "TIME-WAIT" in bind_words.uncertainty_text(hidden)


def test_one_wait_for_many_time_wait_sockets_the_longest_timer():
    tws = [owner(state=State.TIME_WAIT, timewait=True, uid=None, timer_ms=ms) for ms in (25_000, 59_500, 3_000)]
    verdict = decide(new(), tws, NS)
    waits = [a for a in verdict.actions if a.code is ActionKind.WAIT]
    assert waits == [action(ActionKind.WAIT, until="time-wait-expires", seconds=60)]
    assert len(verdict.blockers) == 3 and verdict.reasons[-1].params == {"count": 2}


def test_a_listener_shared_by_workers_gives_one_stop():
    parent = Process(pid=9947, ppid=1, name="python3", uid=0, user="root", cmdline=(), start_time=None)
    workers = [
        Process(pid=pid, ppid=9947, name="python3", uid=0, user="root", cmdline=(), start_time=None)
        for pid in (10073, 10074, 10075)
    ]
    listener = owner("0.0.0.0", holders=tuple(Holder(p, (3,)) for p in (parent, *workers)))
    children = [owner("127.0.0.1", State.ESTABLISHED, holders=(Holder(workers[i % 3], (9 + i,)),)) for i in range(6)]
    verdict = decide(new(), (listener, *children), NS)
    stops = [a for a in verdict.actions if a.code is ActionKind.STOP_PROCESS]
    assert stops == [action(ActionKind.STOP_PROCESS, pid=9947, name="python3", workers=[10073, 10074, 10075])]
    assert bind_words.fixes(verdict.actions)[0] == "stop pid 9947 (python3) and its 3 workers"


def test_no_action_the_owners_rule_out():
    b = owner(reuseport=True, uid=1000)
    verdict = decide(new(reuseport=True, uid=0), (b,), NS)
    assert codes(verdict.reasons)[1] == "reuseport-owner-differs"
    assert verdict.reasons[1].params == {"existing_uid": 1000, "new_uid": 0}
    options = [a for a in verdict.actions if a.code is ActionKind.SET_OPTION]
    assert options == []  # SO_REUSEPORT on both cannot help: the owners differ
    assert action(ActionKind.RUN_AS_USER, uid=1000) in verdict.actions
    # without SO_REUSEPORT anywhere and the same user: "both" is the fix
    same = decide(new(), (owner(),), NS)
    assert action(ActionKind.SET_OPTION, option="SO_REUSEPORT", on="both") in same.actions
    assert not any(a.code is ActionKind.SET_OPTION and a["option"] == "SO_REUSEADDR" for a in same.actions)
    # another user's plain listener: only stopping it, or running as its user with SO_REUSEPORT on both, could help
    other = decide(new(), (owner(uid=1000),), NS)
    assert not any(a.code in (ActionKind.SET_OPTION, ActionKind.RUN_AS_USER) for a in other.actions)


def test_fast_path_uncertainty():
    # a REUSEPORT socket next to a non-listening SO_REUSEADDR owner: F02 shows the kernel may accept it
    f02 = decide(new(reuseport=True), (owner(state=State.BOUND, reuseaddr=True),), NS)
    assert (f02.verdict, f02.rule) == (Verdict.UNCERTAIN, "R-FASTPATH")
    # a listener without a device reset the cache: decisive
    assert answer(new(reuseport=True), owner()) == ("no", "EADDRINUSE")
    # a listener pinned to a device can be bypassed (F04)
    assert answer(new(reuseport=True), owner(device=2))[0] == "uncertain"
    # no SO_REUSEPORT on the new socket: the fast path never applies
    assert answer(new(), owner(state=State.BOUND, reuseaddr=True)) == ("no", "EADDRINUSE")
    # a REUSEPORT child of another uid (F09) cannot be ruled out either
    child = owner(state=State.ESTABLISHED, reuseport=True, uid=1000)
    assert answer(new(reuseport=True), child)[0] == "uncertain"


def test_unknown_flags_of_a_held_socket_are_reasoned_over():
    hidden = owner(state=State.BOUND, reuseaddr=None, reuseport=None)
    assert answer(new(), hidden) == ("no", "EADDRINUSE")
    assert answer(new(reuseaddr=True), hidden)[0] == "uncertain"
    unknown_device = owner(device=None)
    assert answer(new(device=3), unknown_device)[0] == "uncertain"
    assert answer(new(), unknown_device) == ("no", "EADDRINUSE")


def test_device_rule():
    assert answer(new("0.0.0.0", device=2), owner("0.0.0.0", device=3)) == ("yes", None)
    assert answer(new("0.0.0.0"), owner("0.0.0.0", device=3)) == ("no", "EADDRINUSE")
    assert answer(new("0.0.0.0", device=3), owner("0.0.0.0")) == ("no", "EADDRINUSE")
    assert decide(new("0.0.0.0", device=2), (owner("0.0.0.0", device=3),), NS).rule == "R-DEV"


def test_dual_stack_advice():
    verdict = decide(new("0.0.0.0"), (owner("::"),), NS)
    assert verdict.rule == "R-OVERLAP-DUAL"
    assert codes(verdict.reasons) == ["overlap", "dual-stack-overlap", "listener-needs-reuseport"]
    assert action(ActionKind.SET_OPTION, option="IPV6_V6ONLY", on="existing") in verdict.actions
    assert any("IPV6_V6ONLY on the existing [::] socket" in fix for fix in bind_words.fixes(verdict.actions))
    assert verdict.bsd_note is BsdNote.DUAL_STACK and "FreeBSD" in bind_words.BSD_NOTES[verdict.bsd_note]
    new6 = decide(new("::"), (owner("0.0.0.0"),), NS)
    assert action(ActionKind.SET_OPTION, option="IPV6_V6ONLY", on="new") in new6.actions
    assert answer(new("0.0.0.0"), owner("::", v6only=True)) == ("yes", None)


def test_blockers_and_stop_advice_name_the_process():
    nginx = Process(pid=812, ppid=1, name="nginx", uid=33, user="www-data", cmdline=("nginx",), start_time=None)
    b = owner("0.0.0.0", holders=(Holder(nginx, (6,)),))
    verdict = decide(new(), (b,), NS)
    assert verdict.blockers == (b,)
    assert verdict.actions[0] == action(ActionKind.STOP_PROCESS, pid=812, name="nginx")
    assert bind_words.fixes(verdict.actions)[0] == "stop pid 812 (nginx)"
    assert verdict.reasons[0].code is ReasonCode.OVERLAP and verdict.reasons[0]["socket"] is b
    assert "pid 812 nginx (user www-data)" in bind_words.explanation(verdict.reasons)
    assert verdict.stage is Stage.BIND


def test_bound_only_sockets_invisible_makes_yes_uncertain():
    verdict = decide(new(), (), replace(NS, bound_visible=False))
    assert verdict.verdict is Verdict.UNCERTAIN and codes(verdict.uncertainty) == ["bound-invisible"]
    assert answer(new(), owner(), ns=replace(NS, bound_visible=False)) == ("no", "EADDRINUSE")


# ---------------------------------------------------------------------------------------------------
# UDP: every overlapping owner the kernel scans counts, in any order


def udp_owner(address: str, **fields) -> Owner:
    return owner(address, State.UNCONN, UDP, **fields)


BLOCKER = udp_owner("0.0.0.0", reuseaddr=True)
COMPATIBLE = udp_owner("127.0.0.1", reuseaddr=True, reuseport=True)


def test_udp_reuseaddr_on_both_ignores_the_owner():
    assert answer(new(proto=UDP, reuseaddr=True), udp_owner("127.0.0.1", reuseaddr=True)) == ("yes", None)
    assert answer(new(proto=UDP, reuseaddr=True), udp_owner("127.0.0.1")) == ("no", "EADDRINUSE")
    assert answer(new(proto=UDP, reuseport=True), udp_owner("127.0.0.1", reuseport=True, uid=1)) == (
        "no",
        "EADDRINUSE",
    )


def test_udp_compatible_owner_does_not_outweigh_a_blocker():
    """6.18.44: a compatible SO_REUSEPORT owner never ends the scan early, whatever the chain order (U15-U17)."""
    n = new(proto=UDP, reuseport=True)
    assert answer(n, COMPATIBLE) == ("yes", None)
    assert answer(n, COMPATIBLE, BLOCKER) == ("no", "EADDRINUSE")  # U15: compatible bound last
    assert answer(n, BLOCKER, COMPATIBLE) == ("no", "EADDRINUSE")  # U16: compatible bound first
    tail = udp_owner("::ffff:127.0.0.1", reuseaddr=True, reuseport=True)
    assert answer(n, tail, BLOCKER) == ("no", "EADDRINUSE")  # U17
    verdict = decide(n, (COMPATIBLE, BLOCKER), NS)
    assert verdict.blockers == (BLOCKER,) and verdict.reasons[0]["socket"] is BLOCKER
    # IPv4 and IPv6 owners: no order doubt any more
    v6_blocker = udp_owner("::", reuseaddr=True)
    v4_compatible = udp_owner("0.0.0.0", reuseaddr=True, reuseport=True)
    assert answer(n, v6_blocker, v4_compatible) == ("no", "EADDRINUSE")


def test_udp_hash2_path_past_ten_sockets():
    n = new(proto=UDP, reuseport=True)
    for count in (3, 13):  # U18, U19: both paths see the wildcard blocker
        assert answer(n, COMPATIBLE, BLOCKER, ns=replace(NS, udp_slot_sockets=count)) == ("no", "EADDRINUSE")
    # the hash2 path skips overlapping sockets outside the two slots: 127.0.0.6 vs connected dual-stack [::1]
    quirk = new("127.0.0.6", proto=UDP)
    dual = owner("::1", State.ESTABLISHED, UDP, v6only=False)
    assert answer(quirk, dual, ns=replace(NS, udp_slot_sockets=13)) == ("yes", None)
    # up to 10 here, other namespaces may still push the slot past 10: the path is not known
    verdict = decide(quirk, (dual,), replace(NS, udp_slot_sockets=2))
    assert verdict.verdict is Verdict.UNCERTAIN and codes(verdict.uncertainty) == ["udp-path"]
    # a namespace with its own table: the count is all here
    own_table = replace(NS, udp_slot_sockets=2, udp_table_shared=False)
    assert answer(quirk, dual, ns=own_table) == ("no", "EADDRINUSE")


# ---------------------------------------------------------------------------------------------------
# Input forms and the settled verdict

SERVICES = parse_services("ssh 22/tcp\nhttp 80/tcp www\nhttp 80/udp\ndomain 53/udp\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:21", (21, Family.IPV4, "0.0.0.0", None, None)),
        ("[::]:8080", (8080, Family.IPV6, "::", None, None)),
        ("127.0.0.1:8899", (8899, Family.IPV4, "127.0.0.1", None, None)),
        ("[fe80::1%eth0]:80", (80, Family.IPV6, "fe80::1", None, "eth0")),
        (":8080", (8080, None, None, None, None)),
        ("8080", (8080, None, None, None, None)),
        ("localhost:8080", (8080, None, None, "localhost", None)),
        (":http", (80, None, None, None, None)),
        ("0.0.0.0:ssh", (22, Family.IPV4, "0.0.0.0", None, None)),
        ("[::ffff:127.0.0.1]:0", (0, Family.IPV6, "::ffff:127.0.0.1", None, None)),
    ],
)
def test_parse_target(text, expected):
    target = parse_target(text, TCP, SERVICES)
    assert (target.port, target.family, target.address, target.hostname, target.scope) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("::1:80", "brackets"),
        ("[::1]", "missing port"),
        ("[::1:80", "missing ']'"),
        ("[1.2.3.4]:80", "not an IPv6 address"),
        ("1.2.3:80", "not an IPv4 address"),
        ("127.0.0.1:65536", "out of range"),
        ("127.0.0.1:-1", "out of range"),
        ("127.0.0.1:", "missing port"),
        (":nosuchservice", "unknown service"),
        (":domain", "unknown service"),  # a UDP-only name asked for TCP
        ("[fe80::1%]:80", "empty scope"),
        ("bad host!:80", "not an IPv4 address or host name"),
    ],
)
def test_parse_target_rejects(text, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_target(text, TCP, SERVICES)


def test_settled_verdict():
    no = decide(new(), (owner(),), NS)
    uncertain = decide(new(reuseport=True), (owner(state=State.BOUND, reuseaddr=True),), NS)
    yes = decide(new(), (), NS)
    kernel_no = ProbeResult("EADDRINUSE", Stage.BIND)
    kernel_yes = ProbeResult(None, None)
    assert _settle(no, kernel_no, None) == (Verdict.NO, "EADDRINUSE", Stage.BIND, True)
    assert _settle(uncertain, kernel_yes, None) == (Verdict.YES, None, None, None)
    assert _settle(uncertain, kernel_no, None) == (Verdict.NO, "EADDRINUSE", Stage.BIND, None)
    assert _settle(yes, kernel_no, None)[3] is False  # a disagreement is flagged
    assert _settle(no, ProbeResult(None, None, "no root"), None) == (Verdict.NO, "EADDRINUSE", Stage.BIND, None)


def test_owner_changed_after_bind_leaves_the_fast_path_open():
    """fchown after bind(): the fast path remembers the owner of bind time, so a uid mismatch is not a decisive NO."""
    n = new(reuseport=True)
    settled = owner(reuseport=True, uid=40001)
    assert answer(n, settled) == ("no", "EADDRINUSE")
    changed = decide(n, (replace(settled, owner_changed=True),), NS)
    assert changed.verdict is Verdict.UNCERTAIN and changed.rule == "R-FASTPATH"
    assert codes(changed.uncertainty) == ["owner-changed", "fastpath"]
    unseen = decide(n, (replace(settled, owner_changed=None),), NS)
    assert unseen.verdict is Verdict.UNCERTAIN
    (hidden,) = [d for d in unseen.uncertainty if d.code is UncertaintyCode.HIDDEN_FLAGS]
    assert "owner at bind()" in hidden["options"]
    # same owner now: the slow path lets it through whatever the cache holds
    assert answer(new(reuseport=True, uid=40001), replace(settled, owner_changed=True)) == ("yes", None)
    # without SO_REUSEPORT on the new socket there is no fast path at all
    assert answer(new(), replace(settled, owner_changed=True)) == ("no", "EADDRINUSE")


def bucket(address: str = "127.0.0.1", uid: int = 0, fastreuseport: int = 2, v6only: bool = False, **fields):
    """A bind bucket whose cache a SO_REUSEPORT socket of ``uid`` on ``address`` set (FASTREUSEPORT_STRICT)."""
    six = ":" in address
    return BindBucket(
        fastreuse=fields.get("fastreuse", 0),
        fastreuseport=fastreuseport,
        fastuid=uid,
        family=Family.IPV6 if six else Family.IPV4,
        address6=address if six else "::",
        address4=("0.0.0.0" if address == "::" else "127.0.0.6") if six else address,
        v6only=v6only,
    )


def kview(n: NewSocket):
    from portscope.rules.bind import _precheck

    failure, nk, _ = _precheck(n, NS)
    assert failure is None
    return nk


@pytest.mark.parametrize(
    ("cache", "n", "matches"),
    [
        (bucket(), new(reuseport=True), True),
        (bucket(), new(), False),  # the new socket needs SO_REUSEPORT
        (bucket(uid=40001), new(reuseport=True), False),  # and the cached owner
        (bucket(uid=40001), new(reuseport=True, uid=40001), True),
        (bucket(fastreuseport=0), new(reuseport=True), False),  # a socket without SO_REUSEPORT reset it
        (bucket(fastreuseport=-1), new(reuseport=True), False),  # a port connect() picked
        (bucket("0.0.0.0"), new(reuseport=True), True),  # STRICT: the cached wildcard covers 127.0.0.1
        (bucket(), new("0.0.0.0", reuseport=True), False),  # but a specific address does not cover the wildcard
        (bucket(), new("127.0.0.2", reuseport=True), False),
        (bucket(fastreuseport=1), new("127.0.0.2", reuseport=True), True),  # ANY: no address check
        (bucket(), new("::ffff:127.0.0.1", reuseport=True), True),  # the same IPv4 address, mapped
        (bucket("::"), new(reuseport=True), True),  # a dual-stack [::] cache covers IPv4
        (bucket("::", v6only=True), new(reuseport=True), False),  # a v6-only one does not
        (bucket("::", v6only=True), new("::1", reuseport=True), True),
        (bucket("::1", v6only=True), new("::1", reuseport=True), True),
        (bucket("::1", v6only=True), new("::", reuseport=True), False),
    ],
)
def test_fastpath_matches_as_sk_reuseport_match(cache, n, matches):
    assert fastpath_matches(cache, n, kview(n)) is matches


def test_a_known_bind_bucket_settles_the_fast_path():
    """With the port's bucket read from the kernel, R-FASTPATH is a fact: accepted, or decisively not."""
    n = new(reuseport=True)
    changed = owner(reuseport=True, uid=40001, owner_changed=True)  # fchowned from root after listen()
    assert answer(n, changed)[0] == "uncertain"
    lets_through = decide(n, (changed,), replace(NS, tcp_bucket=bucket(uid=0)))
    assert (lets_through.verdict, lets_through.rule) == (Verdict.YES, "R-FASTPATH")
    assert codes(lets_through.reasons) == ["fastpath-accepts"]
    assert lets_through.reasons[0].params["uid"] == 0
    assert "skips the conflict check" in bind_words.reason_text(lets_through.reasons[0])
    refused = decide(n, (changed,), replace(NS, tcp_bucket=bucket(uid=40001)))
    assert (refused.verdict, refused.errno, refused.uncertainty) == (Verdict.NO, "EADDRINUSE", ())
    # F02: a bound SO_REUSEADDR owner, and a cache another socket left behind (or none)
    f02 = (owner(state=State.BOUND, reuseaddr=True),)
    assert decide(n, f02, replace(NS, tcp_bucket=bucket())).verdict is Verdict.YES
    assert answer(n, *f02, ns=replace(NS, tcp_bucket=bucket(fastreuseport=0))) == ("no", "EADDRINUSE")
    # fastreuse > 0 with SO_REUSEADDR would skip bind()'s check but not listen()'s: not used
    both = new(reuseaddr=True, reuseport=True)
    bound = owner(state=State.BOUND, reuseport=True, uid=40001, owner_changed=True)
    assert answer(both, bound, ns=replace(NS, tcp_bucket=bucket())) == ("yes", None)
    assert answer(both, bound, ns=replace(NS, tcp_bucket=bucket(fastreuse=1)))[0] == "uncertain"


def test_port_zero_ports_the_kernel_hands_out():
    ns = replace(NS, local_port_range=(40000, 40002), reserved_ports=frozenset({40001}))
    assert autobind_ports(new(port=0), ns) == [40000]  # an even count: 40002 is never tried; 40001 reserved
    assert autobind_ports(new(port=0, proto=UDP), ns) == [40000, 40002]
    wide = replace(NS, local_port_range=(40000, 40010))  # 11 ports; SO_REUSEADDR scans two halves
    assert autobind_ports(new(port=0, reuseaddr=True), wide) == [*range(40000, 40004), *range(40004, 40010)]
    assert autobind_ports(new(port=0), replace(NS, local_port_range=(5, 4))) == []


def test_port_zero_exhausted_and_address_aware():
    ns = replace(NS, local_port_range=(40000, 40000))
    taken = Owner(TCP, Family.IPV6, "::", 40000, State.LISTEN, uid=0, reuseaddr=True, v6only=False)
    verdict = decide(new("127.0.0.1", port=0, reuseaddr=True), (taken,), ns)
    assert (verdict.verdict, verdict.errno, verdict.rule) == (Verdict.NO, "EADDRINUSE", "R-AUTOBIND")
    assert verdict.reasons[0].code is ReasonCode.PORTS_EXHAUSTED
    other = replace(taken, family=Family.IPV4, address="127.0.0.1")
    assert answer(new("127.0.0.2", port=0), other, ns=ns) == ("yes", None)
    # UDP: a socket it can share with leaves the port usable
    shared = replace(other, proto=UDP, state=State.UNCONN)
    assert answer(new("127.0.0.1", UDP, port=0, reuseaddr=True), shared, ns=ns) == ("yes", None)
    assert answer(new("127.0.0.1", UDP, port=0), shared, ns=ns) == ("no", "EADDRINUSE")
    # a flag that cannot be read decides: uncertain
    hidden = replace(shared, reuseaddr=None)
    assert answer(new("127.0.0.1", UDP, port=0, reuseaddr=True), hidden, ns=ns) == ("uncertain", "EADDRINUSE")
