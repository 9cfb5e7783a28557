#!/usr/bin/env python3
"""portscope against ss, netstat, lsof, fuser and psutil on the same real sockets, side by side.

    python benchmarks/run.py            full run (about 5-8 minutes on 2 cores), rewrites benchmarks/README.md
    python benchmarks/run.py --quick    small run (1k and 10k sockets), prints the tables only

For each size a fresh network namespace is made (`ip netns add`), filled with real loopback sockets by
../shared/tools/socket_farm.py run inside it (`ip netns exec`): established TCP pairs (a tenth IPv6),
TIME-WAIT sockets and unconnected UDP sockets, plus one listener on --port for the `who` commands.
Every command then runs inside that namespace (this process enters it with setns() and starts the
commands from there), in rounds whose order rotates, with stdout read through a pipe. A command's
wall time, CPU time and peak RSS come from wait4() on that very run. Reported: medians.

After the sizes, a growth phase (``--growth-rounds``) measures portscope's rows with one farm per size alive
at once, each in a network, PID and mount namespace of its own, every round running each command at every
size: the linearity targets come from there, where a drift in the machine's speed reaches every size alike.

Everything started is stopped by pid (the farm, its workers, the listener; an isolated farm through its pid
outside its namespace) and every namespace is deleted, also on errors and on Ctrl-C. Needs root (namespaces).
A missing peer tool is reported as missing, not fatal.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
RESULTS_JSON = HERE / "results" / "latest.json"
FARM_MAX_HOLD = 14400  # socket_farm.py's largest --timeout
FARM_DEFAULT = ROOT.parent / "shared" / "tools" / "socket_farm.py"
RESULTS_BEGIN = "<!-- results: begin (written by benchmarks/run.py) -->"
RESULTS_END = "<!-- results: end -->"

FULL_SIZES = (1_000, 10_000, 40_000, 100_000, 200_000)
QUICK_SIZES = (1_000, 10_000)
TARGET_SIZE = 40_000  # the targets are stated at 40k sockets
WHO_PORT = 8080


# ---------------------------------------------------------------------------------------------------
# Commands and runs


@dataclass(frozen=True)
class Command:
    key: str  # short, stable name used in tables and JSON
    label: str  # what a reader would type
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    needs: str | None = None  # the executable that must exist


@dataclass
class Run:
    seconds: float
    cpu: float  # user + system
    peak_kib: int | None  # None when /usr/bin/time is missing
    lines: int
    status: int


@dataclass
class Measured:
    key: str
    label: str
    runs: list[Run] = field(default_factory=list)
    missing: str | None = None  # why it could not run


# ru_maxrss of a child forked from this (large) Python starts at this process's RSS: the kernel keeps
# the high-water mark of the memory image replaced by exec(). GNU time forks from its own small image,
# so its %M is the command's own peak. Wall and CPU time still come from wait4() on time itself (it
# adds about a millisecond; the same for every command).
GNU_TIME = "/usr/bin/time"


PIPE_BYTES = 1 << 20  # /proc/sys/fs/pipe-max-size's default


def run_once(command: Command, *, timeout: float) -> Run:
    """One run: stdout through a pipe (lines counted), stderr discarded; rusage from wait4()."""
    env = dict(os.environ)
    env.update(command.env)
    argv = list(command.argv)
    peak_file = None
    if os.access(GNU_TIME, os.X_OK):
        peak_file = tempfile.NamedTemporaryFile(prefix="psbench-", suffix=".rss")  # noqa: SIM115
        argv = [GNU_TIME, "-f", "%M", "-o", peak_file.name, *argv]
    started = time.perf_counter()
    # a group of its own, so that a timeout stops the command itself, not only GNU time above it: at 1M
    # sockets ss -tanp and netstat -tanp outlived their killed time for minutes, two CPUs' worth of
    # work under every command that followed
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, process_group=0)
    lines = 0
    deadline = started + timeout
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with contextlib.suppress(OSError):  # a reader that keeps up: 1 MiB in the pipe, not 64 KiB (see README)
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{command.label} ran longer than {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, PIPE_BYTES)
            if not chunk:
                break
            lines += chunk.count(b"\n")
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, 0)
        proc.returncode = -9
        raise
    finally:
        proc.stdout.close()
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = None
    if peak_file is not None:
        with peak_file:
            text = Path(peak_file.name).read_text().split()
        peak = int(text[-1]) if text and text[-1].isdigit() else None
    return Run(elapsed, usage.ru_utime + usage.ru_stime, peak, lines, proc.returncode)


def measure(commands: Sequence[Command], rounds: int, *, slow_after: float, timeout: float, log) -> dict[str, Measured]:
    """Alternating rounds: every command once per round, the order rotating from round to round.

    A command whose run took longer than ``slow_after`` seconds is not repeated (ss -p at 200k
    sockets takes tens of seconds), so its figure is a single run; the tables say so.
    """
    results = {c.key: Measured(c.key, c.label) for c in commands}
    runnable = []
    for command in commands:
        if command.needs and shutil.which(command.needs) is None and not os.path.exists(command.needs):
            results[command.key].missing = f"{command.needs} not installed"
        else:
            runnable.append(command)
    slow: set[str] = set()
    for index in range(rounds):
        order = runnable[index % len(runnable) :] + runnable[: index % len(runnable)] if runnable else []
        for command in order:
            if command.key in slow:
                continue
            try:
                run = run_once(command, timeout=timeout)
            except (OSError, TimeoutError) as exc:
                results[command.key].missing = str(exc)
                slow.add(command.key)
                continue
            results[command.key].runs.append(run)
            if run.seconds > slow_after:
                slow.add(command.key)
        log(f"  round {index + 1}/{rounds} done")
    return results


# ---------------------------------------------------------------------------------------------------
# Namespaces and socket farms


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


EPHEMERAL_PORTS_V6 = 25_000  # below the default ip_local_port_range's 28,232 ports, with a margin


CHILD_EHASH = "/proc/sys/net/ipv4/tcp_child_ehash_entries"
HOST_EHASH = "/proc/sys/net/ipv4/tcp_ehash_entries"


def add_namespace(name: str, child_ehash: int | None) -> None:
    """``ip netns add``; with ``child_ehash``, the namespace gets its own TCP table of that many buckets.

    The sysctl applies to namespaces made while it is set, so it is restored to its old value at once."""
    if child_ehash is None:
        ip("netns", "add", name)
        return
    old = Path(CHILD_EHASH).read_text().strip()
    try:
        Path(CHILD_EHASH).write_text(str(child_ehash))
        ip("netns", "add", name)
    finally:
        Path(CHILD_EHASH).write_text(old)


def host_table_size() -> int | None:
    """The host's TCP table size, for namespaces of their own the same size (None: no such sysctl)."""
    try:
        size = int(Path(HOST_EHASH).read_text())
    except (OSError, ValueError):
        return None
    return size if size > 0 and os.path.exists(CHILD_EHASH) else None


