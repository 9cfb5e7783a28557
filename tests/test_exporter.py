"""The Prometheus exporter (serve, export --textfile) and ls --jsonl, checked by the real consumers.

A real Prometheus (Debian's package) scrapes ``portscope serve`` on loopback inside a namespace of ours and
is asked through its HTTP API; a real node_exporter serves the textfile; promtool checks the exposition,
the example alert rules (and runs their unit tests) and the dashboard's queries; 20,000 real connections
to one listener show that clients never become labels. Daemons run in temporary directories inside the
test's namespace and are stopped by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from netns_util import REQUIRE_LIVE, Netns, new_netns, ss_sockets
from portscope.cli import cli
from portscope.commands import metrics
from portscope.commands.metrics import (
    Expectation,
    Exporter,
    ExporterOptions,
    build_families,
    parse_expectation,
    parse_expectations,
    parse_listen,
)
from portscope.engine.snapshot import snapshot
from portscope.errors import UsageError
from portscope.model.query import Query
from portscope.model.records import Family, Holder, JoinReport, Process, Proto, Snapshot, Socket, State
from portscope.render import jsonout
from portscope.render.prometheus import exposition, label_value, write_textfile
from socket_mix import build_mix

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "examples" / "portscope-alerts.yml"
DASHBOARD = ROOT / "examples" / "portscope-dashboard.json"
UNIFIED = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
NO_PID = 4194305  # above PID_MAX_LIMIT: never a live process
NETNS_INODE = 4026530000


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        (pytest.fail if REQUIRE_LIVE else pytest.skip)(f"needs {name} (.ci/run installs it)")
    return path


def portscope(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "portscope", *args], capture_output=True, text=True, timeout=timeout)


def series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, read back with prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def samples(text: str, name: str) -> list[dict[str, str]]:
    return [dict(labels, value=value) for (n, labels), value in series(text).items() if n == name]


# ---------------------------------------------------------------------------------------------------
# Records -> families (no kernel needed)


def sock(state: State, port: int, *, proto=Proto.TCP, remote=None, inode=None, recv_q=0, send_q=0) -> Socket:
    return Socket(
        proto=proto,
        family=Family.IPV4,
        state=state,
        local_address="127.0.0.1",
        local_port=port,
        remote_address="127.0.0.1" if remote else None,
        remote_port=remote,
        recv_q=recv_q,
        send_q=send_q,
        uid=0,
        inode=inode,
        ifindex=0,
        interface=None,
        v6only=None,
        timer=None,
        timer_ms=None,
        netns=NETNS_INODE,
    )


def process(name: str, pid: int = NO_PID, start: float = 1000.0, argv0: str = "/usr/sbin/x") -> Process:
    return Process(pid=pid, ppid=1, name=name, uid=0, user="root", cmdline=(argv0,), start_time=start)


class StubPlaces:
    """Places without a system: a fixed namespace name and container."""

    def __init__(self, container=None) -> None:
        self._container = container

    def netns_name(self, inode):
        return "host" if inode == NETNS_INODE else None

    def container(self, sock, holders):
        return self._container

    def forwards(self, sock, holders):
        return ()  # no forwarder here (the live container tests cover them)


def snap_of(sockets: list[Socket], holders: dict[int, tuple[Holder, ...]]) -> Snapshot:
    return Snapshot(tuple(sockets), holders, (), JoinReport(joined=True), NETNS_INODE, True)


def build(snap: Snapshot, **options) -> metrics.Scrape:
    return build_families(snap, ExporterOptions(**options), places=StubPlaces())


def a_server() -> Snapshot:
    """nginx (master and worker) on 8080 with 3 accepted connections, 2 queued; 2 clients of it from
    ephemeral ports; a TIME-WAIT left on 8080; a bound-only socket; an unconnected UDP socket on 53."""
    nginx = (Holder(process("nginx", start=500.0, argv0="nginx: master"), (6,)), Holder(process("nginx"), (6,)))
    sockets = [
        sock(State.LISTEN, 8080, inode=1, recv_q=2, send_q=511),
        *(sock(State.ESTABLISHED, 8080, remote=41000 + i, inode=10 + i) for i in range(3)),
        *(sock(State.ESTABLISHED, 41000 + i, remote=8080, inode=20 + i) for i in range(2)),
        sock(State.TIME_WAIT, 8080, remote=42000),
        sock(State.BOUND, 9999, inode=30),
        sock(State.UNCONN, 53, proto=Proto.UDP, inode=40),
    ]
    return snap_of(sockets, {1: nginx, 40: (Holder(process("unbound"), (3,)),)})


def test_listeners_carry_holder_names_and_clients_never_become_labels():
    text = exposition(build(a_server())).decode()
    info = samples(text, "portscope_listener_info")
    assert {(s["proto"], s["port"], s["process"]) for s in info} == {("tcp", "8080", "nginx"), ("udp", "53", "unbound")}
    tcp = next(s for s in info if s["port"] == "8080")
    assert tcp == {
        "netns": "host",
        "proto": "tcp",
        "family": "ipv4",
        "address": "127.0.0.1",
        "port": "8080",
        "process": "nginx",  # two holders, one name: no pids
        "unit": "",
        "container": "",
        "value": 1.0,
    }
    start = samples(text, "portscope_listener_start_time_seconds")
    assert {s["port"]: s["value"] for s in start} == {"8080": 500.0, "53": 1000.0}  # the oldest holder
    assert [(s["port"], s["value"]) for s in samples(text, "portscope_listen_queue")] == [("8080", 2.0)]
    assert [(s["port"], s["value"]) for s in samples(text, "portscope_listen_backlog")] == [("8080", 511.0)]
    connections = {(s["port"], s["state"]): s["value"] for s in samples(text, "portscope_connections")}
    # the server side only, per state; the clients' ports 41000/41001 are no labels; UDP 53 gets its 0
    assert connections == {("8080", "established"): 3.0, ("8080", "time-wait"): 1.0, ("53", "established"): 0.0}
    totals = {(s["proto"], s["state"]): s["value"] for s in samples(text, "portscope_sockets")}
    assert totals[("tcp", "established")] == 5.0 and totals[("tcp", "listen")] == 1.0
    assert totals[("tcp", "close-wait")] == 0.0 and totals[("udp", "unconn")] == 1.0
    assert samples(text, "portscope_bound_only_sockets") == [{"netns": "host", "value": 1.0}]


def test_reuseport_group_is_one_series_with_queues_summed():
    listeners = [sock(State.LISTEN, 8080, inode=i, recv_q=i, send_q=100) for i in (1, 2, 3)]
    holders = {i: (Holder(process("app", pid=NO_PID + i), (3,)),) for i in (1, 2, 3)}
    text = exposition(build(snap_of(listeners, holders))).decode()
    assert len(samples(text, "portscope_listener_info")) == 1
    assert samples(text, "portscope_listen_queue")[0]["value"] == 6.0
    assert samples(text, "portscope_listen_backlog")[0]["value"] == 300.0


def test_bound_only_sockets_that_cannot_be_listed_get_no_count():
    snap = a_server()
    blind = Snapshot(snap.sockets, snap.holders, (), snap.join, snap.netns, bound_visible=False)
    text = exposition(build(blind)).decode()
    assert not samples(text, "portscope_bound_only_sockets")
    assert "bound" not in {s["state"] for s in samples(text, "portscope_sockets")}


def test_max_series_cuts_per_listener_series_and_counts_them():
    listeners = [sock(State.LISTEN, 10000 + i, inode=i + 1) for i in range(50)]
    holders = {i + 1: (Holder(process("app"), (3,)),) for i in range(50)}
    snap = snap_of(listeners, holders)
    full = series(exposition(build(snap)).decode())
    limit = 60
    scrape = build(snap, max_series=limit)
    kept = series(exposition(scrape).decode())
    assert len(kept) <= limit < len(full)
    assert scrape.truncated == len(full) - len(kept)
    # totals stay; a listener is kept whole or not at all (its info, start, queue and backlog)
    assert {k for k in full if k[0] == "portscope_sockets"} <= set(kept)
    ports = {dict(labels)["port"] for name, labels in kept if name == "portscope_listener_info"}
    for name in ("portscope_listener_start_time_seconds", "portscope_listen_queue", "portscope_listen_backlog"):
        assert {dict(labels)["port"] for n, labels in kept if n == name} == ports
    assert min(map(int, ports)) == 10000  # in port order: the lowest are kept

    exporter = Exporter(ExporterOptions(max_series=limit), take=lambda query: snap, places=StubPlaces)
    exporter.scrape()
    second = series(exposition(exporter.scrape()).decode())
    assert second[("portscope_series_truncated_total", ())] == 2 * scrape.truncated  # a counter


def test_expectations_match_a_process_executable_or_container():
    from portscope.sources.containers import ContainerInfo

    snap = a_server()
    box = ContainerInfo(runtime="podman", id="ab" * 32, name="web")
    expectations = (
        Expectation(8080, Proto.TCP, "nginx"),  # comm
        Expectation(53, Proto.UDP, "x"),  # argv[0]'s base name
        Expectation(8080, Proto.TCP, "web"),  # the container's name
        Expectation(8080, Proto.TCP, "abababababab"),  # its short id
        Expectation(8080, Proto.UDP, "nginx"),  # the wrong protocol
        Expectation(8081, Proto.TCP, "nginx"),  # the wrong port
        Expectation(8080, Proto.TCP, "ngin"),  # names are matched whole
    )
    text = exposition(build_families(snap, ExporterOptions(expectations=expectations), places=StubPlaces(box))).decode()
    up = {(s["port"], s["proto"], s["expect"]): s["value"] for s in samples(text, "portscope_expected_listener_up")}
    assert up == {
        ("8080", "tcp", "nginx"): 1.0,
        ("53", "udp", "x"): 1.0,
        ("8080", "tcp", "web"): 1.0,
        ("8080", "tcp", "abababababab"): 1.0,
        ("8080", "udp", "nginx"): 0.0,
        ("8081", "tcp", "nginx"): 0.0,
        ("8080", "tcp", "ngin"): 0.0,
    }
    assert samples(text, "portscope_listener_info")[0]["container"] == "web"


HOSTILE = ["\x1b]0;OWNED\x07", "bad\udcff\udcfe", 'q"uote', "back\\slash", "new\nline", "\u202eevil", "ünï"]


def test_hostile_label_values_keep_the_exposition_valid():
    sockets, holders = [], {}
    for i, name in enumerate(HOSTILE, start=1):
        sockets.append(sock(State.LISTEN, 9000 + i, inode=i))
        holders[i] = (Holder(process(name), (3,)),)
    data = exposition(build(snap_of(sockets, holders)))
    text = data.decode("utf-8")  # strict: valid UTF-8
    got = {s["port"]: s["process"] for s in samples(text, "portscope_listener_info")}
    for i, name in enumerate(HOSTILE, start=1):
        assert got[str(9000 + i)] == label_value(name)
        assert got[str(9000 + i)].isprintable()
    assert got["9004"] == "back\\slash" and got["9003"] == 'q"uote' and got["9007"] == "ünï"  # printable: as is
    assert got["9002"] == "bad\\xff\\xfe"  # bytes that are not UTF-8: as \xNN
    check = subprocess.run([tool("promtool"), "check", "metrics"], input=data, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_a_failed_snapshot_is_counted_and_the_next_one_served():
    clock = [0.0]
    calls = []

    def take(query):
        calls.append(query)
        if len(calls) == 2:
            raise OSError(24, "Too many open files")
        return a_server()

    exporter = Exporter(ExporterOptions(interval=10), clock=lambda: clock[0], take=take, places=StubPlaces)
    first = exporter.scrape()
    assert first.error is None and first.family("portscope_listener_info").samples
    clock[0] = 5.0
    assert exporter.scrape() is first and len(calls) == 1  # within --interval: the cached one
    clock[0] = 11.0
    failed = exporter.scrape()
    assert failed.error == "Too many open files"
    assert [f.name for f in failed.families] == [
        metrics.SCRAPE_DURATION,
        metrics.SCRAPE_ERRORS,
        metrics.SERIES_TRUNCATED,
    ]
    assert failed.family(metrics.SCRAPE_ERRORS).samples == (((), 1.0),)
    clock[0] = 22.0
    again = exporter.scrape()
    assert again.error is None and again.family(metrics.SCRAPE_ERRORS).samples == (((), 1.0),)


def test_scrapes_that_waited_share_the_next_snapshot():
    started, release = threading.Event(), threading.Event()
    calls = []

    def take(query):
        calls.append(query)
        if len(calls) == 1:
            started.set()
            release.wait(10)
        return a_server()

    exporter = Exporter(ExporterOptions(), take=take, places=StubPlaces)
    results: list[metrics.Scrape] = []
    threads = [threading.Thread(target=lambda: results.append(exporter.scrape())) for _ in range(4)]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:  # they ask while the first snapshot runs
        thread.start()
    time.sleep(0.3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(results) == 4 and len(calls) == 2  # three waiting scrapes, one more snapshot
    assert len({id(r) for r in results}) == 2
    assert exporter.scrape() is not results[-1] and len(calls) == 3  # a later scrape: a new snapshot


def test_every_family_is_documented_in_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Monitoring many hosts", 1)[1].split("\n## ", 1)[0]
    text = exposition(build(a_server())).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    for name in names:
        assert f"`{name}" in section, name
    for labels in (metrics.LISTENER_LABELS, metrics.CONNECTION_LABELS, metrics.SOCKET_LABELS, metrics.EXPECTED_LABELS):
        assert ", ".join(labels) in section, labels


# ---------------------------------------------------------------------------------------------------
# Arguments and files


def test_expectation_and_listen_forms():
    assert parse_expectation("443/tcp=nginx") == Expectation(443, Proto.TCP, "nginx")
    assert parse_expectation(" 53/UDP = unbound.service ") == Expectation(53, Proto.UDP, "unbound.service")
    assert parse_expectation("ssh/tcp=sshd").port == 22
    for bad in ("443=nginx", "443/tcp", "443/tcp=", "443/sctp=x", "0/tcp=x", "70000/tcp=x", "80-90/tcp=x"):
        with pytest.raises(UsageError):
            parse_expectation(bad)
    assert parse_expectations("# comment\n\n22/tcp=sshd  # trailing\n53/udp=unbound\n") == (
        Expectation(22, Proto.TCP, "sshd"),
        Expectation(53, Proto.UDP, "unbound"),
    )
    with pytest.raises(UsageError, match=r"exp\.txt, line 2"):
        parse_expectations("22/tcp=sshd\nnonsense\n", "exp.txt")
    assert parse_listen("127.0.0.1:9717") == ("127.0.0.1", 9717)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":9717") == ("::", 9717)
    assert parse_listen("localhost:9717") == ("localhost", 9717)
    for bad in ("9717", "127.0.0.1", "[::1]", "127.0.0.1:99999", "1.2.3.4:80/udp"):
        with pytest.raises(UsageError):
            parse_listen(bad)


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--listen", "9717"],
        ["serve", "--expect", "80=nginx"],
        ["serve", "--interval", "-1"],
        ["serve", "--max-series", "0"],
        ["export", "--textfile", "/nonexistent-portscope-dir"],
        ["export", "--expect-file", "/nonexistent-portscope-file"],
        ["export", "--netns", "no-such-namespace-here"],
        ["ls", "--json", "--jsonl"],
    ],
)
def test_bad_input_is_one_line_and_status_2(args):
    done = portscope(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_textfile_is_replaced_atomically(tmp_path, monkeypatch):
    scrape = build(a_server())
    path = write_textfile(str(tmp_path), exposition(scrape))
    assert path == str(tmp_path / "portscope.prom")
    assert os.stat(path).st_mode & 0o777 == 0o644  # node_exporter runs as its own user
    assert os.listdir(tmp_path) == ["portscope.prom"]
    before = Path(path).read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_textfile(str(tmp_path), b"half")
    assert os.listdir(tmp_path) == ["portscope.prom"] and Path(path).read_bytes() == before


def test_ls_and_completion_never_import_prometheus_client():
    for argv in (["-m", "portscope", "ls", "-n", "--no-processes"], ["-c", "import portscope.cli"]):
        done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "prometheus_client" not in done.stderr
    env = {**os.environ, "_PORTSCOPE_COMPLETE": "bash_complete", "COMP_LINE": "portscope serve --"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "portscope"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "--listen" in done.stdout and "prometheus_client" not in done.stderr


# ---------------------------------------------------------------------------------------------------
# The examples, checked by promtool

ALERT_TESTS = ROOT / "tests" / "fixtures" / "prometheus" / "alerts.test.yml"


def test_alert_rules_pass_promtool_and_fire_on_the_metrics(tmp_path):
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS" in check.stdout, check.stdout + check.stderr
    run = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


def test_dashboard_queries_parse_and_name_exported_metrics(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 6
    known = {
        getattr(metrics, name)
        for name in dir(metrics)
        if name.isupper()
        and isinstance(getattr(metrics, name), str)
        and getattr(metrics, name).startswith("portscope_")
    }
    for expr in exprs:
        for name in re.findall(r"portscope_[a-z_]+", expr):
            assert name in known, (name, expr)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$instance", ".*")} for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    check = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


# ---------------------------------------------------------------------------------------------------
# Live: a namespace of ours, real daemons in it


def http_get(ns: Netns, url: str, accept: str | None = None, timeout: float = 30) -> tuple[str, str]:
    """GET inside the namespace (the connection is made while this thread is in it); no proxies."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with ns.inside(), opener.open(request, timeout=timeout) as response:
        return response.headers.get("Content-Type", ""), response.read().decode("utf-8")


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def daemon(ns: Netns, *argv: str, **kwargs) -> Iterator[subprocess.Popen]:
    """A process in the namespace (ip netns exec execs it: the pid is its own), stopped by pid."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *argv], **kwargs)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def serving_url(proc: subprocess.Popen, timeout: float = 20) -> str:
    """The address serve says it listens on (its first line on stderr)."""
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    line = proc.stderr.readline() if ready else ""
    found = re.search(r"serving metrics on (\S+)", line)
    assert found, f"serve did not start: {line!r}"
    return found.group(1)


HOLDER = r"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode())  # PR_SET_NAME
server = socket.create_server(("127.0.0.1", int(sys.argv[2])))
print("ready", flush=True)
sys.stdin.read()
"""
EXPECTED_PORT = 8443


