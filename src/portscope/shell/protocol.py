"""The answer to a completion request, as our shell scripts read it (see :mod:`portscope.shell.scripts`).

Without click: both click's completion classes (:mod:`portscope.shell.scripts`) and the fast path's answers
(:mod:`portscope.cli.fast`) write their items through these functions, so a value is trimmed and quoted the
same way whichever answered. An item is ``(type, value, help)``: type ``plain``, ``nospace`` (the user goes
on typing), ``dir`` or ``file``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from portscope.render.text import safe_text

Item = tuple[str, str, "str | None"]
DEFAULT_WORDBREAKS = "\"'><=;|&(:"


def option_prefix(incomplete: str) -> str:
    """``--state=lis`` -> ``--state=``: click answers the value alone."""
    if incomplete.startswith("-") and "=" in incomplete:
        return incomplete.partition("=")[0] + "="
    return ""


def one_line(text: str | None) -> str:
    return safe_text(" ".join(text.split())) if text else "_"


def offered(items: Iterable[Item]) -> list[Item]:
    """The items a shell may show and insert: none whose value holds a character that is not printable."""
    return [item for item in items if item[1].isprintable()]


def bash_answer(items: Iterable[Item], incomplete: str, environ: Mapping[str, str] = os.environ) -> str:
    """``type,value`` lines; with our script's raw line (``COMP_LINE``), each value trimmed to what bash
    replaces: only what follows its last word break (``80`` in ``127.0.0.1:80``)."""
    raw = incomplete.partition("=")[2] if option_prefix(incomplete) else incomplete
    breaks = environ.get("COMP_WORDBREAKS", DEFAULT_WORDBREAKS)
    cut = max((raw.rfind(c) for c in breaks), default=-1)
    replaced_prefix = raw[: cut + 1] if environ.get("COMP_LINE") is not None else ""
    lines = []
    for kind, value, _ in offered(items):
        if replaced_prefix and value.startswith(replaced_prefix):
            value = value[len(replaced_prefix) :]
        lines.append(f"{kind},{value}")
    return "\n".join(lines)


def zsh_answer(items: Iterable[Item], incomplete: str) -> str:
    """Three lines an item: type, value (with the ``--option=`` typed), description or ``_``."""
    prefix = option_prefix(incomplete)
    out = []
    for kind, value, help_text in offered(items):
        described = one_line(help_text)
        value = prefix + value
        if described != "_":  # _describe splits value from description at the first bare colon
            value = value.replace("\\", "\\\\").replace(":", r"\:")  # and takes a backslash as an escape
        out.append(f"{kind}\n{value}\n{described}")
    return "\n".join(out)


def fish_answer(items: Iterable[Item], incomplete: str) -> str:
    """``type<TAB>value<TAB>description`` lines."""
    prefix = option_prefix(incomplete)
    return "\n".join(f"{kind}\t{prefix}{value}\t{one_line(help_text)}" for kind, value, help_text in offered(items))


ANSWERS = {"bash": bash_answer, "zsh": zsh_answer, "fish": fish_answer}
