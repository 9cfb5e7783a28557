"""`portscope ls -a --netns all` against looping `ip netns exec NS ss -tanp` over every namespace.

Creates namespaces (``ip netns add``), fills each with ``socket_farm.py`` (about --sockets each: established
loopback pairs), then times both ways of listing every namespace's sockets with their processes, in
alternating rounds, and prints medians and the ratio per namespace count (linearity: time per namespace).
Besides wall time it reports portscope's CPU time split into user time (portscope's own work: decoding,
joining, writing) and system time (the kernel's: the sock_diag dumps and the /proc walk), and the time of
one TCP sock_diag dump of one namespace's ~--sockets sockets (``dump ms``): the kernel's TCP tables are
shared by every namespace unless ``net.ipv4.tcp_child_ehash_entries`` was set when the namespace was made,
so that one dump walks the sockets of all of them. ``--child-ehash N`` sets that sysctl to N while the
namespaces are created (restored to its old value at once, so other namespaces are not affected) to
measure the same with a table per namespace.

Every farm is stopped by its pid and every namespace deleted at the end. Needs root.

    sudo python benchmarks/netns_all.py --counts 10,25,50 --sockets 1000
    sudo python benchmarks/netns_all.py --counts 10,25,50 --sockets 1000 --child-ehash 4096
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # benchmarks/run.py: namespaces with a TCP table of their own

FARM = next(
    (
        folder / "shared" / "tools" / "socket_farm.py"
        for folder in Path(__file__).resolve().parents
        if (folder / "shared" / "tools" / "socket_farm.py").exists()
    ),
    Path("/work/shared/tools/socket_farm.py"),
)  # ../shared/tools beside the checkout, whether it is main or a worktree further down


def _portscope() -> list[str]:
    script = Path(sys.executable).with_name("portscope")
    return [str(script)] if script.exists() else [sys.executable, "-m", "portscope"]


def _start_farm(name: str, sockets: int, farm: Path) -> subprocess.Popen:
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    pairs = max(1, sockets // 2)
    process = subprocess.Popen(
        ["ip", "netns", "exec", name, sys.executable, str(farm), "-n", str(pairs), "--timeout", "900"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("READY"):
        raise SystemExit(f"socket_farm in {name} did not start: {line!r}")
    return process


def _time(argv_list: list[list[str]]) -> tuple[float, float, float]:
    """Wall, user and system seconds of running these commands one after the other."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for argv in argv_list:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def _dump_seconds(name: str) -> float:
    """The fastest of five TCP (IPv4) sock_diag dumps of one namespace, decoded, in this process."""
    from portscope.engine.snapshot import snapshot
    from portscope.model.query import Query
    from portscope.model.records import Family, Proto

    query = Query(protocols=frozenset({Proto.TCP}), families=frozenset({Family.IPV4}), join_processes=False, netns=name)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        snapshot(query)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,25,50", help="namespace counts (comma-separated)")
    parser.add_argument("--sockets", type=int, default=1000, help="sockets per namespace (about)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--farm", type=Path, default=FARM)
    parser.add_argument("--child-ehash", type=int, default=None, metavar="N", help="a TCP table per namespace")
    parser.add_argument("--no-ss", action="store_true", help="time portscope only")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("ss") is None:
        raise SystemExit("needs root and ss (iproute2)")
    counts = sorted(int(c) for c in args.counts.split(","))
    tag = uuid.uuid4().hex[:6]
    names: list[str] = []
    farms: list[subprocess.Popen] = []
    portscope = [*_portscope(), "ls", "-a", "--netns", "all"]
    print(
        f"{'namespaces':>10}  {'portscope s':>11}  {'user s':>6}  {'sys s':>6}  {'looped ss s':>11}  {'ratio':>5}  "
        f"{'ms/ns':>5}  {'user ms/ns':>10}  {'dump ms':>7}"
    )
    try:
        for count in counts:
            while len(names) < count:
                name = f"psbench-{tag}-{len(names)}"
                run.add_namespace(name, args.child_ehash)
                names.append(name)
                farms.append(_start_farm(name, args.sockets, args.farm))
            looped = [["ip", "netns", "exec", name, "ss", "-tanp"] for name in names]
            ours: list[tuple[float, float, float]] = []
            theirs: list[float] = []
            for round_number in range(args.rounds):
                if args.no_ss or round_number % 2 == 0:
                    ours.append(_time([portscope]))
                    theirs.append(0.0 if args.no_ss else _time(looped)[0])
                else:
                    theirs.append(_time(looped)[0])
                    ours.append(_time([portscope]))
            wall = statistics.median(o[0] for o in ours)
            user = statistics.median(o[1] for o in ours)
            system = statistics.median(o[2] for o in ours)
            looped_wall = statistics.median(theirs)
            ratio = f"{wall / looped_wall:>5.2f}" if looped_wall else f"{'-':>5}"
            dump = _dump_seconds(names[0])
            print(
                f"{count:>10}  {wall:>11.3f}  {user:>6.2f}  {system:>6.2f}  {looped_wall:>11.3f}  {ratio}  "
                f"{1000 * wall / count:>5.0f}  {1000 * user / count:>10.1f}  {1000 * dump:>7.1f}",
                flush=True,
            )
    finally:
        for farm in farms:
            farm.send_signal(signal.SIGTERM)
        for farm in farms:
            try:
                farm.wait(timeout=30)
            except subprocess.TimeoutExpired:
                farm.kill()
                farm.wait()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