@pytest.fixture
def unit_cgroup() -> Iterator[Path]:
    """A cgroup named like a systemd service: the unit label of the processes moved into it."""
    path = Path(UNIFIED, f"pstest-{uuid.uuid4().hex[:8]}.service")
    try:
        path.mkdir()
    except OSError as exc:
        (pytest.fail if REQUIRE_LIVE else pytest.skip)(f"no writable cgroup tree at {UNIFIED}: {exc}")
    try:
        yield path
    finally:
        for _ in range(50):  # empty once its processes are reaped
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.live
def test_prometheus_scrapes_serve_and_sees_the_listener_go(tmp_path, unit_cgroup):
    prometheus, promtool = tool("prometheus"), tool("promtool")
    unit = unit_cgroup.name
    config = tmp_path / "prometheus.yml"
    config.write_text(
        textwrap.dedent(f"""\
        global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
        rule_files: [{json.dumps(str(ALERTS))}]
        scrape_configs:
          - job_name: portscope
            static_configs: [{{targets: ["127.0.0.1:9717"]}}]
        """)
    )
    with new_netns("psexport") as ns, contextlib.ExitStack() as stack:
        holder = stack.enter_context(
            daemon(
                ns, sys.executable, "-c", HOLDER, "ps-expected", str(EXPECTED_PORT),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
        )  # fmt: skip
        assert holder.stdout.readline().strip() == "ready"
        (unit_cgroup / "cgroup.procs").write_text(str(holder.pid))
        prom_argv = [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            "--web.listen-address=127.0.0.1:9090", "--log.level=warn",
        ]  # fmt: skip
        # Prometheus first (it takes seconds to start; it retries the target meanwhile), then serve
        stack.enter_context(daemon(ns, *prom_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        serve_argv = [
            sys.executable, "-m", "portscope", "serve",  # the default --listen: 127.0.0.1:9717
            "--expect", f"{EXPECTED_PORT}/tcp=ps-expected", "--expect", f"{EXPECTED_PORT}/tcp={unit[:-8]}",
        ]  # fmt: skip
        serve = stack.enter_context(daemon(ns, *serve_argv, stderr=subprocess.PIPE, text=True))
        url = serving_url(serve)
        assert url == "http://127.0.0.1:9717/metrics"

        # the formats, as the Accept header asks; promtool accepts the text format
        kind, text = http_get(ns, url)
        assert kind.startswith("text/plain") and "portscope_listener_info{" in text
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        kind, open_metrics = http_get(ns, url, accept="application/openmetrics-text; version=1.0.0")
        assert kind.startswith("application/openmetrics-text") and open_metrics.endswith("# EOF\n")

        api = "http://127.0.0.1:9090/api/v1"

        def query(promql: str) -> list[dict]:
            _, body = http_get(ns, f"{api}/query?{urllib.parse.urlencode({'query': promql})}")
            return json.loads(body)["data"]["result"]

        listener = f'portscope_listener_info{{port="{EXPECTED_PORT}"}}'
        found = wait_for(lambda: query(listener), 30, "Prometheus to have the listener")
        assert len(found) == 1
        assert found[0]["metric"] == {
            "__name__": "portscope_listener_info",
            "instance": "127.0.0.1:9717",
            "job": "portscope",
            "netns": ns.name,
            "proto": "tcp",
            "family": "ipv4",
            "address": "127.0.0.1",
            "port": str(EXPECTED_PORT),
            "process": "ps-expected",
            "unit": unit,
        }  # container "" is no label in Prometheus
        targets = json.loads(http_get(ns, f"{api}/targets")[1])["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]  # it parsed the OpenMetrics exposition
        up = {r["metric"]["expect"]: r["value"][1] for r in query("portscope_expected_listener_up")}
        assert up == {"ps-expected": "1", unit[:-8]: "1"}

        holder.kill()  # the expected process stops
        holder.wait(timeout=10)
        wait_for(
            lambda: {r["value"][1] for r in query("portscope_expected_listener_up")} == {"0"},
            15,
            "portscope_expected_listener_up to flip to 0",
        )
        wait_for(lambda: query(listener) == [], 10, "the listener gone from Prometheus")

        def pending():
            alerts = json.loads(http_get(ns, f"{api}/alerts")[1])["data"]["alerts"]
            return {
                a["labels"]["expect"]
                for a in alerts
                if a["labels"]["alertname"] == "PortscopeExpectedListenerDown" and a["state"] in ("pending", "firing")
            }

        assert wait_for(pending, 15, "the example alert") == {"ps-expected", unit[:-8]}
        assert query("portscope_scrape_errors_total") and query("process_resident_memory_bytes")

        # flat memory: scrapes later the exporter is no bigger (a snapshot walks all of /proc: keep it few)
        def rss() -> int:
            status = Path(f"/proc/{serve.pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

        for _ in range(8):
            http_get(ns, url)
        before = rss()
        for _ in range(24):
            http_get(ns, url)
        assert rss() - before < 2048, (before, rss())  # KiB
        assert serve.poll() is None
        # the garbage collector runs in serve (the console script turns it off for short commands)
        assert series(http_get(ns, url)[1])[("python_gc_collections_total", (("generation", "0"),))] > 0


HOSTILE_HOLDER = r"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode("utf-8", "surrogateescape"))  # PR_SET_NAME: any bytes
server = socket.create_server(("127.0.0.1", 8444))
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.live
def test_hostile_process_and_unit_names_keep_the_exposition_valid(tmp_path):
    comm = b"\x1b]0;x\x07\xff\xfe\\n"  # an OSC, bytes that are not UTF-8, a backslash
    cgroup = Path(UNIFIED, os.fsdecode(b"pstest-\xff\x1b[2J" + uuid.uuid4().hex[:6].encode() + b".service"))
    with new_netns("psexport") as ns:
        argv = [sys.executable, "-c", HOSTILE_HOLDER, os.fsdecode(comm)]
        with daemon(ns, *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
            assert holder.stdout.readline().strip() == "ready"
            try:
                cgroup.mkdir()
                (cgroup / "cgroup.procs").write_text(str(holder.pid))
            except OSError as exc:
                (pytest.fail if REQUIRE_LIVE else pytest.skip)(f"no writable cgroup tree at {UNIFIED}: {exc}")
            done = subprocess.run(
                [sys.executable, "-m", "portscope", "export", "--netns", ns.name], capture_output=True, timeout=60
            )
            holder.kill()
            holder.wait(timeout=10)
        for _ in range(50):
            with contextlib.suppress(OSError):
                cgroup.rmdir()
            if not cgroup.exists():
                break
            time.sleep(0.1)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8")  # strict
    check = subprocess.run([tool("promtool"), "check", "metrics"], input=done.stdout, capture_output=True)
    assert check.returncode == 0, check.stderr
    (found,) = [s for s in samples(text, "portscope_listener_info") if s["port"] == "8444"]
    assert found["process"] == "\\x1b]0;x\\x07\\xff\\xfe\\\\n"
    assert found["unit"].startswith("pstest-\\xff\\x1b[2J") and found["unit"].endswith(".service")
    assert all(value.isprintable() for value in found.values() if isinstance(value, str))


@pytest.mark.live
def test_a_failed_scrape_is_counted_and_serve_keeps_running():
    with new_netns("psexport") as ns, new_netns("psgone") as gone:
        argv = [sys.executable, "-m", "portscope", "serve", "--listen", "127.0.0.1:0", "--netns", gone.name]
        with daemon(ns, *argv, stderr=subprocess.PIPE, text=True) as serve:
            url = serving_url(serve)
            first = series(http_get(ns, url)[1])
            assert first[("portscope_scrape_errors_total", ())] == 0
            subprocess.run(["ip", "netns", "del", gone.name], check=True, capture_output=True)
            after = series(http_get(ns, url)[1])
            assert after[("portscope_scrape_errors_total", ())] == 1
            assert not any(name == "portscope_listener_info" for name, _ in after)
            assert serve.poll() is None
            note = serve.stderr.readline()
            assert "scrape failed" in note and gone.name in note, note
            assert series(http_get(ns, url)[1])[("portscope_scrape_errors_total", ())] == 2


@pytest.fixture(scope="module")
def mixed():
    with new_netns("psmix") as ns:
        mix = build_mix(ns)
        yield mix


@pytest.mark.live
def test_textfile_is_served_by_node_exporter_and_agrees_with_ss(mixed, tmp_path):
    node_exporter, promtool = tool("prometheus-node-exporter"), tool("promtool")
    ns = mixed.ns
    done = portscope("export", "--netns", ns.name, "--textfile", str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "portscope.prom").read_text(encoding="utf-8")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    # the oracle: ss in the namespace (it cannot list bound-only sockets: those are the mix's own list)
    totals = {(s["proto"], s["state"]): s["value"] for s in samples(text, "portscope_sockets")}
    counted: dict[tuple[str, str], int] = {}
    for found in ss_sockets(ns):
        counted[(found.proto, found.state)] = counted.get((found.proto, found.state), 0) + 1
    assert {k: v for k, v in totals.items() if v and k[1] != "bound"} == counted
    assert totals[("tcp", "bound")] == len(mixed.bound_only)
    queues = {s["port"]: s["value"] for s in samples(text, "portscope_listen_queue")}
    listening = {(s.local_port, s.recv_q) for s in ss_sockets(ns) if s.state == "listen"}
    assert {(int(port), int(value)) for port, value in queues.items()} == listening

    argv = [
        node_exporter, "--web.listen-address=127.0.0.1:9100", "--collector.disable-defaults",
        "--collector.textfile", f"--collector.textfile.directory={tmp_path}",
    ]  # fmt: skip
    with daemon(ns, *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        served = wait_for(lambda: http_get(ns, "http://127.0.0.1:9100/metrics")[1], 15, "node_exporter")
    assert series(served)[("node_textfile_scrape_error", ())] == 0
    mine = {k: v for k, v in series(text).items() if k[0].startswith("portscope_")}
    assert {k: v for k, v in series(served).items() if k[0].startswith("portscope_")} == mine


@pytest.mark.live
def test_every_namespace_is_labelled(mixed):
    done = portscope("export", "--netns", "all")
    assert done.returncode == 0, done.stderr
    namespaces = {s["netns"] for s in samples(done.stdout, "portscope_listener_info")}
    assert mixed.ns.name in namespaces
    mine = {s["port"] for s in samples(done.stdout, "portscope_listener_info") if s["netns"] == mixed.ns.name}
    assert str(mixed.ports["listen4"]) in mine
    totals = {s["netns"] for s in samples(done.stdout, "portscope_sockets")}
    assert {"host", mixed.ns.name} <= totals


@pytest.mark.live
def test_jsonl_lines_are_the_json_elements(mixed):
    ns = mixed.ns
    snap = snapshot(Query(states=None, netns=ns.name))
    from portscope.commands.names import Names

    names = Names.resolve()
    import io

    array, lines = io.StringIO(), io.StringIO()
    jsonout.write_sockets(array, snap, names.services, names.places)
    jsonout.write_socket_lines(lines, snap, names.services, names.places)
    elements = [line.rstrip(",") for line in array.getvalue().splitlines()[1:-1]]
    assert lines.getvalue().splitlines() == elements and len(elements) == len(snap.sockets) > 10

    def without_timers(objects):
        return [{k: v for k, v in o.items() if k != "timer_ms"} for o in objects]

    via_json = CliRunner().invoke(cli, ["ls", "-a", "--netns", ns.name, "--json"], catch_exceptions=False)
    via_jsonl = CliRunner().invoke(cli, ["ls", "-a", "--netns", ns.name, "--jsonl"], catch_exceptions=False)
    assert via_json.exit_code == via_jsonl.exit_code == 0
    jsonl = [json.loads(line) for line in via_jsonl.stdout.splitlines()]
    assert without_timers(jsonl) == without_timers(json.loads(via_json.stdout))


def socket_farm() -> Path:
    """shared/tools/socket_farm.py, beside the checkout (CI) or beside its worktree folder."""
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / "shared" / "tools" / "socket_farm.py"
        if path.is_file():
            return path
    (pytest.fail if REQUIRE_LIVE else pytest.skip)("needs shared/tools/socket_farm.py beside the checkout")
    raise AssertionError


CLIENTS = 20000


@pytest.mark.live
def test_twenty_thousand_clients_add_no_series():
    farm_path = socket_farm()
    with new_netns("psfarm") as ns:
        argv = [sys.executable, str(farm_path), "-n", str(CLIENTS), "--dsts", "1", "--ports", "1", "--timeout", "120"]
        with daemon(ns, *argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as farm:
            ready, _, _ = select.select([farm.stdout], [], [], 60)
            line = farm.stdout.readline() if ready else ""
            assert line.startswith("READY "), line
            facts = dict(item.split("=", 1) for item in line.split()[1:])
            assert int(facts["established_pairs"]) == CLIENTS
            done = portscope("export", "--netns", ns.name)
    assert done.returncode == 0, done.stderr
    found = series(done.stdout)
    listener_ports = {dict(labels)["port"] for name, labels in found if name == "portscope_listener_info"}
    connections = {
        dict(labels)["state"]: value for (name, labels), value in found.items() if name == "portscope_connections"
    }
    ports = {dict(labels)["port"] for name, labels in found if name == "portscope_connections"}
    assert ports == listener_ports == {"15000"}  # the farm's listeners' port: no client port is a label
    assert connections == {"established": CLIENTS}  # the server side, one count per state
    totals = {
        (dict(labels)["proto"], dict(labels)["state"]): v
        for (name, labels), v in found.items()
        if name == "portscope_sockets"
    }
    assert totals[("tcp", "established")] == 2 * CLIENTS
    # every series: per listener (a few: one per farm worker), per state, and portscope's own
    assert len(found) < 40 + 4 * int(facts["listeners"]), len(found)
