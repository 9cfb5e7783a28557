"""The fast path against click: the same parameters for every command line it accepts, click for the rest.

portscope.cli.fastargs parses the common command lines from a table generated from the click declarations;
here both parse the same generated command lines (every option of every command, short and long forms,
``--opt=value``, clusters, repeated options, choices, bad values, stray ``--`` and ``=``) and the fast parser
must give exactly click's parameters, or decline where click refuses. The help pages and the completion
answers are compared with click's output the same way.
"""

from __future__ import annotations

import io
import os

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portscope.cli import fast
from portscope.cli.argtable import COMMAND_ITEMS, COMMANDS
from portscope.cli.fastargs import command_spec, parse
from portscope.cli.group import cli, exit_status
from portscope.cli.helptext import PAGES
from portscope.cli.runtime import Invocation
from portscope.render.environment import Environment

GROUP_TOKENS = ["--debug", "--color", "--color=never", "--color=always", "--color=bogus", "-V", "-h", "--bogus"]
VALUES = ["listen", "auto", "proc", "never", "x", "", "-", "-5", "80", "8000-8100", "--", "=", "a=b", "-t", "bash"]
NAMES = [name for name in COMMANDS if name]


def click_parse(argv: list[str]):
    """(command, params, colour or None) as click parses ``portscope ARGV``; None where click refuses it or
    answers by itself (help, version)."""
    out = io.StringIO()
    try:
        with (
            _quiet(out),
            cli.make_context("portscope", list(argv)) as group_ctx,
        ):
            remaining = [*group_ctx._protected_args, *group_ctx.args]
            if not remaining:  # no command: click's error when it runs the group
                return None
            name, command, rest = cli.resolve_command(group_ctx, remaining)
            with command.make_context(name, rest, parent=group_ctx) as ctx:
                run = ctx.find_object(Invocation)
                return name, dict(ctx.params), None if run is None else run.env.colour
    except (click.ClickException, click.exceptions.Exit):
        return None


class _quiet:
    """click prints help and version pages while it parses: into a buffer."""

    def __init__(self, out: io.StringIO) -> None:
        self.out = out

    def __enter__(self):
        import contextlib

        self._redirect = contextlib.redirect_stdout(self.out)
        return self._redirect.__enter__()

    def __exit__(self, *exc):
        return self._redirect.__exit__(*exc)


def fast_parse(argv: list[str]):
    parsed = parse(argv)
    if parsed is None:
        return None
    colour = None
    if parsed.group_color is not None or parsed.command_color is not None:
        env = Environment.detect(color=parsed.group_color or "auto")
        colour = (env.with_colour(parsed.command_color) if parsed.command_color else env).colour
    return parsed.command, parsed.params, colour


def _option_strings(name: str) -> list[str]:
    return [opt for option in command_spec(name)["options"] for opt in (*option["opts"], *option["secondary"])]


@st.composite
def command_lines(draw) -> list[str]:
    name = draw(st.sampled_from([*NAMES, "lss"]))
    opts = _option_strings(name) if name in COMMANDS else ["-a"]
    letters = sorted({opt[1] for opt in opts if len(opt) == 2})
    choices = [c for option in (command_spec(name) or {"options": ()})["options"] for c in option["choices"]]
    values = st.sampled_from(VALUES + choices)
    token = st.one_of(
        st.sampled_from(opts),
        st.sampled_from(opts),
        st.builds(lambda o, v: f"{o}={v}", st.sampled_from(opts), values),
        st.builds(lambda ls: "-" + "".join(ls), st.lists(st.sampled_from(letters or ["a"]), min_size=1, max_size=4)),
        st.builds(lambda ls, v: "-" + "".join(ls) + v, st.lists(st.sampled_from(letters or ["a"]), min_size=1), values),
        values,
    )
    prefix = draw(st.lists(st.sampled_from(GROUP_TOKENS), max_size=2))
    return [*prefix, name, *draw(st.lists(token, max_size=6))]


