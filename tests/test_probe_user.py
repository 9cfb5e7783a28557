"""``can-bind --probe --user``: the trial bind runs as exactly that user, with no capability, or not at all."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import portscope
from netns_util import new_netns
from portscope.cli import cli
from portscope.errors import UsageError
from portscope.model.records import Family, Proto
from portscope.rules.bind import NewSocket
from portscope.sources import netns, probe

NOBODY = 65534
PRIVILEGED_PORT = 80
PR_SET_SECUREBITS = 28
SECBIT_NO_SETUID_FIXUP = 1 << 2
CAP_NET_BIND_SERVICE = 10
ENV = {**os.environ, "PYTHONPATH": str(Path(portscope.__file__).parents[1])}
STATUS_CLEAN = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"


def nobody_socket(port: int = PRIVILEGED_PORT) -> NewSocket:
    return NewSocket(Proto.TCP, Family.IPV4, "127.0.0.1", port, uid=NOBODY, privileged=False, listen=False)


def in_child(body) -> str:
    """Run ``body()`` in a forked child; returns what it returned (a str), or the error it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            try:
                answer = body()
            except BaseException as exc:
                answer = f"raised {type(exc).__name__}: {exc}"
            os.write(write_end, answer.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("uid", ["4294967295", "4294967296", str(2**64)])
def test_uid_minus_one_and_beyond_is_refused(uid):
    argv = [sys.executable, "-m", "portscope", "can-bind", "--probe", "--user", uid, f"127.0.0.1:{PRIVILEGED_PORT}"]
    result = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 2
    assert result.stdout == "" and "out of range" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("uid", [4294967295, 2**32, -1])
def test_trial_bind_refuses_ids_setresuid_would_misread(uid):
    """Defence in depth: even past the parser, -1 ("unchanged") never reaches setresuid()."""
    with pytest.raises(UsageError, match="out of range"):
        probe.trial_bind(NewSocket(Proto.TCP, Family.IPV4, "127.0.0.1", 81, uid=uid, privileged=False), None)


@pytest.mark.live
def test_nobody_probe_on_a_privileged_port_gets_eacces_from_the_kernel():
    with new_netns("psprobeuser") as ns:
        asked = ["can-bind", "--netns", ns.name, "--probe", "--user", str(NOBODY), "--json"]
        result = CliRunner().invoke(cli, [*asked, f"127.0.0.1:{PRIVILEGED_PORT}"])
        assert result.exit_code == 1, result.output
        doc = json.loads(result.stdout)
        assert doc["probe"] == {**doc["probe"], "errno": "EACCES", "error": None}
        assert (doc["verdict"], doc["errno"]) == ("no", "EACCES")
        # an unprivileged port for the same user: the same switched child binds
        result = CliRunner().invoke(cli, [*asked, "127.0.0.1:40123"])
        assert (result.exit_code, json.loads(result.stdout)["probe"]["errno"]) == (0, None)


def _cap_eff() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1], 16) for line in handle if line.startswith("CapEff:"))


@pytest.mark.live
def test_no_capability_left_under_secbit_no_setuid_fixup():
    """With the kernel's implicit drop turned off, the probe child still ends with no capability."""
    libc = ctypes.CDLL(None, use_errno=True)

    def probe_under_the_securebit() -> str:
        if libc.prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0) != 0:
            return f"prctl failed: {os.strerror(ctypes.get_errno())}"

        def switch_only() -> str:  # what setresuid() alone leaves under this securebit
            os.setresuid(NOBODY, NOBODY, NOBODY)
            return str(_cap_eff() >> CAP_NET_BIND_SERVICE & 1)

        kept = in_child(switch_only)
        with new_netns("psprobesecbit") as ns:
            result = probe.trial_bind(nobody_socket(), netns.NetnsTarget(ns.path, None))
        return f"{kept} {result.errno} {result.error}"

    kept, errno, error = in_child(probe_under_the_securebit).split(" ", 2)
    assert kept == "1", "the securebit did not keep capabilities: this test shows nothing"
    assert (errno, error) == ("EACCES", "None")


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def test_the_switched_child_keeps_no_fd_but_the_result_pipe():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            spare = os.open("/dev/null", os.O_RDONLY)  # one of "root's" fds
            kept = probe._keep_only(write_end)
            listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
            left = sorted(fd for fd in listed if _is_open(fd))  # the listing's own fd is closed by now
            std = [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)]
            os.write(kept, json.dumps({"left": left, "kept": kept, "spare": spare, "std": std}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        answer = json.loads(os.read(read_end, 65536))
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert answer["left"] == [0, 1, 2, answer["kept"]]
    assert answer["spare"] not in answer["left"] and read_end not in answer["left"]
    assert answer["std"] == ["/dev/null"] * 3


@pytest.mark.parametrize(
    ("resuid", "resgid", "groups", "status", "problem"),
    [
        ((NOBODY,) * 3, (NOBODY,) * 3, [], STATUS_CLEAN, None),
        ((NOBODY,) * 3, (NOBODY,) * 3, [], STATUS_CLEAN + "CapAmb:\t0000000000000000\n", None),
        ((NOBODY, NOBODY, 0), (NOBODY,) * 3, [], STATUS_CLEAN, "uids are"),  # saved uid still root
        ((NOBODY,) * 3, (NOBODY, 0, NOBODY), [], STATUS_CLEAN, "gids are"),
        ((NOBODY,) * 3, (NOBODY,) * 3, [0], STATUS_CLEAN, "supplementary groups [0]"),
        ((NOBODY,) * 3, (NOBODY,) * 3, [], STATUS_CLEAN.replace("CapEff:\t0000000000000000", "CapEff:\t400"), "CapEff"),
        ((NOBODY,) * 3, (NOBODY,) * 3, [], STATUS_CLEAN.replace("CapPrm:\t0000000000000000", "CapPrm:\t1"), "CapPrm"),
        ((NOBODY,) * 3, (NOBODY,) * 3, [], STATUS_CLEAN + "CapAmb:\t0000000000000400\n", "CapAmb"),
        ((NOBODY,) * 3, (NOBODY,) * 3, [], STATUS_CLEAN.replace("CapEff:", "CapXyz:"), "no CapEff"),
        ((NOBODY,) * 3, (NOBODY,) * 3, [], STATUS_CLEAN.replace("CapEff:\t0000000000000000", "CapEff:\tzz"), "CapEff"),
    ],
)
def test_credential_verification(resuid, resgid, groups, status, problem):
    found = probe.credential_problem(NOBODY, NOBODY, resuid, resgid, groups, status)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
