"""ss filter expressions against the real ss: random expressions over a random socket mix select what
``ss -tuan EXPRESSION`` selects, from netlink (kernel bytecode plus Python) and from /proc (Python alone).

Seeded, so a failure names its expression and replays. ``dev`` makes ss decide everything in user space,
whose address rules differ from the kernel's in corners (an IPv4 prefix of zeros meets IPv6 addresses); the
expressions with ``dev`` keep to addresses where both agree. /proc shows no bound device and no bind lock,
so the /proc side is compared on expressions without ``dev`` and ``autobound``.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections import Counter

import pytest

from netns_util import new_netns, parse_ss
from portscope.commands.ls import LsOptions, list_sockets
from portscope.model.records import State
from test_random_mix import _add_unreachable_link, _key, _our_key, build_random_mix

pytestmark = pytest.mark.live

STATE_WORDS = [
    "established",
    "syn-sent",
    "syn-recv",
    "fin-wait-1",
    "fin-wait-2",
    "time-wait",
    "close-wait",
    "last-ack",
    "listening",
    "closing",
    "close",
    "unconnected",
    "connected",
    "synchronized",
    "bucket",
    "big",
    "all",
]
OPERATORS = ["=", "==", "eq", "!=", "ne", ">", "gt", "<", "lt", ">=", "ge", "<=", "le", ""]
SAFE_HOSTS = ["127.0.0.1", "127.0.0.0/8", "127.0.0.2", "127.1.0.0/16", "[::1]"]
HOSTS = [*SAFE_HOSTS, "0.0.0.0", "0.0.0.0/0", "[::]", "[::/0]", "[::ffff:127.0.0.1]", "[::ffff:127.0.0.0/104]"]


class Generator:
    def __init__(self, rng: random.Random, ports: list[int]) -> None:
        self.rng = rng
        self.ports = ports

    def port(self) -> int:
        return self.rng.choice(self.ports) + self.rng.choice([0, 0, 0, -1, 1])

    def leaf(self, with_dev: bool) -> list[str]:
        rng = self.rng
        kind = rng.choice(
            ["sport", "dport", "sport", "dport", "src", "dst", "fwmark", "dev" if with_dev else "autobound"]
        )
        if kind in ("sport", "dport"):
            op = rng.choice(OPERATORS)
            value = f"{rng.choice([':', ''])}{self.port()}"
            return [kind, *([op] if op else []), value]
        if kind in ("src", "dst"):
            host = rng.choice(SAFE_HOSTS if with_dev else HOSTS)
            if rng.random() < 0.3:
                host = f"{host}:{self.port()}" if not host.endswith("/0") else host
            elif rng.random() < 0.1:
                host = f"*:{self.port()}"
            return [kind, host]
        if kind == "dev":
            return ["dev", *rng.choice([[], ["="], ["!="]]), rng.choice(["lo", "v0", "1"])]
        if kind == "fwmark":
            value = self.rng.choice(["0x10", "0x10/0xf0", "7", "0x1f0/0x1f0", "0/0x10", "16"])
            return ["fwmark", *self.rng.choice([[], ["="], ["!="]]), value]
        return ["autobound"]

    def expression(self, depth: int, with_dev: bool) -> list[str]:
        rng = self.rng
        if depth == 0 or rng.random() < 0.3:
            words = self.leaf(with_dev)
        else:
            left = self.expression(depth - 1, with_dev)
            right = self.expression(depth - 1, with_dev)
            joiner = rng.choice([["and"], ["or"], ["&&"], ["||"], ["&"], ["|"], []])
            words = [*left, *joiner, *right]
            if rng.random() < 0.6:
                words = ["(", *words, ")"]
        if rng.random() < 0.2:
            words = [rng.choice(["not", "!"]), *(words if words[0] == "(" else ["(", *words, ")"])]
        return words

    def with_states(self, words: list[str]) -> list[str]:
        prefix: list[str] = []
        for _ in range(self.rng.choice([0, 0, 1, 1, 2])):
            prefix += [self.rng.choice(["state", "state", "exclude"]), self.rng.choice(STATE_WORDS)]
        return prefix + words


def _ss(ns, words: list[str]) -> Counter:
    result = subprocess.run(
        ["ip", "netns", "exec", ns.name, "ss", "-tuanHe", *words], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"ss refused {words}: {result.stderr}"
    lines = result.stdout.splitlines()
    # ss drops the State column when the filter leaves a single state: put a stand-in there
    stateless = any(line.split()[1].isdigit() for line in lines if line.strip())
    if stateless:
        lines = [" ".join([line.split()[0], "?", *line.split()[1:]]) for line in lines if line.strip()]
    return Counter(
        _key(r.proto, r.state, r.local_address, r.local_port, r.remote_address, r.remote_port, r.uid, r.inode)
        for r in parse_ss("\n".join(lines), states={"?": "?"} if stateless else None)
    )


def _agreed(ns, words: list[str], backend: str) -> Counter:
    """ss's answer, once portscope gave the same; a second try when not, as a socket may have changed
    state in between (TIME-WAIT ends, a connection closes) on a loaded machine."""
    for _ in range(2):
        expected = _ss(ns, words)
        ours = _ours(ns, words, backend, any(key[1] == "?" for key in expected))
        if ours == expected:
            return expected
    assert ours == expected, f"{backend}: {' '.join(words)}"
    return expected


def _ours(ns, words: list[str], backend: str, single_state: bool = False) -> Counter:
    snap = list_sockets(LsOptions(all_states=True, expression=tuple(words), backend=backend, netns=ns.name))
    keys = [_our_key(s) for s in snap.sockets if s.state is not State.BOUND]  # ss 6.1 cannot list them
    if single_state:
        assert len({key[1] for key in keys}) <= 1
        keys = [(key[0], "?", *key[2:]) for key in keys]
    return Counter(keys)


@pytest.fixture(scope="module")
def mix():
    with new_netns("psfilt") as ns:
        _add_unreachable_link(ns)
        build_random_mix(ns, random.Random(20), count=50)
        marks = random.Random(21)
        for sock in ns.sockets:  # SO_MARK on some: fwmark terms
            if marks.random() < 0.4:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, marks.choice([0x10, 0x11, 0x1F0, 7]))
        time.sleep(0.1)
        yield ns


def test_random_expressions_select_what_ss_selects(mix):
    ports = sorted({key[3] for key in _ss(mix, [])} | {key[5] for key in _ss(mix, []) if key[5]})
    generator = Generator(random.Random(7), ports)
    kernel_and_python = 0
    for round_ in range(70):
        with_dev = round_ % 5 == 0
        words = generator.with_states(generator.expression(3, with_dev))
        expected = _agreed(mix, words, "netlink")
        if not {"dev", "autobound", "fwmark"} & set(words):
            _agreed(mix, words, "proc")
        kernel_and_python += bool(expected)
    assert kernel_and_python > 20  # the expressions select something, not only empty sets


def test_terms_the_kernel_cannot_test_mixed_with_those_it_can(mix):
    """Holder and state terms under "or" and "not": the kernel gets a looser filter, Python decides
    (autobound then comes from a second dump filtered on it alone)."""
    everything = _ss(mix, [])
    me = os.getpid()
    for words, expected in [
        (["autobound", "or", "user", "4242"], _ss(mix, ["autobound"]) | _only(everything, uid=4242)),
        (["(", "autobound", "or", "pid", str(me), ")"], _ss(mix, ["autobound"]) | _held(everything)),
        (["not", "pid", str(me)], _only(everything, inode=0)),
        (
            ["(", "sport", ">", ":20100", "or", "state", "listening", ")"],
            _ss(mix, ["sport", ">", ":20100"]) | _only(everything, state="listen"),
        ),
        (["autobound", "and", "not", "pid", str(me)], _only(_ss(mix, ["autobound"]), inode=0)),
        (
            ["fwmark", "0x10/0xf0", "or", "user", "4242"],
            _ss(mix, ["fwmark", "0x10/0xf0"]) | _only(everything, uid=4242),
        ),
        (["process", _comm(me), "and", "dport", ">", ":0"], _held(_ss(mix, ["dport", ">", ":0"]))),
        (["process", "!=", _comm(me), "or", "netns", "host"], _only(everything, inode=0)),
        (["netns", mix.name, "and", "sport", "<", ":20050"], _ss(mix, ["sport", "<", ":20050"])),
    ]:
        assert _ours(mix, words, "netlink") == expected, " ".join(words)


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as handle:
        return handle.read().strip()


def _held(keys: Counter) -> Counter:
    return Counter({k: n for k, n in keys.items() if k[7]})


def _only(keys: Counter, *, uid: int | None = None, inode: int | None = None, state: str | None = None) -> Counter:
    # _key: (proto, state, local, lport, remote, rport, uid, inode)
    return Counter(
        {
            k: n
            for k, n in keys.items()
            if (uid is None or k[6] == uid) and (inode is None or k[7] == inode) and (state is None or k[1] == state)
        }
    )


def test_dev_is_filtered_by_the_kernel_with_two_interfaces():
    """DEV_COND in the bytecode (ss leaves dev to user space): the kernel's own dump, no Python after it,
    returns the sockets bound to the device, by name or index, and ls agrees with ss."""
    import socket as socket_module

    from portscope.model.filter import parse_filter
    from portscope.model.records import Family, Proto
    from portscope.sources import netlink
    from portscope.sources.netns import NetnsTarget, entered

    with new_netns("psdev") as ns:
        _add_unreachable_link(ns)
        bound = {}
        for device, port in ((b"v0", 21001), (b"lo", 21002), (None, 21003), (b"v0", 21004)):
            sock = ns.socket(socket_module.AF_INET, socket_module.SOCK_STREAM)
            if device:
                sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_BINDTODEVICE, device)
            sock.bind(("0.0.0.0", port))
            sock.listen(1)
            bound[port] = device
        with entered(NetnsTarget(ns.path, None)):
            v0_index = socket_module.if_nametoindex("v0")
            for words in (["dev", "v0"], ["dev", str(v0_index)], ["dev", "=", "v0", "and", "sport", ">", "21001"]):
                flt = parse_filter(words, None)
                code = netlink.filter_bytecode(None, None, None, flt.kernel_tree())
                assert netlink.BC_DEV_COND in _op_codes(code)
                request = netlink.DumpRequest(Proto.TCP, Family.IPV4, 1 << 10, code)
                with netlink.TableDumps([request]) as dumps:
                    ports = {s.local_port for s in dumps.next(netlink.Decoder(Proto.TCP, Family.IPV4, None))}
                wanted = {21001, 21004} if len(words) == 2 else {21004}
                assert ports == wanted, words
        for words in (["dev", "v0"], ["dev", "lo"], ["dev", "!=", "v0"], ["not", "dev", "lo", "sport", "<", ":21004"]):
            assert _ours(ns, words, "netlink") == _ss(ns, words), words


def _op_codes(code: bytes) -> list[int]:
    """The op codes of a program, following each op's "yes" step (the next op)."""
    from portscope.sources import netlink

    codes, offset = [], 0
    while offset < len(code):
        op, yes, _no = netlink.BC_OP.unpack_from(code, offset)
        codes.append(op)
        offset += yes
    return codes


