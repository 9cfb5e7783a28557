"""ss(8) filter expressions: parsed into a small tree, analysed, and evaluated on socket records.

The grammar is ss's (iproute2 misc/ssfilter.y), with its quirks kept so that the same words select the
same sockets:

- ``and``/``&``/``&&``, ``or``/``|``/``||`` and juxtaposition (read as ``and``) combine strictly from
  left to right, with no precedence between them: ``a or b and c`` is ``(a or b) and c``. ``not``/``!``
  binds to the one term that follows it. Parentheses group.
- ``sport``/``dport`` OP PORT with OP one of ``= == eq``, ``!= ne neq``, ``> gt``, ``< lt``,
  ``>= ge geq``, ``<= le leq`` (or none, meaning ``=``); PORT is ``:80``, ``80``, ``:http`` or ``*``.
- ``src``/``dst`` [=] HOST[/PREFIX][:PORT]: ``10.0.0.0/8``, ``127.0.0.1:80``, ``[::1]:80``,
  ``[fe80::/10]``, ``*:80``, a host name. Outside brackets the last ``:N`` is the port, as in ss
  (``fe80::1:80`` is fe80::1 port 80); an address ss cannot split (``::1``) is taken whole.
- ``dev`` [=|!=] NAME|INDEX, ``autobound`` (the kernel picked the local port).
- ``state``/``exclude`` STATE: a run of them side by side is one state selection, as ss reads the ones
  it takes before the expression (``state established state close-wait`` is either). Elsewhere each is a
  term like any other.

portscope adds ``pid``, ``user``, ``process``, ``unit``, ``container`` and ``netns`` (each with ``=``
or ``!=``), decided after the process join.

This module is pure: service names, user names, host names are looked up through the
:class:`Lookups` a caller passes in, devices are resolved by whoever compiles the tree for a
namespace. Evaluation takes the facts a predicate needs from a :class:`Facts` object and answers
``True``, ``False`` or ``None`` (cannot tell yet: the processes are not joined), so a caller can drop
the sockets that cannot match before the join and decide the rest after it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import field
from functools import cached_property
from typing import Protocol

from portscope.errors import FilterSyntaxError, UsageError
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.query import STATE_GROUPS
from portscope.model.records import Family, Holder, Socket, State

# ---------------------------------------------------------------------------------------------------
# The tree


@dataclass_lite(frozen=True, slots=True)
class Const:
    value: bool


@dataclass_lite(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass_lite(frozen=True, slots=True)
class And:
    left: Node
    right: Node


@dataclass_lite(frozen=True, slots=True)
class Or:
    left: Node
    right: Node


@dataclass_lite(frozen=True, slots=True)
class PortCompare:
    """``sport``/``dport`` ``=``, ``>=`` or ``<=`` a port (the other operators are negations of these)."""

    remote: bool
    op: str  # "eq" | "ge" | "le"
    port: int


@dataclass_lite(frozen=True, slots=True)
class Prefix:
    family: Family
    address: int
    length: int  # bits

    @property
    def bits(self) -> int:
        return 32 if self.family is Family.IPV4 else 128


@dataclass_lite(frozen=True, slots=True)
class HostCond:
    """``src``/``dst``: the port (None: any) and any of the prefixes (none: any address)."""

    remote: bool
    prefixes: tuple[Prefix, ...]
    port: int | None


@dataclass_lite(frozen=True, slots=True)
class Device:
    text: str  # a device name, or an index ("2"): resolved in the namespace being read


@dataclass_lite(frozen=True, slots=True)
class Autobound:
    """The local port was picked by the kernel (not bound explicitly): the kernel's SOCK_BINDPORT_LOCK test."""


@dataclass_lite(frozen=True, slots=True)
class Mark:
    """``fwmark = MARK[/MASK]``: the socket's SO_MARK under the mask (the kernel's MARK_COND; needs
    CAP_NET_ADMIN, as in ss)."""

    mark: int
    mask: int


@dataclass_lite(frozen=True, slots=True)
class StateIn:
    states: frozenset[State]


@dataclass_lite(frozen=True, slots=True)
class HolderPredicate:
    """portscope's own terms: ``pid``, ``user``, ``process``, ``unit``, ``container``, ``netns``."""

    kind: str
    value: str | int


