"""The public library interface: only names exported by ``portscope`` itself, against real sockets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import portscope
from netns_util import new_netns

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_exported_name_resolves() -> None:
    for name in portscope.__all__:
        assert getattr(portscope, name) is not None, name
    with pytest.raises(AttributeError):
        _ = portscope.not_a_public_name


def test_import_portscope_stays_cheap() -> None:
    # Every command imports the package: its public names must load only on first use.
    code = "import sys, portscope; print(sorted(m for m in sys.modules if m.startswith('portscope')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['portscope']"


@pytest.mark.live
def test_snapshot_who_and_can_bind_through_public_names() -> None:
    with new_netns() as ns:
        server = ns.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        snap = portscope.snapshot(portscope.Query(states=frozenset({portscope.State.LISTEN}), netns=ns.path))
        assert isinstance(snap, portscope.Snapshot)
        [sock] = [s for s in snap.sockets if s.local_port == port]
        assert isinstance(sock, portscope.Socket)
        assert (sock.proto, sock.family) == (portscope.Proto.TCP, portscope.Family.IPV4)
        assert sock.local_address == "127.0.0.1"
        assert [h.process.pid for h in snap.holders_of(sock)] == [os.getpid()]

        who = portscope.who_is_on(str(port), netns=ns.path)
        assert isinstance(who, portscope.WhoResult)
        assert who.found and [p.process.pid for p in who.processes] == [os.getpid()]

        report = portscope.check_bind(portscope.BindRequest(target=f"127.0.0.1:{port}", netns=ns.path))
        assert isinstance(report, portscope.BindReport)
        assert report.verdict is portscope.Verdict.NO
        assert report.errno == "EADDRINUSE"
        free = portscope.check_bind(portscope.BindRequest(target="127.0.0.1:0", netns=ns.path))
        assert free.verdict is portscope.Verdict.YES

        with pytest.raises(portscope.UsageError):
            portscope.who_is_on("70000", netns=ns.path)


def _readme_example() -> str:
    text = README.read_text()
    section = text.split("## Library use", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Library use section has a python example"
    return match.group(1)


@pytest.mark.live
def test_readme_library_example_runs() -> None:
    # Run in a fresh namespace so the listing is small and the port is ours alone.
    with new_netns() as ns:
        result = ns.run(sys.executable, "-c", _readme_example(), check=False)
    assert result.returncode == 0, result.stderr
    listing, who, verdict = result.stdout.splitlines()
    proto, address, port, holders = listing.split(" ", 3)
    assert (proto, address) == ("tcp", "127.0.0.1") and port.isdigit()
    pid = re.fullmatch(r"python[\w.]*\[(\d+)\]", holders).group(1)  # the example's own process holds it
    assert who == f"who: [{pid}]"
    assert verdict.startswith("no EADDRINUSE R-")