@st.composite
def well_formed_lines(draw) -> list[str]:
    """Lines click accepts, in every form it accepts them: most should take the fast path."""
    name = draw(st.sampled_from([n for n in NAMES if command_spec(n)["fast"]]))
    options = [o for o in command_spec(name)["options"] if o["role"] in ("param", "color")]
    line: list[str] = []
    for option in draw(st.lists(st.sampled_from(options), max_size=5)) if options else ():
        opt = draw(st.sampled_from([*option["opts"], *option["secondary"]]))
        if not option["needs_value"]:
            line.append(opt)
            continue
        value = draw(st.sampled_from(option["choices"] or ("listen", "80", "-x", "a=b", "", "10.0.0.0/8")))
        short = len(opt) == 2
        form = draw(st.sampled_from(["apart", "equals", "attached"] if short else ["apart", "equals"]))
        if option["flag_needs_value"] and draw(st.booleans()):
            line.append(opt)  # --color alone
        elif form == "apart":
            line += [opt, value]
        elif form == "equals":
            line.append(f"{opt}={value}")
        else:
            line.append(opt + value)
    words = []
    for argument in command_spec(name)["arguments"]:
        if argument["nargs"] == 1 and (argument["required"] or draw(st.booleans())):
            words.append(draw(st.sampled_from(argument["choices"] or ("8080", "53/udp", "state", "x"))))
        elif argument["nargs"] == -1:
            expression = st.sampled_from(["state", "established", "sport", "=", ":80", "(", ")"])
            words += draw(st.lists(expression, max_size=3))
    for word in words:  # interspersed where the options allow it
        line.insert(draw(st.integers(0, len(line))), word)
    prefix = draw(st.lists(st.sampled_from(["--debug", "--color=never", "--color=always"]), max_size=2))
    return [*prefix, name, *line]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    for variable in ("PORTSCOPE_DEBUG", "_PORTSCOPE_COMPLETE", "NO_COLOR", "FORCE_COLOR", "CLICOLOR_FORCE"):
        monkeypatch.delenv(variable, raising=False)


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(command_lines(), well_formed_lines()))
def test_fast_parser_gives_clicks_parameters_or_declines(argv):
    mine = fast_parse(argv)
    expected = click_parse(argv)
    if mine is not None:
        assert mine == expected, argv


COMMON = [
    ["ls"],
    ["ls", "-l"],
    ["ls", "-tulpn"],
    ["ls", "-tanp"],
    ["ls", "-4tl"],
    ["ls", "-a", "--port", "8080"],
    ["ls", "-s", "listen", "--state=time-wait", "-slisten", "-y80", "--sport", "22,80"],
    ["ls", "--state", "connected", "--dst", "10.0.0.0/8"],
    ["ls", "state", "established", "( dport = :443 or sport = :443 )"],
    ["ls", "-ta", "sport >= :1024 and not src 127.0.0.0/8"],
    ["ls", "--pids", "-l", "--port", "8080"],
    ["ls", "-a", "-n", "--json", "--no-processes"],
    ["ls", "--backend=proc", "--netns", "blue", "-x"],
    ["ls", "--color", "-l"],
    ["ls", "-l", "--color"],
    ["--color=never", "ls", "--color=always", "-e", "-o", "-m", "-i"],
    ["--debug", "ls", "--user", "root", "--pid", "1", "--process", "http", "-H"],
    ["ls", "-l", "--jsonl", "-p"],
    ["who", "8080"],
    ["who", "53/udp", "--json"],
    ["who", "--remote", "443", "-n"],
    ["who", "8080", "--netns", "all", "--color", "never"],
    ["who", "-5"],  # an unknown option to click ("port -5 is out of range" in its error): declined
    ["stats"],
    ["stats", "--json", "--no-processes", "-n"],
    ["completion", "zsh"],
    ["kill", "8080", "--dry-run", "-s", "KILL"],
]


@pytest.mark.parametrize("argv", COMMON, ids=" ".join)
def test_common_command_lines_take_the_fast_path(argv):
    expected = click_parse(argv)
    mine = fast_parse(argv)
    assert mine == expected, argv
    if expected is not None:
        assert mine is not None  # the common lines are not declined