Node = Const | Not | And | Or | PortCompare | HostCond | Device | Autobound | Mark | StateIn | HolderPredicate
KERNEL_LEAVES = (PortCompare, HostCond, Device, Autobound, Mark)  # what INET_DIAG bytecode can test
KERNEL_ONLY = (Autobound, Mark)  # what the records cannot tell: the kernel is asked (Facts.kernel_says)
HOLDER_KINDS = ("pid", "user", "process", "unit", "container", "netns")
JOINED_KINDS = frozenset({"pid", "process", "unit", "container"})  # need the process join

TRUE = Const(True)
FALSE = Const(False)


def conjoin(left: Node, right: Node) -> Node:
    if left == FALSE or right == FALSE:
        return FALSE
    if left == TRUE:
        return right
    if right == TRUE:
        return left
    return And(left, right)


def disjoin(left: Node, right: Node) -> Node:
    if left == TRUE or right == TRUE:
        return TRUE
    if left == FALSE:
        return right
    if right == FALSE:
        return left
    return Or(left, right)


def negate(node: Node) -> Node:
    if isinstance(node, Const):
        return Const(not node.value)
    return Not(node)


def leaves(node: Node) -> Iterable[Node]:
    if isinstance(node, And | Or):
        yield from leaves(node.left)
        yield from leaves(node.right)
    elif isinstance(node, Not):
        yield from leaves(node.operand)
    else:
        yield node


def conjuncts(node: Node) -> list[Node]:
    """The terms of the top-level ``and``."""
    if isinstance(node, And):
        return conjuncts(node.left) + conjuncts(node.right)
    return [node]


def relax(node: Node, keep: Callable[[Node], bool], positive: bool = True) -> Node:
    """A tree that accepts at least what ``node`` accepts, using only the leaves ``keep`` accepts: every
    other leaf becomes "true" where it counts for the match and "false" under a negation."""
    if isinstance(node, Not):
        return negate(relax(node.operand, keep, not positive))
    if isinstance(node, And):
        return conjoin(relax(node.left, keep, positive), relax(node.right, keep, positive))
    if isinstance(node, Or):
        return disjoin(relax(node.left, keep, positive), relax(node.right, keep, positive))
    if isinstance(node, Const) or keep(node):
        return node
    return Const(positive)


def substitute(node: Node, replace: Callable[[Node], Node | None]) -> Node:
    """``node`` with each leaf for which ``replace`` gives a tree replaced by it (constants folded)."""
    if isinstance(node, Not):
        return negate(substitute(node.operand, replace))
    if isinstance(node, And):
        return conjoin(substitute(node.left, replace), substitute(node.right, replace))
    if isinstance(node, Or):
        return disjoin(substitute(node.left, replace), substitute(node.right, replace))
    found = replace(node)
    return node if found is None else found


def is_kernel_leaf(node: Node) -> bool:
    return isinstance(node, KERNEL_LEAVES)


# ---------------------------------------------------------------------------------------------------
# The parsed expression and what callers ask of it


@dataclass_lite(frozen=True)
class Filter:
    """A parsed expression: its tree, and the words it was parsed from."""

    tree: Node
    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def kinds(self) -> frozenset[str]:
        return frozenset(leaf.kind for leaf in leaves(self.tree) if isinstance(leaf, HolderPredicate))

    @property
    def mentions_states(self) -> bool:
        return any(isinstance(leaf, StateIn) for leaf in leaves(self.tree))

    @property
    def needs_join(self) -> bool:
        return bool(self.kinds() & JOINED_KINDS)

    @property
    def needs_places(self) -> bool:
        return bool(self.kinds() & {"container", "netns"})

    @property
    def uses_devices(self) -> bool:
        return any(isinstance(leaf, Device) for leaf in leaves(self.tree))

    @property
    def uses_autobound(self) -> bool:
        return any(isinstance(leaf, Autobound) for leaf in leaves(self.tree))

    @property
    def two_readings(self) -> bool:
        """Do ss's own reading and the kernel's differ here (addresses, autobound)? Then ss shows what
        passes both, and so must the Python side evaluate its reading of the whole expression."""
        return any(isinstance(leaf, HostCond | Autobound) for leaf in leaves(self.tree))

    def kernel_questions(self) -> list[Node]:
        """The autobound and fwmark terms Python must know the kernel's answer for: those in the residue,
        and with two readings the marks anywhere (ss's reading tests the mark as the kernel does)."""
        asked = [leaf for leaf in leaves(self.residue()) if isinstance(leaf, KERNEL_ONLY)]
        if self.two_readings:
            asked += [leaf for leaf in leaves(self.tree) if isinstance(leaf, Mark)]
        return list(dict.fromkeys(asked))

    @property
    def uses_marks(self) -> bool:
        return any(isinstance(leaf, Mark) for leaf in leaves(self.tree))

    @cached_property
    def _possible_states(self) -> frozenset[State]:
        result = set()
        for state in State:
            decided = substitute(
                self.tree, lambda leaf, state=state: Const(state in leaf.states) if isinstance(leaf, StateIn) else None
            )
            if decided != FALSE and _may_hold(decided):
                result.add(state)
        return frozenset(result)

    def possible_states(self) -> frozenset[State]:
        """Every state in which a socket could match (the state mask asked of the kernel)."""
        return self._possible_states

    def kernel_tree(self) -> Node:
        """What INET_DIAG bytecode can test: accepts at least what the expression accepts."""
        return relax(self.tree, is_kernel_leaf)

    def residue(self) -> Node:
        """What is left to decide in Python for sockets the kernel filtered with :meth:`kernel_tree` and
        the state mask of :meth:`possible_states`: the top-level terms that are neither all kernel tests
        nor all state tests."""
        rest = TRUE
        for term in conjuncts(self.tree):
            term_leaves = list(leaves(term))
            if all(is_kernel_leaf(leaf) or isinstance(leaf, Const) for leaf in term_leaves):
                continue
            if all(isinstance(leaf, StateIn | Const) for leaf in term_leaves):
                continue
            rest = conjoin(rest, term)
        return rest


