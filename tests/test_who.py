"""portscope who without namespaces: argument parsing, cgroup and lineage parsing on recorded data,
and the command line against real loopback sockets of this process (exit codes, --json shape)."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from portscope.cli import cli, main
from portscope.commands.names import Names
from portscope.commands.who import parse_target, who_is_on
from portscope.errors import UsageError
from portscope.model.query import PortRange
from portscope.model.records import Proto
from portscope.render.environment import Environment
from portscope.render.who import PageBuilder, command_line, format_duration, format_time_left, write_plain, write_rich
from portscope.sources.containers import ContainerInfo as Container
from portscope.sources.containers import container_of_cgroup as container_of
from portscope.sources.lineage import SUBREAPER_NAMES, LineageReader, pick_cgroup_path, unit_of
from portscope.sources.services import parse_services

SERVICES = parse_services(
    """
ssh             22/tcp
domain          53/tcp
domain          53/udp
http            80/tcp          www         # WorldWideWeb HTTP
https           443/tcp
https           443/udp
ntp             123/udp
"""
)
BOTH = frozenset(Proto)
TCP = frozenset({Proto.TCP})
UDP = frozenset({Proto.UDP})


# ---------------------------------------------------------------------------------------------------
# Input forms


@pytest.mark.parametrize(
    ("text", "low", "high", "protocols", "address"),
    [
        ("8899", 8899, 8899, BOTH, None),
        (":8899", 8899, 8899, BOTH, None),
        ("*:8899", 8899, 8899, BOTH, None),
        ("8899/udp", 8899, 8899, UDP, None),
        ("8899/TCP", 8899, 8899, TCP, None),
        (":8899/tcp", 8899, 8899, TCP, None),
        ("127.0.0.1:8899", 8899, 8899, BOTH, "127.0.0.1"),
        ("127.0.0.1:8899/udp", 8899, 8899, UDP, "127.0.0.1"),
        ("[::1]:8899", 8899, 8899, BOTH, "::1"),
        ("[::]:8899/tcp", 8899, 8899, TCP, "::"),
        ("[::ffff:127.0.0.1]:80", 80, 80, BOTH, "127.0.0.1"),  # v4-mapped means the IPv4 address
        ("ssh", 22, 22, TCP, None),  # registered for TCP only
        ("domain", 53, 53, BOTH, None),
        ("ntp", 123, 123, UDP, None),
        ("http/tcp", 80, 80, TCP, None),
        ("www", 80, 80, TCP, None),  # an alias
        ("HTTPS/udp", 443, 443, UDP, None),
        ("127.0.0.1:ssh", 22, 22, TCP, "127.0.0.1"),
        ("8000-8100", 8000, 8100, BOTH, None),
        ("8000-8100/udp", 8000, 8100, UDP, None),
        ("1", 1, 1, BOTH, None),
        ("65535", 65535, 65535, BOTH, None),
        (" 8899 ", 8899, 8899, BOTH, None),
    ],
)
def test_input_forms(text, low, high, protocols, address):
    target = parse_target(text, SERVICES)
    assert target.ports == (PortRange(low, high),)
    assert target.protocols == protocols
    assert target.address == (None if address is None else ipaddress.ip_address(address))
    assert target.remote is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "out of range"),
        ("65536", "out of range"),
        ("99999999999", "out of range"),
        ("0-10", "out of range"),
        ("8100-8000", "runs backwards"),
        ("80/sctp", "unknown protocol 'sctp'"),
        ("80/", "unknown protocol ''"),
        ("nosuchservice", "unknown service"),
        ("ntp/tcp", "unknown service"),  # known, but not for TCP
        ("8x", "not a port number"),
        ("::1:80", "brackets"),
        ("[::1]80", "malformed address"),
        ("[::1", "malformed address"),
        ("[127.0.0.1]:80", "brackets are for IPv6"),
        ("1.2.3:80", "malformed address"),
        ("localhost:80", "malformed address"),
        ("127.0.0.1:", "no port"),
        ("", "empty port"),
    ],
)
def test_bad_input(text, message):
    with pytest.raises(UsageError) as caught:
        parse_target(text, SERVICES)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@given(port=st.integers(1, 65535), proto=st.sampled_from(["", "/tcp", "/udp"]))
def test_any_port_number_parses(port, proto):
    target = parse_target(f"{port}{proto}", SERVICES)
    assert target.ports == (PortRange(port, port),)
    assert target.protocols == (BOTH if not proto else frozenset({Proto(proto[1:])}))


@given(address=st.ip_addresses(), port=st.integers(1, 65535))
def test_any_address_parses(address, port):
    text = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    target = parse_target(text, SERVICES)
    mapped = getattr(address, "ipv4_mapped", None)
    assert target.address == (mapped or address)
    assert target.ports == (PortRange(port, port),)


@given(port=st.integers().filter(lambda p: not 1 <= p <= 65535))
def test_out_of_range_ports_are_usage_errors(port):
    with pytest.raises(UsageError):
        parse_target(str(port), SERVICES)


# ---------------------------------------------------------------------------------------------------
# cgroup files in the shapes recorded on real hosts (the ids are made up)

DOCKER_ID = "5d4a0c3a6a4f4e8c0bb8f02d8d5a8c0e1b1f5a29a8c96e6f6c2b1a0e9d8c7b6a"
K8S_ID = "9f1c2d3e4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
POD = "6a3f1e2b-9c1d-4e5f-8a7b-1c2d3e4f5a6b"

CGROUP_SAMPLES = [
    # (cgroup file, expected path (None: the v2 line's), unit, container)
    ("0::/system.slice/nginx.service\n", "/system.slice/nginx.service", "nginx.service", None),
    ("0::/init.scope\n", "/init.scope", "init.scope", None),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", None, "session-3.scope", None),
    (
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope\n",
        None,
        "vte-spawn-1.scope",
        None,
    ),
    (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", None, f"docker-{DOCKER_ID}.scope", Container("docker", DOCKER_ID)),
    # cgroup v1, cgroupfs driver: the v2 line is "/" and the named systemd hierarchy tells
    (
        f"12:pids:/docker/{DOCKER_ID}\n11:memory:/docker/{DOCKER_ID}\n4:cpu,cpuacct:/docker/{DOCKER_ID}\n"
        f"1:name=systemd:/docker/{DOCKER_ID}\n0::/\n",
        f"/docker/{DOCKER_ID}",
        None,
        Container("docker", DOCKER_ID),
    ),
    (
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
        f"{POD.replace('-', '_')}.slice/cri-containerd-{K8S_ID}.scope\n",
        None,
        f"cri-containerd-{K8S_ID}.scope",
        Container("containerd", K8S_ID, pod=POD),
    ),
    (
        f"0::/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{K8S_ID}.scope\n",
        None,
        f"crio-{K8S_ID}.scope",
        Container("cri-o", K8S_ID, pod=POD),
    ),
    (
        f"11:memory:/kubepods/besteffort/pod{POD}/{K8S_ID}\n1:name=systemd:/kubepods/besteffort/pod{POD}/{K8S_ID}\n",
        f"/kubepods/besteffort/pod{POD}/{K8S_ID}",
        None,
        Container("kubernetes", K8S_ID, pod=POD),
    ),
    (
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{DOCKER_ID}.scope/container\n",
        None,
        f"libpod-{DOCKER_ID}.scope",
        Container("podman", DOCKER_ID),
    ),
    (
        f"0::/machine.slice/libpod-{DOCKER_ID}.scope/container\n",
        None,
        f"libpod-{DOCKER_ID}.scope",
        Container("podman", DOCKER_ID),
    ),
    # conmon watches the container from outside it
    (
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{DOCKER_ID}.scope\n",
        None,
        f"libpod-conmon-{DOCKER_ID}.scope",
        None,
    ),
    (f"0::/libpod_parent/libpod-{DOCKER_ID}\n", None, None, Container("podman", DOCKER_ID)),
    (f"0::/default/{K8S_ID}\n", None, None, Container("containerd", K8S_ID)),  # containerd namespace, cgroupfs
    ("0::/lxc.payload.web01/system.slice/nginx.service\n", None, "nginx.service", Container("lxc", "web01")),
    (
        "4:memory:/lxc/web01\n1:name=systemd:/lxc/web01/init.scope\n0::/\n",
        "/lxc/web01/init.scope",
        "init.scope",
        Container("lxc", "web01"),
    ),
    ("0::/lxc.monitor.web01\n", None, None, None),
    (
        "0::/machine.slice/machine-debian\\x2dbuild.scope/payload/system.slice/ssh.service\n",
        None,
        "ssh.service",
        Container("systemd-nspawn", "debian-build"),
    ),
    ("0::/\n", "/", None, None),  # inside a cgroup namespace
    # hybrid hierarchy with an empty unified line: memory wins over nothing
    (
        "9:name=systemd:/\n4:memory:/process_api/cf4aa8310da08575dd49f5b70da275e9\n0::/\n",
        "/process_api/cf4aa8310da08575dd49f5b70da275e9",
        None,
        None,
    ),
]


@pytest.mark.parametrize(("text", "path", "unit", "container"), CGROUP_SAMPLES)
def test_cgroup_samples(text, path, unit, container):
    picked = pick_cgroup_path(text)
    if path is None:
        (path,) = [line[3:] for line in text.splitlines() if line.startswith("0::")]
    assert picked == path
    assert unit_of(picked) == unit
    assert container_of(picked) == container


def test_cgroup_units_where_none():
    assert unit_of("/") is None
    assert unit_of("/process_api/cf4aa8310da08575dd49f5b70da275e9") is None
    assert unit_of("/lxc.monitor.web01") is None
    assert pick_cgroup_path("") is None  # unreadable or empty: unknown, not "/"


def test_container_short_id():
    assert Container("docker", DOCKER_ID).short_id == DOCKER_ID[:12]
    assert Container("lxc", "web01").short_id == "web01"


# ---------------------------------------------------------------------------------------------------
# Lineage on recorded /proc trees

STAT_FILES = ("stat", "cgroup", "cmdline", "status")


def record_proc(dest: Path, pids) -> Path:
    """Copy what lineage reads for these pids (plus the system-wide files) into a /proc-shaped tree."""
    for name in ("stat", "uptime"):
        shutil.copyfile(f"/proc/{name}", dest / name)
    for pid in pids:
        (dest / str(pid)).mkdir()
        for name in STAT_FILES:
            (dest / str(pid) / name).write_bytes(Path(f"/proc/{pid}/{name}").read_bytes())
    return dest


def test_lineage_of_this_process_matches_psutil(tmp_path):
    me = psutil.Process()
    live = LineageReader().lineage(me.pid)
    parents = me.parents()
    assert live is not None and live.complete
    # the chain is psutil's parents, cut at the first service manager
    assert [a.pid for a in live.ancestors] == [p.pid for p in parents[: len(live.ancestors)]]
    assert [a.name for a in live.ancestors] == [p.name() for p in parents[: len(live.ancestors)]]

    def is_manager(process) -> bool:
        return process.pid == 1 or process.ppid() == 0 or process.name() in SUBREAPER_NAMES

    # it stopped at the first service manager up the tree, not before, not after
    managers = [i for i, p in enumerate(parents) if is_manager(p)]
    assert managers and len(live.ancestors) == managers[0] + 1
    assert abs(live.started - me.create_time()) < 1.5
    assert 0 <= live.uptime < 3600 * 24 * 365

    recorded = LineageReader(str(record_proc(tmp_path, [me.pid, *(p.pid for p in parents)]))).lineage(me.pid)
    assert recorded.ancestors == live.ancestors
    assert recorded.cgroup == live.cgroup == pick_cgroup_path(Path("/proc/self/cgroup").read_text())
    assert abs(recorded.started - live.started) < 0.01


def write_process(root: Path, pid: int, comm: str, ppid: int, start_ticks: int, cgroup: str) -> None:
    """A process directory in the real file formats (stat fields after comm as the kernel writes them)."""
    directory = root / str(pid)
    directory.mkdir()
    rest = ["S", str(ppid), str(pid), str(pid), "0", "-1", "4194560"] + ["0"] * 12 + [str(start_ticks)] + ["0"] * 30
    (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
    (directory / "cgroup").write_text(cgroup)
    (directory / "cmdline").write_bytes(comm.encode() + b"\0")


def container_tree(tmp_path: Path) -> Path:
    (tmp_path / "stat").write_text("cpu  1 2 3 4\nbtime 1700000000\nprocesses 4242\n")
    (tmp_path / "uptime").write_text("1000.50 3000.00\n")
    hz = os.sysconf("SC_CLK_TCK")
    write_process(tmp_path, 1, "systemd", 0, 1 * hz, "0::/init.scope\n")
    write_process(tmp_path, 880, "containerd", 1, 10 * hz, "0::/system.slice/containerd.service\n")
    write_process(tmp_path, 4000, "containerd-shim", 1, 400 * hz, "0::/system.slice/containerd.service\n")
    scope = f"0::/system.slice/docker-{DOCKER_ID}.scope\n"
    write_process(tmp_path, 4010, "tini", 4000, 401 * hz, scope)
    write_process(tmp_path, 4242, "nginx: master ) x", 4010, 500 * hz, scope)  # ')' in comm
    write_process(tmp_path, 4243, "nginx", 4242, 501 * hz, scope)
    return tmp_path


def test_lineage_stops_at_subreaper_and_reads_container(tmp_path):
    root = container_tree(tmp_path)
    reader = LineageReader(str(root))
    lineages = {pid: lin for pid in (4243, 4242, 1, 9999) if (lin := reader.lineage(pid)) is not None}
    assert set(lineages) == {4243, 4242, 1}  # 9999 does not exist: skipped, no error
    worker = lineages[4243]
    assert [(a.pid, a.name) for a in worker.ancestors] == [(4242, "nginx: master ) x"), (4010, "tini")]
    assert worker.complete
    assert worker.container == Container("docker", DOCKER_ID)
    assert worker.unit == f"docker-{DOCKER_ID}.scope"
    assert worker.started == pytest.approx(1700000000 + 501)
    assert worker.uptime == pytest.approx(1000.5 - 501)
    init = lineages[1]
    assert init.ancestors == () and init.complete and init.unit == "init.scope"


def test_lineage_with_vanished_ancestor(tmp_path):
    root = container_tree(tmp_path)
    shutil.rmtree(root / "4010")  # tini exited while we were reading
    worker = LineageReader(str(root)).lineage(4243)
    assert [a.pid for a in worker.ancestors] == [4242]
    assert not worker.complete
    shutil.rmtree(root / "4243")
    assert LineageReader(str(root)).lineage(4243) is None


def test_lineage_survives_a_cycle(tmp_path):
    (tmp_path / "stat").write_text("btime 1700000000\n")
    (tmp_path / "uptime").write_text("50.0 1.0\n")
    write_process(tmp_path, 10, "a", 11, 1, "0::/\n")
    write_process(tmp_path, 11, "b", 10, 1, "0::/\n")  # impossible in one instant, possible across reads
    lineage = LineageReader(str(tmp_path)).lineage(10)
    assert [a.pid for a in lineage.ancestors] == [11]
    assert not lineage.complete


# ---------------------------------------------------------------------------------------------------
# Rendering helpers


def test_durations():
    assert format_duration(5) == "5s"
    assert format_duration(65) == "1m 5s"
    assert format_duration(3 * 3600 + 120) == "3h 2m"
    assert format_duration(2 * 86400 + 3600) == "2d 1h"
    assert format_time_left(59_876) == "59s left"
    assert format_time_left(1_234) == "1.2s left"


# ---------------------------------------------------------------------------------------------------
# The command line against sockets of this process on loopback


@pytest.fixture
def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def free_port() -> int:
    """A port nothing is bound to (on any address), found by binding and closing without listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_cli_found_json_shape(listener):
    port = listener.getsockname()[1]
    result = CliRunner().invoke(cli, ["who", "--json", f"127.0.0.1:{port}/tcp"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == {"query", "sockets", "processes"}
    assert document["query"]["ports"] == [{"low": port, "high": port}]
    assert document["query"]["protocols"] == ["tcp"] and document["query"]["address"] == "127.0.0.1"
    # the socket objects are exactly those of ls --json
    ls = CliRunner().invoke(cli, ["ls", "--json", "-a", "-t", "--sport", str(port)], catch_exceptions=False)
    assert document["sockets"] == json.loads(ls.stdout)
    (sock,) = document["sockets"]
    assert sock["inode"] == os.fstat(listener.fileno()).st_ino
    mine = [p for p in document["processes"] if p["pid"] == os.getpid()]
    assert len(mine) == 1
    process = mine[0]
    assert {"pid", "ppid", "name", "user", "cmdline", "started", "unit", "container", "inodes"} <= set(process)
    assert process["inodes"] == [sock["inode"]]
    assert listener.fileno() in process["fds"]
    me = psutil.Process()
    assert process["ppid"] == me.ppid() and process["cmdline"] == me.cmdline() and process["user"] == me.username()
    assert process["parents"][0]["pid"] == me.ppid()


def test_cli_found_human(listener, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    port = listener.getsockname()[1]
    result = CliRunner().invoke(cli, ["who", str(port)], catch_exceptions=False)
    assert result.exit_code == 0
    text = result.stdout
    assert f"pid {os.getpid()}" in text
    assert f"listens    tcp 127.0.0.1:{port}  IPv4" in text
    assert psutil.Process().cmdline()[0] in text  # the full command line, not cut
    assert "parents" in text and "started" in text


def test_cli_nothing_found(capsys):
    port = free_port()
    result = CliRunner().invoke(cli, ["who", str(port)], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout.strip() == f"Nothing is using port {port} (tcp/udp)."
    result = CliRunner().invoke(cli, ["who", "--json", f"{port}/udp"], catch_exceptions=False)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["sockets"] == []
    code, out, _ = run_main(capsys, "who", str(port))
    assert code == 1 and "Nothing is using" in out


@pytest.mark.parametrize(
    "argument",
    ["0", "65536", "70000-70001", "22/sctp", "no-such-service-here", "::1:22", "[::1]22", "300.1.1.1:22", "a:b:c"],
)
def test_cli_usage_errors(capsys, argument):
    code, out, err = run_main(capsys, "who", argument)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("portscope: error: ")
    assert "Traceback" not in err


def test_cli_usage_error_without_argument(capsys):
    code, _, err = run_main(capsys, "who")
    assert code == 2 and err.count("\n") == 1


def test_rendering_fits_80_columns_and_keeps_command_lines_in_pipes(listener):
    port = listener.getsockname()[1]
    result = who_is_on(f"127.0.0.1:{port}")
    names = Names(services=SERVICES, caller_is_root=True, lookup_user=str)
    page = PageBuilder(result, names, unicode=True).build()
    narrow = io.StringIO()
    write_rich(page, dataclasses.replace(Environment.detect(narrow), width=80))
    lines = narrow.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any(f"127.0.0.1:{port}" in line for line in lines)
    assert "\x1b[" not in narrow.getvalue()  # not a terminal: no colour codes
    wide = io.StringIO()
    write_plain(PageBuilder(result, names, unicode=True).build(), wide, None)
    command = " ".join(psutil.Process().cmdline())
    assert any(command in line.replace("'", "") for line in wide.getvalue().splitlines())


def test_usage_error_end_to_end():
    """The installed entry point: one line on stderr, exit 2, for a bad namespace as for a bad port."""
    for argv in (["who", "--netns", "no-such-netns-here", "80"], ["who", "[::1"]):
        done = subprocess.run(
            [sys.executable, "-m", "portscope", *argv], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("portscope: error: ")


@given(st.lists(st.text(max_size=12).filter(str.isprintable), min_size=1))
def test_command_lines_paste_back_into_a_shell(argv):
    # printable arguments round-trip; the others are shown escaped (\xNN), never raw on a terminal
    assert shlex.split(command_line(tuple(argv), "x")) == argv


def test_control_characters_are_escaped():
    assert command_line(("evil\x1b[2Jname",), "x") == "$'evil\\x1b[2Jname'"


def test_container_heading_and_an_unreadable_namespace_behind_a_forwarder(listener):
    """The words for a forwarder whose namespace could not be entered, from records (the live container
    tests cover the namespaces that can)."""
    from portscope.commands.who import Forwarding, ProcessGroup
    from portscope.sources.forwarders import Forward

    port = listener.getsockname()[1]
    result = who_is_on(f"127.0.0.1:{port}")
    (entry,) = result.processes
    web = Container("docker", DOCKER_ID, name="web", compose_project="app", compose_service="web")
    forward = Forward("docker-proxy", "127.0.0.1", port, "172.17.0.2", 8080, web, netns_inode=4026532999)
    forwarding = Forwarding(entry.process, entry.sockets[0], forward, unread="permission denied")
    entry = dataclasses.replace(entry, container=web, forwards=(forwarding,))
    result = dataclasses.replace(
        result, processes=(entry,), groups=(ProcessGroup(web, (entry,)),), forwardings=(forwarding,)
    )
    out = io.StringIO()
    write_plain(PageBuilder(result, Names(SERVICES, True, str), unicode=True).build(), out, None)
    text = out.getvalue()
    assert f"container web (docker, id {DOCKER_ID[:12]}, compose app/web)" in text
    name = f"{entry.process.name}[{entry.process.pid}]"
    assert (
        f"{name} on 127.0.0.1:{port} forwards into its namespace, which could not be read (permission denied)" in text
    )
    assert "172.17.0.2:8080, its namespace could not be read (permission denied)  via docker-proxy" in text
    from portscope.render.who import who_object

    assert who_object(result, None)["processes"][0]["reached_through"] == []


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),  # v4-mapped, as inet_ntop writes it
        st.ip_addresses(v=4).map(lambda a: f"::ffff:0:{a}"),  # v4-translated: not mapped
        st.ip_addresses(v=6).map(lambda a: socket.inet_ntop(socket.AF_INET6, a.packed)),
    ),
    st.sampled_from([8080, 40000]),
)
def test_peer_key_parses_only_mapped_addresses(address, local_port):
    """_peer_key reads an address only where inet_ntop's text says v4-mapped; its twin parses every one."""
    from portscope.commands.who import _peer_key
    from portscope.model.notation import format_endpoint
    from portscope.model.records import Family, Proto, Socket, State

    target = parse_target("8080")
    sock = Socket(Proto.TCP, Family.IPV6, State.ESTABLISHED, "::1", local_port, address, 5555, 0, 0, 0, 1,
                  0, None, None, None, None, None)  # fmt: skip
    parsed = ipaddress.ip_address(address)
    text = str(parsed.ipv4_mapped) if getattr(parsed, "ipv4_mapped", None) else address
    expected = text if local_port == 8080 else format_endpoint(text, 5555)
    assert _peer_key(sock, target) == expected
