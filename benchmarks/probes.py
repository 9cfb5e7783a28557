"""In-process measurements that a command line cannot give, run by run.py in a fresh interpreter each.

    python benchmarks/probes.py import MODULE      how long `import MODULE` takes here (after start-up)
    python benchmarks/probes.py decode pyroute2    pyroute2's generic sock_diag decoder (DiagSocket)
    python benchmarks/probes.py decode portscope   portscope's struct decoder (collectors.netlink)

Both decoders dump the same sockets: TCP, IPv4 and IPv6, every classic state (the kernel's SS_ALL,
4095), no extensions. Each probe prints one JSON object: seconds, sockets, and memory (the peak RSS of
the process and its RSS just before the measured part, in KiB).
"""

from __future__ import annotations

import gc
import importlib
import json
import resource
import socket
import sys
import time

SS_ALL = 4095  # TCP states 0..11, as pyroute2's get_sock_stats default


def rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * (resource.getpagesize() // 1024)


def peak_kib() -> int:
    """VmHWM: the peak RSS of this process image (ru_maxrss would include the parent's, copied at fork)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def probe_import(module: str) -> dict:
    start = time.perf_counter()
    importlib.import_module(module)
    return {"module": module, "seconds": time.perf_counter() - start}


def decode_pyroute2() -> tuple[int, float]:
    from pyroute2 import DiagSocket

    before = time.perf_counter()
    count = 0
    with DiagSocket() as diag:
        diag.bind()
        for family in (socket.AF_INET, socket.AF_INET6):
            count += len(diag.get_sock_stats(family=family, states=SS_ALL, protocol=socket.IPPROTO_TCP))
    return count, time.perf_counter() - before


def decode_portscope() -> tuple[int, float]:
    from portscope.model.records import Family, Proto
    from portscope.sources import netlink

    gc.disable()  # as the console script runs (the library leaves the collector alone)
    before = time.perf_counter()
    count = 0
    nl_sock = netlink.open_socket()
    try:
        for seq, family in enumerate((Family.IPV4, Family.IPV6), start=1):
            decoder = netlink.Decoder(Proto.TCP, family, None)
            request = netlink.DumpRequest(Proto.TCP, family, SS_ALL, None, seq)
            count += len(netlink.dump(nl_sock, request, decoder))
    finally:
        nl_sock.close()
    return count, time.perf_counter() - before


def probe_decode(which: str) -> dict:
    if which == "pyroute2":
        import pyroute2  # noqa: F401  (imported before the baseline, like portscope's modules below)
    else:
        import portscope.sources.netlink  # noqa: F401
    baseline = rss_kib()
    count, seconds = decode_pyroute2() if which == "pyroute2" else decode_portscope()
    return {"decoder": which, "sockets": count, "seconds": seconds, "baseline_kib": baseline, "peak_kib": peak_kib()}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "import":
        result = probe_import(argv[1])
    elif len(argv) == 2 and argv[0] == "decode" and argv[1] in ("pyroute2", "portscope"):
        result = probe_decode(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