def _may_hold(node: Node) -> bool:
    """False only when ``node`` is false whatever its other leaves say (a three-valued evaluation)."""
    return _kleene(node) is not False


def _kleene(node: Node) -> bool | None:
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Not):
        value = _kleene(node.operand)
        return None if value is None else not value
    if isinstance(node, And):
        left, right = _kleene(node.left), _kleene(node.right)
        if left is False or right is False:
            return False
        return True if left and right else None
    if isinstance(node, Or):
        left, right = _kleene(node.left), _kleene(node.right)
        if left or right:
            return True
        return False if left is False and right is False else None
    return None


# ---------------------------------------------------------------------------------------------------
# Parsing


class Lookups(Protocol):
    """What parsing needs from the system (the command layer provides it)."""

    def service_port(self, name: str) -> int: ...  # raises UsageError when unknown

    def user_id(self, text: str) -> int: ...  # raises UsageError when unknown

    def host_addresses(self, name: str) -> list[str]: ...  # [] when it does not resolve


# ss's state words (scan_state in misc/ss.c): its groups as portscope defines them (the same sets), and
# its single names, where "listening" is LISTEN alone and "unconnected"/"close" is UDP's unconnected state.
_SS_STATES: dict[str, frozenset[State]] = {
    **STATE_GROUPS,
    "listening": frozenset({State.LISTEN}),
    "listen": frozenset({State.LISTEN}),
    "unconnected": frozenset({State.UNCONN, State.CLOSE}),
    "unconn": frozenset({State.UNCONN, State.CLOSE}),
    "close": frozenset({State.UNCONN, State.CLOSE}),
    "closed": frozenset({State.UNCONN, State.CLOSE}),
    "syn-rcv": frozenset({State.SYN_RECV}),
    "syn-received": frozenset({State.SYN_RECV}),
    "estab": frozenset({State.ESTABLISHED}),
    "bound": frozenset({State.BOUND}),
    "bound-inactive": frozenset({State.BOUND}),
}
for _state in State:
    _SS_STATES.setdefault(_state.value, frozenset({_state}))


# ss's SS_CONN: what it lists when a state selection comes out empty
SS_DEFAULT_STATES = frozenset(
    {
        State.ESTABLISHED,
        State.SYN_SENT,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.LAST_ACK,
        State.CLOSING,
    }
)


def state_words() -> list[str]:
    return sorted(_SS_STATES)


_AND = {"and", "&", "&&"}
_OR = {"or", "|", "||"}
_NOT = {"not", "!"}
_OPERATORS = {
    "=": "eq",
    "==": "eq",
    "eq": "eq",
    "!=": "ne",
    "ne": "ne",
    "neq": "ne",
    ">": "gt",
    "gt": "gt",
    "<": "lt",
    "lt": "lt",
    ">=": "ge",
    "ge": "ge",
    "geq": "ge",
    "<=": "le",
    "le": "le",
    "leq": "le",
}
_KEYWORDS = {"sport", "dport", "src", "dst", "dev", "fwmark", "autobound", "state", "exclude", "excl", *HOLDER_KINDS}
_C_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")  # sscanf's %i: hex, octal, decimal
_DIGITS = re.compile(r"[0-9]+")


