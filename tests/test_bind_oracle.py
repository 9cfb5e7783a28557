"""Kernel-oracle suite for can-bind: the model's decisive verdicts must equal a real bind()+listen().

Every scenario builds its owners as real sockets in a throw-away namespace, runs the whole pipeline
(facts read in that namespace, the model, a --probe trial bind) and then asks the kernel with a real
bind() (+ listen() for TCP) of the same socket as the same user. A decisive model verdict must match
the kernel exactly (errno and stage); "uncertain" is allowed only for the reasons the spec names
(R-FASTPATH, the UDP lookup path, options of sockets without a process) and must stay rare; the
settled (--probe) verdict must always match.
"""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bind_scenarios import (
    OTHER_UID,
    NewSpec,
    OwnerSpec,
    Scenario,
    build,
    build_owner,
    judge,
    kernel_bind_table_readable,
    kernel_oracle,
    open_group,
    request_for,
)
from netns_util import new_netns, require_live
from portscope.commands.can_bind import check_binds

pytestmark = pytest.mark.live

Own, N, S = OwnerSpec, NewSpec, Scenario


def run_group(
    scenarios: list[Scenario],
    *,
    links: bool = False,
    sysctls: dict[str, str] | None = None,
    setup: list[list[str]] | None = None,
    max_uncertain: float = 0.15,
) -> list[str]:
    """Build, evaluate, judge; returns the uncertain scenario names. Fails on any disagreement."""
    require_live()
    failures: list[str] = []
    uncertain: list[str] = []
    with new_netns("psbind") as ns:
        for name, value in (sysctls or {}).items():
            ns.run("sysctl", "-qw", f"{name}={value}")
        group = open_group(ns, links=links)
        try:
            for argv in setup or []:
                ns.run(*argv)
            built = [(s, build(group, s)) for s in scenarios]
            missing = [s.name for s, port in built if port is None]
            assert not missing, f"owners could not be created: {missing}"
            time.sleep(0.05)  # let closing connections reach TIME-WAIT
            reports = check_binds([request_for(s, port, ns) for s, port in built])
            for (scenario, port), report in zip(built, reports, strict=True):
                kernel = kernel_oracle(group, scenario.new, port, as_user=True)
                problem = judge(report, kernel)
                if problem:
                    failures.append(f"{scenario.name} (port {port}): {problem}")
                if report.model.verdict.value == "uncertain":
                    uncertain.append(scenario.name)
        finally:
            group.close()
    assert not failures, "\n".join(failures)
    assert len(uncertain) <= max_uncertain * len(scenarios), f"too many uncertain: {uncertain}"
    return uncertain


FLAGS = {"-": (False, False), "RA": (True, False), "RP": (False, True), "RA+RP": (True, True)}


def pair_scenarios() -> list[Scenario]:
    """R-TCP-PAIR: owner kinds x SO_REUSEADDR/SO_REUSEPORT on either side, same address."""
    scenarios = []
    for kind, (oname, (ora, orp)), (nname, (nra, nrp)) in itertools.product(
        ("listen", "bound", "client", "child", "child+listener"), FLAGS.items(), FLAGS.items()
    ):
        owner = Own(kind, reuseaddr=ora, reuseport=orp)
        scenarios.append(S(f"{kind}[{oname}] new[{nname}]", (owner,), N(reuseaddr=nra, reuseport=nrp)))
    # TIME-WAIT of either side: their flags cannot be read, so only the flag-free new socket is decisive
    for kind, (oname, (ora, orp)) in itertools.product(("tw-server", "tw-client"), FLAGS.items()):
        scenarios.append(S(f"{kind}[{oname}] new[-]", (Own(kind, reuseaddr=ora, reuseport=orp),), N()))
    scenarios.append(S("tw-server[RA] new[RA]", (Own("tw-server", reuseaddr=True),), N(reuseaddr=True)))
    # a TIME-WAIT whose listener still exists takes the listener's options: decisive
    for oname, (ora, orp) in (("RP", (False, True)), ("RA+RP", (True, True))):
        spec = Own("tw-server+listener", reuseaddr=ora, reuseport=orp)
        scenarios.append(S(f"tw+listener[{oname}] new[RP] settled", (spec,), N(reuseport=True)))
    scenarios.append(
        S("wildcard bound RA + specific RA", (Own("bound", "0.0.0.0", reuseaddr=True),), N(reuseaddr=True))
    )
    scenarios.append(
        S("wildcard listen RA + specific RA", (Own("listen", "0.0.0.0", reuseaddr=True),), N(reuseaddr=True))
    )
    scenarios.append(
        S("two bound RA, new RA", (Own("bound", reuseaddr=True), Own("bound", reuseaddr=True)), N(reuseaddr=True))
    )
    return scenarios


