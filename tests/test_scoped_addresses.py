"""Scoped link-local addresses, live: who, ls --src and can-bind read [fe80::1%IF] alike and match the device.

The namespace has the same link-local address on two interfaces (va, vb) with a listener on each,
so only the zone id tells them apart; the kernel's bind() is the oracle for can-bind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from netns_util import new_netns
from portscope.cli import cli

pytestmark = pytest.mark.live

PORT = 5557


def run(ns, *argv: str):
    return CliRunner().invoke(cli, [*argv, "--netns", ns.name])


def exit_status(ns, *argv: str) -> tuple[int, str]:
    """The real command's exit status and stderr (errors become statuses in the entry point)."""
    done = subprocess.run(
        [sys.executable, "-m", "portscope", *argv, "--netns", ns.name], capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stderr


def listener(ns, device: str) -> socket.socket:
    with ns.inside():
        index = socket.if_nametoindex(device)
    sock = ns.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.bind(("fe80::1", PORT, 0, index))
    sock.listen(4)
    return sock


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def who_inodes(ns, target: str) -> tuple[int, set[int]]:
    result = run(ns, "who", target, "--json")
    if result.exit_code not in (0, 1):
        return result.exit_code, set()
    return result.exit_code, {s["inode"] for s in json.loads(result.stdout)["sockets"]}


def test_scoped_forms_match_the_device():
    with new_netns("psscope") as ns:
        ns.run("ip", "link", "add", "va", "type", "veth", "peer", "name", "vb")
        for device in ("va", "vb"):
            ns.run("ip", "addr", "add", "fe80::1/64", "dev", device, "nodad")
        on_a, on_b = listener(ns, "va"), listener(ns, "vb")
        with ns.inside():
            index_a = socket.if_nametoindex("va")

        assert who_inodes(ns, f"[fe80::1%va]:{PORT}") == (0, {inode(on_a)})
        assert who_inodes(ns, f"[fe80::1%vb]:{PORT}") == (0, {inode(on_b)})
        assert who_inodes(ns, f"[fe80::1%{index_a}]:{PORT}") == (0, {inode(on_a)})
        assert who_inodes(ns, f"[fe80::1]:{PORT}") == (0, {inode(on_a), inode(on_b)})
        assert who_inodes(ns, f"[fe80::1%va]:{PORT + 1}")[0] == 1
        status, error = exit_status(ns, "who", f"[fe80::1%nosuchif]:{PORT}")
        assert status == 2 and "unknown interface 'nosuchif'" in error
        text = run(ns, "who", f"[fe80::1%va]:{PORT}").stdout
        assert "fe80::1%va" in text

        def listed(*options: str) -> set[int]:
            result = run(ns, "ls", "-l", "--json", "-n", *options)
            assert result.exit_code == 0, result.output
            return {s["inode"] for s in json.loads(result.stdout)}

        assert listed("--src", "[fe80::1%va]") == {inode(on_a)}
        assert listed("--src", "fe80::%vb/64") == {inode(on_b)}
        assert listed("--src", "fe80::1") == {inode(on_a), inode(on_b)}
        # /proc does not show the device: the address alone decides there
        assert listed("--src", "[fe80::1%va]", "--backend", "proc") == {inode(on_a), inode(on_b)}
        assert exit_status(ns, "ls", "--src", "[fe80::1%nosuchif]")[0] == 2

        # can-bind reads the same form; the kernel agrees
        busy = run(ns, "can-bind", f"[fe80::1%va]:{PORT}", "--json")
        assert busy.exit_code == 1 and json.loads(busy.stdout)["errno"] == "EADDRINUSE"
        free = run(ns, "can-bind", f"[fe80::1%va]:{PORT + 2}", "--json", "--probe")
        assert free.exit_code == 0 and json.loads(free.stdout)["probe"]["agrees"] is True
