"""Filter expressions without the system: the grammar, errors that point at the word, and the bytecode
compiler checked against a model of the kernel's interpreter and against the Python evaluator."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bytecode_model
from portscope.cli import main
from portscope.errors import UsageError
from portscope.model.filter import (
    And,
    Autobound,
    Const,
    Device,
    FilterSyntaxError,
    HolderPredicate,
    HostCond,
    Mark,
    Not,
    Or,
    PortCompare,
    StateIn,
    matcher,
    parse_filter,
    split_words,
)
from portscope.model.records import Family, Proto, Socket, State
from portscope.sources import netlink


class FakeLookups:
    def service_port(self, name: str) -> int:
        if name == "http":
            return 80
        raise UsageError(f"unknown service {name!r}")

    def user_id(self, text: str) -> int:
        if text.isdigit():
            return int(text)
        if text == "www-data":
            return 33
        raise UsageError(f"unknown user {text!r}")

    def host_addresses(self, name: str) -> list[str]:
        return ["127.0.0.1", "::1"] if name == "localhost" else []


def parse(text: str):
    return parse_filter([text], FakeLookups())


def tree(text: str):
    return parse(text).tree


def test_words_split_at_spaces_and_parentheses():
    assert split_words(["(dport = :443", "or sport = :443)"]) == [
        "(",
        "dport",
        "=",
        ":443",
        "or",
        "sport",
        "=",
        ":443",
        ")",
    ]


def test_operators_as_ss_reads_them():
    local80 = PortCompare(False, "eq", 80)
    for spelling in ("sport = :80", "sport == 80", "sport eq :http", "sport :80", "sport 80"):
        assert tree(spelling) == local80
    assert tree("sport != :80") == Not(local80) == tree("sport ne 80") == tree("sport neq 80")
    assert tree("dport > :1024") == Not(PortCompare(True, "le", 1024)) == tree("dport gt 1024")
    assert tree("dport < :1024") == Not(PortCompare(True, "ge", 1024)) == tree("dport lt 1024")
    assert tree("dport >= 10") == PortCompare(True, "ge", 10) == tree("dport geq 10") == tree("dport ge 10")
    assert tree("dport <= 10") == PortCompare(True, "le", 10) == tree("dport leq 10") == tree("dport le 10")
    assert tree("sport = *") == Const(True)


def test_left_to_right_without_precedence_and_juxtaposition():
    a, b, c = (PortCompare(False, "eq", p) for p in (1, 2, 3))
    assert tree("sport 1 or sport 2 and sport 3") == And(Or(a, b), c)  # as ss: no precedence
    assert tree("sport 1 || sport 2 && sport 3") == And(Or(a, b), c)
    assert tree("sport 1 | sport 2 & sport 3") == And(Or(a, b), c)
    assert tree("sport 1 or ( sport 2 and sport 3 )") == Or(a, And(b, c))
    assert tree("sport 1 sport 2") == And(a, b)
    assert tree("not sport 1 sport 2") == And(Not(a), b)  # "not" takes one term
    assert tree("! ( sport 1 sport 2 )") == Not(And(a, b))


def test_hosts_as_ss_splits_them():
    (v4,) = tree("src 10.0.0.0/8").prefixes
    assert (v4.family, v4.length) == (Family.IPV4, 8)
    assert tree("src 127.0.0.1:80").port == 80
    assert tree("dst [::1]:443").port == 443 and tree("dst [::1]:443").remote
    assert tree("dst fe80::1:80").port == 80  # outside brackets the last ":N" is the port, as ss does
    assert tree("dst ::1").port is None and tree("dst ::1").prefixes[0].address == 1  # ss cannot split it
    assert tree("src [fe80::/10]:22").prefixes[0].length == 10
    assert tree("src *:22") == HostCond(False, (), 22)
    assert tree("src *") == Const(True)
    assert len(tree("dst localhost").prefixes) == 2
    assert tree("src != 10.0.0.1") == Not(tree("src 10.0.0.1"))


def test_state_words_and_runs():
    assert tree("state established") == StateIn(frozenset({State.ESTABLISHED}))
    assert tree("state listening") == StateIn(frozenset({State.LISTEN}))  # ss: LISTEN alone
    assert tree("state unconnected") == StateIn(frozenset({State.UNCONN, State.CLOSE}))
    assert tree("state established state close-wait") == StateIn(frozenset({State.ESTABLISHED, State.CLOSE_WAIT}))
    assert tree("exclude listening state close") == StateIn(frozenset(State) - {State.LISTEN})
    assert tree("state connected").states == frozenset(
        {
            State.ESTABLISHED,
            State.SYN_SENT,
            State.SYN_RECV,
            State.FIN_WAIT_1,
            State.FIN_WAIT_2,
            State.TIME_WAIT,
            State.CLOSE_WAIT,
            State.LAST_ACK,
            State.CLOSING,
        }
    )
    # the leading selection covers the whole expression (ss takes it before the filter)
    a, b = PortCompare(False, "eq", 1), PortCompare(False, "eq", 2)
    assert tree("state time-wait sport 1 or sport 2") == And(StateIn(frozenset({State.TIME_WAIT})), Or(a, b))
    assert parse("state time-wait sport 1").possible_states() == frozenset({State.TIME_WAIT})
    assert parse("sport 1 or state time-wait").possible_states() == frozenset(State)
    assert parse("( sport 1 or state time-wait ) state listening").possible_states() == {State.LISTEN}


def test_portscope_terms():
    assert tree("pid 42") == HolderPredicate("pid", 42)
    assert tree("user www-data") == HolderPredicate("user", 33)
    assert tree("process != nginx") == Not(HolderPredicate("process", "nginx"))
    assert tree("unit = sshd") == HolderPredicate("unit", "sshd")
    assert tree("netns 4026531840") == HolderPredicate("netns", 4026531840)
    assert tree("dev eth0") == Device("eth0") and tree("dev != 2") == Not(Device("2"))
    assert tree("autobound") == Autobound()
    assert tree("fwmark 0x10/0xff") == Mark(0x10, 0xFF) and tree("fwmark != 020") == Not(Mark(16, 0xFFFFFFFF))
    assert parse("pid 1 or sport 80").needs_join
    assert not parse("netns blue").needs_join and parse("netns blue").needs_places


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sport = :80 andd dport = :90", "unexpected 'andd' at position 4 of the expression"),
        ("sport = :80 and", "the expression ends where a term was expected"),
        ("( sport = :80", "'(' is never closed at position 1"),
        ("sport = :80 )", "unmatched ')' at position 4"),
        ("and sport 80", "unexpected 'and' (a term expected) at position 1"),
        ("sport = :99999", "port '99999' is out of range (0-65535) at position 3"),
        ("sport = :nosuch", "'nosuch' is not a port (unknown service 'nosuch') at position 3"),
        ("dport > *", "a port number is needed, not '*' at position 3"),
        ("state estabished", "unknown state 'estabished' (did you mean 'established'?) at position 2"),
        ("state new-syn-recv", "unknown state 'new-syn-recv' (use syn-recv) at position 2"),
        ("src nosuch.invalid", "not an address, prefix or known host name: 'nosuch.invalid' at position 2"),
        ("src [::1", "no ']' in '[::1' at position 2"),
        ("src 10.0.0.0/99", "not an address or prefix: '10.0.0.0/99' at position 2"),
        ("pid abc", "not a pid: 'abc' at position 2"),
        ("user nobody-here", "unknown user 'nobody-here' at position 2"),
        ("autobound = 1", "unexpected '=' at position 2"),
        ("dev > eth0", "'dev' takes no '>' at position 2"),
        ("fwmark 0x1g", "not a mark: '0x1g' (MARK or MARK/MASK, 0 to 0xffffffff) at position 2"),
    ],
)
def test_errors_name_the_word_and_its_position(text, message):
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (["sport", "=", ":80", "andd", "dport", "=", ":90"], "unexpected 'andd' at position 4 of the expression"),
        (["( dport = :443 or", "sport = :443"], "'(' is never closed at position 1 of the expression"),
        (["state", "xyzzy"], "unknown state 'xyzzy' at position 2 of the expression"),
    ],
)
def test_cli_error_is_one_line_with_status_2(words, line, capsys):
    with pytest.raises(SystemExit) as ended:
        main(["ls", *words])
    assert ended.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"portscope ls: error: {line} (see --help)"]


def test_unknown_device_is_bad_input(capsys):
    with pytest.raises(SystemExit) as ended:
        main(["ls", "-n", "--no-processes", "dev", "nosuch0"])
    assert ended.value.code == 2
    assert "unknown device 'nosuch0'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The compiler: bytecode run by a model of the kernel agrees with the Python evaluator's kernel reading

ADDRESSES_V4 = ["127.0.0.1", "10.1.2.3", "0.0.0.0", "192.168.0.9"]
ADDRESSES_V6 = ["::1", "::", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "fe80::1", "2001:db8::5"]
PORTS = [0, 22, 80, 443, 1024, 8080, 40000, 65535]


def _leaves():
    port = st.sampled_from(PORTS)
    host = st.sampled_from(
        [
            "127.0.0.1",
            "127.0.0.0/8",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "0.0.0.0",
            "[::1]",
            "[::/0]",
            "[::ffff:127.0.0.0/104]",
            "[fe80::/10]",
            "*",
            "2001:db8::/32",
        ]
    )
    return st.one_of(
        st.tuples(st.sampled_from(["sport", "dport"]), st.sampled_from(["=", "!=", ">", "<", ">=", "<="]), port).map(
            lambda t: f"{t[0]} {t[1]} :{t[2]}"
        ),
        st.tuples(st.sampled_from(["src", "dst"]), host, st.none() | port).map(
            lambda t: f"{t[0]} {t[1]}" + (f":{t[2]}" if t[2] is not None and not t[1].endswith("/0") else "")
        ),
        st.sampled_from(
            ["dev 1", "dev 2", "dev != 1", "autobound", "fwmark 0x10", "fwmark = 0x10/0xf0", "fwmark != 3"]
        ),
    )


expressions = st.recursive(
    _leaves(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or", "", "&&", "||"]), inner).map(
            lambda t: f"( {t[0]} {t[1]} {t[2]} )"
        ),
        inner.map(lambda e: f"not ( {e} )"),
    ),
    max_leaves=8,
)


class KernelFacts:
    def __init__(self, autobound: bool, mark: int) -> None:
        self.value = autobound
        self.mark = mark

    def kernel_says(self, leaf, sock):
        if isinstance(leaf, Mark):
            return self.mark & leaf.mask == leaf.mark
        return self.value


@settings(max_examples=300, deadline=None)
@given(
    text=expressions,
    v6=st.booleans(),
    local=st.integers(0, 5),
    remote=st.integers(0, 6),
    sport=st.sampled_from(PORTS[1:]),
    dport=st.sampled_from(PORTS),
    ifindex=st.sampled_from([0, 1, 2]),
    autobound=st.booleans(),
    mark=st.sampled_from([0, 3, 0x10, 0x13, 0x1F0]),
)
def test_bytecode_agrees_with_the_python_reading(text, v6, local, remote, sport, dport, ifindex, autobound, mark):
    flt = parse(text)
    pool = ADDRESSES_V6 if v6 else ADDRESSES_V4
    local_address = pool[local % len(pool)]
    remote_address = None if remote >= len(pool) or dport == 0 else pool[remote]
    sock = Socket(
        Proto.TCP,
        Family.IPV6 if v6 else Family.IPV4,
        State.ESTABLISHED,
        local_address,
        sport,
        remote_address,
        dport if remote_address else None,
        0,
        0,
        0,
        1,
        ifindex,
        {0: None, 1: "lo", 2: "v0"}[ifindex],
        None,
        None,
        None,
        None,
    )
    expected = matcher(flt.tree, KernelFacts(autobound, mark))(sock)
    try:
        code = netlink.filter_bytecode(None, None, None, flt.kernel_tree(), {"lo": 1, "v0": 2, "1": 1, "2": 2}.get)
    except netlink.NothingMatches:
        assert expected is False
        return
    if code is None:
        assert expected is True
        return
    bytecode_model.audit(code)
    entry = bytecode_model.entry_of(
        socket.AF_INET6 if v6 else socket.AF_INET,
        local_address,
        remote_address,
        sport,
        dport if remote_address else 0,
        ifindex=ifindex,
        autobound=autobound,
        mark=mark,
    )
    assert bytecode_model.run(code, entry) == expected, (text, code.hex())


# ---------------------------------------------------------------------------------------------------
# portscope's own terms, decided after the join (three-valued before it)


class JoinedFacts:
    def __init__(self, holders):
        self.joined = holders

    def holders(self, sock):
        return self.joined

    def kernel_says(self, leaf, sock):
        return False

    def ephemeral(self, sock):
        return False

    def unit(self, pid):
        return {812: "nginx.service", 900: "session-3.scope"}.get(pid)

    def container(self, sock, holders):
        return ("web", "4f2a" + "0" * 60) if any(h.process.pid == 900 for h in holders) else None

    def netns_name(self, inode):
        return {4026531840: "host", 4026532000: "blue"}.get(inode)


def _holder(pid: int, name: str, uid: int, cmdline: tuple[str, ...] = ()):
    from portscope.model.records import Holder, Process

    return Holder(Process(pid, 1, name, uid, None, cmdline or (name,), None), (3,))


def _listener(uid: int = 0, netns: int = 4026531840) -> Socket:
    return Socket(
        Proto.TCP,
        Family.IPV4,
        State.LISTEN,
        "0.0.0.0",
        80,
        None,
        None,
        0,
        128,
        uid,
        7,
        0,
        None,
        None,
        None,
        None,
        netns,
    )


@pytest.mark.parametrize(
    ("text", "holders", "expected"),
    [
        ("pid 812", [(812, "nginx", 0)], True),
        ("pid 813", [(812, "nginx", 0)], False),
        ("pid != 813", [(812, "nginx", 0)], True),
        ("user 33", [(812, "nginx", 33)], True),  # a holder's owner
        ("user 0", [(812, "nginx", 33)], True),  # the socket's owner
        ("user 34", [(812, "nginx", 33)], False),
        ("process ngin", [(812, "nginx", 0)], True),
        ("process http.server", [(5, "python3", 0, ("python3", "-m", "http.server"))], True),
        ("unit nginx", [(812, "nginx", 0)], True),
        ("unit nginx.service", [(812, "nginx", 0)], True),
        ("unit sshd", [(812, "nginx", 0)], False),
        ("container web", [(900, "app", 0)], True),
        ("container 4f2a", [(900, "app", 0)], True),
        ("container 4f", [(900, "app", 0)], False),  # an id prefix needs 4 characters
        ("container web", [(812, "nginx", 0)], False),
        ("netns host", [], True),
        ("netns blue", [], False),
        ("netns 4026531840", [], True),
        ("pid 812 or sport 80", [], True),
        ("pid 812 and sport 80", [], False),
    ],
)
def test_holder_terms(text, holders, expected):
    joined = tuple(_holder(*h) for h in holders)
    assert matcher(tree(text), JoinedFacts(joined))(_listener()) is expected


def test_holder_terms_are_undecided_before_the_join():
    before = JoinedFacts(None)
    sock = _listener()
    assert matcher(tree("pid 812"), before)(sock) is None
    assert matcher(tree("pid 812 or sport 80"), before)(sock) is True  # decided already
    assert matcher(tree("pid 812 and sport 81"), before)(sock) is False  # dropped before the join
    assert matcher(tree("not pid 812"), before)(sock) is None
    assert matcher(tree("user 0"), before)(sock) is True  # the socket's own uid decides it