def test_tcp_pair_rule():
    uncertain = run_group(pair_scenarios(), max_uncertain=0.2)
    # only the SO_REUSEPORT fast path and TIME-WAIT options may leave it open
    assert all("RP]" in name or "tw" in name for name in uncertain), uncertain
    assert not [name for name in uncertain if name.endswith("settled")], uncertain


ADDRESSES = {
    "0.0.0.0": ("0.0.0.0", None),
    "127.0.0.1": ("127.0.0.1", None),
    "[::]dual": ("::", False),
    "[::]v6only": ("::", True),
    "[::1]": ("::1", None),
    "[::ffff:127.0.0.1]": ("::ffff:127.0.0.1", None),
    "[::ffff:0.0.0.0]": ("::ffff:0.0.0.0", None),
}
NEW_ADDRESSES = {**ADDRESSES, "127.0.0.2": ("127.0.0.2", None)}


def overlap_scenarios() -> list[Scenario]:
    """R-OVERLAP / R-OVERLAP-DUAL: every address class against every other, TCP listeners."""
    scenarios = [
        S(f"{oname} vs {nname}", (Own("listen", oaddr, v6only=oonly),), N(naddr, v6only=nonly))
        for (oname, (oaddr, oonly)), (nname, (naddr, nonly)) in itertools.product(
            ADDRESSES.items(), NEW_ADDRESSES.items()
        )
    ]
    # the dual-stack child quirk (V15/V18): an IPv6 child of a [::] listener collides with 0.0.0.0
    scenarios.append(S("dual child [::1] vs 0.0.0.0", (Own("child", "::", v6only=False, peer="::1"),), N("0.0.0.0")))
    scenarios.append(S("v6only child [::1] vs 0.0.0.0", (Own("child", "::", v6only=True, peer="::1"),), N("0.0.0.0")))
    scenarios.append(S("mapped child vs 127.0.0.1", (Own("child", "::", peer="127.0.0.1"),), N("127.0.0.1")))
    scenarios.append(S("dual child [::1] vs 127.0.0.6", (Own("child", "::", peer="::1"),), N("127.0.0.6")))
    return scenarios


def test_tcp_overlap_matrix():
    assert not run_group(overlap_scenarios(), max_uncertain=0.0)


UDP_ADDRESSES = {k: v for k, v in ADDRESSES.items() if k not in ("[::ffff:0.0.0.0]",)}


