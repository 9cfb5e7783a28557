"""Notes about hidden owners name the processes that refused and why (rendered from JoinReport data)."""

from __future__ import annotations

import io

import pytest

from portscope.commands.names import Names
from portscope.model.records import JoinReport, Snapshot
from portscope.render.environment import Environment
from portscope.render.ls import render_listing
from portscope.render.notes import hidden_owner_advice, refused_list
from portscope.sources import join


def footer(report: JoinReport, root: bool) -> str:
    snap = Snapshot(sockets=(), holders={}, sources=(), join=report, netns=None, bound_visible=True)
    err = io.StringIO()
    names = Names(services=None, caller_is_root=root, lookup_user=str)
    render_listing(snap, Environment.detect(io.StringIO(), err), names, as_json=False)
    return err.getvalue()


def test_refusing_processes_are_named_and_escaped():
    report = JoinReport(
        joined=True,
        processes_denied=5,
        hidden_inodes=frozenset({1}),
        denied_processes=((812, "ss\x1b[31mhd", 0), (901, None, 70)),
        denied_reason="refused-to-root",
    )
    text = footer(report, root=True)
    assert "5 process(es) (pid 812 ss" in text and "pid 901 and 3 more) could not be inspected" in text
    assert "\x1b" not in text
    assert "refused even to root" in text


@pytest.mark.parametrize(
    ("root", "reason", "words"),
    [
        (False, "not-permitted", "run as root"),
        (True, "no-ptrace-capability", "CAP_SYS_PTRACE"),
        (True, "refused-to-root", "security module"),
        (True, None, "security module"),
    ],
)
def test_advice_follows_the_reason(root, reason, words):
    assert words in hidden_owner_advice(root, reason)


def test_nothing_named_without_refusals():
    assert refused_list(JoinReport(joined=True)) == ""


def test_denied_reason_as_root_without_ptrace(monkeypatch, tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001fffff7ffff\n")  # bit 19 (CAP_SYS_PTRACE) cleared
    real_open = open

    def fake_open(path, *args, **kwargs):
        return real_open(status if path == "/proc/self/status" else path, *args, **kwargs)

    monkeypatch.setattr(join.os, "geteuid", lambda: 0)
    monkeypatch.setattr("builtins.open", fake_open)
    assert join._denied_reason() == "no-ptrace-capability"
    monkeypatch.setattr(join.os, "geteuid", lambda: 1000)
    assert join._denied_reason() == "not-permitted"