@contextlib.contextmanager
def namespace(tag: str) -> Iterator[str]:
    """A fresh namespace with a TCP table of its own, as large as the host's: the kernel otherwise keeps
    one table for every namespace, so that anything reading the host's sockets walks the farm's too (with
    a 1M farm in the shared table, reading the host's empty /proc/net/tcp took 0.3 s of system time; with
    a table of its own, 8 ms). Dumps inside the namespace walk as many buckets and sockets as before."""
    name = f"psbench-{tag}-{uuid.uuid4().hex[:6]}"
    add_namespace(name, host_table_size())
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=30)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """This thread (and every process it starts) inside the namespace."""
    from portscope.sources.netns import NetnsTarget
    from portscope.sources.netns import entered as netns_entered

    with netns_entered(NetnsTarget(f"/run/netns/{name}", None)):
        yield


def _stop(proc: subprocess.Popen, pids: Sequence[int] = ()) -> None:
    for pid in (proc.pid, *pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in (proc.pid, *pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _read_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"{what} did not get ready within {timeout:.0f} s")
    return line


@dataclass(frozen=True)
class Population:
    established_v4_pairs: int
    established_v6_pairs: int
    time_wait: int
    udp: int

    @property
    def total(self) -> int:
        return 2 * (self.established_v4_pairs + self.established_v6_pairs) + self.time_wait + self.udp

    @classmethod
    def for_size(cls, sockets: int) -> Population:
        """About ``sockets`` sockets: 90% established (both ends of each pair), 7% TIME-WAIT, 3% UDP."""
        established = round(sockets * 0.90) // 2
        v6 = established // 10
        return cls(established - v6, v6, round(sockets * 0.07), max(1, round(sockets * 0.03)))


# socket_farm.py as the first process of a PID namespace of its own, with a /proc of that namespace (in a mount
# namespace of its own): commands entered into it see this farm's processes only, so that farms side by side do
# not walk each other's fds (the growth phase)
ISOLATED = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM")


@contextlib.contextmanager
def socket_farm(
    python: str, farm: Path, ns: str, population: Population, hold: float, log, *, isolated: bool = False
) -> Iterator[dict]:
    """The farm running in ``ns``; its READY facts. ``isolated``: in a PID namespace of its own (see
    :data:`ISOLATED`); the facts then also hold ``host_pid``, its pid outside (its other pids are its own)."""
    argv = [
        "ip", "netns", "exec", ns, *(ISOLATED if isolated else ()), python, str(farm),
        "-n", str(population.established_v4_pairs), "--v6", str(population.established_v6_pairs),
        "--time-wait", str(population.time_wait), "--tw-keep", "--udp", str(population.udp),
        "--timeout", str(int(hold)),
    ]  # fmt: skip
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True)
    facts: dict = {}
    try:
        try:
            # building takes about a minute per 150k sockets on 2 CPUs (more than 6 minutes at 1M)
            line = _read_line(proc, 300 + population.total // 500, "socket_farm.py")
        except RuntimeError:
            errors.seek(0)
            raise RuntimeError(f"socket farm failed: {errors.read().decode(errors='replace')[-400:]}") from None
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            facts[key] = value
        if isolated:  # ip netns exec became unshare, whose one child is the farm
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            facts["host_pid"] = children[0]
        log(f"  farm ready: {line.strip()[6:]}")
        yield facts
    finally:
        if isolated:
            # its pids are its namespace's own: never signalled from here. The farm (its namespace's init,
            # with a SIGTERM handler) stops its workers; the kernel ends whatever else is left in the namespace
            # (the listener) with it, and unshare follows its child.
            _stop_isolated(proc, int(facts["host_pid"]) if "host_pid" in facts else None)
        else:
            workers = [int(p) for p in facts.get("worker_pids", "").split(",") if p]
            _stop(proc, workers)
        errors.close()


def _stop_isolated(proc: subprocess.Popen, farm_pid: int | None) -> None:
    """SIGTERM to the farm by its pid outside its namespace, up to 30 s for it to go; then unshare itself."""
    if farm_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(farm_pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{farm_pid}") and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    _stop(proc)  # unshare: its --kill-child sends SIGTERM to the farm if it is still there


def entering(facts: dict) -> tuple[str, ...]:
    """The argv prefix that runs a command in an isolated farm's network, PID and mount namespaces."""
    return ("nsenter", "--target", facts["host_pid"], "--net", "--pid", "--mount", "--")


@contextlib.contextmanager
def listener(python: str, ns: str, port: int, hold: float, inside: tuple[str, ...] = ()) -> Iterator[int]:
    """One TCP listener on 127.0.0.1:port held by its own process: what `who PORT` looks for. ``inside``: an
    argv prefix that enters an isolated farm's namespaces (:func:`entering`) instead of ``ns``."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port}))\n"
        "s.listen(16)\n"
        "print('ready', flush=True)\n"
        f"time.sleep({hold})\n"
    )
    prefix = inside or ("ip", "netns", "exec", ns)
    proc = subprocess.Popen([*prefix, python, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        _read_line(proc, 30, "the listener")
        yield proc.pid
    finally:
        _stop(proc)


# ---------------------------------------------------------------------------------------------------
# What is measured


@dataclass
class Tools:
    python: str
    portscope: str
    has_who: bool


def find_tools() -> Tools:
    # The console script beside this interpreter, not a shell shim (pyenv's would add ~50 ms a run).
    beside = Path(sys.executable).with_name("portscope")
    portscope = str(beside) if beside.exists() else shutil.which("portscope") or "portscope"
    who = subprocess.run([portscope, "who", "--help"], capture_output=True, check=False)
    return Tools(sys.executable, portscope, who.returncode == 0)


def byte_compile(tools: Tools) -> list[str]:
    """portscope's modules compiled to bytecode once, as `pip install` leaves them (an editable
    install run with PYTHONDONTWRITEBYTECODE would otherwise compile them again on every run: 40% of
    a small command's time). Returns the modules still without bytecode (the run says so)."""
    import portscope

    subprocess.run(
        [tools.python, "-m", "compileall", "-q", str(Path(portscope.__file__).parent)], capture_output=True, check=False
    )
    return without_fresh_bytecode()


def without_fresh_bytecode() -> list[str]:
    """portscope's modules without bytecode, or whose source changed after it was compiled: each run of a command
    that imports one compiles it again (edited while a benchmark runs, and every figure after includes that)."""
    import importlib.util

    import portscope

    package = Path(portscope.__file__).parent
    stale = []
    for source in package.rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists() or cached.stat().st_mtime < source.stat().st_mtime:
            stale.append(str(source.relative_to(package)))
    return sorted(stale)


def listing_commands(tools: Tools) -> list[Command]:
    psutil_code = "import psutil; print(len(psutil.net_connections()))"
    return [
        Command("ss", "ss -tan", ("ss", "-tan"), needs="ss"),
        Command("ss_p", "ss -tanp", ("ss", "-tanp"), needs="ss"),
        Command("netstat_p", "netstat -tanp", ("netstat", "-tanp"), needs="netstat"),
        Command("lsof", "lsof -nP -iTCP", ("lsof", "-nP", "-iTCP"), needs="lsof"),
        Command("psutil", "psutil.net_connections()", (tools.python, "-c", psutil_code)),
        Command("ls", "portscope ls -a", (tools.portscope, "ls", "-a"), needs=tools.portscope),
        Command(
            "ls_json",
            "portscope ls -a -n --json --no-processes",
            (tools.portscope, "ls", "-a", "-n", "--json", "--no-processes"),
            needs=tools.portscope,
        ),
    ]


def who_commands(tools: Tools, port: int) -> list[Command]:
    commands = [
        Command("ss_who", f"ss -ltnp 'sport = :{port}'", ("ss", "-ltnp", f"sport = :{port}"), needs="ss"),
        Command("lsof_who", f"lsof -nP -iTCP:{port}", ("lsof", "-nP", f"-iTCP:{port}"), needs="lsof"),
        Command("fuser_who", f"fuser {port}/tcp", ("fuser", f"{port}/tcp"), needs="fuser"),
    ]
    if tools.has_who:
        commands.insert(0, Command("who", f"portscope who {port}", (tools.portscope, "who", str(port))))
    return commands


SMALL_HOST_SOCKETS = 100
COMPLETION_ENV = (("_PORTSCOPE_COMPLETE", "bash_complete"), ("COMP_WORDS", "portscope l"), ("COMP_CWORD", "1"))


REFERENCE_CODE = "sum(i * i for i in range(2_000_000))"


def reference_command(tools: Tools) -> Command:
    """The same fixed work at every size, in the rotation: how fast this (virtual) machine ran while each size
    was measured. Sizes are minutes apart (the 1M farm takes 10 minutes to build), and a VM's speed drifts."""
    return Command("reference", "a fixed Python loop", (tools.python, "-S", "-c", REFERENCE_CODE))


def small_host_commands(tools: Tools, port: int) -> list[Command]:
    """Start-up dominates here: each portscope command against the interpreter doing nothing (the same Python,
    site-packages included, as the console script runs it), the C tools beside them."""
    ps = tools.portscope
    return [
        Command("python", "python -c pass", (tools.python, "-c", "pass")),
        Command("version", "portscope --version", (ps, "--version"), needs=ps),
        Command("ls", "portscope ls", (ps, "ls"), needs=ps),
        Command("ls_l", "portscope ls -l", (ps, "ls", "-l"), needs=ps),
        Command("who", f"portscope who {port}", (ps, "who", str(port)), needs=ps),
        Command("help", "portscope --help", (ps, "--help"), needs=ps),
        Command("help_ls", "portscope ls --help", (ps, "ls", "--help"), needs=ps),
        Command("complete", "completion request (bash, portscope l<TAB>)", (ps,), env=COMPLETION_ENV, needs=ps),
        Command("ss_l", "ss -tulpn", ("ss", "-tulpn"), needs="ss"),
        Command("lsof_i", "lsof -nP -i", ("lsof", "-nP", "-i"), needs="lsof"),
        Command("fuser", f"fuser {port}/tcp", ("fuser", f"{port}/tcp"), needs="fuser"),
    ]


# The targets for a small host: at most this many times `python -c pass`.
SMALL_HOST_TARGETS = {"ls": 4.5, "ls_l": 4.5, "who": 4.5, "help": 4.0, "complete": 4.0}


def instructions(argv: Sequence[str], env: Sequence[tuple[str, str]] = ()) -> int | None:
    """Instructions executed by a whole command (callgrind): the same number on a loaded machine and a quiet one."""
    if shutil.which("valgrind") is None:
        return None
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **dict(env)},
        timeout=300,
        check=False,
    )
    counts = [int(line.split()[-1]) for line in done.stderr.splitlines() if "Collected :" in line]
    return counts[-1] if counts else None  # (a forked helper reports first; the command itself last)