def udp_scenarios() -> list[Scenario]:
    """R-UDP: overlap, SO_REUSEADDR on both, SO_REUSEPORT same uid, and no first match.

    On 6.18.44 a compatible SO_REUSEPORT owner does not let the bind past a blocking one, in either chain
    order (the spec's R-UDP-FIRSTMATCH does not hold): U15 and U16 are the same sockets bound in the two
    orders and both fail.
    """
    scenarios = [
        S(f"udp {oname} vs {nname}", (Own("udp", oaddr, v6only=oonly),), N(naddr, udp=True, v6only=nonly))
        for (oname, (oaddr, oonly)), (nname, (naddr, nonly)) in itertools.product(
            UDP_ADDRESSES.items(), UDP_ADDRESSES.items()
        )
    ]
    for (oname, (ora, orp)), (nname, (nra, nrp)) in itertools.product(FLAGS.items(), FLAGS.items()):
        scenarios.append(
            S(
                f"udp[{oname}] new[{nname}]",
                (Own("udp", reuseaddr=ora, reuseport=orp),),
                N(udp=True, reuseaddr=nra, reuseport=nrp),
            )
        )
    blocker = Own("udp", "0.0.0.0", reuseaddr=True)
    compatible = Own("udp", "127.0.0.1", reuseaddr=True, reuseport=True)
    scenarios += [
        S("U15 compatible bound last still blocked", (blocker, compatible), N(udp=True, reuseport=True)),
        S("U16 compatible bound first still blocked", (compatible, blocker), N(udp=True, reuseport=True)),
        S("compatible alone shares", (compatible,), N(udp=True, reuseport=True)),
        S(
            "U17 IPv6 reuseport compatible still blocked",
            (blocker, Own("udp", "::ffff:127.0.0.1", reuseaddr=True, reuseport=True)),
            N(udp=True, reuseport=True),
        ),
        S("connected udp", (Own("udp-connected", "127.0.0.1"),), N(udp=True)),
        S("connected udp RA", (Own("udp-connected", "127.0.0.1", reuseaddr=True),), N(udp=True, reuseaddr=True)),
        S(
            "V22 127.0.0.6 vs dual connected [::1]",
            (Own("udp-connected", "::", v6only=False),),
            N("127.0.0.6", udp=True),
        ),
        S("127.0.0.5 vs dual connected [::1]", (Own("udp-connected", "::", v6only=False),), N("127.0.0.5", udp=True)),
        S("udp and tcp never conflict", (Own("listen", "0.0.0.0"),), N("0.0.0.0", udp=True)),
        S("tcp and udp never conflict", (Own("udp", "0.0.0.0"),), N("0.0.0.0")),
        S("uid rule U09", (Own("udp", reuseport=True, uid=OTHER_UID),), N(udp=True, reuseport=True)),
        S("uid rule U08", (Own("udp", reuseport=True, uid=OTHER_UID),), N(udp=True, reuseport=True, uid=OTHER_UID)),
        S("udp free port", (), N(udp=True)),
    ]
    # an IPv4 and an IPv6 owner: their order in the chain was once thought to decide, it does not
    scenarios.append(
        S(
            "head interleaving blocked",
            (Own("udp", "::", reuseaddr=True, v6only=False), Own("udp", "0.0.0.0", reuseaddr=True, reuseport=True)),
            N("127.0.0.1", udp=True, reuseport=True),
        )
    )
    return scenarios


def test_udp_rules():
    uncertain = run_group(udp_scenarios(), max_uncertain=0.05)
    # which lookup path the kernel takes turns on a slot count that includes other namespaces (udp-path)
    assert set(uncertain) <= {"V22 127.0.0.6 vs dual connected [::1]"}, uncertain


def hash2_scenarios() -> list[Scenario]:
    """Past 10 sockets in the primary slot a specific bind scans two hash2 slots instead (U18/U19).

    Both paths see every blocker that overlaps through the exact address or a wildcard, in any order; the
    hash2 path misses only sockets outside those slots: an IPv4 127.0.0.6 bind does not meet connected
    dual-stack IPv6 sockets there (V22 with a crowd), while without the crowd it does.
    """
    crowd = tuple(Own("udp", f"127.0.1.{i}", port_offset=16384) for i in range(1, 12))  # same slot, other port
    blocker = Own("udp", "0.0.0.0", reuseaddr=True)
    compatible = Own("udp", "127.0.0.1", reuseaddr=True, reuseport=True)
    exact_blocker = Own("udp", "127.0.0.1", reuseaddr=True)
    dual_connected = Own("udp-connected", "::", v6only=False)
    scenarios = [
        S("U18 without crowd: wildcard blocks", (blocker, compatible), N(udp=True, reuseport=True)),
        S("U19 with crowd: wildcard blocks", (*crowd, blocker, compatible), N(udp=True, reuseport=True)),
        S("crowd, compatible then blocker", (*crowd, compatible, blocker), N(udp=True, reuseport=True)),
        S("crowd, exact blocker then compatible", (*crowd, exact_blocker, compatible), N(udp=True, reuseport=True)),
        S("crowd, exact compatible", (*crowd, compatible), N(udp=True, reuseport=True)),
        S("crowd, wildcard blocks", (*crowd, Own("udp", "0.0.0.0")), N(udp=True)),
        S("crowd, dual-stack [::] blocks IPv4", (*crowd, Own("udp", "::", v6only=False)), N(udp=True)),
        S("crowd, v6only [::] does not", (*crowd, Own("udp", "::", v6only=True)), N(udp=True)),
        S("crowd, wildcard bind scans the primary slot", (*crowd, Own("udp", "127.0.0.1")), N("0.0.0.0", udp=True)),
        S("V22 without crowd: 127.0.0.6 meets dual [::1]", (dual_connected,), N("127.0.0.6", udp=True)),
        S("V22 with crowd: hash2 misses dual [::1]", (*crowd, dual_connected), N("127.0.0.6", udp=True)),
    ]
    return scenarios


