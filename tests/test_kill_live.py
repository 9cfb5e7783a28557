"""portscope kill live, in namespaces the tests create, on processes the tests fork (and reap, by pid).

The oracles: the kernel's own word on each worker (waitpid: which signal ended it, or that it still runs),
and ss for what is left on the port.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import click
import psutil
import pytest
from click.testing import CliRunner

from netns_util import Netns, new_netns, require_live, ss_sockets
from portscope.cli import cli
from portscope.commands.kill import Outcome, execute_plan, plan_kill
from portscope.rules.kill import Refusal
from portscope.sources.terminate import Identity
from test_json_keys import document_keys, section, socket_keys

pytestmark = pytest.mark.live

SYSTEM_PYTHON = "/usr/bin/python3"  # nobody cannot read /root/.pyenv: the library and psutil are copied for it
NOBODY = 65534
SRC = str(Path(__file__).resolve().parents[1] / "src")


# ---------------------------------------------------------------------------------------------------
# Workers: forked by the test, reaped by the test (a reaped pid is dropped at once, never signalled later)


def fork_worker(ns: Netns, *, ignore_term: bool = False, name: bytes | None = None) -> int:
    """A child that inherits the test's sockets (the listener) and sleeps; optionally deaf to SIGTERM. Returns once
    its signal dispositions are set (a shell's background job may start with SIGINT ignored)."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if name is not None:
                with open("/proc/self/comm", "wb") as comm:
                    comm.write(name)
            os.write(ready_write, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    ns.children.append(pid)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"x"
    finally:
        os.close(ready_read)
    return pid


def ended_by(ns: Netns, pid: int, timeout: float = 5.0) -> int | None:
    """The signal that ended ``pid`` (reaping it), or None if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            ns.children.remove(pid)
            return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def running(pid: int) -> bool:
    return os.waitpid(pid, os.WNOHANG) == (0, 0)


def shared_listener(ns: Netns, workers: int = 3, *, stubborn: int = 0, port: int = 0, address: str = "127.0.0.1"):
    """A TCP listener inherited by ``workers`` children (the last ``stubborn`` ignore SIGTERM), no longer held by
    the test itself."""
    listener = ns.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(16)
    port = listener.getsockname()[1]
    pids = [fork_worker(ns, ignore_term=index >= workers - stubborn) for index in range(workers)]
    listener.close()
    return port, pids


def kill(ns: Netns, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["kill", "--netns", ns.name, *args], catch_exceptions=False)
    return result.exit_code, result.stdout


def kill_json(ns: Netns, *args: str) -> tuple[int, dict]:
    code, out = kill(ns, "--json", *args)
    return code, json.loads(out)


def listeners(ns: Netns, port: int) -> list:
    return [s for s in ss_sockets(ns, f"sport = :{port}") if s.state == "listen"]


def portscope_command(ns: Netns, *args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "portscope", "kill", "--netns", ns.name, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=stdin,
    )


# ---------------------------------------------------------------------------------------------------
# Freeing a port


def test_shared_listener_every_worker_signalled_and_port_freed():
    with new_netns("pskill") as ns:
        port, pids = shared_listener(ns, 3)
        other_port, (other,) = shared_listener(ns, 1)  # a neighbour that must not be touched
        code, document = kill_json(ns, str(port), "--yes")
        assert code == 0, document
        assert sorted(t["pid"] for t in document["targets"]) == sorted(pids)
        for target in document["targets"]:
            assert target["outcome"] == "exited" and target["signals"] == ["SIGTERM"]
            assert target["role"] == "holder" and target["reason"] is None
        assert document["port_free"] is True and document["left"] == []
        assert [ended_by(ns, pid) for pid in pids] == [signal.SIGTERM] * 3
        assert listeners(ns, port) == []
        assert running(other) and len(listeners(ns, other_port)) == 1


def test_stubborn_worker_is_escalated_to_sigkill():
    with new_netns("pskill") as ns:
        port, pids = shared_listener(ns, 3, stubborn=1)
        started = time.monotonic()
        code, text = kill(ns, str(port), "--yes", "--timeout", "0.5")
        assert code == 0, text
        assert time.monotonic() - started >= 0.5
        assert [ended_by(ns, pid) for pid in pids] == [signal.SIGTERM, signal.SIGTERM, signal.SIGKILL]
        assert re.search(rf"killed\s+\S+\[{pids[2]}\] .*\[SIGTERM, SIGKILL after 0.5s\]", text), text
        assert "is free" in text and listeners(ns, port) == []


def test_no_escalate_leaves_the_stubborn_worker_and_says_so():
    with new_netns("pskill") as ns:
        port, pids = shared_listener(ns, 2, stubborn=1)
        code, document = kill_json(ns, str(port), "--yes", "--timeout", "0.3", "--no-escalate")
        assert code == 5
        outcomes = {t["pid"]: (t["outcome"], t["signals"]) for t in document["targets"]}
        assert outcomes == {pids[0]: ("exited", ["SIGTERM"]), pids[1]: ("survived", ["SIGTERM"])}
        assert document["port_free"] is False
        (left,) = document["left"]
        assert left["state"] == "listen" and [p["pid"] for p in left["processes"]] == [pids[1]]
        assert ended_by(ns, pids[0]) == signal.SIGTERM and running(pids[1])


def test_other_signal_and_stopped_process_gets_sigcont():
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)
        os.kill(pid, signal.SIGSTOP)
        assert wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED)
        code, document = kill_json(ns, str(port), "--yes", "--signal", "INT")
        assert code == 0, document
        (target,) = document["targets"]
        assert target["signals"] == ["SIGINT", "SIGCONT"] and target["outcome"] == "exited"
        assert ended_by(ns, pid) == signal.SIGINT


def test_a_client_survives_unless_include_clients():
    with new_netns("pskill") as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # a client bound to the same port on another address: its connection is FROM that local port
        bound = ns.socket()
        bound.bind(("127.0.0.2", port))
        bound.connect(("127.0.0.1", port))
        # an ordinary client: an ephemeral local port, the port only as its peer's
        ephemeral = ns.socket()
        ephemeral.connect(("127.0.0.1", port))
        accepted = [listener.accept()[0] for _ in range(2)]
        server = fork_worker(ns)
        for sock in (listener, *accepted):
            sock.close()
        bound_client = fork_worker(ns)
        bound.close()
        ephemeral_client = fork_worker(ns)
        ephemeral.close()

        code, text = kill(ns, str(port), "--yes")
        assert code == 0, text
        assert ended_by(ns, server) == signal.SIGTERM
        assert running(bound_client) and running(ephemeral_client)
        assert f"[{bound_client}]" in text and "--include-clients" in text

        code, document = kill_json(ns, str(port), "--yes", "--include-clients")
        assert code == 0, document
        (target,) = document["targets"]
        assert (target["pid"], target["role"], target["outcome"]) == (bound_client, "client", "exited")
        assert ended_by(ns, bound_client) == signal.SIGTERM
        assert running(ephemeral_client)  # never a target: only its peer's port is the port


def test_dry_run_signals_nothing():
    with new_netns("pskill") as ns:
        port, pids = shared_listener(ns, 2)
        code, document = kill_json(ns, str(port), "--dry-run")
        assert code == 0
        assert {t["outcome"] for t in document["targets"]} == {"would-signal"}
        assert document["query"]["dry_run"] is True and document["port_free"] is False
        assert all(running(pid) for pid in pids) and len(listeners(ns, port)) == 1
        code, text = kill(ns, str(port), "--dry-run")
        assert code == 0 and text.startswith("Would send SIGTERM to 2 processes")
        code, _ = kill(ns, str(port + 1 if port < 65535 else port - 1), "--dry-run")
        assert code == 1


def test_port_30001_is_not_touched_by_kill_3000():
    with new_netns("pskill") as ns:
        _, (near,) = shared_listener(ns, 1, port=30001)
        _, (udp_like,) = shared_listener(ns, 1, port=13000)
        _, (target,) = shared_listener(ns, 1, port=3000)
        code, document = kill_json(ns, "3000", "--yes")
        assert code == 0 and [t["pid"] for t in document["targets"]] == [target]
        assert ended_by(ns, target) == signal.SIGTERM
        assert running(near) and running(udp_like)
        assert len(listeners(ns, 30001)) == 1 and len(listeners(ns, 13000)) == 1


def test_hostile_process_names_are_shown_escaped():
    with new_netns("pskill") as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        pid = fork_worker(ns, name=b"\x1b]0;pwn\x07\xff\xe2\x80\xae")
        listener.close()
        code, text = kill(ns, str(port), "--dry-run", "--include-clients")
        assert code == 0 and "\x1b" not in text and "\u202e" not in text and "\\x1b]0;pwn" in text
        code, document = kill_json(ns, str(port), "--yes")
        # not UTF-8 (the \\xff byte): JSON carries the escaped text form, as for every name (render/jsonout.py)
        assert code == 0 and document["targets"][0]["name"] == "\\x1b]0;pwn\\x07\\xff\\u202e"
        assert ended_by(ns, pid) == signal.SIGTERM


def test_udp_bound_socket_holder_is_a_target():
    with new_netns("pskill") as ns:
        sock = ns.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::", 0))
        port = sock.getsockname()[1]
        pid = fork_worker(ns)
        sock.close()
        code, document = kill_json(ns, f"{port}/udp", "--yes")
        assert code == 0 and [t["pid"] for t in document["targets"]] == [pid]
        assert ended_by(ns, pid) == signal.SIGTERM


# ---------------------------------------------------------------------------------------------------
# Nothing to kill, and TIME-WAIT left behind


def test_time_wait_only_has_nothing_to_kill():
    with new_netns("pskill") as ns:
        server = ns.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = ns.socket()
        client.connect(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server's side closes first: the TIME-WAIT is on the server's port
        assert client.recv(1) == b""
        client.close()
        server.close()
        assert wait_until(lambda: {s.state for s in ss_sockets(ns, f"sport = :{port}")} == {"time-wait"})

        code, text = kill(ns, str(port), "--yes")
        assert code == 1
        flat = " ".join(text.split())
        assert f"Nothing to kill on port {port}" in flat
        assert "1 TIME-WAIT socket remains" in flat and f"portscope can-bind :{port}" in flat
        assert re.search(r"\d+(\.\d)?s left", flat)
        code, document = kill_json(ns, str(port), "--yes")
        assert code == 1 and document["targets"] == [] and document["port_free"] is True
        assert [s["state"] for s in document["left"]] == ["time-wait"]


def test_connections_left_closing_after_a_kill_are_reported_then_their_time_wait():
    with new_netns("pskill") as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = ns.socket()
        client.connect(("127.0.0.1", port))
        accepted, _ = listener.accept()
        pid = fork_worker(ns)
        listener.close()
        accepted.close()
        code, text = kill(ns, str(port), "--yes")
        assert code == 0, text
        assert ended_by(ns, pid) == signal.SIGTERM
        flat = " ".join(text.split())
        assert "is free" in flat and "1 connection on the port is closing" in flat
        assert client.recv(1) == b""
        client.close()  # the server's side, closed first, keeps the TIME-WAIT on the port
        assert wait_until(lambda: {s.state for s in ss_sockets(ns, f"sport = :{port}")} == {"time-wait"})
        code, text = kill(ns, str(port), "--yes")
        assert code == 1 and "1 TIME-WAIT socket remains" in " ".join(text.split())


# ---------------------------------------------------------------------------------------------------
# Identity: a pid replaced between listing and signalling


def test_a_listed_process_with_another_start_time_is_not_signalled():
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)
        plan = plan_kill(str(port), netns=ns.name)
        (target,) = plan.targets
        # the same pid, holding the same socket through the same fd, but started at another time: a newcomer
        newcomer = dataclasses.replace(target.process, start_time=target.process.start_time - 1)
        plan = dataclasses.replace(plan, targets=(dataclasses.replace(target, process=newcomer),))
        result = execute_plan(plan)
        (outcome,) = result.results
        assert (outcome.outcome, outcome.identity, outcome.signals) == (Outcome.EXITED, Identity.REPLACED, ())
        assert running(pid) and result.port_free is False


def test_a_listed_process_that_released_the_socket_is_not_signalled():
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)
        plan = plan_kill(str(port), netns=ns.name)
        (target,) = plan.targets
        elsewhere = ((target.sockets[0][0] + 1, target.sockets[0][1]),)  # the fd now links to another socket
        plan = dataclasses.replace(plan, targets=(dataclasses.replace(target, sockets=elsewhere),))
        (outcome,) = execute_plan(plan).results
        assert (outcome.outcome, outcome.identity) == (Outcome.REFUSED, Identity.RELEASED)
        assert running(pid)


PID_REUSE = textwrap.dedent(
    """
    import json, os, signal, socket, time
    from portscope.commands.kill import execute_plan, plan_kill

    listener = socket.create_server(("0.0.0.0", 3000))
    fd = listener.fileno()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    worker = os.fork()
    if worker == 0:
        ours.close()
        theirs.recv(1)
        socket.send_fds(theirs, [b"x"], [fd])  # the listener back to pid 1, for the newcomer
        time.sleep(60)
        os._exit(0)
    os.close(listener.detach())
    theirs.close()
    plan = plan_kill("3000")
    assert [t.process.pid for t in plan.targets] == [worker], plan.targets
    ours.send(b"x")
    _, (passed,), _, _ = socket.recv_fds(ours, 1, 1)
    os.kill(worker, signal.SIGKILL)
    os.waitpid(worker, 0)
    time.sleep(0.05)  # a start time of its own (10 ms ticks)
    for attempt in range(20):
        with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
            handle.write(str(worker - 1))
        newcomer = os.fork()
        if newcomer == 0:
            os.dup2(passed, fd)  # the same socket, through the same fd number as the worker had
            time.sleep(60)
            os._exit(0)
        if newcomer == worker:
            break
        os.kill(newcomer, signal.SIGKILL)
        os.waitpid(newcomer, 0)
    os.close(passed)
    result = execute_plan(plan)
    (outcome,) = result.results
    alive = os.waitpid(newcomer, os.WNOHANG) == (0, 0)
    print(json.dumps({"worker": worker, "newcomer": newcomer, "outcome": outcome.outcome.value,
                      "identity": outcome.identity.value if outcome.identity else None,
                      "signals": list(outcome.signals), "alive": alive, "port_free": result.port_free}))
    os.kill(newcomer, signal.SIGKILL)
    os.waitpid(newcomer, 0)
    """
)


def test_pid_reused_by_a_new_process_holding_the_same_socket_is_not_signalled():
    require_live()
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) for a private pid namespace")
    # a private pid namespace (pids are small and nothing else forks there) with its own /proc and network
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--net", sys.executable, "-c", PID_REUSE],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["newcomer"] == report["worker"], report  # the pid was reused
    assert (report["outcome"], report["identity"], report["signals"]) == ("exited", "replaced", [])
    assert report["alive"] is True and report["port_free"] is False


# ---------------------------------------------------------------------------------------------------
# Guards: PID 1, the caller and its ancestors; no terminal without --yes


def test_the_caller_itself_is_refused_even_with_force():
    with new_netns("pskill") as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        for extra in ((), ("--force",)):
            code, document = kill_json(ns, str(port), "--yes", *extra)
            assert code == 2
            (target,) = document["targets"]
            assert (target["pid"], target["outcome"], target["reason"]) == (os.getpid(), "refused", "caller")
        assert len(listeners(ns, port)) == 1


def test_an_ancestor_of_portscope_is_refused_and_its_workers_are_kept():
    with new_netns("pskill") as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        worker = fork_worker(ns)  # shares the listener with the test process, portscope's parent
        result = portscope_command(ns, str(port), "--yes", "--json")
        assert result.returncode == 2, result.stderr
        reasons = {t["pid"]: t["reason"] for t in json.loads(result.stdout)["targets"]}
        assert reasons == {os.getpid(): "caller-ancestor", worker: "port-held-by-refused"}
        assert running(worker)
        text = portscope_command(ns, str(port), "--yes")
        assert text.returncode == 2 and "Nothing signalled" in text.stdout
        assert "an ancestor of portscope" in text.stdout


PID_1 = textwrap.dedent(
    """
    import json, os, socket, sys
    listener = socket.create_server(("0.0.0.0", 3000))  # held by pid 1 of this namespace
    child = os.fork()
    if child == 0:
        from portscope.cli import main
        main(["kill", "3000", "--yes", "--json", *sys.argv[1:]])
    _, status = os.waitpid(child, 0)
    print(json.dumps({"status": os.waitstatus_to_exitcode(status)}))
    """
)


@pytest.mark.parametrize("extra", [(), ("--force",)])
def test_pid_1_is_refused(extra):
    require_live()
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--net", sys.executable, "-c", PID_1, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    document_text, status_text = result.stdout.rsplit("\n{", 1)
    document = json.loads(document_text)
    assert json.loads("{" + status_text) == {"status": 2}, result.stderr
    # pid 1 holds the listener, and so does portscope's own process (forked from it with the socket)
    refused = {t["pid"]: (t["outcome"], t["reason"], t["signals"]) for t in document["targets"]}
    assert refused.pop(1) == ("refused", "pid-1", [])
    assert list(refused.values()) == [("refused", "caller", [])]


def test_without_a_terminal_and_without_yes_nothing_is_signalled():
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)
        result = portscope_command(ns, str(port))
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and "not a terminal" in result.stderr and "--yes" in result.stderr
        assert running(pid)
        bad = portscope_command(ns, "70000", "--yes")
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
        bad = portscope_command(ns, str(port), "--signal", "NOPE", "--yes")
        assert bad.returncode == 2 and "unknown signal" in bad.stderr and running(pid)
        everywhere = portscope_command(ns, str(port), "--netns", "all", "--yes")  # never fuser -k host-wide
        assert everywhere.returncode == 2 and "one network namespace" in everywhere.stderr and running(pid)


# ---------------------------------------------------------------------------------------------------
# As another user


SCRIPT = "import sys\nfrom portscope.cli import main\nmain(sys.argv[1:])\n"


@pytest.fixture(scope="module")
def nobody_library():
    if not os.path.exists(SYSTEM_PYTHON) or shutil.which("setpriv") is None:
        pytest.skip("needs /usr/bin/python3 and setpriv to run as another user")
    top = tempfile.mkdtemp(prefix="portscope-kill-")
    try:
        skip_cache = shutil.ignore_patterns("__pycache__")
        shutil.copytree(Path(SRC) / "portscope", Path(top) / "portscope", ignore=skip_cache)
        for package in (psutil, click):  # psutil: compiled for the same Python minor version
            shutil.copytree(Path(package.__file__).parent, Path(top) / package.__name__, ignore=skip_cache)
        (Path(top) / "kill_as_user.py").write_text(SCRIPT)
        for directory, _, files in os.walk(top):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_as_nobody(ns: Netns, top: str, *args: str, caps: tuple[str, ...] = ()):
    privileges = [f"--inh-caps={','.join(caps)}", f"--ambient-caps={','.join(caps)}"] if caps else []
    return ns.run(
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        *privileges,
        "env",
        f"PYTHONPATH={top}",
        "PYTHONDONTWRITEBYTECODE=1",
        "NO_COLOR=1",
        SYSTEM_PYTHON,
        f"{top}/kill_as_user.py",
        "kill",
        *args,
        check=False,
    )


def test_another_users_process_is_denied(nobody_library):
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)  # a root process
        hidden = run_as_nobody(ns, nobody_library, str(port), "--yes", "--json")
        assert hidden.returncode == 5, hidden.stderr
        (target,) = json.loads(hidden.stdout)["targets"]
        assert (target["pid"], target["outcome"], target["reason"]) == (None, "denied", "hidden")
        assert target["user"] == "root"
        text = run_as_nobody(ns, nobody_library, str(port), "--yes")
        assert text.returncode == 5 and "run as root" in text.stdout and "still held" in text.stdout

        # with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (no CAP_KILL) it sees the holder; the kernel refuses the signal
        seen = run_as_nobody(ns, nobody_library, str(port), "--yes", "--json", caps=("+sys_ptrace", "+dac_read_search"))
        if "setpriv" in seen.stderr and seen.returncode not in (0, 1, 2, 4, 5):
            pytest.skip(f"setpriv cannot keep an ambient capability here: {seen.stderr.strip()}")
        assert seen.returncode == 5, seen.stderr
        (target,) = json.loads(seen.stdout)["targets"]
        assert (target["pid"], target["outcome"], target["signals"]) == (pid, "denied", [])
        assert running(pid) and len(listeners(ns, port)) == 1


# ---------------------------------------------------------------------------------------------------
# One TCP flow: --connection


def test_connection_is_closed_with_sock_destroy():
    with new_netns("pskill") as ns:
        server = ns.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = ns.socket()
        client.connect(("127.0.0.1", port))
        accepted, peer = server.accept()
        local, remote = f"127.0.0.1:{port}", f"127.0.0.1:{peer[1]}"

        code, document = kill_json(ns, "--connection", local, remote, "--dry-run")
        assert code == 0 and document["outcome"] == "would-close"
        assert document["connection"]["local_port"] == port and document["connection"]["state"] == "established"

        code, document = kill_json(ns, "--connection", local, remote, "--yes")
        assert code == 0 and document["outcome"] == "closed", document
        with pytest.raises(OSError) as raised:
            accepted.recv(1)
        assert raised.value.errno == 103  # ECONNABORTED: the kernel aborted it
        assert not [s for s in ss_sockets(ns, f"sport = :{port}") if s.remote_port == peer[1]]
        assert len(listeners(ns, port)) == 1  # the listener is untouched

        code, document = kill_json(ns, "--connection", local, remote, "--yes")
        assert code == 1 and document["outcome"] == "not-found" and document["connection"] is None
        both = portscope_command(ns, "3000", "--connection", local, remote)
        assert both.returncode == 2 and both.stderr.count("\n") == 1 and "not both" in both.stderr
        udp = portscope_command(ns, "--connection", f"{local}/udp", remote)
        assert udp.returncode == 2 and "TCP" in udp.stderr
        wildcard = portscope_command(ns, "--connection", str(port), remote)
        assert wildcard.returncode == 2 and "exactly" in wildcard.stderr
        for sock in (client, accepted):
            sock.close()


# ---------------------------------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            if predicate():
                return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------------------------------
# The JSON document is what README documents


def kill_keys() -> tuple[set[str], dict[str, set[str]]]:
    """kill --json: the top-level object, then each bullet's keys."""
    return document_keys("`kill --json`")


def test_kill_json_keys_and_values_are_the_documented_ones():
    top, bullets = kill_keys()
    assert top == {"query", "targets", "port_free", "left"}
    assert {"pid", "cmdline", "unit", "container", "signals", "outcome"} <= bullets["targets"]
    text = section("`kill --json`")
    outcomes = {row.split("`")[1] for row in text.splitlines() if row.startswith("| `")} - {"outcome"}  # the header
    assert outcomes == {o.value for o in Outcome}
    reasons = set(re.findall(r"`([a-z0-9-]+)`", text.split("`reason` (`null`", 1)[1]))
    assert reasons == {r.value for r in Refusal} | {i.value for i in Identity if i is not Identity.SAME} | {"hidden"}
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)
        client = ns.socket()
        client.connect(("127.0.0.1", port))  # left in the queue: a reset, or a closing socket left behind
        for args in (("--dry-run",), ("--yes", "--no-escalate", "--timeout", "0")):
            _, document = kill_json(ns, str(port), *args)
            assert set(document) == top
            assert set(document["query"]) == bullets["query"]
            assert document["targets"]
            for target in document["targets"]:
                assert set(target) == bullets["targets"]
            for sock in document["left"]:
                assert set(sock) == socket_keys()
        ended_by(ns, pid)


# ---------------------------------------------------------------------------------------------------
# On a terminal: the targets, then a question


def ask_on_a_terminal(ns: Netns, port: int, answer: bytes) -> tuple[int, str, str]:
    """``portscope kill PORT`` with a terminal on stdin and stderr (a pty), answering ``answer``."""
    import pty
    import select as select_module

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": SRC, "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "portscope", "kill", "--netns", ns.name, str(port)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        text=True,
    )
    os.close(slave)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while b"Proceed?" not in shown and time.monotonic() < deadline:
            if select_module.select([master], [], [], 0.5)[0]:
                shown += os.read(master, 4096)
        os.write(master, answer)
        out, _ = process.communicate(timeout=30)
        with contextlib.suppress(OSError):
            while select_module.select([master], [], [], 0.1)[0]:
                shown += os.read(master, 4096)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, shown.decode("utf-8", "replace")


