"""How often can-bind answers "uncertain", and why, over seeded random mixes judged by the kernel.

    sudo .venv/bin/python benchmarks/bind_uncertain.py [--mix hard,base,orphans] [--seeds 100-140]
                                                      [--no-kernel-table] [--jsonl FILE]

Each seed builds one mix of scenarios in a fresh namespace (the builders of tests/test_bind_random.py:
the hard mix and the orphan mix; and the base mix of tests/test_bind_oracle.py's random combinations,
drawn from a seeded random instead of hypothesis), asks can-bind about every scenario, and judges each
answer with a real bind()+listen() of the same socket. Prints, per mix: scenarios judged, uncertain and
wrong decisive verdicts, and the uncertain ones by uncertainty code (hidden flags by why and options)
and by the owner kinds in the scenario. ``--no-kernel-table`` measures the model without the kernel's
TCP bind table (sources/tcpbind.py), as a non-root caller gets it. About 1.5 s a seed on 2 CPUs.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from bind_scenarios import (  # noqa: E402
    OTHER_UID,
    NewSpec,
    OwnerSpec,
    Scenario,
    build,
    judge,
    kernel_oracle,
    open_group,
    request_for,
)
from netns_util import new_netns  # noqa: E402
from portscope.commands.can_bind import check_binds  # noqa: E402
from test_bind_random import orphan_scenario, scenario  # noqa: E402

BASE_TCP_KINDS = ("listen", "bound", "client", "child", "child+listener", "tw-server", "tw-client")
BASE_TCP_ADDRESSES = ("0.0.0.0", "127.0.0.1", "127.0.0.2", "::", "::1", "::ffff:127.0.0.1", "::ffff:0.0.0.0")
BASE_UDP_ADDRESSES = ("0.0.0.0", "127.0.0.1", "::", "::1", "::ffff:127.0.0.1")


def base_scenario(rng: random.Random, index: int) -> Scenario:
    """test_bind_oracle's random combinations (owners and new sockets with devices), from a seeded random."""
    udp = rng.random() < 0.5
    addresses = BASE_UDP_ADDRESSES if udp else BASE_TCP_ADDRESSES
    owners = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("udp", "udp", "udp-connected") if udp else BASE_TCP_KINDS)
        address = rng.choice(addresses)
        if kind in ("client", "tw-client", "udp-connected") and address == "::ffff:0.0.0.0":
            address = "::ffff:127.0.0.1"
        owners.append(
            OwnerSpec(
                kind,
                address,
                reuseaddr=rng.random() < 0.5,
                reuseport=rng.random() < 0.5,
                v6only=rng.choice((None, True, False)) if ":" in address else None,
                device=rng.choice((None, None, "v0", "v1")),
                uid=rng.choice((None, None, OTHER_UID)),
            )
        )
    address = rng.choice((*addresses, "127.0.0.6"))
    new = NewSpec(
        address,
        udp=udp,
        reuseaddr=rng.random() < 0.5,
        reuseport=rng.random() < 0.5,
        v6only=rng.choice((None, True, False)) if ":" in address else None,
        device=rng.choice((None, None, "v0", "v1")),
        uid=rng.choice((None, None, OTHER_UID)),
        listen=rng.choice((True, True, False)),
    )
    return Scenario(f"base {index}", tuple(owners), new)


MIXES = {"hard": scenario, "base": base_scenario, "orphans": orphan_scenario}
PER_SEED = 36


def run_seed(mix: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    scenarios = [MIXES[mix](rng, index) for index in range(PER_SEED)]
    rows = []
    with new_netns("psunc") as ns:
        ns.run("sysctl", "-qw", f"net.ipv6.bindv6only={seed % 2}")
        group = open_group(ns, links=mix == "base")
        try:
            built = [(s, build(group, s)) for s in scenarios]
            built = [(s, port) for s, port in built if port is not None]  # owners that cannot coexist
            time.sleep(0.05)  # closing connections reach TIME-WAIT / FIN-WAIT-2
            reports = check_binds([request_for(s, port, ns, probe=False) for s, port in built])
            for (one, port), report in zip(built, reports, strict=True):
                problem = judge(report, kernel_oracle(group, one.new, port, as_user=True))
                doubts = []
                for doubt in report.model.uncertainty:
                    code = doubt.code.value
                    if code == "hidden-flags":
                        code += f"/{doubt['why']}/{'+'.join(doubt['options'])}"
                    doubts.append(code)
                rows.append(
                    {
                        "mix": mix,
                        "seed": seed,
                        "scenario": repr(one),
                        "verdict": report.model.verdict.value,
                        "wrong": problem,
                        "codes": doubts,
                        "kinds": [owner.kind for owner in one.owners],
                    }
                )
        finally:
            group.close()
    return rows


def summary(rows: list[dict]) -> None:
    for mix in MIXES:
        mine = [row for row in rows if row["mix"] == mix]
        if not mine:
            continue
        uncertain = [row for row in mine if row["verdict"] == "uncertain"]
        wrong = [row for row in mine if row["wrong"]]
        seeds = len({row["seed"] for row in mine})
        share = 100 * len(uncertain) / len(mine)
        counts = f"{len(mine)} judged, {len(uncertain)} uncertain ({share:.1f}%), {len(wrong)} wrong"
        print(f"{mix}: {seeds} seeds, {counts}")
        by_code = collections.Counter(code for row in uncertain for code in set(row["codes"]))
        by_kind = collections.Counter(kind for row in uncertain for kind in set(row["kinds"]))
        for code, count in by_code.most_common():
            print(f"  code {count:5d}  {code}")
        for kind, count in by_kind.most_common():
            print(f"  kind {count:5d}  {kind}")
        for row in wrong:
            print(f"  WRONG seed {row['seed']}: {row['scenario']}: {row['wrong']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", default="hard,base,orphans")
    parser.add_argument("--seeds", default="100-140", help="LOW-HIGH (HIGH excluded) or a comma list")
    parser.add_argument("--no-kernel-table", action="store_true")
    parser.add_argument("--jsonl", help="append every judged scenario to this file")
    args = parser.parse_args()
    if "-" in args.seeds:
        low, high = (int(part) for part in args.seeds.split("-"))
        seeds = list(range(low, high))
    else:
        seeds = [int(part) for part in args.seeds.split(",")]
    if args.no_kernel_table:
        import portscope.sources.tcpbind as tcpbind

        tcpbind.read_tcp_bind_state = lambda *unused, **unused_too: None
    rows = []
    for mix in args.mix.split(","):
        for seed in seeds:
            rows += run_seed(mix, seed)
    if args.jsonl:
        with open(args.jsonl, "a", encoding="utf-8") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)
    summary(rows)
    return 1 if any(row["wrong"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