def test_udp_hash2_path():
    uncertain = run_group(hash2_scenarios(), max_uncertain=0.1)
    assert set(uncertain) <= {"V22 without crowd: 127.0.0.6 meets dual [::1]"}, uncertain


DEVICE_SETUP = [
    ["ip", "addr", "add", "fe80::1/64", "dev", "v0", "nodad"],
    ["ip", "addr", "add", "2001:db8::5/64", "dev", "v1"],  # link down: stays tentative
    ["ip", "addr", "add", "2001:db8::6/64", "dev", "v1", "nodad"],
    ["ip", "addr", "add", "10.1.1.1/24", "dev", "v0"],  # on a link that is down: the local route stays
    ["ip", "route", "add", "local", "10.2.0.0/16", "dev", "lo", "table", "local"],  # AnyIP
]


def device_scenarios() -> list[Scenario]:
    """R-DEV and scope ids: veth devices inside the namespace."""
    scenarios = []
    for udp in (False, True):
        kind = "udp" if udp else "listen"
        for odev, ndev in itertools.product((None, "v0"), (None, "v0", "v1")):
            scenarios.append(
                S(
                    f"{kind} dev {odev} vs {ndev}",
                    (Own(kind, "0.0.0.0", device=odev),),
                    N("0.0.0.0", udp=udp, device=ndev),
                )
            )
    scenarios += [
        S("link-local with scope", (), N("fe80::1", scope="v0")),
        S("link-local without scope", (), N("fe80::1")),
        S("link-local on the wrong device", (), N("fe80::1", scope="v1")),
        S("link-local with device", (), N("fe80::1", device="v0")),
        S("::1 with a device (A13)", (), N("::1", device="v0")),
        S("tentative address", (), N("2001:db8::5")),
        S("nodad address", (), N("2001:db8::6")),
        S("global address, other device (X04)", (), N("2001:db8::6", device="v0")),
        S("tentative with freebind", (), N("2001:db8::5", freebind=True)),
        S("address on a down link", (), N("10.1.1.1")),
        S("neighbour on a down link", (), N("10.1.1.2")),
        S("AnyIP prefix", (), N("10.2.3.4")),
        S("multicast udp with scope", (), N("ff02::1", udp=True, scope="v0")),
        S("multicast udp without scope", (), N("ff02::1", udp=True)),
        S("multicast tcp", (), N("ff02::1", scope="v0")),
        S("global multicast udp", (), N("ff0e::1", udp=True)),
    ]
    return scenarios


def test_devices():
    run_group(device_scenarios(), links=True, setup=DEVICE_SETUP, max_uncertain=0.0)