def bench_small_host(args, tools: Tools, log) -> dict:
    population = Population.for_size(SMALL_HOST_SOCKETS)
    rounds = 3 * args.rounds
    result: dict = {"size": SMALL_HOST_SOCKETS, "population": asdict(population), "rounds": rounds}
    with (
        namespace("small") as ns,
        socket_farm(tools.python, args.farm, ns, population, 1800, log),
        listener(tools.python, ns, args.port, 1800),
    ):
        result["counts"] = count_sockets(ns)
        with entered(ns):
            commands = small_host_commands(tools, args.port)
            measured = measure(commands, rounds, slow_after=60, timeout=60, log=lambda _: None)
            result["commands"] = {k: asdict(m) for k, m in measured.items()}
            result["instructions"] = {
                c.key: instructions(c.argv, c.env) for c in commands if c.key == "python" or c.needs == tools.portscope
            }
    return result


def probe(tools: Tools, *args: str) -> dict | None:
    done = subprocess.run(
        [tools.python, str(HERE / "probes.py"), *args], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout)


def probes_median(tools: Tools, runs: int, *args: str) -> dict | None:
    """Run a probe ``runs`` times; the median of each number, plus the runs."""
    results = [probe(tools, *args) for _ in range(runs)]
    ok = [r for r in results if r and "error" not in r]
    if not ok:
        return results[-1] if results else None
    merged = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, (int, float)):
            merged[key] = statistics.median(r[key] for r in ok)
    merged["runs"] = len(ok)
    return merged


# ---------------------------------------------------------------------------------------------------
# One size


