"""Real podman and docker containers for tests, with private roots, and a complete clean-up.

Installs nothing (CI's .ci/run installs podman, runc, passt, slirp4netns, busybox-static, docker.io).
Everything lives under one temporary directory: podman's storage/run roots, network config and tmpdir,
dockerd's data/exec roots and socket. The image is a busybox-static rootfs imported locally (no
registry). podman gets its own CNI network and dockerd its own bridge, with subnets picked at random,
so parallel sessions do not meet. Clean-up removes what this session created and nothing else that it
can tell apart: containers, images, networks, the daemon (by pid), bridges, cgroup dirs, iptables rules
and chains that appeared meanwhile, mounts under the temporary directory; net.ipv4.ip_forward is restored.

Notes from ../shared/spec/container-layouts.md: crun refuses hybrid cgroups and root cannot raise the
default rlimits here (hence runc, cgroupfs and explicit ulimits); ``/usr/bin/docker`` because a newer
client may come first on PATH; ``rm -f -t 0`` because httpd as PID 1 ignores SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import pytest

from netns_util import REQUIRE_LIVE

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"
CGROUP_ROOT = "/sys/fs/cgroup"
# Fixed paths the runtimes create even with private roots (shim sockets, runc state, CNI's IPAM and
# cache, image cache): removed afterwards when they did not exist before.
RUNTIME_STATE_DIRS = (
    "/run/containerd",
    "/run/runc",
    "/run/docker",
    "/run/libpod",
    "/var/lib/cni",
    "/var/lib/containers",  # podman import writes its blob-info cache here whatever the root
)
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def podman_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run containers"
    for tool in ("podman", "runc", "conmon", "slirp4netns", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install podman runc slirp4netns iptables)"
    if not os.path.exists(BUSYBOX):
        return "needs busybox-static"
    return None


def docker_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run containers"
    for path in (DOCKERD, DOCKER, "/usr/sbin/docker-proxy"):
        if not os.path.exists(path):
            return f"needs {path} (apt-get install docker.io)"
    if not os.path.exists(BUSYBOX):
        return "needs busybox-static"
    return None


def require(missing: str | None) -> None:
    """Skip, or under PORTSCOPE_REQUIRE_LIVE=1 fail, when a runtime is missing."""
    if missing:
        (pytest.fail if REQUIRE_LIVE else pytest.skip)(f"container test cannot run: {missing}")


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 30) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout.strip()


def make_rootfs_tar(directory: str) -> str:
    """A tarball of a busybox-static root filesystem with /www/index.html for httpd."""
    root = os.path.join(directory, "rootfs")
    os.makedirs(f"{root}/bin")
    os.makedirs(f"{root}/etc")
    os.makedirs(f"{root}/www")
    shutil.copy(BUSYBOX, f"{root}/bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", f"{root}/bin/{applet}")
    with open(f"{root}/etc/passwd", "w") as handle:
        handle.write("root:x:0:0:root:/:/bin/sh\n")
    with open(f"{root}/www/index.html", "w") as handle:
        handle.write("portscope\n")
    tarball = os.path.join(directory, "rootfs.tar")
    _run(["tar", "-cf", tarball, "-C", root, "."])
    return tarball


# ---------------------------------------------------------------------------------------------------
# Host state the runtimes change


def _iptables_state(tool: str) -> dict[str, tuple[set[str], set[str]]]:
    """{table: (chains, rules)} as ``TOOL -t TABLE -S`` prints them."""
    state = {}
    if shutil.which(tool) is None:
        return state
    for table in ("nat", "filter"):
        done = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False, timeout=10)
        if done.returncode == 0:
            lines = done.stdout.splitlines()
            chains = {line.split()[1] for line in lines if line.startswith("-N ")}
            rules = {line for line in lines if line.startswith("-A ")}
            state[table] = (chains, rules)
    return state


@dataclass
class HostState:
    """What was there before, so that clean-up removes only what appeared meanwhile."""

    ip_forward: str
    links: set[str]
    iptables: dict[str, dict[str, tuple[set[str], set[str]]]]
    cgroup_dirs: set[str]
    absent_dirs: tuple[str, ...]  # runtime state dirs that did not exist before

    @classmethod
    def capture(cls) -> HostState:
        with open("/proc/sys/net/ipv4/ip_forward") as handle:
            ip_forward = handle.read().strip()
        return cls(
            ip_forward,
            set(os.listdir("/sys/class/net")),
            {tool: _iptables_state(tool) for tool in ("iptables", "ip6tables")},
            _runtime_cgroup_dirs(),
            tuple(path for path in RUNTIME_STATE_DIRS if not os.path.lexists(path)),
        )

    def restore(self) -> list[str]:
        """Undo what appeared since capture; returns what could not be undone."""
        problems = []
        for tool, before in self.iptables.items():
            for table, (chains, rules) in _iptables_state(tool).items():
                old_chains, old_rules = before.get(table, (set(), set()))
                for rule in rules - old_rules:
                    argv = [tool, "-t", table, "-D", *shlex.split(rule)[1:]]
                    if subprocess.run(argv, capture_output=True, check=False).returncode != 0:
                        problems.append(" ".join(argv))
                for chain in chains - old_chains:
                    subprocess.run([tool, "-t", table, "-F", chain], capture_output=True, check=False)
                for chain in chains - old_chains:
                    done = subprocess.run([tool, "-t", table, "-X", chain], capture_output=True, check=False)
                    if done.returncode != 0:
                        problems.append(f"{tool} -t {table} -X {chain}")
        for link in set(os.listdir("/sys/class/net")) - self.links:
            if link.startswith(("cni-podman", "psd-", "veth", "docker")):
                subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        for directory in sorted(_runtime_cgroup_dirs() - self.cgroup_dirs, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        for path in self.absent_dirs:
            shutil.rmtree(path, ignore_errors=True)
        with open("/proc/sys/net/ipv4/ip_forward", "w") as handle:
            handle.write(self.ip_forward)
        return problems


def _runtime_cgroup_dirs() -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for hierarchy in os.listdir(CGROUP_ROOT):
            for top in ("docker", "libpod_parent"):
                base = f"{CGROUP_ROOT}/{hierarchy}/{top}"
                for directory, _, _ in os.walk(base):
                    found.add(directory)
    return found


def _unmount_under(directory: str) -> None:
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    for point in sorted({p for p in points if p.startswith(directory + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# ---------------------------------------------------------------------------------------------------
# The runtimes


@dataclass
class Podman:
    base: str
    created: list[str] = field(default_factory=list)  # container names
    networks: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def storage_root(self) -> str:
        return f"{self.base}/storage"

    @property
    def run_root(self) -> str:
        return f"{self.base}/run"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": f"{self.base}/containers.conf"}

    def __call__(self, *args: str) -> str:
        argv = [
            "podman",
            "--root", self.storage_root,
            "--runroot", self.run_root,
            "--tmpdir", f"{self.base}/tmp",
            "--network-config-dir", f"{self.base}/cni",
            "--storage-driver", "overlay",
            *args,
        ]  # fmt: skip
        return _run(argv, env=self._env())

    def setup(self, tarball: str) -> None:
        for sub in ("storage", "run", "tmp", "cni"):
            os.makedirs(f"{self.base}/{sub}", exist_ok=True)
        with open(f"{self.base}/containers.conf", "w") as handle:
            handle.write(CONTAINERS_CONF)
        image = f"localhost/pstest-{uuid.uuid4().hex[:8]}:1"
        self("import", tarball, image)
        self.images.append(image)
        network = f"pstest-{uuid.uuid4().hex[:8]}"
        self("network", "create", "--subnet", f"10.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24", network)
        self.networks.append(network)

    def run(self, name: str, *options: str, port: int = 8080) -> str:
        # recorded by name before it runs: a run that fails half-way (under load) may still leave the container
        self.created.append(name)
        container_id = self(
            "run",
            "-d",
            "--name",
            name,
            *options,
            self.images[0],
            "busybox",
            "httpd",
            "-f",
            "-p",
            str(port),
            "-h",
            "/www",
        ).splitlines()[-1]
        return container_id

    def teardown(self) -> None:
        for name in self.created:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self("rm", "-f", "-t", "0", name)
        for network in self.networks:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self("network", "rm", "-f", network)
            shutil.rmtree(f"/var/lib/cni/networks/{network}", ignore_errors=True)  # CNI's address leases
        for image in self.images:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self("rmi", "-f", image)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self("system", "prune", "-f")  # leftover storage layers


@dataclass
class Docker:
    base: str
    bridge: str = ""
    subnet_prefix: str = ""
    daemon: subprocess.Popen | None = None
    created: list[str] = field(default_factory=list)  # container names
    options: tuple[str, ...] = ()  # more dockerd options (--userland-proxy=false)

    @property
    def data_root(self) -> str:
        return f"{self.base}/data"

    @property
    def exec_root(self) -> str:
        return f"{self.base}/exec"

    def __call__(self, *args: str) -> str:
        return _run([DOCKER, "-H", f"unix://{self.base}/docker.sock", *args])

    def setup(self, tarball: str) -> None:
        self.bridge = f"psd-{uuid.uuid4().hex[:8]}"
        self.subnet_prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
        _run(["ip", "link", "add", "name", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.subnet_prefix}.1/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        argv = [
            DOCKERD,
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge",
            self.bridge,
            "--data-root",
            self.data_root,
            "--exec-root",
            self.exec_root,
            "--pidfile",
            f"{self.base}/dockerd.pid",
            "-H",
            f"unix://{self.base}/docker.sock",
            *self.options,
        ]
        self.daemon = subprocess.Popen(
            argv,
            stdout=open(f"{self.base}/dockerd.log", "wb"),  # noqa: SIM115 - the daemon keeps it
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self("version", "--format", "{{.Server.Version}}")
                break
            except RuntimeError:
                if self.daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd did not start: see {self.base}/dockerd.log") from None
                time.sleep(0.1)
        self("import", tarball, "pstest:1")

    def run(self, name: str, *options: str, port: int = 8080) -> str:
        self.created.append(name)  # by name before it runs, as for podman
        return self(
            "run", "-d", "--name", name, *options, "pstest:1", "busybox", "httpd", "-f", "-p", str(port), "-h", "/www"
        ).splitlines()[-1]

    def teardown(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            for name in self.created:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self("rm", "-f", name)
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self("rmi", "-f", "pstest:1")
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(timeout=5)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


@dataclass
class Runtimes:
    base: str
    podman: Podman | None
    docker: Docker | None
    podman_problem: str | None
    docker_problem: str | None
    docker_without_proxy: Docker | None = None  # a second dockerd with --userland-proxy=false


@contextlib.contextmanager
def runtimes(*, without_proxy: bool = False):
    """podman and a private dockerd, each ready with an imported image (whichever is installed);
    ``without_proxy``: also a second dockerd with ``--userland-proxy=false``."""
    podman_problem, docker_problem = podman_missing(), docker_missing()
    if podman_problem and docker_problem:
        yield Runtimes("", None, None, podman_problem, docker_problem)
        return
    state = HostState.capture()
    base = tempfile.mkdtemp(prefix="pstest-containers-")
    podman = docker = plain = None
    try:
        tarball = make_rootfs_tar(base)
        if not podman_problem:
            podman = Podman(f"{base}/podman")
            podman.setup(tarball)
        if not docker_problem:
            docker = Docker(f"{base}/docker")
            os.makedirs(docker.base)
            docker.setup(tarball)
            if without_proxy:
                plain = Docker(f"{base}/docker-noproxy", options=("--userland-proxy=false",))
                os.makedirs(plain.base)
                plain.setup(tarball)
        yield Runtimes(base, podman, docker, podman_problem, docker_problem, plain)
    finally:
        if plain is not None:
            plain.teardown()
        if docker is not None:
            docker.teardown()
        if podman is not None:
            podman.teardown()
        _unmount_under(base)
        problems = state.restore()
        shutil.rmtree(base, ignore_errors=True)
        if problems:
            raise RuntimeError(f"container clean-up left: {problems}")
