"""`portscope ls -a --netns all` against looping `ip netns exec NS ss -tanp` over every namespace.

Creates namespaces (``ip netns add``), fills each with ``socket_farm.py`` (about --sockets each: established
loopback pairs), then times both ways of listing every namespace's sockets with their processes, in
alternating rounds, and prints medians and the ratio per namespace count (linearity: time per namespace).
Every farm is stopped by its pid and every namespace deleted at the end. Needs root.

    sudo python benchmarks/netns_all.py --counts 10,25,50 --sockets 1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

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


def _start_namespace(name: str, sockets: int, farm: Path) -> subprocess.Popen:
    subprocess.run(["ip", "netns", "add", name], check=True)
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


def _time(argv_list: list[list[str]]) -> float:
    start = time.perf_counter()
    for argv in argv_list:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,25,50", help="namespace counts (comma-separated)")
    parser.add_argument("--sockets", type=int, default=1000, help="sockets per namespace (about)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--farm", type=Path, default=FARM)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("ss") is None:
        raise SystemExit("needs root and ss (iproute2)")
    counts = sorted(int(c) for c in args.counts.split(","))
    tag = uuid.uuid4().hex[:6]
    names: list[str] = []
    farms: list[subprocess.Popen] = []
    portscope = [*_portscope(), "ls", "-a", "--netns", "all"]
    print(f"{'namespaces':>10}  {'portscope s':>11}  {'ip netns exec ss -tanp s':>24}  {'ratio':>6}  {'ms/ns':>6}")
    try:
        for count in counts:
            while len(names) < count:
                name = f"psbench-{tag}-{len(names)}"
                names.append(name)
                farms.append(_start_namespace(name, args.sockets, args.farm))
            looped = [["ip", "netns", "exec", name, "ss", "-tanp"] for name in names]
            ours, theirs = [], []
            for round_number in range(args.rounds):
                pair = [(ours, [portscope]), (theirs, looped)]
                for results, argv_list in pair if round_number % 2 == 0 else reversed(pair):
                    results.append(_time(argv_list))
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"{count:>10}  {a:>11.3f}  {b:>24.3f}  {a / b:>6.2f}  {1000 * a / count:>6.1f}")
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