def count_sockets(ns: str) -> dict[str, int]:
    """What the namespace holds now, by the kernel's own count (netlink, through portscope's library)."""
    from portscope.engine.snapshot import snapshot
    from portscope.model.query import Query
    from portscope.model.records import Proto, State

    snap = snapshot(Query(states=frozenset(State), join_processes=False, netns=ns))
    tcp = [s for s in snap.sockets if s.proto is Proto.TCP]
    return {
        "tcp": len(tcp),
        "udp": len(snap.sockets) - len(tcp),
        "time_wait": sum(1 for s in tcp if s.state is State.TIME_WAIT),
        "total": len(snap.sockets),
    }


def busy_fraction(seconds: float) -> float | None:
    """The share of all CPUs busy over ``seconds`` (/proc/stat), before a size's commands run: how quiet
    the machine is: the farm's TIME-WAIT refills, and whatever else runs (on this VM, pid 1 took about a
    third of a CPU while a 1M farm existed, and a hundredth without one)."""

    def ticks() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:9]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    try:
        total0, idle0 = ticks()
        time.sleep(seconds)
        total1, idle1 = ticks()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / (total1 - total0) if total1 > total0 else None


SETTLE_BUSY = 0.3  # share of the CPUs under which a newly built farm counts as settled
SETTLE_MAX = 120.0  # seconds, at most


def settle() -> float | None:
    """Wait (at most SETTLE_MAX) until the CPUs are less than SETTLE_BUSY busy over 5 s; the last share seen.

    Just after a 1M farm's build, every command of the growth phase's first round ran 1.2-1.9 × slower than in
    the rounds after it (ls -a 17.9 s, then 10.3-12.1 s, at 14:58 UTC on 2026-12-07)."""
    started = time.monotonic()
    busy = busy_fraction(5.0)
    while busy is not None and busy > SETTLE_BUSY and time.monotonic() - started < SETTLE_MAX:
        busy = busy_fraction(5.0)
    return busy


def _busy_text(busy: float | None) -> str:
    return "unknown" if busy is None else f"{busy:.0%} of the CPUs"


def farm_hold(sockets: int) -> int:
    """How long a farm of this many sockets stays (its --timeout, counted from its start, building included)."""
    return min(FARM_MAX_HOLD, 1800 + sockets // 250)


def widen_port_range(ns: str, population: Population) -> None:
    """Every IPv6 client of the farm binds ::1 port 0: the default range (28,232 ports) runs out near 600k
    sockets; widened in this namespace only (a per-namespace sysctl, gone with it), above the farm's listening
    ports (15000 on, 17000 on for IPv6)."""
    if population.established_v6_pairs > EPHEMERAL_PORTS_V6:
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=18000 65535"], check=True
        )


def bench_size(size: int, args, tools: Tools, log) -> dict:
    population = Population.for_size(size)
    # more rounds where the speed targets are checked: with the same code, five rounds read `ls -a` at 0.53 and
    # 0.61 x `ss -tanp` in two runs (2026-12-07, 21:03 and 22:31 UTC), against a limit of 0.6; a 40k round takes
    # about 6 s. The large sizes judge linearity, so they get as many as the small ones (after a first round,
    # commands slower than --slow-after are not repeated)
    rounds = 4 * args.rounds - 1 if size == TARGET_SIZE else args.rounds
    result: dict = {"size": size, "population": asdict(population), "rounds": rounds}
    with namespace(str(size)) as ns:
        widen_port_range(ns, population)
        # the farm's own timeout counts from its start, building included: at 1M sockets on 2 busy CPUs the
        # build alone took 1,772 s of a 1,800 s hold, and the farm left as the commands began
        hold = farm_hold(population.total)
        with (
            socket_farm(tools.python, args.farm, ns, population, hold, log) as facts,
            listener(tools.python, ns, args.port, hold),
        ):
            return _bench_in(ns, facts, result, size, rounds, args, tools, log)


def _bench_in(ns: str, facts: dict, result: dict, size: int, rounds: int, args, tools: Tools, log) -> dict:
    """One size's commands, in its namespace filled by the farm."""
    result["farm"] = facts
    result["counts"] = count_sockets(ns)
    result["busy_before"] = busy_fraction(5.0)
    log(f"  sockets: {result['counts']}; busy before measuring: {_busy_text(result['busy_before'])}")
    with entered(ns):
        commands = [*listing_commands(tools), *who_commands(tools, args.port), reference_command(tools)]
        measured = measure(commands, rounds, slow_after=args.slow_after, timeout=args.timeout, log=log)
        result["commands"] = {k: asdict(m) for k, m in measured.items()}
        if size <= args.decoder_max:
            decoder_runs = 3 if size <= 10_000 else 1
            result["decoders"] = {
                name: probes_median(tools, decoder_runs, "decode", name) for name in ("portscope", "pyroute2")
            }
    result["counts_after"] = count_sockets(ns)
    return result


GROWTH_FROM = 10_000  # smaller sizes are mostly start-up: no growth phase for them
GROWTH_KEYS = ("ls", "ls_json", "who", "ss", "reference")  # portscope's rows, with ss -tan and the fixed loop


def growth_commands(tools: Tools, port: int, size: int, inside: tuple[str, ...]) -> list[Command]:
    """The growth phase's commands for one size: keyed ``key@size``, run inside that size's farm."""
    chosen = [
        c
        for c in (*listing_commands(tools), *who_commands(tools, port), reference_command(tools))
        if c.key in GROWTH_KEYS
    ]
    return [replace(c, key=f"{c.key}@{size}", argv=(*inside, *c.argv)) for c in chosen]


def bench_growth(sizes: Sequence[int], args, tools: Tools, log) -> list[dict]:
    """portscope's growth with the sizes side by side: one farm per size, all alive at once, and each round
    runs every command at every size, so that the machine's speed, which drifts over the minutes between the
    sections above, is the same for every size. Each farm is isolated (a network, PID and mount namespace of
    its own), so that a command sees its own farm only: sockets, processes, fds. Per size, the same shape
    as a section's result (``commands`` by their plain keys)."""
    results: list[dict] = []
    commands: list[Command] = []
    with contextlib.ExitStack() as stack:
        # every farm lives until the last round: each held as long as one farm of all the sizes' sockets
        hold = farm_hold(sum(Population.for_size(size).total for size in sizes))
        for size in sizes:
            population = Population.for_size(size)
            log(f"  farm of {size:,} sockets")
            ns = stack.enter_context(namespace(f"g{size}"))
            widen_port_range(ns, population)
            facts = stack.enter_context(socket_farm(tools.python, args.farm, ns, population, hold, log, isolated=True))
            inside = entering(facts)
            stack.enter_context(listener(tools.python, ns, args.port, hold, inside))
            results.append({"size": size, "population": asdict(population), "farm": facts, "counts": count_sockets(ns)})
            commands += growth_commands(tools, args.port, size, inside)
        settled = settle()
        counts = ", ".join(str(r["counts"]["total"]) for r in results)
        log(f"  sockets: {counts}; busy before measuring: {_busy_text(settled)}")
        for result in results:
            result["busy_before"] = settled
        measured = measure(commands, args.growth_rounds, slow_after=args.timeout, timeout=args.timeout, log=log)
    for result in results:
        suffix = f"@{result['size']}"
        result["rounds"] = args.growth_rounds
        result["commands"] = {
            key.removesuffix(suffix): {**asdict(m), "key": key.removesuffix(suffix)}
            for key, m in measured.items()
            if key.endswith(suffix)
        }
    return results