def test_on_a_terminal_the_targets_are_listed_and_a_no_signals_nothing():
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)
        code, out, shown = ask_on_a_terminal(ns, port, b"n\n")
        assert code == 2, (out, shown)
        assert f"About to send SIGTERM to 1 process on port {port}" in shown and f"[{pid}]" in shown
        assert "Nothing signalled" in out and running(pid)
        code, out, shown = ask_on_a_terminal(ns, port, b"y\n")
        assert code == 0, (out, shown)
        assert ended_by(ns, pid) == signal.SIGTERM and "is free" in out


# ---------------------------------------------------------------------------------------------------
# A systemd service and a container, by their cgroups (made by the test in the cgroup v2 hierarchy)


def cgroup2_root() -> str | None:
    with open("/proc/self/mounts") as handle:
        for line in handle:
            fields = line.split()
            if fields[2] == "cgroup2" and os.access(fields[1], os.W_OK):
                return fields[1]
    return None


@contextlib.contextmanager
def process_in_cgroup(root: str, relative: str, pid: int):
    """Move ``pid`` into a new cgroup ``root/relative`` (made here, removed after)."""
    path = Path(root) / relative
    path.mkdir(parents=True)
    try:
        (path / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        if any(p.strip() for p in (path / "cgroup.procs").read_text().splitlines()):
            (Path(root) / "cgroup.procs").write_text(str(pid))  # still running: back to the root
        for directory in [path, *path.relative_to(root).parents][:-1]:
            with contextlib.suppress(OSError):
                (Path(root) / directory).rmdir()


@pytest.mark.parametrize(
    ("kind", "reason", "advice"),
    [
        ("service", "systemd-unit", "systemctl stop {unit}"),
        ("container", "container", "docker stop {id}"),
    ],
)
def test_a_service_or_container_process_is_refused_unless_forced(kind, reason, advice):
    require_live()
    root = cgroup2_root()
    if root is None:
        pytest.skip("needs a writable cgroup v2 hierarchy")
    tag = os.urandom(4).hex()
    container_id = os.urandom(32).hex()
    unit = f"pskill-{tag}.service"
    relative = f"pskill-{tag}.slice/{unit}" if kind == "service" else f"pskill-{tag}/docker-{container_id}.scope"
    with new_netns("pskill") as ns:
        port, (pid,) = shared_listener(ns, 1)
        with process_in_cgroup(root, relative, pid):
            code, document = kill_json(ns, str(port), "--yes")
            assert code == 2
            (target,) = document["targets"]
            assert (target["outcome"], target["reason"]) == ("refused", reason)
            assert target["advice"] == [advice.format(unit=unit, id=container_id)]
            if kind == "service":
                assert target["unit"] == unit
            else:
                assert target["container"]["id"] == container_id and target["container"]["runtime"] == "docker"
            code, text = kill(ns, str(port), "--yes")
            assert code == 2 and advice.format(unit=unit, id=container_id) in text and "--force" in text
            assert running(pid)
            code, document = kill_json(ns, str(port), "--yes", "--force")
            assert code == 0 and document["targets"][0]["outcome"] == "exited"
            assert ended_by(ns, pid) == signal.SIGTERM


def test_a_socket_activated_service_is_refused_with_its_socket_unit():
    require_live()
    root = cgroup2_root()
    if root is None:
        pytest.skip("needs a writable cgroup v2 hierarchy")
    tag = os.urandom(4).hex()
    unit, socket_unit = f"pskill-echo-{tag}.service", f"pskill-listen-{tag}.socket"
    with new_netns("pskill") as ns:
        listener = ns.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # what systemd does for a .socket unit: the listener on fd 3, LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set
        service = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$ exec "$0" -c "import time; time.sleep(60)"', sys.executable],
            env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": socket_unit},
            preexec_fn=lambda: os.dup2(listener.fileno(), 3),
            pass_fds=(3,),  # kept open in the child: the listener is dup2()ed there first
        )
        ns.children.append(service.pid)
        listener.close()
        assert wait_until(lambda: psutil.Process(service.pid).name() != "sh")  # exec'd, with fd 3
        with process_in_cgroup(root, f"pskill-{tag}.slice/{unit}", service.pid):
            code, document = kill_json(ns, str(port), "--yes")
            assert code == 2
            (target,) = document["targets"]
            assert (target["pid"], target["reason"]) == (service.pid, "systemd-unit")
            assert target["advice"] == [f"systemctl stop {socket_unit} {unit}"]
            assert running(service.pid)
