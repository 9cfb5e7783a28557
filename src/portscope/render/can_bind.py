"""Rendering of ``portscope can-bind``: a JSON object, or a verdict-first text for people.

The report holds codes; :mod:`portscope.render.bind_words` makes their words. Text is built by
:func:`text_lines` (pure: given a width and height it wraps and summarises to fit); only
:func:`render_can_bind` writes.
"""

from __future__ import annotations

import errno as errno_mod
import os
import textwrap
from typing import Any

from portscope.commands.can_bind import BindReport
from portscope.commands.names import Names
from portscope.render import bind_words as words
from portscope.render import jsonout
from portscope.render.bind_words import endpoint
from portscope.render.environment import Environment
from portscope.render.text import safe_text
from portscope.rules.bind_actions import BlockerGroup, group_blockers

# Keys of the can-bind --json object, in order (README documents each; a test compares).
JSON_KEYS = (
    "verdict",
    "errno",
    "stage",
    "rule",
    "blockers",
    "explanation",
    "fixes",
    "model_verdict",
    "probe",
    "uncertainty",
    "bsd_note",
    "request",
    "reasons",
    "actions",
    "uncertain_because",
    "bsd_note_code",
)
_MIN_ACTIONS = 3
PROSE_WIDTH = 100  # a terminal too short for everything still gets the verdict, one blocker and 3 actions

_VERDICT_STYLE = {"yes": "bold green", "no": "bold red", "uncertain": "bold yellow"}


def report_object(report: BindReport, services=None, places=None) -> dict[str, Any]:
    """The can-bind --json document (schema in README)."""
    new = report.new
    probe = None
    if report.probe is not None:
        probe = {
            "errno": report.probe.errno,
            "stage": report.probe.stage.value if report.probe.stage else None,
            "agrees": report.probe_agrees,
            "error": report.probe.error,
        }
    return {
        "verdict": report.verdict.value,
        "errno": report.errno,
        "stage": report.stage.value if report.stage else None,
        "rule": report.rule,
        "blockers": [
            jsonout.socket_object(b.socket, b.holders, services, places)
            for b in report.blockers
            if b.socket is not None
        ],
        "explanation": explanation_text(report),
        "fixes": words.fixes(report.actions),
        "model_verdict": report.model.verdict.value,
        "probe": probe,
        "uncertainty": [words.uncertainty_text(u) for u in report.uncertainty],
        "bsd_note": words.BSD_NOTES[report.bsd_note] if report.bsd_note else None,
        "request": {
            "proto": new.proto.value,
            "family": new.family.value,
            "address": new.address,
            "port": new.port,
            "resolved_from": report.resolved_from,
            "scope_id": new.scope_id or None,
            "device": report.device_name,
            "reuseaddr": new.reuseaddr,
            "reuseport": new.reuseport,
            "v6only": new.v6only if new.family.value == "ipv6" else None,
            "freebind": new.freebind,
            "uid": new.uid,
            "listen": new.listen,
            "netns": report.netns,
        },
        "reasons": [words.coded_object(r, "code") for r in report.reasons],
        "actions": [words.coded_object(a, "kind") for a in report.actions],
        "uncertain_because": [words.coded_object(u, "code") for u in report.uncertainty],
        "bsd_note_code": report.bsd_note.value if report.bsd_note else None,
    }


def explanation_text(report: BindReport) -> str:
    """The model's reasons in words, after what a trial bind said where it ran."""
    text = words.explanation(report.reasons)
    probe = report.probe
    if probe is None or probe.error is not None:
        return text
    kernel = f"bind() failed with {probe.errno}" if probe.errno else "bind() succeeded"
    if report.probe_agrees is False:
        return f"The trial bind disagrees with the model: {kernel}. The model said: {text}"
    if report.probe_agrees is None:
        return f"The trial bind settled it: {kernel}. {text}"
    return text


def _errno_words(name: str | None) -> str:
    code = getattr(errno_mod, name, None) if name else None
    return f"{name} ({os.strerror(code)})" if code is not None else str(name)


def _subject(report: BindReport) -> str:
    new = report.new
    where = endpoint(new.family, new.address, new.port)
    if report.resolved_from:
        where += f" ({report.resolved_from})"
    options = [
        name
        for name, on in (
            ("SO_REUSEADDR", new.reuseaddr),
            ("SO_REUSEPORT", new.reuseport),
            ("IPV6_V6ONLY", new.family.value == "ipv6" and new.v6only),
            (f"device {report.device_name}", bool(report.device_name)),
            ("IP_FREEBIND", new.freebind),
        )
        if on
    ]
    text = f"{new.proto.value} {where}"
    if options:
        text += " with " + ", ".join(options)
    return text + f", uid {new.uid}"


def verdict_line(report: BindReport) -> str:
    subject = _subject(report)
    calls = "bind() and listen()" if report.new.listen else "bind()"
    if report.verdict.value == "yes":
        return f"YES: {calls} of {subject} would succeed"
    stage = f"{report.stage.value}()" if report.stage else "bind()"
    if report.verdict.value == "no":
        return f"NO: {stage} of {subject} fails with {_errno_words(report.errno)}"
    return f"UNCERTAIN: {stage} of {subject} may fail with {_errno_words(report.errno)}"


