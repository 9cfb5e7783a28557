"""Generated man pages and completion scripts: in sync with the code, and rendered cleanly by groff/man."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import portscope
from netns_util import REQUIRE_LIVE
from portscope.cli import cli
from portscope.docs import COMPLETION_FILES, REGENERATE_COMMAND, generated_files, stale_files, write_all
from portscope.docs.manpages import EXIT_STATUS_MEANINGS, man_pages, parse_help
from portscope.docs.roff import Page, escape, line
from portscope.errors import ExitStatus

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO")


def commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(cli)
    return [(name, cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]


def test_generated_files_are_up_to_date() -> None:
    """Missing, changed or obsolete copies in man/ and completions/ fail here, all named at once."""
    stale = stale_files(ROOT)
    assert not stale, f"out of date: {', '.join(stale)}: run `{REGENERATE_COMMAND}` and commit the result"


def test_one_page_per_command_and_every_script() -> None:
    files = generated_files()
    assert {f"man/portscope-{name}.1" for name, _ in commands()} | {"man/portscope.1"} == {
        p for p in files if p.startswith("man/")
    }
    assert set(COMPLETION_FILES.values()) <= set(files)
    assert {"ls", "completion"} <= {name for name, _ in commands()}


def test_regeneration_command_writes_and_checks(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "portscope.docs", "--root", str(tmp_path)]
    check = subprocess.run([*run, "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert "out of date: man/portscope-ls.1" in check.stderr and REGENERATE_COMMAND in check.stderr
    (tmp_path / "man").mkdir()
    (tmp_path / "man" / "portscope-gone.1").write_text("old\n")
    wrote = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert wrote.returncode == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        generated_files()
    )
    assert subprocess.run([*run, "--check"], capture_output=True, timeout=60).returncode == 0
    assert write_all(tmp_path) == []  # nothing changes the second time


def test_reproducible_no_date_no_version(monkeypatch) -> None:
    first = man_pages(cli)
    monkeypatch.setattr(portscope, "__version__", "99.99.99")
    assert man_pages(cli) == first
    for name, text in first.items():
        title = next(t for t in text.splitlines() if t.startswith(".TH "))
        assert ' 1 "" "portscope"' in title, name  # no date
        assert not re.search(r"\b(19|20)\d\d\b", text), name


# ---------------------------------------------------------------------------------------------------
# Rendering: groff and man(1) are the oracles. They read the pages as the code makes them now (the
# copies in man/ are held equal to those above), so a stale copy fails in one place only.


def _groff() -> str:
    path = shutil.which("groff")
    if path is None:
        (pytest.fail if REQUIRE_LIVE else pytest.skip)("groff is not installed (apt-get install groff-base)")
    return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("man")
    for name, text in man_pages(cli).items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def render(path: Path) -> str:
    """The page as man(1) shows it, without formatting, 100 columns wide."""
    man = shutil.which("man")
    env = {**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    if man is not None:
        argv = [man, "--warnings", "-l", str(path)]
    else:
        argv = [_groff(), "-man", "-Tutf8", "-ww", "-rLL=100n", str(path)]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return re.sub(r".\x08", "", result.stdout)  # overstrike bold/underline


@pytest.mark.parametrize("name", ["portscope", *(f"portscope-{n}" for n, _ in commands())])
def test_page_renders_without_warnings(pages: Path, name: str) -> None:
    path = pages / f"{name}.1"
    warnings = subprocess.run(
        [_groff(), "-man", "-Tutf8", "-ww", "-z", str(path)], capture_output=True, text=True, timeout=60
    )
    assert warnings.returncode == 0 and warnings.stderr == "", warnings.stderr
    text = render(path)
    for section in SECTIONS:
        assert re.search(rf"^{section}$", text, re.M), (name, section)
    for tool in ("ss(8)", "netstat(8)", "lsof(8)", "fuser(1)"):
        assert tool in text


@pytest.mark.parametrize(("name", "command"), commands())
def test_command_page_shows_every_option_and_example(pages: Path, name: str, command: click.Command) -> None:
    text = render(pages / f"portscope-{name}.1")
    flat = " ".join(text.split())
    assert f"portscope-{name} - " in flat
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            for opt in param.opts + param.secondary_opts:
                assert re.search(rf"(^|[\s,]){re.escape(opt)}([\s,]|$)", text, re.M), (name, opt)
            if param.help:
                assert " ".join(param.help.split()) in flat, (name, param.help)
    examples = parse_help(command.help).examples
    assert examples, f"portscope {name} has no Examples: block in its docstring"
    assert re.search(r"^EXAMPLES$", text, re.M)
    for example, _ in examples:
        assert example in flat, (name, example)


def test_main_page_lists_every_command_and_status(pages: Path) -> None:
    text = render(pages / "portscope.1")
    for name, _ in commands():
        assert f"portscope-{name}(1)" in text
    for status in ExitStatus:
        assert re.search(rf"^\s+{int(status)}\s", text, re.M), status
    assert "PORTSCOPE_DEBUG" in text and "NO_COLOR" in text


def test_every_exit_status_is_explained() -> None:
    assert set(EXIT_STATUS_MEANINGS) == set(ExitStatus)


def test_roff_escapes_survive_groff() -> None:
    tricky = [".starts with a dot", "'starts with a quote", r"back\slash and --dashes", "non-ASCII: naïve — ok"]
    page = Page("t", 1, "src", "manual", "test")
    page.section("NAME")
    page.raw(r"t \- test")
    for text in tricky:
        page.paragraph(text)
    page.verbatim(["  indented .line", "", "'quoted"])
    path_text = str(page)
    groff = subprocess.run(
        [_groff(), "-man", "-Tutf8", "-ww", "-rLL=200n"],
        input=path_text,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert groff.stderr == ""
    plain = re.sub(r".\x08", "", groff.stdout)
    for text in [*tricky, ".line", "'quoted"]:
        assert text in plain, text
    assert escape("a-b") == r"a\-b" and line(".x") == r"\&.x"


def test_help_parsing() -> None:
    help_text = parse_help(
        "Summary line.\n\nA paragraph\nwrapped here.\n\n\b\nkept  as\n  is\n\n\b\nExamples:\n"
        "  portscope x 1      does one\n  portscope x 2\n\n\b\nExit status: 0 found, 1 nothing, 2 bad input.\n"
        "\fhidden from help"
    )
    assert help_text.paragraphs == ["Summary line.", "A paragraph wrapped here.", ["kept  as", "  is"]]
    assert help_text.examples == [("portscope x 1", "does one"), ("portscope x 2", None)]
    assert help_text.exit_statuses == [("0", "found"), ("1", "nothing"), ("2", "bad input")]
    block = parse_help("S.\n\n\b\nExit status:\n  0  yes\n  1  no, and a longer\n     explanation\n")
    assert block.exit_statuses == [("0", "yes"), ("1", "no, and a longer explanation")]


@pytest.mark.parametrize("shell", sorted(COMPLETION_FILES))
def test_completion_copies_are_the_command_output(shell: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "portscope", "completion", shell], capture_output=True, text=True, timeout=60
    )
    assert result.stdout == (ROOT / COMPLETION_FILES[shell]).read_text(encoding="utf-8")
