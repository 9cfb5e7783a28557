"""systemd socket activation, imitated where PID 1 is not systemd: the init of a test-made pid namespace
opens the listener as fd 3, forks the service with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set for the pid the
service has in that namespace, and keeps its own copy (as systemd keeps a .socket unit's listener).
``who`` names the service that received it, next to the manager; ss -p is the oracle for the holders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from netns_util import REQUIRE_LIVE, require_live

pytestmark = pytest.mark.live
PORTSCOPE = (sys.executable, "-m", "portscope")

SERVICE = "import os, time; os.fstat(3); time.sleep(60)"
MANAGER = """
import os, socket, sys, time
listener = socket.socket()
listener.bind(("0.0.0.0", 0))
listener.listen()
os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)  # dup2 onto itself (the listener may be fd 3 already) changes nothing
child = os.fork()
if child == 0:
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="web")
    os.execv(sys.executable, [sys.executable, "-c", SERVICE])
print(os.getpid(), child, listener.getsockname()[1], flush=True)
time.sleep(60)
"""


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


@pytest.fixture
def activated():
    """(manager pid, service pid, port), as the host sees them, in a fresh network and pid namespace."""
    require_live()
    if shutil.which("unshare") is None:
        (pytest.fail if REQUIRE_LIVE else pytest.skip)("needs unshare (util-linux)")
    code = f"SERVICE = {SERVICE!r}\n{MANAGER}"
    outer = subprocess.Popen(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        inner_manager, inner_service, port = map(int, outer.stdout.readline().split())
        assert (inner_manager, inner_service) == (1, 2)  # PID 1 of its namespace, like systemd
        manager = int(_read(f"/proc/{outer.pid}/task/{outer.pid}/children").split()[0])
        service = int(_read(f"/proc/{manager}/task/{manager}/children").split()[0])
        for _ in range(100):  # until the service has exec'd and holds fd 3
            if _read(f"/proc/{service}/cmdline").endswith("time.sleep(60)\0"):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield manager, service, port
    finally:
        outer.kill()  # unshare's child is PID 1 of the namespace: its end ends every process in it
        outer.wait(timeout=10)


def test_who_names_the_service_a_pid_namespace_init_passed_its_listener_to(activated):
    manager, service, port = activated
    ss = subprocess.run(
        ["nsenter", "-t", str(manager), "-n", "ss", "-Htlnpe", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    assert {int(p) for p in re.findall(r"pid=(\d+)", ss)} == {manager, service}, ss
    (inode,) = {int(i) for i in re.findall(r"ino:(\d+)", ss)}

    result = subprocess.run(
        [*PORTSCOPE, "who", "--json", "--netns", str(manager), str(port)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    first, second = document["processes"]
    assert (first["pid"], second["pid"]) == (service, manager)  # the service that received it, then its manager
    assert first["reached_through"] == [
        {"pid": manager, "name": second["name"], "kind": "socket-activation", "address": "0.0.0.0", "port": port,
         "inode": inode}
    ]  # fmt: skip
    assert second["reached_through"] == [] and first["fds"] == [3]

    text = subprocess.run(
        [*PORTSCOPE, "who", "--netns", str(manager), str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": ""},
    )
    assert text.returncode == 0, text.stderr
    name = re.escape(second["name"])
    received = rf"reached +from {name}\[{manager}\] by socket activation \(fd name web\)"
    assert re.search(received, text.stdout), text.stdout
    assert re.search(rf"forwards +passed to \S+\[{service}\] \(fd name web\) +by socket activation", text.stdout)
    assert text.stdout.index(f"pid {service}") < text.stdout.index(f"pid {manager}")


def test_only_the_holder_that_received_it_is_the_service(activated):
    """The manager alone is no forwarder: the service is recognised by its own LISTEN_PID among the holders."""
    manager, service, port = activated
    from portscope.commands.places import Places
    from portscope.engine.snapshot import snapshot
    from portscope.model.query import PortRange, Query

    snap = snapshot(Query(local_ports=(PortRange(port, port),), netns=str(manager)))
    (sock,) = snap.sockets
    holders = snap.holders_of(sock)
    forwards = Places().forwards(sock, holders)
    assert [(holder.process.pid, forward.target_pid) for holder, forward in forwards] == [(manager, service)]
    assert Places().forwards(sock, tuple(h for h in holders if h.process.pid == manager)) == ()