def uid_scenarios() -> list[Scenario]:
    """The SO_REUSEPORT owner rule: sk_uid of the user that made the socket, root gets no exemption; an owner
    changed by fchown() after bind() leaves the fast path on the old owner (uncertain unless probed)."""
    root_then_other = Own("listen", reuseport=True, chown_after=OTHER_UID)
    other_then_root = Own("listen", reuseport=True, uid=OTHER_UID, chown_after=0)
    return [
        S("fchown after listen: root binds beside (fast path)", (root_then_other,), N(reuseport=True)),
        S("fchown after listen: the new owner binds", (root_then_other,), N(reuseport=True, uid=OTHER_UID)),
        S("fchown to root after listen: the old owner binds", (other_then_root,), N(reuseport=True, uid=OTHER_UID)),
        S("fchown to root after listen: root binds", (other_then_root,), N(reuseport=True)),
        S(
            "bound RP fchowned after bind",
            (Own("bound", reuseport=True, chown_after=OTHER_UID),),
            N(reuseport=True, listen=False),
        ),
        S(
            "fchown before bind, new RP root",
            (Own("listen", reuseport=True, uid=OTHER_UID, uid_via_fchown=True),),
            N(reuseport=True),
        ),
        S("listen RP other uid, new RP root (R02)", (Own("listen", reuseport=True, uid=OTHER_UID),), N(reuseport=True)),
        S(
            "listen RP other uid, new RP same uid",
            (Own("listen", reuseport=True, uid=OTHER_UID),),
            N(reuseport=True, uid=OTHER_UID),
        ),
        S("bound RP other uid (R12)", (Own("bound", reuseport=True, uid=OTHER_UID),), N(reuseport=True)),
        S("bound RA other uid (R13)", (Own("bound", reuseaddr=True, uid=OTHER_UID),), N(reuseaddr=True)),
        S("listen RP root, new RP other uid", (Own("listen", reuseport=True),), N(reuseport=True, uid=OTHER_UID)),
        S("wildcard RP other uid", (Own("listen", "0.0.0.0", reuseport=True, uid=OTHER_UID),), N(reuseport=True)),
    ]


def test_uids():
    uncertain = run_group(uid_scenarios(), max_uncertain=1.0)
    # An owner changed since socket() leaves the fast path on the old owner. The kernel's bind bucket shows
    # that owner (sources/tcpbind.py), so these are decisive where it can be read, and uncertain elsewhere.
    settled = {
        "fchown after listen: root binds beside (fast path)",
        "fchown to root after listen: the old owner binds",
        "fchown before bind, new RP root",
        "bound RP fchowned after bind",
    }
    if kernel_bind_table_readable():
        assert not settled & set(uncertain), uncertain
    else:
        assert settled <= set(uncertain), uncertain
    assert "fchown after listen: the new owner binds" not in uncertain  # same owner now: the slow path agrees


def address_scenarios() -> list[Scenario]:
    """R-PRIV, R-ADDR4/6 and their order (R-ORDER4/6), as an unprivileged user and as root."""
    user = OTHER_UID
    return [
        S("P01 port 80 unprivileged", (), N(uid=user), port=80),
        S("P09 port 81 unprivileged v6", (), N("::1", uid=user), port=81),
        S("P09 port 82 unprivileged udp", (), N(udp=True, uid=user), port=82),
        S("P08 busy and privileged", (Own("listen"),), N(uid=user), port=83),
        S("P06 nonlocal before EACCES (v4)", (), N("192.0.2.1", uid=user), port=84),
        S("P07 EACCES before the address (v6)", (), N("2001:db8::1", uid=user), port=85),
        S("root on port 86", (), N(), port=86),
        S("port 0 tcp", (), N(uid=user), port=0),
        S("port 0 udp", (), N(udp=True, uid=user), port=0),
        S("A01 nonlocal v4", (), N("192.0.2.1")),
        S("A02 freebind v4", (), N("192.0.2.1", freebind=True)),
        S("A05 any of 127/8", (), N("127.1.2.3")),
        S("A06 multicast tcp v4", (), N("224.0.0.1")),
        S("broadcast of lo", (), N("127.255.255.255")),
        S("zeronet", (), N("0.1.2.3")),
        S("A10 absent v6", (), N("2001:db8::1")),
        S("A11 freebind v6", (), N("2001:db8::1", freebind=True)),
        S("A22 mapped on v6only", (), N("::ffff:127.0.0.1", v6only=True)),
        S("A23 mapped nonlocal", (), N("::ffff:192.0.2.1")),
        S("mapped wildcard", (), N("::ffff:0.0.0.0")),
    ]