@dataclass_lite
class _Word:
    text: str
    position: int  # 1-based, in the list of words


def split_words(arguments: Sequence[str]) -> list[str]:
    """The words of an expression: arguments split at white space, parentheses split off the words
    they touch (``'(dport = :443)'`` reads as ``( dport = :443 )``)."""
    words: list[str] = []
    for argument in arguments:
        for chunk in argument.split():
            lead = len(chunk) - len(chunk.lstrip("("))
            words.extend("(" * lead)
            chunk = chunk[lead:]
            trail = len(chunk) - len(chunk.rstrip(")"))
            if chunk[: len(chunk) - trail]:
                words.append(chunk[: len(chunk) - trail])
            words.extend(")" * trail)
    return words


def parse_filter(arguments: Sequence[str], lookups: Lookups) -> Filter | None:
    """Parse the words of an expression (None when there are none)."""
    words = split_words(arguments)
    if not words:
        return None
    parser = _Parser([_Word(text, index) for index, text in enumerate(words, start=1)], lookups)
    # as ss: state/exclude words before the expression select states for all of it
    selection = parser.leading_states()
    tree = parser.expression_list(top=True) if parser.peek() is not None else TRUE
    if selection is not None:
        # an empty selection ("exclude all") is ss's default instead: its connections, as in ss
        tree = conjoin(StateIn(selection or SS_DEFAULT_STATES), tree)
    # an exclusion is a state selection like any other once runs are merged
    tree = substitute(tree, lambda leaf: StateIn(leaf.states) if isinstance(leaf, _Exclusion) else None)
    return Filter(tree, tuple(words))


