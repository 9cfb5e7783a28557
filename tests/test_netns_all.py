"""``--netns all``: every namespace's sockets exactly, each tagged with its namespace (ss inside each is the oracle)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from netns_util import new_netns, parse_ss
from portscope.engine.snapshot import snapshot
from portscope.model.query import ALL_NAMESPACES, Query
from test_random_mix import _add_unreachable_link, _key, build_random_mix

PORTSCOPE = (sys.executable, "-m", "portscope")  # this checkout's, not whichever is first on PATH
pytestmark = pytest.mark.live

UNNAMED_HOLDER = """
import socket, sys, time
held = []
for port in (31001, 31002):
    s = socket.socket(); s.bind(("0.0.0.0", port)); s.listen(); held.append(s)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::", 31003)); held.append(u)
print("ready", flush=True)
time.sleep(60)
"""


def _json_keys(objects, inode):
    return Counter(
        _key(
            o["proto"],
            o["state"],
            o["local_address"],
            o["local_port"],
            o["remote_address"],
            o["remote_port"],
            o["uid"],
            o["inode"],
        )
        for o in objects
        if o["netns"] == inode and o["state"] != "bound"
    )


def _ss_keys(output: str):
    return Counter(
        _key(r.proto, r.state, r.local_address, r.local_port, r.remote_address, r.remote_port, r.uid, r.inode)
        for r in parse_ss(output)
    )


@contextlib.contextmanager
def fd_only_namespace(via_proc: bool):
    """A network namespace kept alive only by an fd of this process (and its sockets, held here): no
    process inside, no mount. Opened through /proc/PID/ns/net (the link reads ``net:[N]``) or through an
    ``ip netns`` mount removed since (the link reads ``/``). Yields (fd path, sockets)."""
    with new_netns("psfd") as ns:
        if via_proc:
            inside = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "30"])
            for _ in range(100):
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{inside.pid}/ns/net").st_ino == os.stat(ns.path).st_ino:
                        break
                time.sleep(0.02)
            fd = os.open(f"/proc/{inside.pid}/ns/net", os.O_RDONLY)
            inside.kill()
            inside.wait()
        else:
            fd = os.open(ns.path, os.O_RDONLY)
        try:
            held = []
            for kind, address in ((socket.SOCK_STREAM, ("0.0.0.0", 31004)), (socket.SOCK_DGRAM, ("0.0.0.0", 31005))):
                sock = ns.socket(socket.AF_INET, kind)
                sock.bind(address)
                if kind == socket.SOCK_STREAM:
                    sock.listen()
                held.append(sock)
            subprocess.run(["ip", "netns", "del", ns.name], check=True)  # now only the fd and the sockets hold it
            yield f"/proc/{os.getpid()}/fd/{fd}"
        finally:
            os.close(fd)


def _listing(*options: str) -> list[dict]:
    listing = subprocess.run(
        [*PORTSCOPE, "ls", "-a", "--netns", ALL_NAMESPACES, "--json", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)


def test_ls_netns_all_is_the_union_of_ss_in_every_namespace() -> None:
    with (
        new_netns("psall") as first,
        new_netns("psall") as second,
        new_netns("psall") as third,
        fd_only_namespace(via_proc=True) as by_link,
        fd_only_namespace(via_proc=False) as by_removed_mount,
    ):
        for seed, ns in enumerate((first, second, third), start=11):
            _add_unreachable_link(ns)
            build_random_mix(ns, random.Random(seed), count=25)
        # a namespace with no name, alive only through the process inside it
        unnamed = subprocess.Popen(
            ["unshare", "--net", sys.executable, "-c", UNNAMED_HOLDER], stdout=subprocess.PIPE, text=True
        )
        try:
            assert unnamed.stdout.readline().strip() == "ready"
            time.sleep(0.05)
            expected = {os.stat(ns.path).st_ino: ns.run("ss", "-tuanHe").stdout for ns in (first, second, third)}
            unnamed_inode = os.stat(f"/proc/{unnamed.pid}/ns/net").st_ino
            expected[unnamed_inode] = subprocess.run(
                ["nsenter", "-t", str(unnamed.pid), "-n", "ss", "-tuanHe"], capture_output=True, text=True, check=True
            ).stdout
            held = {}
            for path in (by_link, by_removed_mount):
                held[os.stat(path).st_ino] = path
                expected[os.stat(path).st_ino] = subprocess.run(
                    ["nsenter", f"--net={path}", "ss", "-tuanHe"], capture_output=True, text=True, check=True
                ).stdout
            # with processes the /proc walk finds the fd-held namespaces; without, the discovery's own pass
            for objects in (_listing(), _listing("--no-processes")):
                for inode, ss_output in expected.items():
                    assert _json_keys(objects, inode) == _ss_keys(ss_output), inode
                assert len(_json_keys(objects, unnamed_inode)) == 3
                assert all(len(_json_keys(objects, inode)) == 2 for inode in held)
                # every socket once, in one namespace: an inode is never listed twice or under two namespaces
                inodes = [o["inode"] for o in objects if o["inode"] is not None]
                assert len(inodes) == len(set(inodes))
                assert all(isinstance(o["netns"], int) for o in objects)
            objects = _listing()
            # holders are joined across namespaces by the one /proc walk
            ours = [o for o in objects if o["netns"] == unnamed_inode]
            assert {p["pid"] for o in ours for p in o["processes"]} == {unnamed.pid}
            for inode in held:
                pids = {p["pid"] for o in objects if o["netns"] == inode for p in o["processes"]}
                assert pids == {os.getpid()}
            # the library call gives the same namespaces, each once
            snap = snapshot(Query(netns=ALL_NAMESPACES))
            seen = [info.inode for info in snap.namespaces]
            assert len(seen) == len(set(seen)) and set(expected) <= set(seen)
            assert {s.netns for s in snap.sockets} <= set(seen)
            assert [info.names for info in snap.namespaces if info.inode == os.stat(first.path).st_ino] == [
                (first.name,)
            ]
        finally:
            unnamed.kill()
            unnamed.wait()


def test_table_has_a_namespace_column_only_when_rows_come_from_several() -> None:
    with new_netns("pscol") as first, new_netns("pscol") as second:
        held = []
        for ns in (first, second):
            sock = ns.socket()
            sock.bind(("127.0.0.1", 31010))
            sock.listen()
            held.append(sock)
        try:
            table = subprocess.run(
                [*PORTSCOPE, "ls", "-l", "-n", "--netns", ALL_NAMESPACES, "--sport", "31010"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "COLUMNS": ""},
            )
            assert table.returncode == 0, table.stderr
            header, *rows = table.stdout.splitlines()
            assert header.split()[:2] == ["Netns", "Proto"]
            assert sorted(row.split()[0] for row in rows) == sorted([first.name, second.name])
            one = subprocess.run(
                [*PORTSCOPE, "ls", "-l", "-n", "--netns", first.name, "--sport", "31010"],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "COLUMNS": ""},
            )
            assert one.stdout.split()[0] == "Proto"
        finally:
            for sock in held:
                sock.close()


NOBODY = 65534


@pytest.fixture(scope="module")
def nobody_copy():
    """The library and click, world-readable, for the system Python run as uid 65534."""
    import shutil
    import stat
    import tempfile
    from pathlib import Path

    import click

    if not os.path.exists("/usr/bin/python3") or shutil.which("setpriv") is None:
        pytest.skip("needs /usr/bin/python3 and setpriv to run as another user")
    top = tempfile.mkdtemp(prefix="portscope-nsall-")
    try:
        skip_cache = shutil.ignore_patterns("__pycache__")
        source = Path(__file__).resolve().parents[1] / "src" / "portscope"
        shutil.copytree(source, Path(top) / "portscope", ignore=skip_cache)
        shutil.copytree(Path(click.__file__).parent, Path(top) / "click", ignore=skip_cache)
        for directory, _, files in os.walk(top):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_as_another_user_unreadable_namespaces_are_named_and_the_rest_listed(nobody_copy) -> None:
    with new_netns("psnobody") as ns:
        held = ns.socket()
        held.bind(("127.0.0.1", 31020))
        held.listen()
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "env"]
        command = [f"PYTHONPATH={nobody_copy}", "PYTHONDONTWRITEBYTECODE=1", "/usr/bin/python3", "-m", "portscope"]
        result = subprocess.run(
            [*as_nobody, *command, "ls", "-l", "--netns", "all", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        ns_inode = os.stat(ns.path).st_ino
    assert result.returncode == 0, result.stderr
    objects = json.loads(result.stdout)
    own = os.stat("/proc/self/ns/net").st_ino  # this test runs in the host's namespace, as nobody's process does
    assert objects and {o["netns"] for o in objects} == {own}
    assert not any(o["netns"] == ns_inode for o in objects)
    notes = [line for line in result.stderr.splitlines() if line.startswith("portscope: note: ")]
    unread = [line for line in notes if "could not be read" in line]
    assert len(unread) == 1 and "needs CAP_SYS_ADMIN" in unread[0] and ns.name in unread[0], result.stderr
    assert any("process(es) of other users (root) could not be looked at" in line for line in notes), result.stderr


def test_nothing_readable_at_all_is_exit_4(monkeypatch, capsys) -> None:
    from portscope.cli import main
    from portscope.engine import snapshot as engine
    from portscope.errors import SourceError

    def refuse(query, ref, parallelism, walking_ahead):
        raise SourceError(ref.path, "cannot enter network namespace: Operation not permitted")

    monkeypatch.setattr(engine, "_collect_namespace", refuse)
    with pytest.raises(SystemExit) as exited:
        main(["ls", "--netns", "all", "--no-processes"])
    assert exited.value.code == 4
    assert "no network namespace could be read" in capsys.readouterr().err