def test_privileges_and_addresses():
    run_group(address_scenarios(), max_uncertain=0.0)


def sysctl_scenarios() -> list[Scenario]:
    """Sysctls are read in the target namespace: unprivileged port start, nonlocal bind, bindv6only."""
    user = OTHER_UID
    return [
        S("P03 lowered start, 600 allowed", (), N(uid=user), port=600),
        S("P03 lowered start, 400 denied", (), N("::1", uid=user), port=400),
        S("A03 ip_nonlocal_bind", (), N("192.0.2.1")),
        S("A12 ipv6 ip_nonlocal_bind", (), N("2001:db8::1")),
        S("V20 bindv6only=1: [::] default is v6only", (Own("listen", "0.0.0.0"),), N("::")),
        S("V20 explicit --no-v6only", (Own("listen", "0.0.0.0"),), N("::", v6only=False)),
        S("V20 [::] owner default v6only", (Own("listen", "::"),), N("0.0.0.0")),
    ]


SYSCTLS = {
    "net.ipv4.ip_unprivileged_port_start": "500",
    "net.ipv4.ip_nonlocal_bind": "1",
    "net.ipv6.ip_nonlocal_bind": "1",
    "net.ipv6.bindv6only": "1",
}


def test_namespace_sysctls():
    run_group(sysctl_scenarios(), sysctls=SYSCTLS, max_uncertain=0.0)


BUILDERS = (
    pair_scenarios,
    overlap_scenarios,
    udp_scenarios,
    hash2_scenarios,
    device_scenarios,
    uid_scenarios,
    address_scenarios,
    sysctl_scenarios,
)


def test_curated_matrix_size():
    """The curated matrix is at least 150 kernel-judged scenarios, with unique names."""
    names = [s.name for build_list in BUILDERS for s in build_list()]
    assert len(names) >= 150
    assert len(set(names)) == len(names)


# ---------------------------------------------------------------------------------------------------
# Random combinations

KINDS_TCP = ("listen", "bound", "client", "child", "child+listener", "tw-server", "tw-client")
TCP_ADDRS = ("0.0.0.0", "127.0.0.1", "127.0.0.2", "::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0")
UDP_ADDRS = ("0.0.0.0", "127.0.0.1", "::", "::1", "::ffff:127.0.0.1")