class _Parser:
    def __init__(self, words: list[_Word], lookups: Lookups) -> None:
        self.words = words
        self.at = 0
        self.lookups = lookups

    # -- words

    def peek(self) -> _Word | None:
        return self.words[self.at] if self.at < len(self.words) else None

    def take(self, what: str) -> _Word:
        word = self.peek()
        if word is None:
            raise FilterSyntaxError(f"the expression ends where {what} was expected", None)
        self.at += 1
        return word

    def error(self, word: _Word, message: str) -> FilterSyntaxError:
        return FilterSyntaxError(f"{message} at position {word.position} of the expression", word.position)

    def unexpected(self, word: _Word, expected: str | None = None) -> FilterSyntaxError:
        hint = f" ({expected} expected)" if expected else ""
        return self.error(word, f"unexpected {_quote(word.text)}{hint}")

    # -- grammar

    def leading_states(self) -> frozenset[State] | None:
        selection: frozenset[State] | None = None
        while (word := self.peek()) is not None and word.text.lower() in ("state", "exclude", "excl"):
            self.at += 1
            states = self.states()
            if word.text.lower() == "state":
                selection = (selection or frozenset()) | states
            else:
                selection = (frozenset(State) if selection is None else selection) - states
        return selection

    def expression_list(self, top: bool = False) -> Node:
        node = self.term()
        last_state_run = isinstance(node, StateIn)
        while True:
            word = self.peek()
            if word is None:
                return node
            text = word.text.lower()
            if text == ")":
                if top:
                    raise self.error(word, "unmatched ')'")
                return node
            if text in _AND or text in _OR:
                self.at += 1
                right = self.term()
                node = And(node, right) if text in _AND else Or(node, right)
                last_state_run = isinstance(right, StateIn)
                continue
            # juxtaposition: "and", except that state words side by side form one state selection
            right = self.term()
            if last_state_run and isinstance(right, StateIn):
                node = self._merge_state_run(node, right)
                continue
            node = And(node, right)
            last_state_run = isinstance(right, StateIn)

    def _merge_state_run(self, node: Node, right: StateIn) -> Node:
        # the run is the rightmost leaf of ``node`` (left-assoc); ss applies state/exclude in order
        if isinstance(node, And | Or):
            return type(node)(node.left, self._merge_state_run(node.right, right))
        assert isinstance(node, StateIn)
        if isinstance(right, _Exclusion):
            return StateIn(node.states - right.excluded)
        return StateIn(node.states | right.states)

    def term(self) -> Node:
        word = self.take("a term")
        text = word.text.lower()
        if text == "(":
            inner = self.expression_list()
            closing = self.peek()
            if closing is None:
                raise self.error(word, "'(' is never closed")
            self.at += 1
            return inner
        if text in _NOT:
            return negate(self.term())
        if text in ("sport", "dport"):
            return self.port_term(text == "dport")
        if text in ("src", "dst"):
            return self.host_term(text == "dst")
        if text == "dev":
            negated = self.optional_operator(word, allow_ne=True)
            value = self.take("a device name or index")
            node: Node = Device(value.text)
            return Not(node) if negated else node
        if text == "autobound":
            return Autobound()
        if text == "fwmark":
            negated = self.optional_operator(word, allow_ne=True)
            mark = self.mark_value(self.take("a mark"))
            return Not(mark) if negated else mark
        if text == "state":
            return StateIn(self.states())
        if text in ("exclude", "excl"):
            excluded = self.states()
            return _Exclusion(frozenset(State) - excluded, excluded)
        if text in HOLDER_KINDS:
            negated = self.optional_operator(word, allow_ne=True)
            node = self.holder_value(text)
            return Not(node) if negated else node
        if text in _AND or text in _OR or text == ")":
            raise self.unexpected(word, "a term")
        raise self.unexpected(word)

    def optional_operator(self, keyword: _Word, *, allow_ne: bool) -> bool:
        """Skip ``=``/``==``/``eq``; True for ``!=``/``ne``/``neq``."""
        word = self.peek()
        if word is None:
            raise FilterSyntaxError(f"the expression ends after {_quote(keyword.text)}", None)
        op = _OPERATORS.get(word.text.lower())
        if op is None:
            return False
        if op == "eq":
            self.at += 1
            return False
        if op == "ne" and allow_ne:
            self.at += 1
            return True
        raise self.error(word, f"{_quote(keyword.text)} takes no {_quote(word.text)}")

    def states(self) -> frozenset[State]:
        word = self.take("a state name")
        name = word.text.lower().replace("_", "-")
        if name == "new-syn-recv":  # a kernel detail ss refuses too
            raise self.error(word, "unknown state 'new-syn-recv' (use syn-recv)")
        states = _SS_STATES.get(name)
        if states is None:
            import difflib  # only on this error path

            close = difflib.get_close_matches(name, state_words(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.error(word, f"unknown state {_quote(word.text)}{hint}")
        return states

    def port_term(self, remote: bool) -> Node:
        word = self.peek()
        op = "eq"
        if word is not None and word.text.lower() in _OPERATORS:
            op = _OPERATORS[word.text.lower()]
            self.at += 1
        value = self.take("a port")
        port = self.port_value(value, comparison=op not in ("eq", "ne"))
        if port is None:  # "*": any port
            return TRUE if op == "eq" else FALSE
        if op == "eq":
            return PortCompare(remote, "eq", port)
        if op == "ne":
            return Not(PortCompare(remote, "eq", port))
        if op in ("ge", "le"):
            return PortCompare(remote, op, port)
        # as ss: "> N" is "not <= N", "< N" is "not >= N"
        return Not(PortCompare(remote, "le" if op == "gt" else "ge", port))

    def port_value(self, word: _Word, comparison: bool = False) -> int | None:
        text = word.text[1:] if word.text.startswith(":") else word.text
        if text in ("", "*"):
            if comparison or text == "":
                raise self.error(word, f"a port number is needed, not {_quote(word.text)}")
            return None
        return self.port_number(word, text)

    def port_number(self, word: _Word, text: str) -> int:
        if _DIGITS.fullmatch(text):
            if len(text) > 5 or int(text) > 65535:
                raise self.error(word, f"port {_quote(text)} is out of range (0-65535)")
            return int(text)
        try:
            return self.lookups.service_port(text)
        except UsageError as exc:
            raise self.error(word, f"{_quote(text)} is not a port ({exc})") from None

    def host_term(self, remote: bool) -> Node:
        keyword = self.words[self.at - 1]
        negated = self.optional_operator(keyword, allow_ne=True)
        word = self.take("an address")
        address, port = self.split_host(word)
        prefixes: tuple[Prefix, ...] = ()
        if address not in ("", "*"):
            prefixes = self.prefixes(word, address)
        node: Node = HostCond(remote, prefixes, port) if prefixes or port is not None else TRUE
        return negate(node) if negated else node

    def split_host(self, word: _Word) -> tuple[str, int | None]:
        """HOST[/PREFIX][:PORT] as ss splits it: ``[...]`` brackets an address, ``*`` is any address, and
        otherwise the last ``:`` after any ``/`` starts the port."""
        text = word.text
        port_text: str | None = None
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise self.error(word, f"no ']' in {_quote(text)}")
            address, rest = text[1:close], text[close + 1 :]
            if rest.startswith("/"):  # [::1]/64:80 as well as [::1/64]:80
                length, colon, port_rest = rest[1:].partition(":")
                address += "/" + length
                rest = colon + port_rest
            if rest and not rest.startswith(":"):
                raise self.error(word, f"unexpected {_quote(rest)} after ']' in {_quote(text)}")
            port_text = rest[1:] if rest else None
        elif text.startswith("*"):
            address, rest = "", text[1:]
            if rest and not rest.startswith(":"):
                raise self.error(word, f"not an address: {_quote(text)}")
            port_text = rest[1:] if rest else None
        else:
            slash = text.find("/")
            colon = text.rfind(":", slash if slash >= 0 else 0)
            address = text
            if colon >= 0:
                address, port_text = text[:colon], text[colon + 1 :]
                if _network(address) is None and _network(text) is not None:
                    address, port_text = text, None  # "::1": an address ss cannot split, taken whole
        port = None
        if port_text not in (None, "", "*"):
            port = self.port_number(word, port_text)  # type: ignore[arg-type]
        return address, port

    def prefixes(self, word: _Word, address: str) -> tuple[Prefix, ...]:
        network = _network(address)
        if network is not None:
            return (_prefix(network),)
        if "/" in address or "%" in address:
            raise self.error(word, f"not an address or prefix: {_quote(address)}")
        found = self.lookups.host_addresses(address)
        if not found:
            raise self.error(word, f"not an address, prefix or known host name: {_quote(address)}")
        return tuple(dict.fromkeys(_prefix(ipaddress.ip_network(a)) for a in found))

    def mark_value(self, word: _Word) -> Mark:
        """MARK[/MASK] as ss reads them (C integers: 0x10, 020, 16); no mask is every bit."""
        mark_text, slash, mask_text = word.text.partition("/")
        values = []
        for text in (mark_text, mask_text) if slash else (mark_text,):
            value = _c_integer(text) if _C_NUMBER.fullmatch(text) and len(text) <= 34 else None
            if value is None or value > 0xFFFFFFFF:
                raise self.error(word, f"not a mark: {_quote(word.text)} (MARK or MARK/MASK, 0 to 0xffffffff)")
            values.append(value)
        mark, mask = values[0], values[1] if slash else 0xFFFFFFFF
        return Mark(mark, mask)

    def holder_value(self, kind: str) -> HolderPredicate:
        word = self.take(f"a {kind}")
        text = word.text
        if kind == "pid":
            if not _DIGITS.fullmatch(text) or len(text) > 7 or not 1 <= int(text) <= 4194304:
                raise self.error(word, f"not a pid: {_quote(text)}")
            return HolderPredicate(kind, int(text))
        if kind == "user":
            try:
                return HolderPredicate(kind, self.lookups.user_id(text))
            except UsageError as exc:
                raise self.error(word, str(exc)) from None
        if kind == "netns" and _DIGITS.fullmatch(text):
            return HolderPredicate(kind, int(text))
        if text.lower() in _KEYWORDS or text in ("(", ")"):
            raise self.error(word, f"{_quote(text)} is not a {kind}")
        return HolderPredicate(kind, text)


@dataclass_lite(frozen=True, slots=True)
class _Exclusion(StateIn):
    """``exclude STATES`` while parsing: every state but those (kept apart to merge runs as ss does)."""

    excluded: frozenset[State] = field(default=frozenset())


def _c_integer(text: str) -> int:
    if text[:2].lower() == "0x":
        return int(text[2:], 16)
    return int(text, 8) if text.startswith("0") else int(text)


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not text or "%" in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _prefix(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Prefix:
    family = Family.IPV4 if network.version == 4 else Family.IPV6
    return Prefix(family, int(network.network_address), network.prefixlen)


# ---------------------------------------------------------------------------------------------------
# Evaluation on records


class PlaceLookup(Protocol):
    """Namespace names and containers (portscope.commands.places.Places is one)."""

    def netns_name(self, inode: int | None) -> str | None: ...

    def container(self, sock: Socket, holders: tuple[Holder, ...]): ...  # with .name and .id, or None


class Facts(Protocol):
    """What the terms beyond the socket record need, from whoever collected the sockets."""

    def holders(self, sock: Socket) -> tuple[Holder, ...] | None: ...  # None: not joined (yet)

    def kernel_says(self, leaf: Node, sock: Socket) -> bool | None: ...  # autobound (bind lock), fwmark

    def ephemeral(self, sock: Socket) -> bool | None: ...  # the local port lies in ip_local_port_range

    def unit(self, pid: int) -> str | None: ...

    def container(self, sock: Socket, holders: tuple[Holder, ...]) -> tuple[str | None, str] | None: ...  # (name, id)

    def netns_name(self, inode: int | None) -> str | None: ...


Matcher = Callable[[Socket], "bool | None"]


def matcher(node: Node, facts: Facts, *, ss_rules: bool = False) -> Matcher:
    """A function answering for one socket: True, False, or None when it depends on what ``facts``
    cannot tell yet (the holders, before the join).

    Two readings of the same tree differ in two terms. The kernel's (the default): an IPv4 prefix meets
    IPv4 sockets and v4-mapped IPv6 addresses, an IPv6 prefix only IPv6 sockets; ``autobound`` is the
    kernel's bind lock. ss's own (``ss_rules``, its run_ssfilter, which it applies to every socket the
    kernel sent too): addresses are compared bit by bit whatever their family, a prefix of length 0
    matches everything, and ``autobound`` is a local port in the ephemeral range. In both, a socket
    without a peer has remote port 0 and the zero address."""
    if isinstance(node, Const):
        value = node.value
        return lambda sock: value
    if isinstance(node, Not):
        inner = matcher(node.operand, facts, ss_rules=ss_rules)

        def negated(sock: Socket) -> bool | None:
            value = inner(sock)
            return None if value is None else not value

        return negated
    if isinstance(node, And | Or):
        return _combined(
            matcher(node.left, facts, ss_rules=ss_rules),
            matcher(node.right, facts, ss_rules=ss_rules),
            isinstance(node, And),
        )
    if isinstance(node, PortCompare):
        return _port_matcher(node)
    if isinstance(node, HostCond):
        return _host_matcher(node, ss_rules)
    if isinstance(node, Device):
        text = node.text
        index = int(text) if _DIGITS.fullmatch(text) and len(text) < 11 else None
        return lambda sock: sock.interface == text or (index is not None and sock.ifindex == index)
    if isinstance(node, Autobound):
        if ss_rules:
            return facts.ephemeral
        return lambda sock: facts.kernel_says(node, sock)
    if isinstance(node, Mark):  # both readings test the same mark: the kernel's answer
        return lambda sock: facts.kernel_says(node, sock)
    if isinstance(node, StateIn):
        states = node.states
        return lambda sock: sock.state in states
    assert isinstance(node, HolderPredicate)
    return _holder_matcher(node, facts)


def both(left: Matcher, right: Matcher) -> Matcher:
    """Both must hold (three-valued)."""
    return _combined(left, right, True)


def _combined(left: Matcher, right: Matcher, conjunction: bool) -> Matcher:
    if conjunction:

        def all_of(sock: Socket) -> bool | None:
            first = left(sock)
            if first is False:
                return False
            second = right(sock)
            if second is False:
                return False
            return None if first is None or second is None else True

        return all_of

    def any_of(sock: Socket) -> bool | None:
        first = left(sock)
        if first is True:
            return True
        second = right(sock)
        if second is True:
            return True
        return None if first is None or second is None else False

    return any_of


def _port_matcher(node: PortCompare) -> Matcher:
    port = node.port
    if node.remote:
        if node.op == "eq":
            return lambda sock: (sock.remote_port or 0) == port
        if node.op == "ge":
            return lambda sock: (sock.remote_port or 0) >= port
        return lambda sock: (sock.remote_port or 0) <= port
    if node.op == "eq":
        return lambda sock: sock.local_port == port
    if node.op == "ge":
        return lambda sock: sock.local_port >= port
    return lambda sock: sock.local_port <= port


def _host_matcher(node: HostCond, ss_rules: bool) -> Matcher:
    remote, port, prefixes = node.remote, node.port, node.prefixes
    values: dict[str, int] = {}

    def value_of(text: str) -> int:
        number = values[text] = int(ipaddress.ip_address(text))
        return number

    def kernel_match(number: int, v4: bool) -> bool:
        for prefix in prefixes:
            if prefix.family is Family.IPV4 and not v4:
                if number >> 32 != 0xFFFF:  # only v4-mapped IPv6 addresses meet an IPv4 prefix
                    continue
                candidate, bits = number & 0xFFFFFFFF, 32
            elif prefix.family is Family.IPV6 and v4:
                continue
            else:
                candidate, bits = number, prefix.bits
            shift = bits - prefix.length
            if candidate >> shift == prefix.address >> shift:
                return True
        return False

    # ss's reading: both sides as 128-bit words (an IPv4 address in the first 32 bits), compared on the
    # prefix's length; failing that, a v4-mapped address's IPv4 part against an IPv4 prefix
    wide = [(p.address << (96 if p.family is Family.IPV4 else 0), 128 - p.length, p.family) for p in prefixes]
    any_address = bool(prefixes) and prefixes[0].length == 0

    def ss_match(number: int, v4: bool) -> bool:
        data = number << 96 if v4 else number
        for address, shift, family in wide:
            if data >> shift == address >> shift:
                return True
            mapped = family is Family.IPV4 and not v4 and number >> 32 == 0xFFFF
            if mapped and ((number & 0xFFFFFFFF) << 96) >> shift == address >> shift:
                return True
        return False

    address_match = ss_match if ss_rules else kernel_match

    def matches(sock: Socket) -> bool:
        if port is not None:
            own = (sock.remote_port or 0) if remote else sock.local_port
            if own != port:
                return False
        if not prefixes or (ss_rules and any_address):
            return True
        text = sock.remote_address if remote else sock.local_address
        number = 0 if text is None else (values[text] if text in values else value_of(text))
        return address_match(number, sock.family is Family.IPV4)

    return matches


def _holder_matcher(node: HolderPredicate, facts: Facts) -> Matcher:
    kind, value = node.kind, node.value
    if kind == "netns":

        def in_netns(sock: Socket) -> bool:
            if isinstance(value, int):
                return sock.netns == value
            return facts.netns_name(sock.netns) == value

        return in_netns
    if kind == "user":

        def owned(sock: Socket) -> bool | None:
            if sock.uid == value:
                return True
            holders = facts.holders(sock)
            if holders is None:
                return None
            return any(h.process.uid == value for h in holders)

        return owned
    if kind == "pid":

        def held(sock: Socket) -> bool | None:
            holders = facts.holders(sock)
            return None if holders is None else any(h.process.pid == value for h in holders)

        return held
    if kind == "process":
        needle = str(value).lower()
        named: dict[int, bool] = {}

        def named_like(sock: Socket) -> bool | None:
            holders = facts.holders(sock)
            if holders is None:
                return None
            for holder in holders:
                process = holder.process
                hit = named.get(process.pid)
                if hit is None:
                    hit = named[process.pid] = (
                        needle in process.name.lower() or needle in " ".join(process.cmdline).lower()
                    )
                if hit:
                    return True
            return False

        return named_like
    if kind == "unit":
        wanted = str(value)

        def in_unit(sock: Socket) -> bool | None:
            holders = facts.holders(sock)
            if holders is None:
                return None
            for holder in holders:
                unit = facts.unit(holder.process.pid)
                if unit is not None and (unit == wanted or unit == f"{wanted}.service"):
                    return True
            return False

        return in_unit
    assert kind == "container"
    wanted_text = str(value)

    def in_container(sock: Socket) -> bool | None:
        holders = facts.holders(sock)
        if holders is None:
            return None
        found = facts.container(sock, holders)
        if found is None:
            return False
        name, ident = found
        return wanted_text == name or (len(wanted_text) >= 4 and ident.startswith(wanted_text.lower()))

    return in_container


class RecordFacts:
    """Facts from the records alone: no holders known yet; the bind lock guessed from the port range;
    namespace names and containers from ``places`` when given."""

    def __init__(self, port_range: tuple[int, int] = (32768, 60999), places: PlaceLookup | None = None) -> None:
        self.port_range = port_range
        self.places = places

    def holders(self, sock: Socket) -> tuple[Holder, ...] | None:
        return None

    def ephemeral(self, sock: Socket) -> bool | None:
        low, high = self.port_range
        return low <= sock.local_port <= high

    def kernel_says(self, leaf: Node, sock: Socket) -> bool | None:
        """Without the kernel's answer (/proc). autobound: TIME-WAIT and request sockets keep no bind lock;
        for the others a port in the ephemeral range is taken as picked by the kernel. fwmark: the mark
        is not known, so no socket matches it (as ss from /proc)."""
        if isinstance(leaf, Mark):
            return False
        if sock.state in (State.TIME_WAIT, State.SYN_RECV):
            return True
        return self.ephemeral(sock)

    def unit(self, pid: int) -> str | None:
        return None

    def container(self, sock: Socket, holders: tuple[Holder, ...]) -> tuple[str | None, str] | None:
        found = self.places.container(sock, holders) if self.places is not None else None
        return None if found is None else (found.name, found.id)

    def netns_name(self, inode: int | None) -> str | None:
        return self.places.netns_name(inode) if self.places is not None else None
