"""Man pages from the click command tree: ``portscope(1)`` and one ``portscope-COMMAND(1)`` per command.

Everything comes from the commands themselves: the summary and description from the docstring,
every option with its help, default and choices from click (the text ``--help`` shows), the
EXAMPLES and EXIT STATUS from the docstring's ``Examples:`` and ``Exit status:`` blocks. No date and
no version go in, so the pages change only when the commands do.
"""

from __future__ import annotations

import re
from dataclasses import field

import click

from portscope.docs.roff import Page, bold, escape, italic
from portscope.errors import ExitStatus
from portscope.model.dataclass_lite import dataclass_lite

GENERATOR = "python -m portscope.docs"
SOURCE = "portscope"
MANUAL = "portscope manual"
SEE_ALSO_TOOLS = (("ss", 8), ("netstat", 8), ("lsof", 8), ("fuser", 1))

# What each exit status means in general; commands say what their answers (0, 1, 3) mean in "Exit status:".
EXIT_STATUS_MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "Success.",
    ExitStatus.NOT_FOUND: "A negative answer: nothing found (who), the bind would fail (can-bind), the timeout "
    "passed (wait).",
    ExitStatus.UNCERTAIN: "The answer depends on what cannot be seen (can-bind).",
    ExitStatus.USAGE: "Bad input: an unknown option, a malformed port or address, an unknown user, service, "
    "interface or namespace. The error is one line on standard error.",
    ExitStatus.UNREADABLE: "The system could not be read: netlink refused under --backend netlink, a namespace "
    "that cannot be entered for lack of privilege, an unreadable or malformed source, too many open files, "
    "out of memory. One line on standard error.",
    ExitStatus.INTERNAL: "An unexpected error inside portscope (a bug): one line on standard error, the "
    "traceback with --debug.",
    ExitStatus.INTERRUPTED: "Interrupted (Ctrl-C).",
}
# Every command can end in these, whatever it answers: an error is never 0, 1 or 3.
COMMON_EXIT_STATUSES = (ExitStatus.USAGE, ExitStatus.UNREADABLE, ExitStatus.INTERNAL, ExitStatus.INTERRUPTED)

ENVIRONMENT = (
    ("NO_COLOR", "When set (not empty), output is not coloured, unless --color=always."),
    (
        "FORCE_COLOR, CLICOLOR_FORCE",
        "When set (not empty; CLICOLOR_FORCE not 0), output into a pipe is coloured too "
        "(for watch -c and less -R), unless NO_COLOR or --color=never.",
    ),
    (
        "COLUMNS",
        "The width output is fitted to, also into a pipe (watch sets it); a pipe without it gets whole, uncut lines.",
    ),
    ("LINES", "The height can-bind fits its summary to on a terminal."),
)
FILES = (
    ("/etc/services", "Service names for ports, both ways."),
    ("/proc/net/tcp, /proc/net/udp, ...", "Socket tables, when netlink sock_diag cannot be used."),
    ("/proc/PID/fd", "Which processes hold which sockets."),
    ("/run/netns", "Network namespaces named by ip-netns(8), for --netns."),
)


@dataclass_lite
class HelpText:
    """A click help text split into its parts."""

    paragraphs: list[str | list[str]] = field(default_factory=list)  # str: to fill; list: lines kept as is
    examples: list[tuple[str, str | None]] = field(default_factory=list)  # (command line, what it does)
    exit_statuses: list[tuple[str, str]] = field(default_factory=list)  # (status, meaning)


_COLUMNS = re.compile(r"\s{2,}")


def _items(lines: list[str]) -> list[tuple[str, str | None]]:
    """``  command    what it does`` lines; a line indented deeper continues the one before."""
    items: list[tuple[str, str | None]] = []
    base = min((len(t) - len(t.lstrip()) for t in lines if t.strip()), default=0)
    for text in lines:
        if not text.strip():
            continue
        indent = len(text) - len(text.lstrip())
        if indent > base and items:
            head, tail = items[-1]
            items[-1] = (head, f"{tail} {text.strip()}" if tail else text.strip())
            continue
        head, *rest = _COLUMNS.split(text.strip(), maxsplit=1)
        items.append((head, rest[0] if rest else None))
    return items


def _status(text: str) -> tuple[str, str]:
    code, _, meaning = text.strip().partition(" ")
    return code, meaning.strip()