def test_dev_is_resolved_in_each_namespace():
    """--netns all: a device name means each namespace's own device of that name (its index differs)."""
    import socket as socket_module

    from portscope.model.records import State as RecordState

    with new_netns("psdev1") as first, new_netns("psdev2") as second:
        # a pair first in one of them, so that v0 gets another index there
        subprocess.run(["ip", "-n", first.name, "link", "add", "x0", "type", "veth", "peer", "name", "x1"], check=True)
        indexes = {}
        for ns in (first, second):
            _add_unreachable_link(ns)
            indexes[ns.name] = int(ns.run("cat", "/sys/class/net/v0/ifindex").stdout)
            for device in (b"v0", b"lo"):
                sock = ns.socket(socket_module.AF_INET, socket_module.SOCK_STREAM)
                sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_BINDTODEVICE, device)
                sock.bind(("0.0.0.0", 21901 if device == b"v0" else 21902))
                sock.listen(1)
        assert indexes[first.name] != indexes[second.name]
        snap = list_sockets(
            LsOptions(netns="all", expression=("dev", "v0", "and", "sport", ">=", ":21901"), join_processes=False)
        )
    found = [(s.local_port, s.interface) for s in snap.sockets if s.state is RecordState.LISTEN]
    assert sorted(found) == [(21901, "v0"), (21901, "v0")]