# ---------------------------------------------------------------------------------------------------
# Machine facts


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_gib, 1) if memory_gib else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": os.getloadavg()[0],
    }


SITE_PROBE = "import json, site, sys; print(json.dumps([*site.getsitepackages(), site.getusersitepackages()]))"


def site_start_up(python: str, runs: int = 7) -> dict:
    """What ``site`` costs this interpreter at each start (median of ``-X importtime``, its own line), and the
    .pth files that run code then (a line starting with ``import``: a sandbox's CA hook, a distutils shim).
    They tax every Python program here, portscope included, and no C tool: a run says what they were."""
    costs = []
    for _ in range(runs):
        done = subprocess.run([python, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=False)
        for line in done.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2].strip() == "site":
                with contextlib.suppress(ValueError):
                    costs.append(int(parts[1]) / 1000)
    hooks = []
    done = subprocess.run([python, "-c", SITE_PROBE], capture_output=True, text=True, check=False)
    with contextlib.suppress(ValueError):
        for directory in json.loads(done.stdout or "[]"):
            for pth in sorted(Path(directory).glob("*.pth")) if os.path.isdir(directory) else ():
                with contextlib.suppress(OSError):
                    if any(line.startswith(("import ", "import\t")) for line in pth.read_text().splitlines()):
                        hooks.append(pth.name)
    return {"site_ms": round(statistics.median(costs), 1) if costs else None, "code_pth": hooks}


def site_line(site: dict | None) -> str:
    if not site:
        return ""
    hooks = ", ".join(f"`{name}`" for name in site["code_pth"]) or "none"
    cost = f"{site['site_ms']:.1f} ms" if site.get("site_ms") is not None else "unknown"
    return f" Python's `site` at each start: {cost} (.pth files that run code: {hooks})."


def versions(tools: Tools) -> dict[str, str]:
    def first_line(argv: list[str], pattern: str = "") -> str:
        if shutil.which(argv[0]) is None:
            return "missing"
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        for line in (done.stdout + done.stderr).splitlines():
            if pattern in line:
                return line.strip()
        return "?"

    import psutil
    import pyroute2

    from portscope import __version__

    return {
        "portscope": __version__,
        "ss": first_line(["ss", "-V"]).replace("ss utility, ", ""),
        "netstat": first_line(["netstat", "--version"], "net-tools"),
        "lsof": first_line(["lsof", "-v"], "revision:").replace("revision: ", "lsof "),
        "fuser": first_line(["fuser", "-V"], "fuser").replace("fuser (PSmisc)", "psmisc"),
        "psutil": psutil.__version__,
        "pyroute2": pyroute2.__version__,
    }


# ---------------------------------------------------------------------------------------------------
# Markdown