@pytest.mark.parametrize(
    "argv",
    [
        ["ls", "--", "-x"],  # `--`: click's business
        ["ls", "--help"],
        ["ls", "-lh"],
        ["-V", "ls"],
        ["ls", "--al"],  # click allows no abbreviation
        ["ls", "--backend", "nope"],
        ["ls", "--backend"],
        ["ls", "-s"],
        ["ls", "--all=yes"],
        ["who"],
        ["who", "1", "2"],
        ["lss"],
        [],
        ["--color", "ls"],  # the group's --color takes "ls" as its value: click refuses it
        ["can-bind", ":80"],  # a callback (--v6only) runs even when its option is absent
        ["kill", "--connection", "a:1", "b:2"],  # two values an option
        ["kill", "--timeout", "3"],  # a FloatRange
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_declined_lines(argv):
    assert parse(argv) is None


def test_a_variable_click_reads_sends_the_line_to_click(monkeypatch):
    assert parse(["ls"]) is not None
    monkeypatch.setenv("PORTSCOPE_DEBUG", "")
    assert parse(["ls"]) is None


def test_table_covers_every_command_and_option():
    for name in cli.list_commands(click.Context(cli)):
        command = cli.get_command(click.Context(cli), name)
        declared = {opt for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
        assert declared <= set(_option_strings(name)), name
    assert {"ls", "who", "stats"} <= {name for name in NAMES if command_spec(name)["fast"]}


# ---------------------------------------------------------------------------------------------------
# --help


def _click_output(argv: list[str], capfd) -> tuple[int, str]:
    status = exit_status(argv, False)
    return status, capfd.readouterr().out


@pytest.mark.parametrize("columns", ["80", "120"])
@pytest.mark.parametrize("name", sorted(PAGES))
def test_stored_help_is_clicks_on_wide_terminals(name, columns, monkeypatch, capfd):
    monkeypatch.setenv("COLUMNS", columns)
    argv = [name, "--help"] if name else ["--help"]
    assert _click_output(argv, capfd) == (0, PAGES[name])
    assert fast.answer(argv) == 0
    assert capfd.readouterr().out == PAGES[name]
    assert fast.answer([*argv[:-1], "-h"]) == 0
    assert capfd.readouterr().out == PAGES[name]


def test_narrow_terminals_get_clicks_own_wrapping(monkeypatch):
    monkeypatch.setenv("COLUMNS", "79")
    assert fast.answer(["ls", "--help"]) is None
    monkeypatch.setenv("COLUMNS", "80")
    assert fast.terminal_columns() == 80
    monkeypatch.delenv("COLUMNS")
    assert fast.terminal_columns() >= 1  # the terminal's, or click's fallback of 80 off a terminal


# ---------------------------------------------------------------------------------------------------
# Completion requests


REQUESTS = [
    *[("bash", {"COMP_LINE": f"portscope {line}", "COMP_POINT": "99"}) for line in ("", "l", "w", "c", "-", "--")],
    *[("bash", {"COMP_LINE": f"portscope {line}"}) for line in ("ls -", "ls --s", "who --", "stats -", "k")],
    ("bash", {"COMP_LINE": "portscope ls --st", "COMP_WORDBREAKS": "\"'><;|&(:"}),
    ("bash", {"COMP_LINE": "portscope x:l"}),
    ("bash", {"COMP_WORDS": "portscope l", "COMP_CWORD": "1"}),
    ("bash", {"COMP_WORDS": "portscope ls --j", "COMP_CWORD": "2"}),
    *[("zsh", {"COMP_WORDS": f"portscope {w}", "COMP_CWORD": str(len(w.split()) or 1)}) for w in ("l", "-", "ls --st")],
    ("zsh", {"COMP_WORDS": "portscope", "COMP_CWORD": "1"}),
    ("zsh", {"COMP_WORDS": "portscope who -", "COMP_CWORD": "2"}),
    ("fish", {"COMP_WORDS": "portscope ca", "COMP_CWORD": "ca"}),
    ("fish", {"COMP_WORDS": "portscope ls --n", "COMP_CWORD": "--n"}),
    ("fish", {"COMP_WORDS": "portscope ", "COMP_CWORD": ""}),
    # declined: click answers (values, quoting, a complete option before)
    ("bash", {"COMP_LINE": "portscope ls --state=l"}),
    ("bash", {"COMP_LINE": "portscope ls --state l"}),
    ("bash", {"COMP_LINE": "portscope who '80"}),
    ("zsh", {"COMP_WORDS": "portscope ls -a --", "COMP_CWORD": "3"}),
]


@pytest.mark.parametrize(("shell", "env"), REQUESTS, ids=lambda v: v if isinstance(v, str) else repr(v))
def test_completion_answers_are_clicks(shell, env, monkeypatch, capfd):
    for variable in ("COMP_LINE", "COMP_POINT", "COMP_WORDS", "COMP_CWORD", "COMP_WORDBREAKS"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("_PORTSCOPE_COMPLETE", f"{shell}_complete")
    import portscope.shell.scripts  # noqa: F401 - our completion classes, as main() registers them

    with pytest.raises(SystemExit) as done:
        exit_status([], False)
    assert done.value.code == 0
    expected = capfd.readouterr().out
    mine = fast.answer([])
    if mine is None:
        return
    assert mine == 0
    assert capfd.readouterr().out == expected


def test_command_names_are_completed_without_click(monkeypatch, capfd):
    monkeypatch.setenv("_PORTSCOPE_COMPLETE", "zsh_complete")
    monkeypatch.setenv("COMP_WORDS", "portscope l")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert fast.answer([]) == 0
    assert capfd.readouterr().out.split("\n")[:2] == ["plain", "ls"]
    assert [name for name, _ in COMMAND_ITEMS] == sorted(name for name in NAMES)
    assert os.environ["_PORTSCOPE_COMPLETE"] == "zsh_complete"
