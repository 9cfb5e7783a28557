"""The can-bind code vocabulary: every code and kind documented in README, worded by bind_words, JSON-ready."""

from __future__ import annotations

import ast
import itertools
import json
import re
from pathlib import Path

import pytest

from portscope.model.records import Family, Holder, Process, Proto, State
from portscope.render import bind_words
from portscope.render.can_bind import JSON_KEYS
from portscope.rules import bind as bind_model
from portscope.rules.bind import Owner
from portscope.rules.codes import PARAMETERS, ActionKind, BsdNote, Coded, ReasonCode, UncertaintyCode

README = Path(__file__).resolve().parents[1] / "README.md"
RULES = Path(bind_model.__file__).parent


def can_bind_section() -> str:
    text = README.read_text()
    start = text.index("## `portscope can-bind")
    return text[start : text.index("\n## ", start + 1)]


def readme_table(title: str) -> dict[str, tuple[str, ...]]:
    """{code: parameters} of the table after the bold ``title`` in README's can-bind section."""
    section = can_bind_section()
    body = section[section.index(f"**{title}**") :]
    rows: dict[str, tuple[str, ...]] = {}
    started = False
    for line in body.splitlines()[1:]:
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        match = re.fullmatch(r"`([a-z0-9-]+)`", cells[0])
        if match:
            rows[match.group(1)] = tuple(re.findall(r"`([a-z_]+)`", cells[1]))
    return rows


def readme_json_keys() -> list[str]:
    section = can_bind_section()
    body = section[section.index("`--json` gives one object") :]
    keys = []
    for line in body.splitlines():
        if line.startswith("| `"):
            keys.append(re.match(r"\| `([a-z_]+)`", line).group(1))
        elif keys and not line.startswith("|"):
            break
    return keys


@pytest.mark.parametrize(
    ("enum", "title"),
    [(ReasonCode, "Reason codes"), (ActionKind, "Action kinds"), (UncertaintyCode, "Uncertainty codes")],
)
def test_every_code_is_documented_with_its_parameters(enum, title):
    documented = readme_table(title)
    assert documented == {code.value: PARAMETERS[code] for code in enum}


def test_every_bsd_note_is_documented():
    section = can_bind_section()
    line = section[section.index("**BSD note codes**") :].split("\n\n")[0]
    assert set(re.findall(r"`([a-z0-9-]+)`", line)) - {"bsd_note_code"} == {note.value for note in BsdNote}


def test_json_keys_are_documented_in_order():
    assert readme_json_keys() == list(JSON_KEYS)


def test_the_model_emits_only_declared_codes():
    """Every code the rules name exists in the vocabulary (a typo would be an AttributeError at run time)."""
    enums = {"ReasonCode": ReasonCode, "ActionKind": ActionKind, "UncertaintyCode": UncertaintyCode, "BsdNote": BsdNote}
    used = set()
    for path in RULES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in enums:
                used.add(getattr(enums[node.value.id], node.attr))  # AttributeError for an undeclared code
    assert used  # the walk found the model's codes


PROCESS = Process(pid=812, ppid=1, name="nginx", uid=33, user="www-data", cmdline=("nginx",), start_time=None)
SOCKETS = [
    Owner(Proto.TCP, Family.IPV4, "0.0.0.0", 80, State.LISTEN, uid=33, holders=(Holder(PROCESS, (6,)),)),
    Owner(Proto.TCP, Family.IPV6, "::1", 80, State.TIME_WAIT, timewait=True, timer_ms=1200),
]
# Sample values for each parameter name: every combination is rendered.
SAMPLES = {
    "socket": [*SOCKETS, None],
    "low": [40000],
    "high": [40000, 60999],
    "reserved": [0, 3],
    "port": [80],
    "unprivileged_port_start": [1024],
    "address": ["127.0.0.1", "fe80::1"],
    "device": ["eth0"],
    "proto": ["tcp", "udp"],
    "listen": [True, False],
    "count": [1, 6000],
    "existing_uid": [1000],
    "new_uid": [0],
    "state": ["time-wait", "bound", "established"],
    "timewait": [True, False],
    "pid": [9947],
    "name": ["python3", "net.ipv4.ip_nonlocal_bind"],
    "workers": [(), (10073, 10074)],
    "other_pids": [(), (12000,)],
    "until": ["time-wait-expires", "orphan-closes", "dad-finishes"],
    "seconds": [None, 47],
    "option": ["SO_REUSEADDR", "SO_REUSEPORT", "IPV6_V6ONLY", "SO_BINDTODEVICE", "IP_FREEBIND", "IPV6_FREEBIND"],
    "on": ["new", "both", "existing"],
    "value": [True, False, 1, "32768 60999"],
    "pids": [(), (812, 813)],
    "if_existing_has_it": [True, False],
    "uid": [1000],
    "reuseport": [True, False],
    "at_least": [None, 1024],
    "family": ["ipv4", "ipv6"],
    "current": [None, 1024],
    "capability": ["CAP_NET_BIND_SERVICE"],
    "options": [("SO_REUSEADDR", "SO_REUSEPORT")],
    "why": ["time-wait", "no-holder", "holder-not-inspectable"],
}


def examples(code) -> list[Coded]:
    names = PARAMETERS[code]
    if code is ReasonCode.OVERLAP or code is UncertaintyCode.HIDDEN_FLAGS:
        values = [SOCKETS if name == "socket" else SAMPLES[name] for name in names]  # never None there
    else:
        values = [SAMPLES[name] for name in names]
    return [Coded(code, tuple(zip(names, combo, strict=True))) for combo in itertools.product(*values)]


@pytest.mark.parametrize(
    ("enum", "table", "key"),
    [
        (ReasonCode, bind_words.REASONS, "code"),
        (ActionKind, bind_words.ACTIONS, "kind"),
        (UncertaintyCode, bind_words.UNCERTAINTY, "code"),
    ],
)
def test_every_code_has_words_and_json(enum, table, key):
    assert set(table) == set(enum)
    for code in enum:
        for coded in examples(code):
            text = table[code](**coded.params)
            assert text and "{" not in text and "None" not in text, (coded, text)
            document = json.loads(json.dumps(bind_words.coded_object(coded, key)))
            assert document[key] == code.value and set(document) == {key, *PARAMETERS[code]}
    assert set(bind_words.BSD_NOTES) == set(BsdNote)


def test_socket_parameters_are_short_references():
    coded = Coded(ReasonCode.OVERLAP, (("socket", SOCKETS[0]), ("port", 80)))
    assert bind_words.coded_object(coded, "code") == {
        "code": "overlap",
        "socket": {"state": "listen", "address": "0.0.0.0", "port": 80, "inode": None, "pids": [812]},
        "port": 80,
    }


def test_a_code_refuses_parameters_it_does_not_declare():
    from portscope.rules.codes import action

    with pytest.raises(TypeError, match="takes no parameter"):
        action(ActionKind.WAIT, until="time-wait-expires", minutes=1)
    with pytest.raises(TypeError, match="needs the parameter"):
        action(ActionKind.RUN_AS_USER)


def test_rules_never_import_the_renderer():
    """Decisions are data: the model and its vocabulary stand without the words (no import cycle)."""
    for path in RULES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("portscope.render"), path.name
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("portscope.render") for alias in node.names), path.name
