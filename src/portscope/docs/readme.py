"""The JSON schema of the man pages, rendered from README's own sections.

README documents every JSON key (tests/test_json_keys.py and tests/test_bind_codes.py hold the output to
it), so it stays the one source: ``python -m portscope.docs`` copies its JSON sections into the pages as
roff, and the stale-file check fails when README changes without the pages being regenerated.
Only the Markdown README uses is read: paragraphs, ``- `` lists, pipe tables, ``code``, **bold** and links.
"""

from __future__ import annotations

import re
from pathlib import Path

from portscope.docs.roff import escape

# Command -> the parts of README that are its JSON OUTPUT: (heading, where to start inside its section;
# None: all of it).
JSON_SOURCES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "ls": (("### JSON (schema version", None), ("### UNIX sockets: `-x`", "**UNIX socket objects**")),
    "who": (("### `who --json`", None), ("### `who PATH` and `who @NAME`", "`who --json` then gives")),
    "stats": (("## `portscope stats`", "`--json` gives one object"),),
    "can-bind": (("### `can-bind --json`", None),),
    "kill": (("### `kill --json`", None),),
}
_HEADING = re.compile(r"^#{1,6} ", re.M)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def section(readme: str, heading: str) -> str:
    """The text under the line starting with ``heading``, up to the next heading of any level."""
    start = readme.index("\n" + heading) + 1
    body_start = readme.index("\n", start) + 1
    following = _HEADING.search(readme, body_start)
    return readme[body_start : following.start() if following else len(readme)].strip("\n")


def inline(text: str) -> str:
    """Markdown inline text -> roff: ``code`` and **bold** in bold, links as their text."""
    text = _LINK.sub(r"\1", " ".join(text.split()))
    out = []
    for index, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if index % 2:
            out.append(rf"\fB{escape(part[1:-1])}\fR")
            continue
        for bold_index, piece in enumerate(part.split("**")):
            out.append(rf"\fB{escape(piece)}\fR" if bold_index % 2 and piece else escape(piece))
    rendered = "".join(out)
    return r"\&" + rendered if rendered[:1] in (".", "'") else rendered


def _cells(row: str) -> list[str]:
    # "\|" inside a cell is a literal bar (`"tcp"` \| `"udp"`)
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def _table(lines: list[str]) -> list[str]:
    """A pipe table as tagged paragraphs: the first column is the tag; the others, named by their header, the body."""
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    requests = []
    for row in rows:
        body = []
        for title, cell in zip(header[1:], row[1:], strict=False):
            if not cell or cell in ("—", ""):
                continue
            body.append(cell if title == "meaning" else f"({cell})" if title == "type" else f"({title} {cell})")
        requests += [".TP", inline(row[0]) or r"\&", inline(" ".join(body)) if body else r"\&"]
    return requests


def _bullets(lines: list[str]) -> list[str]:
    items: list[str] = []
    for line in lines:
        if line.startswith("- "):
            items.append(line[2:])
        elif items:
            items[-1] += " " + line.strip()
    requests = []
    for item in items:
        requests += [r".IP \(bu 2", inline(item)]
    return requests


def roff_blocks(markdown: str) -> list[str]:
    """Markdown blocks -> roff requests."""
    requests: list[str] = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.splitlines()
        if lines[0].startswith("|"):
            requests += _table(lines)
        elif lines[0].startswith("- "):
            requests += _bullets(lines)
        elif lines[0].startswith("```"):
            requests += [".PP", ".RS 4", ".nf", *(escape(line) for line in lines[1:-1]), ".fi", ".RE"]
        else:
            requests += [".PP", inline(block)]
    return requests


def json_reference(readme: str, command: str) -> list[str] | None:
    """The roff of ``command``'s JSON OUTPUT section, or None when it has none."""
    sources = JSON_SOURCES.get(command)
    if sources is None:
        return None
    requests: list[str] = []
    for heading, start in sources:
        text = section(readme, heading)
        requests += roff_blocks(text[text.index(start) :] if start is not None else text)
    return requests


def read_readme(root: Path | None = None) -> str:
    from portscope.docs import project_root

    return ((root or project_root()) / "README.md").read_text(encoding="utf-8")
