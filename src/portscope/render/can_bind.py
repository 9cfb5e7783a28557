"""Rendering of ``portscope can-bind``: a JSON object, or a verdict-first text for people."""

from __future__ import annotations

import errno as errno_mod
import os
import textwrap
from typing import Any

from portscope.commands.can_bind import BindReport
from portscope.commands.names import Names
from portscope.render import jsonout
from portscope.render.bind_words import endpoint, owner_flags, processes_text, state_name
from portscope.render.environment import Environment

_VERDICT_STYLE = {"yes": "bold green", "no": "bold red", "uncertain": "bold yellow"}


def report_object(report: BindReport, services=None) -> dict[str, Any]:
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
            jsonout.socket_object(b.socket, b.holders, services) for b in report.blockers if b.socket is not None
        ],
        "explanation": report.explanation,
        "fixes": list(report.fixes),
        "model_verdict": report.model.verdict.value,
        "probe": probe,
        "uncertainty": list(report.uncertainty),
        "bsd_note": report.bsd_note,
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
    }


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


def text_lines(report: BindReport) -> list[tuple[str, str | None]]:
    """(line, rich style) pairs; the plain writer ignores the styles."""
    lines: list[tuple[str, str | None]] = [(verdict_line(report), _VERDICT_STYLE[report.verdict.value])]
    lines.append((f"rule {report.rule}: {report.explanation}", None))
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
        lines += [(f"  - {reason}", None) for reason in report.uncertainty]
    if report.blockers:
        lines.append(("blocking:", "bold"))
        for owner in report.blockers:
            where = endpoint(owner.family, owner.address, owner.port)
            device = f"%{owner.socket.interface}" if owner.socket is not None and owner.socket.interface else ""
            lines.append((f"  {state_name(owner)} {where}{device}  {processes_text(owner)}", None))
            lines.append((f"      {owner_flags(owner)}", "dim"))
    if report.fixes:
        lines.append(("what would make it work:", "bold"))
        lines += [(f"  - {fix}", None) for fix in report.fixes]
    if report.bsd_note and report.verdict.value != "yes":
        lines.append((f"Linux vs BSD: {report.bsd_note}", "dim"))
    for warning in report.warnings:
        lines.append((f"note: {warning}", "yellow"))
    return lines


def render_can_bind(report: BindReport, env: Environment, names: Names, *, as_json: bool) -> None:
    out = env.stdout
    if as_json:
        jsonout.dump(report_object(report, names.services), out)
        return
    lines = text_lines(report)
    if env.is_tty:
        from rich.text import Text

        width = env.width or 80
        console = env.console(width)
        for text, style in lines:
            for piece in _wrap(text, width):
                console.print(Text(piece, style=style or ""), soft_wrap=True)
        return
    for text, _ in lines:  # a pipe gets whole lines, for grep
        out.write(text + "\n")


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
