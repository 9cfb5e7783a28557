"""Seeded random can-bind mixes over the hard cases, judged by the kernel: 0 wrong decisive verdicts.

Each seed builds a few dozen scenarios in one fresh namespace (one port each): listeners, bound-only
sockets, SO_REUSEPORT groups, accepted children, TIME-WAIT and orphaned FIN-WAIT-2 sockets of either
side (with and without their listener), ghost binds (bound and closed: only the port's SO_REUSEPORT
cache remains), UDP sockets, owners made by another user or fchown()ed after bind(), in namespaces with
net.ipv6.bindv6only 0 and 1. The model's decisive verdicts must equal a real bind()+listen() of the
same socket; "uncertain" must stay rare and only for the reasons judge() allows. Seeds are fixed, so a
failure names a reproducible mix; PORTSCOPE_BIND_SEEDS=N runs N more (the measurement in the issue).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from bind_scenarios import (
    AUTOBOUND,
    OTHER_UID,
    NewSpec,
    OwnerSpec,
    Scenario,
    build,
    judge,
    kernel_bind_table_readable,
    kernel_oracle,
    open_group,
    request_for,
)
from netns_util import new_netns, require_live
from portscope.commands.can_bind import check_binds

pytestmark = pytest.mark.live

TCP_KINDS = (
    "listen",
    "listen",
    "bound",
    "client",
    "child",
    "child+listener",
    "tw-server",
    "tw-server+listener",
    "orphan-server",
    "tw-client",
    "orphan-client",
    "ghost",
)
UDP_KINDS = ("udp", "udp", "udp-connected")
TCP_ADDRESSES = ("0.0.0.0", "127.0.0.1", "::", "::1", "::ffff:127.0.0.1")
UDP_ADDRESSES = ("0.0.0.0", "127.0.0.1", "::", "::1")
SCENARIOS_PER_SEED = 36
SEEDS = [(1, "0"), (2, "1"), (3, "0")]  # (seed, net.ipv6.bindv6only)
EXTRA_SEEDS = int(os.environ.get("PORTSCOPE_BIND_SEEDS", "0"))


# Sockets without a process, and ports connect() picked: the class "uncertain" came from before can-bind read
# the kernel's bind table (orphans, never-accepted children, CLOSE-WAIT, autobound ports)
ORPHAN_KINDS = (
    "orphan-server",
    "orphan-client",
    "tw-server",
    "tw-client",
    "unaccepted",
    "close-wait",
    "autobound",
    "autobound-tw",
    "tw-server+listener",
    "listen",
    "bound",
)
ORPHAN_SEEDS = [(11, "0"), (12, "1")]


def owner(rng: random.Random, udp: bool, address: str, reuseport_group: bool, kinds=TCP_KINDS) -> OwnerSpec:
    kind = rng.choice(UDP_KINDS if udp else kinds)
    if kind in ("client", "tw-client", "orphan-client", "autobound", "autobound-tw") and address in ("0.0.0.0", "::"):
        address = "127.0.0.1" if address == "0.0.0.0" else "::1"
    uid = rng.choice((None, None, None, OTHER_UID))
    chown_after = rng.choice((None,) * 6 + (OTHER_UID if uid is None else 0,)) if kind in ("listen", "bound") else None
    return OwnerSpec(
        kind,
        address,
        reuseaddr=rng.random() < 0.5,
        reuseport=reuseport_group or rng.random() < 0.4,
        v6only=rng.choice((None, True, False)) if ":" in address else None,
        uid=uid,
        chown_after=chown_after,
    )


def scenario(rng: random.Random, index: int) -> Scenario:
    udp = rng.random() < 0.3
    addresses = UDP_ADDRESSES if udp else TCP_ADDRESSES
    group = not udp and rng.random() < 0.25  # a SO_REUSEPORT group: listeners of one user on one address
    if group:
        address = rng.choice(addresses)
        owners = tuple(OwnerSpec("listen", address, reuseport=True) for _ in range(rng.randint(2, 3)))
    else:
        owners = tuple(owner(rng, udp, rng.choice(addresses), False) for _ in range(rng.randint(1, 3)))
    address = rng.choice((*addresses, "127.0.0.2"))
    new = NewSpec(
        address,
        udp=udp,
        reuseaddr=rng.random() < 0.5,
        reuseport=rng.random() < 0.5,
        v6only=rng.choice((None, None, True, False)) if ":" in address else None,
        uid=rng.choice((None, None, OTHER_UID)),
        listen=rng.random() < 0.8,
    )
    return Scenario(f"seed-mix {index}", owners, new)


def orphan_scenario(rng: random.Random, index: int) -> Scenario:
    """TCP owners without a process (or with a port connect() picked) and a random new socket."""
    owners = [owner(rng, False, rng.choice(TCP_ADDRESSES), False, ORPHAN_KINDS) for _ in range(rng.randint(1, 2))]
    owners.sort(key=lambda spec: spec.kind not in AUTOBOUND)  # connect() picks only a port no bind() holds
    address = rng.choice((*TCP_ADDRESSES, "127.0.0.2"))
    new = NewSpec(
        address,
        reuseaddr=rng.random() < 0.5,
        reuseport=rng.random() < 0.5,
        v6only=rng.choice((None, None, True, False)) if ":" in address else None,
        uid=rng.choice((None, None, OTHER_UID)),
        listen=rng.random() < 0.8,
    )
    return Scenario(f"orphan-mix {index}", tuple(owners), new)


def run_seed(seed: int, bindv6only: str, make=scenario) -> tuple[list[str], int, int]:
    """(wrong verdicts, uncertain, judged) of one seeded mix."""
    rng = random.Random(seed)
    scenarios = [make(rng, i) for i in range(SCENARIOS_PER_SEED)]
    wrong: list[str] = []
    uncertain = judged = 0
    with new_netns("psbindr") as ns:
        ns.run("sysctl", "-qw", f"net.ipv6.bindv6only={bindv6only}")
        group = open_group(ns)
        try:
            built = [(s, build(group, s)) for s in scenarios]
            built = [(s, port) for s, port in built if port is not None]  # owners that cannot coexist
            time.sleep(0.05)  # closing connections reach TIME-WAIT / FIN-WAIT-2
            reports = check_binds([request_for(s, port, ns, probe=False) for s, port in built])
            for (one, port), report in zip(built, reports, strict=True):
                kernel = kernel_oracle(group, one.new, port, as_user=True)
                problem = judge(report, kernel)
                if problem:
                    wrong.append(f"seed {seed} {one} (port {port}): {problem}")
                judged += 1
                uncertain += report.model.verdict.value == "uncertain"
        finally:
            group.close()
    return wrong, uncertain, judged


def uncertain_bound(judged: int, without_table: int) -> int:
    """At most 5% uncertain (one per seed) where the kernel's bind table is readable (measured over seeds
    100-199 of each mix: 0 of 2,134 hard, 0 of 2,399 orphans); without it, the flags of TIME-WAIT and
    orphaned sockets and the fast path stay hidden (6% of the hard mix, 21% of the orphan mix): one in
    ``without_table``."""
    if kernel_bind_table_readable():
        return max(1, judged // 20)
    return max(3, judged // without_table)


@pytest.mark.parametrize(("seed", "bindv6only"), SEEDS + [(100 + i, str(i % 2)) for i in range(EXTRA_SEEDS)])
def test_seeded_hard_mix(seed, bindv6only):
    require_live()
    wrong, uncertain, judged = run_seed(seed, bindv6only)
    assert not wrong, "\n".join(wrong)
    assert judged >= SCENARIOS_PER_SEED // 2
    assert uncertain <= uncertain_bound(judged, 8), f"{uncertain} of {judged} uncertain"


@pytest.mark.parametrize(("seed", "bindv6only"), ORPHAN_SEEDS + [(200 + i, str(i % 2)) for i in range(EXTRA_SEEDS)])
def test_seeded_orphan_mix(seed, bindv6only):
    require_live()
    wrong, uncertain, judged = run_seed(seed, bindv6only, orphan_scenario)
    assert not wrong, "\n".join(wrong)
    assert judged >= SCENARIOS_PER_SEED // 2
    assert uncertain <= uncertain_bound(judged, 3), f"{uncertain} of {judged} uncertain"