def parse_help(text: str | None) -> HelpText:
    """Split a docstring the way click reads it: paragraphs, ``\\b`` blocks, ``\\f`` ends the help."""
    result = HelpText()
    body = (text or "").split("\f", 1)[0]
    for block in re.split(r"\n\s*\n", body.strip()):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            kept = lines[1:]
            heading, _, inline = (kept[0].strip() if kept else "").partition(":")
            if heading.lower() == "examples":
                result.examples += _items(kept[1:])
            elif heading.lower() == "exit status" and inline.strip():  # "Exit status: 0 found, 1 nothing."
                text = " ".join([inline, *(t.strip() for t in kept[1:])]).strip().rstrip(".")
                result.exit_statuses += [_status(part) for part in re.split(r",\s*(?=\d+\s)", text)]
            elif heading.lower() == "exit status":
                result.exit_statuses += [(code, meaning or "") for code, meaning in _items(kept[1:])]
            elif kept:
                result.paragraphs.append(kept)
        elif block.strip():
            result.paragraphs.append(" ".join(t.strip() for t in lines))
    return result


def _summary(command: click.Command) -> str:
    """The first sentence of the help: the NAME line and the COMMANDS list."""
    if command.short_help:
        return command.short_help.rstrip(".")
    first = re.split(r"\n\s*\n", (command.help or "").strip(), maxsplit=1)[0]
    sentence = re.split(r"(?<=\.)\s", " ".join(first.split()), maxsplit=1)[0]
    return sentence.rstrip(".")


# The text is ours, not click's defaults, so that the pages do not change with the click release.
HELP_OPTION_TEXT = "Show a summary of the options and exit."


def _metavar(param: click.Parameter) -> str:
    if param.metavar:
        return param.metavar
    if isinstance(param.type, click.Choice):
        return "{" + "|".join(str(c) for c in param.type.choices) + "}"
    name = param.name.upper() if isinstance(param, click.Argument) and param.name else param.type.name.upper()
    return name + ("..." if param.nargs == -1 else "")


def _usage(command: click.Command) -> list[str]:
    pieces = ["[OPTIONS]"]
    for param in command.params:
        if isinstance(param, click.Argument):
            pieces.append(_metavar(param) if param.required else f"[{_metavar(param)}]")
    if isinstance(command, click.Group):
        pieces += ["COMMAND", "[ARGS]..."]
    return pieces


def _option_help(option: click.Option, ctx: click.Context) -> str | None:
    # click names its help option "help" or (8.5+) "_click_default_help"; its flags are what stay put.
    if "--help" in option.opts and option.is_eager and option.expose_value is False:
        return HELP_OPTION_TEXT
    text = " ".join((option.help or "").split())
    extras = []
    default = option.default
    if option.show_default and default not in (None, False, ()) and not callable(default):
        shown = option.show_default if isinstance(option.show_default, str) else default
        extras.append(f"default: {shown}")
    if option.required:
        extras.append("required")
    if extras:
        text += f" [{'; '.join(extras)}]"
    return text or None


def _option_tag(option: click.Option, ctx: click.Context) -> str:
    names = ", ".join(bold(opt) for opt in sorted(option.opts, key=len))
    if option.secondary_opts:
        names += " / " + ", ".join(bold(opt) for opt in option.secondary_opts)
    if option.is_flag or option.count:
        return names
    return f"{names} {italic(_metavar(option))}"


def _add_help(page: Page, help_text: HelpText) -> None:
    for paragraph in help_text.paragraphs:
        if isinstance(paragraph, list):
            page.verbatim(paragraph)
        else:
            page.paragraph(paragraph)


def _add_options(page: Page, command: click.Command, ctx: click.Context) -> None:
    options = [p for p in command.get_params(ctx) if isinstance(p, click.Option) and not p.hidden]
    if not options:
        return
    page.section("OPTIONS")
    for option in options:
        page.tagged(_option_tag(option, ctx), _option_help(option, ctx))


def _add_examples(page: Page, examples: list[tuple[str, str | None]]) -> None:
    if not examples:
        return
    page.section("EXAMPLES")
    for command_line, what in examples:
        page.tagged(bold(command_line), what)


def _add_exit_status(page: Page, statuses: list[tuple[str, str]]) -> None:
    """The command's own answers (from its docstring; 0 alone if it has none), then the errors every command has."""
    page.section("EXIT STATUS")
    answers = statuses or [(str(int(ExitStatus.OK)), EXIT_STATUS_MEANINGS[ExitStatus.OK])]
    told = {code for code, _ in answers}
    errors = [(str(int(s)), EXIT_STATUS_MEANINGS[s]) for s in COMMON_EXIT_STATUSES if str(int(s)) not in told]
    for code, meaning in [*answers, *errors]:
        page.tagged(bold(code), meaning)