Line = tuple[str, str | None]  # (text, rich style); the plain writer ignores the styles


def _blocker_lines(groups: list[BlockerGroup], shown: int, flags: bool = True) -> list[Line]:
    lines: list[Line] = [("blocking:", "bold")]
    for group in groups[:shown]:
        lines.append((f"  {words.group_text(group)}", None))
        if flags:
            lines.append((f"      {words.group_flags(group)}", "dim"))
    rest = groups[shown:]
    if rest:
        sockets = sum(len(g.owners) for g in rest)
        more = f"  ... and {sockets:,} more socket(s) of {len(rest):,} other holder(s) (--json lists all)"
        lines.append((more, None))
    return lines


def _lines(
    report: BindReport, groups: list[BlockerGroup], shown_groups: int, shown_actions: int, terse: bool = False
) -> list[Line]:
    lines: list[Line] = [(verdict_line(report), _VERDICT_STYLE[report.verdict.value])]
    lines.append((f"rule {report.rule}: {explanation_text(report)}", None))
    if report.probe is not None:
        probe = report.probe
        if probe.error:
            lines.append((f"probe: not run: {probe.error}", "yellow"))
        else:
            answer = f"failed with {probe.errno}" if probe.errno else "succeeded"
            agreement = {True: "agrees with the model", False: "DISAGREES with the model", None: "settles it"}
            style = "red" if report.probe_agrees is False else None
            lines.append((f"probe: the trial bind() {answer}; {agreement[report.probe_agrees]}", style))
            if report.probe_agrees is False:
                lines.append((f"model said: {report.model.verdict.value} ({report.model.errno or 'no error'})", None))
    if report.uncertainty:
        lines.append(("why uncertain:", "bold"))
        lines += [(f"  - {words.uncertainty_text(u)}", None) for u in report.uncertainty]
    if groups:
        lines += _blocker_lines(groups, shown_groups, flags=not terse)
    if report.actions:
        fixes = words.fixes(report.actions)
        lines.append(("what would make it work:", "bold"))
        lines += [(f"  - {fix}", None) for fix in fixes[:shown_actions]]
        if len(fixes) > shown_actions:
            lines.append((f"  ... and {len(fixes) - shown_actions} more (--json lists all)", None))
    if report.bsd_note and report.verdict.value != "yes" and not terse:
        lines.append((f"Linux vs BSD: {words.BSD_NOTES[report.bsd_note]}", "dim"))
    for warning in report.warnings:
        lines.append((f"note: {warning}", "yellow"))
    return lines


def _wrapped(lines: list[Line], width: int | None) -> list[Line]:
    if width is None:
        return lines
    return [(piece, style) for text, style in lines for piece in _wrap(text, width)]


def text_lines(report: BindReport, width: int | None = None, height: int | None = None) -> list[Line]:
    """The text, verdict first; wrapped to ``width`` and summarised to ``height`` lines where given.

    Blockers are grouped by holder. To fit a height, fewer groups are shown (the rest counted), then
    fewer actions (never below a few); ``--json`` always lists everything.
    """
    groups = group_blockers(report.blockers)
    shown_groups, shown_actions = len(groups), len(report.actions)
    terse = False  # the sockets' flags and the BSD note left out: the last step before running over
    lines = _wrapped(_lines(report, groups, shown_groups, shown_actions), width)
    while height is not None and len(lines) > height:
        overflow = len(lines) - height
        if shown_groups > 1:
            shown_groups = max(1, shown_groups - max(1, (overflow + 1) // 2))  # two lines per group
        elif shown_actions > _MIN_ACTIONS:
            shown_actions = max(_MIN_ACTIONS, shown_actions - overflow)
        elif not terse:
            terse = True
        else:
            break
        lines = _wrapped(_lines(report, groups, shown_groups, shown_actions, terse), width)
    return lines


def render_can_bind(report: BindReport, env: Environment, names: Names, *, as_json: bool) -> None:
    out = env.stdout
    if as_json:
        jsonout.dump(report_object(report, names.services, names.places), out)
        return
    # The sentences carry process, user and interface names: escaped here, where they become output.
    if env.is_tty:
        from rich.text import Text

        width = env.width or 80
        height = max(10, (env.height or 24) - 1)  # a line for the prompt that follows
        console = env.console(width)
        # sentences read badly in 200-column lines: wrapped at about 100, as who's prose
        for text, style in text_lines(report, min(width, PROSE_WIDTH), height):
            console.print(Text(safe_text(text), style=style or ""), soft_wrap=True)
        return
    # a pipe gets whole lines, for grep; fitted when COLUMNS is set (watch), coloured when asked
    for text, style in text_lines(report, min(env.width, PROSE_WIDTH) if env.width else None):
        out.write(env.paint(safe_text(text), style) + "\n")


def _wrap(text: str, width: int) -> list[str]:
    """Word-wrap for a terminal, continuing under the text of an item rather than its bullet."""
    if len(text) <= width:
        return [text]
    stripped = text.lstrip(" ")
    indent = len(text) - len(stripped)
    if stripped.startswith("- "):
        hang = indent + 2
    elif indent:
        hang = indent
    else:
        hang = 2
    return textwrap.wrap(
        text, width=width, subsequent_indent=" " * hang, break_long_words=True, break_on_hyphens=False
    ) or [text]
