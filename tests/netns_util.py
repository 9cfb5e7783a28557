"""Throw-away network namespaces for live tests, and the `ss` oracle.

A test creates sockets *inside* a namespace from its own process by entering the namespace only
while calling socket(): the socket stays in that namespace after we return to ours, and the test
process is its holder. Everything is torn down by the fixture: sockets, child pids, the namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import pytest

from portscope.sources import netns as netns_mod

REQUIRE_LIVE = bool(os.environ.get("PORTSCOPE_REQUIRE_LIVE"))


def live_capability_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "ss"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command (iproute2)"
    return None


def require_live() -> None:
    """Skip (or, in CI with PORTSCOPE_REQUIRE_LIVE=1, fail) when namespaces cannot be made."""
    missing = live_capability_missing()
    if missing:
        if REQUIRE_LIVE:
            pytest.fail(f"live test cannot run: {missing}")
        pytest.skip(missing)


@dataclass
class Netns:
    name: str
    sockets: list[socket.socket] = field(default_factory=list)
    children: list[int] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @contextlib.contextmanager
    def inside(self):
        with netns_mod.entered(netns_mod.NetnsTarget(self.path, None)):
            yield

    def socket(self, family=socket.AF_INET, kind=socket.SOCK_STREAM) -> socket.socket:
        with self.inside():
            sock = socket.socket(family, kind)
        self.sockets.append(sock)
        return sock

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, check=check, timeout=60
        )

    def fork_holder(self, *keep: socket.socket) -> int:
        """A child process that keeps inheriting ``keep`` (all our fds) until killed."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(120)
            finally:
                os._exit(0)
        self.children.append(pid)
        return pid

    def close(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


@contextlib.contextmanager
def new_netns(prefix: str = "pstest"):
    require_live()
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    ns = Netns(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield ns
    finally:
        ns.close()


# ---------------------------------------------------------------------------------------------------
# The ss oracle

SS_STATES = {
    "LISTEN": "listen",
    "ESTAB": "established",
    "SYN-SENT": "syn-sent",
    "SYN-RECV": "syn-recv",
    "FIN-WAIT-1": "fin-wait-1",
    "FIN-WAIT-2": "fin-wait-2",
    "TIME-WAIT": "time-wait",
    "CLOSE-WAIT": "close-wait",
    "LAST-ACK": "last-ack",
    "CLOSING": "closing",
    "UNCONN": "unconn",
}


@dataclass(frozen=True)
class SsSocket:
    proto: str
    state: str
    recv_q: int
    send_q: int
    local_address: str  # "*" = a wildcard ss did not spell out
    local_port: int
    interface: str | None
    remote_address: str | None
    remote_port: int | None
    uid: int
    inode: int


def _split_endpoint(text: str) -> tuple[str, str | None, str]:
    host, _, port = text.rpartition(":")
    interface = None
    if "%" in host:
        host, _, interface = host.partition("%")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, interface, port


def parse_ss(output: str, states: dict[str, str] | None = None) -> list[SsSocket]:
    """Parse ``ss -tuanHe`` output (``states``: more state words than ss's own)."""
    known = {**SS_STATES, **(states or {})}
    result = []
    for line in output.splitlines():
        fields = line.split()
        if not fields:
            continue
        proto, state, recv_q, send_q, local, peer = fields[:6]
        extras = fields[6:]
        uid = 0
        inode = 0
        for extra in extras:
            if extra.startswith("uid:"):
                uid = int(extra[4:])
            elif extra.startswith("ino:"):
                inode = int(extra[4:])
        laddr, lif, lport = _split_endpoint(local)
        raddr, _, rport = _split_endpoint(peer)
        no_peer = rport == "*"
        result.append(
            SsSocket(
                proto=proto,
                state=known[state],
                recv_q=int(recv_q),
                send_q=int(send_q),
                local_address=laddr,
                local_port=int(lport),
                interface=lif,
                remote_address=None if no_peer else raddr,
                remote_port=None if no_peer else int(rport),
                uid=uid,
                inode=inode,
            )
        )
    return result


def ss_sockets(ns: Netns, *args: str) -> list[SsSocket]:
    return parse_ss(ns.run("ss", "-tuanHe", *args).stdout)