@st.composite
def scenario_strategy(draw, index: int = 0) -> Scenario:
    udp = draw(st.booleans())
    addrs = UDP_ADDRS if udp else TCP_ADDRS
    owners = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("udp", "udp", "udp-connected") if udp else KINDS_TCP))
        address = draw(st.sampled_from(addrs))
        if kind in ("client", "tw-client", "udp-connected") and address in ("::ffff:0.0.0.0",):
            address = "::ffff:127.0.0.1"
        owners.append(
            Own(
                kind,
                address,
                reuseaddr=draw(st.booleans()),
                reuseport=draw(st.booleans()),
                v6only=draw(st.sampled_from((None, True, False))) if ":" in address else None,
                device=draw(st.sampled_from((None, None, "v0", "v1"))),
                uid=draw(st.sampled_from((None, None, OTHER_UID))),
            )
        )
    address = draw(st.sampled_from((*addrs, "127.0.0.6")))
    new = N(
        address,
        udp=udp,
        reuseaddr=draw(st.booleans()),
        reuseport=draw(st.booleans()),
        v6only=draw(st.sampled_from((None, True, False))) if ":" in address else None,
        device=draw(st.sampled_from((None, None, "v0", "v1"))),
        uid=draw(st.sampled_from((None, None, OTHER_UID))),
        listen=draw(st.sampled_from((True, True, False))),
    )
    return S(f"random {index}", tuple(owners), new)


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(scenario_strategy(), min_size=12, max_size=16))
def test_random_combinations(scenarios):
    """Property: on random owners and options no decisive verdict disagrees with the kernel."""
    require_live()
    failures: list[str] = []
    judged = uncertain = 0
    with new_netns("psbindh") as ns:
        group = open_group(ns, links=True)
        try:
            built = [(s, build(group, s)) for s in scenarios]
            built = [(s, port) for s, port in built if port is not None]  # owners that cannot coexist: dropped
            time.sleep(0.05)
            reports = check_binds([request_for(s, port, ns) for s, port in built])
            for (scenario, port), report in zip(built, reports, strict=True):
                kernel = kernel_oracle(group, scenario.new, port, as_user=True)
                problem = judge(report, kernel)
                if problem:
                    failures.append(f"{scenario} (port {port}): {problem}")
                judged += 1
                uncertain += report.model.verdict.value == "uncertain"
        finally:
            group.close()
    assert not failures, "\n".join(failures)
    # measured over 40 seeded draws of this mix: 5.7% uncertain without the kernel's bind table, 0.4% with it
    bound = max(1, judged // 20) if kernel_bind_table_readable() else max(2, judged // 3)
    assert uncertain <= bound, f"{uncertain} of {judged} uncertain"


# ---------------------------------------------------------------------------------------------------
# Port 0: the range of net.ipv4.ip_local_port_range, judged by the kernel


def port_zero_cases():
    """(name, range, reserved, owners as (udp, address, port, reuseaddr), new socket); ports from 0 (+ a base)."""
    return [
        ("exhausted: [::]:P taken", (0, 0), "", [(False, "::", 0, False)], N("::", v6only=False)),
        ("exhausted udp", (0, 0), "", [(True, "::", 0, False)], N("::", udp=True, v6only=False)),
        ("another address is free", (0, 0), "", [(False, "127.0.0.1", 0, False)], N("127.0.0.2")),
        ("reserved: the other port", (0, 1), "1", [(False, "0.0.0.0", 0, False)], N("0.0.0.0")),
        (
            "tcp skips the last port of an odd span",
            (0, 2),
            "",
            [(False, "0.0.0.0", 0, False), (False, "0.0.0.0", 1, False)],
            N(),
        ),
        (
            "udp takes the last port",
            (0, 2),
            "",
            [(True, "0.0.0.0", 0, False), (True, "0.0.0.0", 1, False)],
            N(udp=True),
        ),
        ("udp shares through SO_REUSEADDR", (0, 0), "", [(True, "0.0.0.0", 0, True)], N(udp=True, reuseaddr=True)),
        ("tcp never shares a picked port", (0, 0), "", [(False, "0.0.0.0", 0, True)], N(reuseaddr=True, listen=False)),
        ("free range", (0, 100), "", [(False, "0.0.0.0", 0, False)], N()),
    ]


def test_port_zero_range():
    """Exhausted, reserved, address-aware and odd-span ranges: the model's verdict for port 0 is the kernel's."""
    require_live()
    failures = []
    with new_netns("psport0") as ns:
        group = open_group(ns, base_port=20000)
        try:
            for index, (name, (low, high), reserved, owners, new) in enumerate(port_zero_cases()):
                base = 40000 + 200 * index  # each case its own ports: sockets of earlier cases stay
                ns.run("sysctl", "-qw", f"net.ipv4.ip_local_port_range={base + low} {base + high}")
                reserved_ports = ",".join(str(base + int(p)) for p in reserved.split(",") if p)
                ns.run("sysctl", "-qw", f"net.ipv4.ip_local_reserved_ports={reserved_ports}")
                for udp, address, port, reuseaddr in owners:
                    spec = Own("udp" if udp else "bound", address, reuseaddr=reuseaddr)
                    assert build_owner(group, spec, base + port), name
                (report,) = check_binds([request_for(S(name, (), new, port=0), 0, ns)])
                kernel = kernel_oracle(group, new, 0, as_user=True)
                problem = judge(report, kernel)
                if problem or report.model.verdict.value == "uncertain":
                    failures.append(f"{name}: {problem or 'uncertain'}")
        finally:
            group.close()
    assert not failures, "\n".join(failures)