def _s(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _mb(kib: float | None) -> str:
    if kib is None:
        return "–"
    return f"{kib / 1024:.1f}" if kib < 10 * 1024 else f"{kib / 1024:.0f}"


def _cell(measured: dict, attribute: str, unit, rounds: int) -> str:
    runs = [r for r in measured["runs"] if r[attribute] is not None]
    if not runs:
        return "missing" if measured.get("missing") else "–"
    value = statistics.median(r[attribute] for r in runs)
    text = unit(value)
    return text + ("¹" if len(runs) < rounds else "")


def _size_label(result: dict) -> str:
    counts = result["counts"]
    return f"{counts['total']:,} ({counts['time_wait']:,} tw, {counts['udp']:,} udp)"


def table(results: list[dict], keys: Sequence[str], attribute: str, unit) -> list[str]:
    labels = {k: m["label"] for r in results for k, m in r["commands"].items()}
    present = [k for k in keys if k in labels]
    lines = [
        "| sockets | " + " | ".join(f"`{labels[k]}`" for k in present) + " |",
        "|---" * (len(present) + 1) + "|",
    ]
    for r in results:
        cells = [_cell(r["commands"][k], attribute, unit, r["rounds"]) for k in present]
        lines.append(f"| {_size_label(r)} | " + " | ".join(cells) + " |")
    return lines


def median_of(result: dict, key: str, attribute: str = "seconds") -> float | None:
    measured = result["commands"].get(key)
    values = [r[attribute] for r in measured["runs"] if r[attribute] is not None] if measured else []
    return statistics.median(values) if values else None


def ratio_table(results: list[dict]) -> list[str]:
    pairs = [
        ("ls", "ss_p", "`ls -a` ÷ `ss -tanp`"),
        ("ls", "netstat_p", "`ls -a` ÷ `netstat -tanp`"),
        ("ls", "lsof", "`ls -a` ÷ `lsof -iTCP`"),
        ("ls", "psutil", "`ls -a` ÷ psutil"),
        ("ls_json", "ss", "`ls --json --no-processes` ÷ `ss -tan`"),
        ("who", "lsof_who", "`who` ÷ `lsof -iTCP:PORT`"),
        ("who", "fuser_who", "`who` ÷ `fuser`"),
    ]
    lines = ["| sockets | " + " | ".join(p[2] for p in pairs) + " |", "|---" * (len(pairs) + 1) + "|"]
    for r in results:
        cells = []
        for mine, theirs, _ in pairs:
            a, b = median_of(r, mine), median_of(r, theirs)
            cells.append("–" if a is None or b is None else f"{a / b:.2f}")
        lines.append(f"| {_size_label(r)} | " + " | ".join(cells) + " |")
    return lines


def marginal(results: list[dict], key: str, attribute: str = "seconds") -> list[tuple[int, int, float]]:
    """µs per extra socket between consecutive sizes: constant when the time grows linearly."""
    medians = [(r["counts"]["total"], median_of(r, key, attribute)) for r in results]
    points = [(count, value) for count, value in medians if value is not None]
    return [(n1, n2, (t2 - t1) / (n2 - n1) * 1e6) for (n1, t1), (n2, t2) in pairwise(points)]


LINEARITY_KEYS = (
    ("ls", "portscope ls -a"), ("ls_json", "portscope ls --json"), ("ss", "ss -tan"), ("ss_p", "ss -tanp"),
    ("netstat_p", "netstat -tanp"), ("lsof", "lsof -iTCP"), ("psutil", "psutil"),
)  # fmt: skip
GROWTH_LINEARITY_KEYS = (
    ("ls", "portscope ls -a"), ("ls_json", "portscope ls --json"), ("who", "portscope who"), ("ss", "ss -tan"),
)  # fmt: skip


def linearity_table(
    results: list[dict], attribute: str = "seconds", keys: Sequence[tuple[str, str]] = LINEARITY_KEYS
) -> list[str]:
    intervals = [(a, b) for a, b, _ in marginal(results, "ss")] or [(a, b) for a, b, _ in marginal(results, "ls")]
    if not intervals:
        return []
    lines = [
        "| µs per added socket | " + " | ".join(f"{a:,} → {b:,}" for a, b in intervals) + " |",
        "|---" * (len(intervals) + 1) + "|",
    ]
    for key, label in keys:
        by_interval = {(a, b): v for a, b, v in marginal(results, key, attribute)}
        cells = [f"{by_interval[i]:.1f}" if i in by_interval else "–" for i in intervals]
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return lines


def _ratio_text(ratio: float, limit: float) -> str:
    """Two decimals, or three where two would read as the limit itself (0.602 against ≤ 0.6)."""
    text = f"{ratio:.2f}"
    return f"{ratio:.3f}" if text == f"{limit:.2f}" else text


def targets(results: list[dict], small: dict | None, growth: list[dict] | None = None) -> list[str]:
    """Issue 18's targets, each with what this run measured; linearity from the growth phase when there is one
    (the sizes side by side), else from the sizes' sections."""
    rows = []

    def check(name: str, ok: bool | None, measured: str) -> None:
        rows.append(f"| {name} | {measured} | {'yes' if ok else 'no' if ok is not None else 'not measured'} |")

    if small:
        wall0 = median_of(small, "python")
        counts = small.get("instructions", {})
        for key, limit in SMALL_HOST_TARGETS.items():
            wall = median_of(small, key)
            ratio = None if wall is None or not wall0 else wall / wall0
            label = small["commands"][key]["label"]
            count, count0 = counts.get(key), counts.get("python")
            instr = f" (instructions {count / count0:.2f} ×)" if count and count0 else ""
            check(
                f"small host: `{label}` ≤ {limit} × `python -c pass`",
                None if ratio is None else ratio <= limit,
                "–" if ratio is None else f"{ratio:.2f} ×{instr}",
            )
    at = min(results, key=lambda r: abs(r["size"] - TARGET_SIZE)) if results else None
    if at is None or abs(at["size"] - TARGET_SIZE) > TARGET_SIZE // 4:
        rows.append(f"| targets at {TARGET_SIZE:,} sockets | not measured in this run (`--sizes`) | |")
        return ["| target | measured | met |", "|---|---|---|", *rows]

    def ratio_check(name: str, mine: str, theirs: str, limit: float, attribute: str = "seconds") -> None:
        a, b = median_of(at, mine, attribute), median_of(at, theirs, attribute)
        check(
            f"{name} at {_size_label(at)}",
            None if a is None or b is None else a <= limit * b,
            "–" if a is None or b is None else f"{_ratio_text(a / b, limit)} ×",
        )

    ratio_check("`ls -a` (processes) ≤ 0.6 × `ss -tanp`", "ls", "ss_p", 0.6)
    ratio_check("`ls -a -n --json --no-processes` ≤ 2 × `ss -tan`", "ls_json", "ss", 2.0)
    ratio_check("`who PORT` ≤ 0.25 × `lsof -nP -iTCP:PORT`", "who", "lsof_who", 0.25)
    ratio_check("`who PORT` ≤ 0.7 × `fuser`", "who", "fuser_who", 0.7)
    ratio_check("peak memory of `ls -a` ≤ 0.8 × psutil's", "ls", "psutil", 0.8, "peak_kib")
    largest = max(results, key=lambda r: r["size"])
    if largest["size"] >= 1_000_000:
        mine, theirs = median_of(largest, "ls", "peak_kib"), median_of(largest, "psutil", "peak_kib")
        check(
            f"peak memory of `ls -a` ≤ 0.6 × psutil's at {_size_label(largest)}",
            None if mine is None or theirs is None else mine <= 0.6 * theirs,
            f"{_mb(mine)} MB vs {_mb(theirs)} MB",
        )
    where = " (sizes side by side)" if growth else ""
    for key, label in (("ls", "`ls -a`"), ("ls_json", "`ls --json --no-processes`"), ("who", "`who PORT`")):
        # wall time as a user waits, and CPU time: what the command itself spends, steadier when other work
        # (a 1M farm re-making its TIME-WAIT sockets) takes turns with it on the machine's CPUs
        for attribute, kind in (("seconds", "wall"), ("cpu", "CPU")):
            steps = marginal(growth or results, key, attribute)
            if len(steps) >= 2:
                first = next((v for a, b, v in steps if a >= 5_000), steps[0][2])
                last = steps[-1][2]
                check(
                    f"{label} linear in the socket count ({kind} µs per added socket, last interval ≤ 1.3 × first)"
                    + where,
                    last <= 1.3 * max(first, 0.01),
                    f"{first:.1f} → {last:.1f} µs",
                )
    return ["| target | measured | met |", "|---|---|---|", *rows]


def decoder_table(results: list[dict], imports: dict) -> list[str]:
    lines = [
        "| TCP sockets decoded | pyroute2 `DiagSocket.get_sock_stats` | its memory (peak RSS, growth) "
        "| portscope `collectors.netlink` | its memory (peak RSS, growth) | time ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        decoders = r.get("decoders")
        if not decoders:
            continue
        mine, theirs = decoders.get("portscope") or {}, decoders.get("pyroute2") or {}
        if "seconds" not in mine or "seconds" not in theirs:
            lines.append(f"| {_size_label(r)} | {theirs.get('error', '–')} | | {mine.get('error', '–')} | | |")
            continue
        lines.append(
            f"| {int(theirs['sockets']):,} | {_s(theirs['seconds'])} s | {_mb(theirs['peak_kib'])} MB, "
            f"+{_mb(theirs['peak_kib'] - theirs['baseline_kib'])} MB | {_s(mine['seconds'])} s | "
            f"{_mb(mine['peak_kib'])} MB, +{_mb(mine['peak_kib'] - mine['baseline_kib'])} MB | "
            f"{theirs['seconds'] / mine['seconds']:.0f}× |"
        )
    for module, value in imports.items():
        if value and "seconds" in value:
            lines.append("")
            lines[-1] = f"\n`import {module}`: {value['seconds'] * 1000:.0f} ms (median of {value['runs']})"
    return lines


def small_host_table(small: dict) -> list[str]:
    """Wall, CPU and instructions of each command, and each as a multiple of `python -c pass`."""
    lines = [
        "| command | wall (ms) | × `python -c pass` | CPU (ms) | × | instructions (M) | × | peak RSS (MB) | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    wall0, cpu0 = median_of(small, "python"), median_of(small, "python", "cpu")
    counts = small.get("instructions", {})
    for key, measured in small["commands"].items():
        if not measured["runs"]:
            lines.append(f"| `{measured['label']}` | {measured.get('missing') or '–'} | | | | | | | |")
            continue
        runs = measured["runs"]
        wall, cpu = median_of(small, key), median_of(small, key, "cpu")
        peaks = [r["peak_kib"] for r in runs if r["peak_kib"] is not None]
        peak = f"{statistics.median(peaks) / 1024:.1f}" if peaks else "–"
        count, count0 = counts.get(key), counts.get("python")
        instr = f"{count / 1e6:.0f} | {count / count0:.2f}" if count and count0 else "– | –"
        lines.append(
            f"| `{measured['label']}` | {wall * 1000:.1f} | {wall / wall0:.2f} | {cpu * 1000:.1f} | {cpu / cpu0:.2f} "
            f"| {instr} | {peak} | {len(runs)} |"
        )
    return lines


def machine_lines(results: list[dict]) -> list[str]:
    """How quiet and how fast the machine was at each size."""
    lines = []
    known = [(r["size"], r["busy_before"]) for r in results if r.get("busy_before") is not None]
    if known:
        lines.append(
            "Busy before each size's commands (5 s, share of all CPUs, the farm idle): "
            + ", ".join(f"{size:,} sockets {busy:.0%}" for size, busy in known)
            + "."
        )
    timed = [(r["size"], median_of(r, "reference")) for r in results if r["commands"].get("reference", {}).get("runs")]
    if timed:
        lines.append(
            f"The same fixed work in each size's rotation (`python -S -c '{REFERENCE_CODE}'`), median wall time: "
            + ", ".join(f"{size:,} sockets {seconds * 1000:.0f} ms" for size, seconds in timed)
            + "."
        )
    return lines


def markdown(report: dict) -> str:
    m, v, results = report["machine"], report["versions"], report["sizes"]
    out = [
        f"Measured {m['date']} on {m['cpu']} ({m['cpus']} CPUs, {m['memory_gib']} GiB), Linux {m['kernel']}, "
        f"Python {m['python']}; load average {m['load_before']:.2f} at the start.{site_line(m.get('site'))}",
        "Tools: " + ", ".join(f"{k} {val}" if not val.startswith(k) else val for k, val in v.items()) + ".",
        f"Command: `{report['command']}` ({report['elapsed']:.0f} s). Medians of alternating runs "
        f"(rounds per size: {', '.join(str(r['rounds']) for r in results)}); "
        "¹ fewer runs (a run took longer than "
        f"{report['slow_after']:.0f} s, or failed).",
        *machine_lines(results),
        "",
        "### Listing every TCP socket (stdout into a pipe): median wall time, seconds",
        "",
        *table(results, ["ss", "ss_p", "netstat_p", "lsof", "psutil", "ls", "ls_json"], "seconds", _s),
        "",
        "Ratios (below 1: portscope is faster):",
        "",
        *ratio_table(results),
        "",
        "### Peak memory (max RSS of the process), MB",
        "",
        *table(results, ["ss", "ss_p", "netstat_p", "lsof", "psutil", "ls", "ls_json"], "peak_kib", _mb),
        "",
        "### CPU time (user + system), seconds",
        "",
        *table(results, ["ss", "ss_p", "netstat_p", "lsof", "psutil", "ls", "ls_json"], "cpu", _s),
        "",
        f"### Who holds port {report['port']}: median wall time, seconds (peak MB below)",
        "",
        *table(results, ["who", "ss_who", "lsof_who", "fuser_who"], "seconds", _s),
        "",
        *table(results, ["who", "ss_who", "lsof_who", "fuser_who"], "peak_kib", _mb),
        "",
    ]
    if not any("who" in r["commands"] for r in results):
        out += ["`portscope who` is not available in this build: skipped.", ""]
    out += ["### Growth: time per added socket between sizes (constant = linear)", "", *linearity_table(results), ""]
    out += ["CPU time per added socket:", "", *linearity_table(results, "cpu"), ""]
    growth = report.get("growth")
    if growth:
        out += [
            "### Growth with the sizes side by side",
            "",
            "One farm per size, all alive at once, each in a network, PID and mount namespace of its own (a command "
            "sees its own farm's sockets, processes and fds only); every round runs each command at every size "
            f"({growth[0]['rounds']} rounds), so that a drift in the machine's speed reaches every size alike. "
            "The targets' linearity rows come from here.",
            "",
            *linearity_table(growth, keys=GROWTH_LINEARITY_KEYS),
            "",
            "CPU time per added socket:",
            "",
            *linearity_table(growth, "cpu", keys=GROWTH_LINEARITY_KEYS),
            "",
            *machine_lines(growth),
            "",
        ]
    small = report.get("small_host")
    if small:
        out += [
            f"### Small host: {_size_label(small)} sockets and one listener",
            "",
            "Start-up is most of the time here. Medians of "
            f"{small['rounds']} alternating runs; instructions counted by callgrind (the same on a busy machine).",
            "",
            *small_host_table(small),
            "",
        ]
    out += [
        "### sock_diag decoding: pyroute2's generic decoder against portscope's struct decoder",
        "",
        "Same dump in both (TCP, IPv4 and IPv6, every classic state), in a fresh process each; growth = peak RSS "
        "minus RSS after the imports.",
        "",
        *decoder_table(results, report["imports"]),
        "",
        "### Targets (issue 18)",
        "",
        *targets(results, report.get("small_host"), report.get("growth")),
    ]
    return "\n".join(out) + "\n"


def small_host_markdown(report: dict) -> str:
    """The small-host section alone (``--small-host-only``): its table and its targets."""
    m, small = report["machine"], report["small_host"]
    return "\n".join(
        [
            f"Measured {m['date']} on {m['cpu']} ({m['cpus']} CPUs), Python {m['python']} ({sys.executable}); "
            f"load average {m['load_before']:.2f} at the start.{site_line(m.get('site'))} "
            f"Command: `{report['command']}`.",
            "",
            f"### Small host: {_size_label(small)} sockets and one listener",
            "",
            *small_host_table(small),
            "",
            *targets([], small)[:-1],
            "",
        ]
    )


def write_readme(text: str) -> None:
    current = README.read_text() if README.exists() else ""
    if RESULTS_BEGIN in current and RESULTS_END in current:
        head, _, rest = current.partition(RESULTS_BEGIN)
        _, _, tail = rest.partition(RESULTS_END)
        README.write_text(f"{head}{RESULTS_BEGIN}\n{text}{RESULTS_END}{tail}")
    else:
        README.write_text(f"{current}\n{RESULTS_BEGIN}\n{text}{RESULTS_END}\n")


# ---------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k sockets, fewer rounds; tables on stdout only")
    parser.add_argument(
        "--small-host-only",
        action="store_true",
        help="only the small-host section (start-up: portscope against python -c pass); tables on stdout only",
    )
    parser.add_argument("--sizes", help="comma-separated socket counts (default 1000,10000,40000,100000,200000)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per size (default 5; 40k: 4n-1; quick 3)")
    # 21: on this VM pid 1's agent takes a CPU share that grows with the host's sockets (7% of a CPU beside a
    # 200k farm, 28-44% beside the growth phase's 1.24M), and the slopes come from medians: resampled from 15
    # rounds, a row whose medians grow 1.17 x read above 1.3 x in 24% of 9-round runs, 10% of 21-round ones
    parser.add_argument("--growth-rounds", type=int, default=21,
                        help="rounds of the growth phase (every size side by side; 0: none)")  # fmt: skip
    parser.add_argument("--slow-after", type=float, default=5.0, help="do not repeat a command slower than this (s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one run after this many seconds")
    parser.add_argument("--decoder-max", type=int, default=100_000, help="largest size for the decoder comparison")
    parser.add_argument("--budget", type=float, default=540.0, help="skip sizes that would not finish in this time")
    parser.add_argument("--port", type=int, default=WHO_PORT, help="the port for the who commands")
    parser.add_argument("--farm", type=Path, default=FARM_DEFAULT, help="path of socket_farm.py")
    parser.add_argument("--readme", action=argparse.BooleanOptionalAction, default=None,
                        help="write the tables into benchmarks/README.md (default: on for full runs)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=RESULTS_JSON, help="raw results (default benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.sizes:
        try:
            args.sizes = tuple(int(s.replace("_", "").replace("k", "000")) for s in args.sizes.split(","))
        except ValueError:
            parser.error(f"--sizes: not a list of numbers: {args.sizes!r}")
        if any(not 10 <= s <= 1_000_000 for s in args.sizes):
            parser.error("--sizes: each between 10 and 1000000")
    else:
        args.sizes = QUICK_SIZES if args.quick else FULL_SIZES
    args.rounds = args.rounds or (3 if args.quick else 5)
    if args.readme is None:
        args.readme = not (args.quick or args.small_host_only)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run.py: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    if not args.farm.exists():
        print(f"run.py: socket farm not found at {args.farm} (use --farm)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up in finally blocks
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    tools = find_tools()
    uncompiled = byte_compile(tools)
    if uncompiled:  # the figures would include compiling them on every run
        print(f"run.py: no bytecode for {', '.join(uncompiled[:5])} (a read-only install?)", file=sys.stderr)
        return 2
    report: dict = {
        "command": "python benchmarks/run.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "machine": {**machine(), "site": site_start_up(tools.python)},
        "versions": versions(tools),
        "port": args.port,
        "slow_after": args.slow_after,
        "sizes": [],
        "skipped": [],
    }
    report["command"] = report["command"].rstrip()
    log(f"portscope at {tools.portscope}; who {'available' if tools.has_who else 'not available yet'}")

    log(f"small host ({SMALL_HOST_SOCKETS} sockets)")
    report["small_host"] = bench_small_host(args, tools, log)
    if args.small_host_only:
        print(small_host_markdown(report))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
        return 0
    report["imports"] = {m: probes_median(tools, 5, "import", m) for m in ("pyroute2", "portscope.sources.netlink")}

    previous: tuple[int, float] | None = None
    for size in args.sizes:
        elapsed = time.monotonic() - started
        if previous is not None:
            estimate = previous[1] * size / previous[0]
            if elapsed + estimate > args.budget:
                log(f"size {size}: skipped, about {estimate:.0f} s would pass the {args.budget:.0f} s budget")
                report["skipped"].append(size)
                continue
        log(f"size {size}")
        before = time.monotonic()
        report["sizes"].append(bench_size(size, args, tools, log))
        previous = (size, time.monotonic() - before)

    growth_sizes = [r["size"] for r in report["sizes"] if r["size"] >= GROWTH_FROM]
    if args.growth_rounds > 0 and len(growth_sizes) >= 3 and not args.quick:
        # the farms' builds (each size's own, measured above) and a round's worth of each size's commands
        builds = sum(float(r["farm"].get("build_s", 0)) for r in report["sizes"] if r["size"] in growth_sizes)
        commands = sum(
            median_of(r, key) or 0 for r in report["sizes"] if r["size"] in growth_sizes for key in GROWTH_KEYS
        )
        estimate = builds + args.growth_rounds * commands
        if time.monotonic() - started + estimate > args.budget:
            log(f"growth phase: skipped, about {estimate:.0f} s would pass the {args.budget:.0f} s budget")
        else:
            log(f"growth phase: {', '.join(map(str, growth_sizes))} side by side, about {estimate:.0f} s")
            report["growth"] = bench_growth(growth_sizes, args, tools, log)

    report["elapsed"] = time.monotonic() - started
    report["stale_bytecode"] = without_fresh_bytecode()
    text = markdown(report)
    if report["stale_bytecode"]:  # checked once more at the end: a module edited during the run
        stale = ", ".join(report["stale_bytecode"])
        log(f"NOT A VALID RUN: changed while it ran, compiled again by every command that imports it: {stale}")
        text = f"**Not a valid run**: {stale} changed while it ran (every run compiled it again).\n\n{text}"
    if report["skipped"]:
        text += f"\nSkipped for the time budget: {', '.join(f'{s:,}' for s in report['skipped'])} sockets.\n"
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.readme:
        write_readme(text)
        log(f"tables written to {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
