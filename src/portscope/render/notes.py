"""Sentences about what could not be seen, shared by the ls and who renderers."""

from __future__ import annotations

from portscope.model.records import JoinReport
from portscope.render.text import safe_text

_ROOT_REFUSALS = {
    "no-ptrace-capability": (
        "portscope runs without CAP_SYS_PTRACE (dropped, as in most containers), which reading another "
        "process's fds needs; run it with that capability to see them"
    ),
    "refused-to-root": "access was refused even to root (a security module or a ptrace restriction)",
}


def hidden_owner_advice(caller_is_root: bool, reason: str | None = None) -> str:
    """What to do about processes that could not be inspected: root sees all, unless something refuses even root."""
    if not caller_is_root:
        return "run as root to see them"
    return _ROOT_REFUSALS.get(reason or "refused-to-root", _ROOT_REFUSALS["refused-to-root"])


def refused_list(join: JoinReport) -> str:
    """``pid 1 init, pid 812 sshd and 4 more``: the processes that refused, as far as named; "" if none is."""
    if not join.denied_processes:
        return ""
    named = [f"pid {pid} {safe_text(name)}" if name else f"pid {pid}" for pid, name, _ in join.denied_processes]
    more = join.processes_denied - len(named)
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def refused_processes(join: JoinReport) -> str:
    """`` (pid 1 init, pid 812 sshd and 4 more)``, to follow "N processes"; "" if none is named."""
    listed = refused_list(join)
    return f" ({listed})" if listed else ""
