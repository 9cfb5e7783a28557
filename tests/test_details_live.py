"""ls -i, -m, -o, -e on live connections in a namespace, against ss -tieom: the kernel's values, read by
portscope's own decoder. Idle connections keep their counters still, so most values must be equal; rtt
and its variance, measured per segment, may only drift between the two reads."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from click.testing import CliRunner

from netns_util import new_netns
from portscope.cli import cli

pytestmark = pytest.mark.live


def _ss_details(ns, port: int) -> dict[tuple[int, int], dict[str, str]]:
    """ss -tnieomH for the connections on ``port``: (local port, remote port) -> its fields."""
    output = ns.run("ss", "-tnieomH", "state", "established", f"( sport = :{port} or dport = :{port} )").stdout
    found: dict[tuple[int, int], dict[str, str]] = {}
    for block in re.split(r"\n(?=\S)", output.strip()):
        fields = block.split()
        local, peer = fields[2], fields[3]
        values: dict[str, str] = {}
        for item in fields[4:]:
            name, colon, value = item.partition(":")
            if colon:
                values[name] = value
        skmem = re.search(r"skmem:\(([^)]*)\)", block)
        values["skmem"] = skmem.group(1) if skmem else ""
        for word in ("pacing_rate", "delivery_rate"):
            rate = re.search(rf"{word} (\d+)bps", block)
            if rate:
                values[word] = rate.group(1)
        found[(int(local.rpartition(":")[2]), int(peer.rpartition(":")[2]))] = values
    return found


SKMEM = "r{rmem_alloc},rb{rcvbuf},t{wmem_alloc},tb{sndbuf},f{fwd_alloc},w{wmem_queued},o{optmem},bl{backlog},d{drops}"


def _memory_text(memory: dict) -> str:
    return SKMEM.format(**memory)


def test_info_and_memory_match_ss():
    with new_netns("psinfo") as ns:
        server = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        client = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", port))
        accepted, _ = server.accept()
        ns.sockets.append(accepted)
        client.sendall(b"x" * 200_000)
        received = 0
        while received < 150_000:
            received += len(accepted.recv(65536))
        accepted.sendall(b"y" * 3000)
        client.recv(1000)  # leaves bytes queued on the client: rmem_alloc > 0
        time.sleep(0.3)  # idle: counters settle

        result = CliRunner().invoke(
            cli,
            [
                "ls",
                "--json",
                "-i",
                "-m",
                "--netns",
                ns.name,
                "state",
                "established",
                f"sport = :{port} or dport = :{port}",
            ],
            catch_exceptions=False,
        )
        ours = {(row["local_port"], row["remote_port"]): row for row in json.loads(result.stdout)}
        theirs = _ss_details(ns, port)
        table = (
            CliRunner().invoke(cli, ["ls", "-eomi", "--netns", ns.name, f"sport = :{port} or dport = :{port}"]).stdout
        )

    assert set(ours) == set(theirs) and len(ours) == 2
    for key, row in ours.items():
        info, memory, ss = row["tcp_info"], row["memory"], theirs[key]
        assert _memory_text(memory) == ss["skmem"]
        assert info["mss"] == int(ss["mss"])
        assert info["cwnd"] == int(ss["cwnd"])
        assert info["rto_us"] / 1000 == pytest.approx(float(ss["rto"]))
        assert info["congestion"] in ss or info["congestion"] in " ".join(ss)  # "cubic"/"bbr" is a bare word
        assert info["bytes_acked"] == int(ss.get("bytes_acked", 0))
        assert info["bytes_received"] == int(ss.get("bytes_received", 0))
        assert info["segs_out"] == int(ss["segs_out"]) and info["segs_in"] == int(ss["segs_in"])
        assert info["advmss"] == int(ss["advmss"]) and info["pmtu"] == int(ss["pmtu"])
        assert info["snd_wnd"] == int(ss["snd_wnd"])
        ss_rtt, ss_rttvar = (float(v) for v in ss["rtt"].split("/"))
        assert info["rtt_us"] / 1000 == pytest.approx(ss_rtt, abs=0.5)  # loopback: well under a millisecond
        assert info["rttvar_us"] / 1000 == pytest.approx(ss_rttvar, abs=0.5)
        if "pacing_rate" in ss:
            assert info["pacing_rate"] * 8 == int(ss["pacing_rate"])
        assert info["retransmits"] == 0 and info["total_retrans"] == 0
    assert any(row["memory"]["rmem_alloc"] > 0 for row in ours.values())
    assert any(row["tcp_info"]["bytes_acked"] > 200_000 for row in ours.values())
    # the table shows the same: the detail columns and ss's texts
    assert "TCP info" in table and "Memory" in table and "Cookie" in table and "Timer" in table
    for row in ours.values():
        assert _memory_text(row["memory"]) in table
        assert f"mss:{row['tcp_info']['mss']} cwnd:{row['tcp_info']['cwnd']}" in table


def test_plain_listing_asks_for_nothing(monkeypatch):
    """No idiag_ext bits and the plain decoder unless a detail is asked for."""
    from portscope.engine import snapshot as engine
    from portscope.model.query import Query
    from portscope.model.records import Detail, State
    from portscope.sources import netlink

    seen = []
    original = netlink.TableDumps.__init__

    def spy(self, requests, **kwargs):
        seen.extend(requests)
        original(self, requests, **kwargs)

    decoders = []

    class SpyDecoder(netlink.DetailsDecoder):
        def __init__(self, *args) -> None:
            decoders.append(args)
            super().__init__(*args)

    monkeypatch.setattr(netlink.TableDumps, "__init__", spy)
    monkeypatch.setattr(netlink, "DetailsDecoder", SpyDecoder)
    engine.snapshot(Query(states=frozenset({State.LISTEN}), join_processes=False))
    assert seen and all(r.extensions == 0 for r in seen) and not decoders
    seen.clear()
    snap = engine.snapshot(
        Query(states=frozenset({State.LISTEN}), join_processes=False, details=frozenset({Detail.MEMORY}))
    )
    assert seen and all(r.extensions == 1 << (netlink.INET_DIAG_SKMEMINFO - 1) for r in seen) and decoders
    assert snap.details and all(d.memory is not None for d in snap.details.values())