def _see_also(page: Page, pages: list[str], own: str) -> None:
    page.section("SEE ALSO")
    refs = [(name, 1) for name in pages if name != own] + list(SEE_ALSO_TOOLS)
    page.raw(",\n".join(f".BR {escape(name)} ({section})" for name, section in refs))


def _add_json(page: Page, name: str, readme: str | None) -> None:
    from portscope.docs.readme import json_reference

    requests = json_reference(readme, name) if readme is not None else None
    if requests:
        page.section("JSON OUTPUT")
        page.raw(*requests)


def command_page(
    group: click.Group, name: str, command: click.Command, all_pages: list[str], readme: str | None = None
) -> str:
    parent = click.Context(group, info_name=SOURCE, **group.context_settings)
    ctx = click.Context(command, info_name=name, parent=parent, **command.context_settings)
    page_name = f"{SOURCE}-{name}"
    help_text = parse_help(command.help)
    page = Page(page_name, 1, SOURCE, MANUAL, GENERATOR)
    page.section("NAME")
    page.raw(f"{escape(page_name)} \\- {escape(_summary(command))}")
    page.section("SYNOPSIS")
    usage = " ".join(italic(piece) for piece in _usage(command))
    page.raw(f".B {escape(SOURCE)} {escape(name)}", usage)
    page.section("DESCRIPTION")
    _add_help(page, help_text)
    _add_options(page, command, ctx)
    _add_examples(page, help_text.examples)
    _add_json(page, name, readme)
    _add_exit_status(page, help_text.exit_statuses)
    _see_also(page, all_pages, page_name)
    return str(page)


def main_page(group: click.Group, commands: list[tuple[str, click.Command]], all_pages: list[str]) -> str:
    ctx = click.Context(group, info_name=SOURCE, **group.context_settings)
    help_text = parse_help(group.help)
    page = Page(SOURCE, 1, SOURCE, MANUAL, GENERATOR)
    page.section("NAME")
    page.raw(f"{escape(SOURCE)} \\- {escape(_summary(group))}")
    page.section("SYNOPSIS")
    page.raw(f".B {escape(SOURCE)}", " ".join(italic(piece) for piece in _usage(group)))
    page.section("DESCRIPTION")
    _add_help(page, help_text)
    page.paragraph(f"Each command has its own page, {SOURCE}-COMMAND(1), and --help.")
    page.section("COMMANDS")
    for name, command in commands:
        page.tagged(f".BR {escape(f'{SOURCE}-{name}')} (1)", _summary(command) + ".")
    _add_options(page, group, ctx)
    _add_examples(page, help_text.examples)
    page.section("EXIT STATUS")
    for status, meaning in EXIT_STATUS_MEANINGS.items():
        page.tagged(bold(str(int(status))), meaning)
    page.section("ENVIRONMENT")
    environment = [
        (var, f"Sets {'/'.join(p.opts)}.") for p in group.params if isinstance(p, click.Option) for var in _envvars(p)
    ]
    for var, meaning in [*environment, *ENVIRONMENT]:
        page.tagged(bold(var), meaning)
    page.section("FILES")
    for path, meaning in FILES:
        page.tagged(italic(path), meaning)
    _see_also(page, all_pages, SOURCE)
    return str(page)


def _envvars(option: click.Option) -> list[str]:
    if not option.envvar:
        return []
    return [option.envvar] if isinstance(option.envvar, str) else list(option.envvar)


def man_pages(group: click.Group, readme: str | None = None) -> dict[str, str]:
    """File name -> roff source, for the group and each of its commands; ``readme``: the text of README.md,
    whose JSON sections the pages carry (default: the checkout's README, when there is one)."""
    if readme is None:
        from portscope.docs.readme import read_readme

        try:
            readme = read_readme()
        except OSError:  # an installed copy without its checkout: pages without the JSON reference
            readme = None
    ctx = click.Context(group, info_name=SOURCE)
    commands = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    commands = [(name, command) for name, command in commands if command is not None and not command.hidden]
    all_pages = [SOURCE] + [f"{SOURCE}-{name}" for name, _ in commands]
    pages = {f"{SOURCE}.1": main_page(group, commands, all_pages)}
    for name, command in commands:
        pages[f"{SOURCE}-{name}.1"] = command_page(group, name, command, all_pages, readme)
    return pages
