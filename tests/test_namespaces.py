"""Discovery of every network namespace (``--netns all``): processes, nsfs mounts and open fds."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from netns_util import new_netns
from portscope.sources.namespaces import discover, parse_nsfs_mounts


def test_parse_nsfs_mounts_reads_net_mounts_only() -> None:
    text = (
        "22 45 0:4 net:[4026532178] /run/netns/blue rw shared:2 - nsfs nsfs rw\n"
        "23 45 0:4 net:[4026532179] /run/my\\040ns rw - nsfs nsfs rw\n"
        "24 45 0:4 mnt:[4026532180] /run/mntns rw - nsfs nsfs rw\n"
        "25 45 0:22 / /proc rw,nosuid - proc proc rw\n"
        "garbage line\n"
        "26 45 0:4 net:[12x] /run/bad rw - nsfs nsfs rw\n"
    )
    assert parse_nsfs_mounts(text) == [("/run/netns/blue", 4026532178), ("/run/my ns", 4026532179)]


def _process_in_new_netns() -> subprocess.Popen:
    """A process alone in a new network namespace (unshare(1) execs sleep there)."""
    child = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    own = os.stat("/proc/self/ns/net").st_ino
    deadline = time.monotonic() + 10
    while os.stat(f"/proc/{child.pid}/ns/net").st_ino == own:
        assert time.monotonic() < deadline, "unshare did not switch namespaces"
        time.sleep(0.01)
    return child


@pytest.mark.live
def test_discover_finds_process_mount_and_fd_namespaces() -> None:
    with new_netns() as mounted:
        mounted_inode = os.stat(mounted.path).st_ino
        # a namespace kept alive only by an open fd: mount it, open it, unmount it
        name = f"pstest-fd-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        held_fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        subprocess.run(["ip", "netns", "del", name], check=True, capture_output=True)
        child = _process_in_new_netns()
        try:
            fd_inode = os.fstat(held_fd).st_ino
            child_inode = os.stat(f"/proc/{child.pid}/ns/net").st_ino
            found = {ref.inode: ref for ref in discover().namespaces}

            assert found[mounted_inode].names == (mounted.name,)
            assert mounted.path in found[mounted_inode].mounts
            assert found[child_inode].pid == child.pid
            assert found[fd_inode].path == f"/proc/{os.getpid()}/fd/{held_fd}"
            assert found[fd_inode].pid is None
            for inode in (mounted_inode, fd_inode, child_inode):  # each path leads to its namespace
                assert os.stat(found[inode].path).st_ino == inode
        finally:
            os.close(held_fd)
            child.kill()
            child.wait()
