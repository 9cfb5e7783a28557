"""The long-running commands' cost (issue 18): what `watch` and `wait` burn while nothing happens, and how long a
`serve` scrape takes, beside `ss` polled by a shell loop and node_exporter's tcpstat collector.

    sudo python benchmarks/long_running.py                 # 1k and 40k sockets, 20 s of idling per command
    sudo python benchmarks/long_running.py --sizes 40k --seconds 30

Each size gets a fresh network namespace filled by socket_farm.py (the mix of benchmarks/run.py); every command
runs inside it with `ip netns exec`. Idle cost: CPU seconds (user + system, the command's waited children
included) per minute, measured over ``--seconds`` after a short warm-up. Scrapes: wall time of one HTTP GET of
/metrics, median of ``--scrapes`` in a row. Tables go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # benchmarks/run.py: namespaces, the socket farm

WARM_UP = 3.0  # seconds before the idle measurement starts (start-up and the first scan are not idling)
WAIT_PORT = 65000  # nothing listens there: `wait` waits
SERVE_PORT, NODE_EXPORTER_PORT = 19717, 19100
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


@contextlib.contextmanager
def started(ns: str, argv: Sequence[str]) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the shell loop's ss too
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def idle_cost(ns: str, argv: Sequence[str], seconds: float) -> float:
    """CPU seconds per minute the command uses once started (ip netns exec execs it: the pid is the command)."""
    with started(ns, argv) as proc:
        time.sleep(WARM_UP)
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
        before = cpu_seconds(proc.pid)
        time.sleep(seconds)
        after = cpu_seconds(proc.pid)
    return (after - before) / seconds * 60


def scrape_times(ns: str, argv: Sequence[str], port: int, scrapes: int) -> list[float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with started(ns, argv), run.entered(ns):
        deadline = time.monotonic() + 30
        while True:  # up and answering
            try:
                urllib.request.urlopen(url, timeout=60).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        times = []
        for _ in range(scrapes):
            begun = time.perf_counter()
            urllib.request.urlopen(url, timeout=60).read()
            times.append(time.perf_counter() - begun)
    return times


def bench(size: int, args, tools: run.Tools, log) -> dict:
    population = run.Population.for_size(size)
    ps = tools.portscope
    idle = {
        "portscope watch (listeners, every 1 s)": [ps, "watch", "--jsonl"],
        "portscope watch -a (every socket, every 1 s)": [ps, "watch", "--jsonl", "-a"],
        f"portscope wait {WAIT_PORT} (every 0.1 s)": [ps, "wait", str(WAIT_PORT)],
        "sh loop: ss -tlnp every 1 s": ["sh", "-c", "while sleep 1; do ss -tlnp >/dev/null; done"],
    }
    scrapers = {
        "portscope serve": [ps, "serve", "--listen", f"127.0.0.1:{SERVE_PORT}"],
        "node_exporter --collector.tcpstat": [
            "prometheus-node-exporter",
            f"--web.listen-address=127.0.0.1:{NODE_EXPORTER_PORT}",
            "--collector.disable-defaults",
            "--collector.tcpstat",
        ],
    }
    result: dict = {"size": size, "idle": {}, "scrape": {}}
    with run.namespace(f"long{size}") as ns, run.socket_farm(tools.python, args.farm, ns, population, 1800, log):
        result["counts"] = run.count_sockets(ns)
        log(f"  sockets: {result['counts']}")
        for label, argv in idle.items():
            result["idle"][label] = idle_cost(ns, argv, args.seconds)
            log(f"  {label}: {result['idle'][label]:.2f} CPU s/min")
        for label, argv in scrapers.items():
            port = SERVE_PORT if argv[0] == ps else NODE_EXPORTER_PORT
            if argv[0] != ps and not shutil.which(argv[0]):
                result["scrape"][label] = None
                continue
            result["scrape"][label] = statistics.median(scrape_times(ns, argv, port, args.scrapes))
            log(f"  {label}: {result['scrape'][label]:.3f} s a scrape")
    return result


def tables(results: list[dict]) -> str:
    labels = list(results[0]["idle"])
    lines = [
        "| sockets | " + " | ".join(f"`{label}`" for label in labels) + " |",
        "|---" * (len(labels) + 1) + "|",
    ]
    for result in results:
        cells = [f"{result['idle'][label]:.2f}" for label in labels]
        lines.append(f"| {result['counts']['total']:,} | " + " | ".join(cells) + " |")
    lines += ["", "| sockets | `portscope serve` scrape | node_exporter tcpstat scrape | ratio |", "|---|---|---|---|"]
    for result in results:
        ours, theirs = result["scrape"]["portscope serve"], result["scrape"]["node_exporter --collector.tcpstat"]
        ratio = f"{ours / theirs:.1f}" if theirs else "–"
        theirs_text = f"{theirs:.3f} s" if theirs else "missing"
        lines.append(f"| {result['counts']['total']:,} | {ours:.3f} s | {theirs_text} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1k,40k", help="socket counts (1k, 40k, 40000...)")
    parser.add_argument("--seconds", type=float, default=20.0, help="idle seconds measured per command")
    parser.add_argument("--scrapes", type=int, default=7, help="scrapes per exporter")
    parser.add_argument("--farm", type=Path, default=run.FARM_DEFAULT, help="path of socket_farm.py")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("long_running.py: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    tools = run.find_tools()
    run.byte_compile(tools)
    begun = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - begun:7.1f}s] {text}", file=sys.stderr, flush=True)

    sizes = [int(float(size[:-1]) * 1000) if size.endswith("k") else int(size) for size in args.sizes.split(",")]
    results = []
    for size in sizes:
        log(f"size {size}")
        results.append(bench(size, args, tools, log))
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
