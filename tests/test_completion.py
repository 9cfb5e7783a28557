"""Shell completion: the protocol through the real command, live values, the three shells, its cost."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from netns_util import REQUIRE_LIVE, new_netns, ss_sockets
from portscope import __version__
from portscope.cli import cli
from portscope.model.query import state_choices
from portscope.shell.scripts import SHELLS, BashCompletion, completion_script
from portscope.shell.values import (
    complete_interfaces,
    complete_local_addresses,
    complete_netns,
    complete_pids,
    complete_ports,
    complete_states,
    complete_users,
    local_addresses,
    running_processes,
)

ROOT = Path(__file__).resolve().parents[1]
BASH_WORDBREAKS = " \t\n\"'><=;|&(:"
BIN_DIR = os.path.dirname(sys.executable)
ENV_PATH = BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def request(shell: str, line: str, *, importtime: bool = False) -> subprocess.CompletedProcess:
    """One <TAB> as the shell scripts send it, answered by ``python -m portscope``."""
    env = {**os.environ, "_PORTSCOPE_COMPLETE": f"{shell}_complete"}
    if shell == "bash":
        env |= {"COMP_LINE": line, "COMP_WORDBREAKS": BASH_WORDBREAKS}
    else:
        words = line.split(" ")
        if shell == "zsh":
            env |= {"COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
        else:
            env |= {"COMP_WORDS": line, "COMP_CWORD": words[-1]}
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "portscope"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def values(shell: str, line: str) -> list[str]:
    result = request(shell, line)
    assert result.returncode == 0, result.stderr
    if shell == "bash":
        return [entry.partition(",")[2] for entry in result.stdout.splitlines() if entry]
    if shell == "fish":
        return [entry.split("\t")[1] for entry in result.stdout.splitlines() if entry]
    lines = result.stdout.splitlines()
    return [lines[i + 1].replace(r"\:", ":") for i in range(0, len(lines), 3)]


def command_names() -> list[str]:
    return cli.list_commands(click.Context(cli))


# ---------------------------------------------------------------------------------------------------
# The protocol through the real command


@pytest.mark.parametrize("shell", SHELLS)
def test_subcommands_complete(shell: str) -> None:
    assert values(shell, "portscope ") == command_names()
    assert values(shell, "portscope l") == ["ls"]


@pytest.mark.parametrize("shell", SHELLS)
def test_every_option_of_every_command_completes(shell: str) -> None:
    for name in command_names():
        command = cli.get_command(click.Context(cli), name)
        long_options = {opt for p in command.params for opt in p.opts + p.secondary_opts if opt.startswith("--")}
        offered = set(values(shell, f"portscope {name} --"))
        assert long_options - {"--help"} <= offered, name


@pytest.mark.parametrize("shell", SHELLS)
def test_state_values(shell: str) -> None:
    assert values(shell, "portscope ls --state ") == state_choices()
    assert values(shell, "portscope ls -s synch") == ["synchronized"]
    # a comma-separated list: the next item, the ones before kept
    assert values(shell, "portscope ls --state listen,esta") == ["listen,established", "listen,estab"]


def test_option_equals_value_per_shell() -> None:
    # bash replaces only what follows '=' (a word break); zsh and fish replace the whole word
    assert values("bash", "portscope ls --state=time") == ["time-wait"]
    assert values("zsh", "portscope ls --state=time") == ["--state=time-wait"]
    assert values("fish", "portscope ls --state=time") == ["--state=time-wait"]


@pytest.mark.parametrize("shell", SHELLS)
def test_backend_and_shell_values(shell: str) -> None:
    assert values(shell, "portscope ls --backend ") == ["auto", "netlink", "proc"]
    assert values(shell, "portscope completion ") == list(SHELLS)


def test_users_complete_from_the_user_database() -> None:
    names = [e.pw_name for e in sorted(pwd.getpwall(), key=lambda e: e.pw_uid)]
    assert values("bash", "portscope ls --user ") == names
    root = pwd.getpwuid(0).pw_name
    assert root in values("bash", f"portscope ls --user {root[:2]}")
    assert "0" in values("bash", "portscope ls --user 0")


def test_pids_complete_with_names() -> None:
    own = os.getpid()
    command = click.Command("x")
    items = complete_pids(click.Context(command), command, str(own))
    assert str(own) in [i.value for i in items]
    name = dict(running_processes())[own]
    assert next(i.help for i in items if i.value == str(own)) == name
    # a name picks pids by process name; a list keeps the pids before
    by_name = complete_pids(click.Context(command), command, f"1,{name}")
    assert f"1,{own}" in [i.value for i in by_name]
    assert str(os.getpid()) in values("bash", f"portscope ls --pid {own}")


def test_interfaces_are_those_of_the_kernel() -> None:
    command = click.Command("x")
    items = complete_interfaces(click.Context(command), command, "")
    assert sorted(i.value for i in items) == sorted(os.listdir("/sys/class/net"))


def test_users_complete_uids_in_lists() -> None:
    command = click.Command("x")
    items = complete_users(click.Context(command), command, "nobody,0")
    assert "nobody,0" in [i.value for i in items]


def test_bad_requests_answer_nothing_without_a_traceback() -> None:
    for line in ("portscope nosuch --", "portscope ls --netns nosuch-ns --sport ", "portscope ls --pid 'x"):
        result = request("bash", line)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (line, result.stderr)


# ---------------------------------------------------------------------------------------------------
# Ports in use, live: a namespace of our own, with ss as the oracle


def _ports_with_listener(ns) -> tuple[int, int, int]:
    listener = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    udp = ns.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::1", 0))
    client = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(listener.getsockname())
    return listener.getsockname()[1], udp.getsockname()[1], client.getsockname()[1]


@pytest.mark.live
def test_ports_in_use_offered_live() -> None:
    with new_netns() as ns:
        tcp_port, udp_port, client_port = _ports_with_listener(ns)
        listening = {s.local_port for s in ss_sockets(ns) if s.state in ("listen", "unconn")}
        assert {tcp_port, udp_port} <= listening
        line = f"portscope ls --netns {ns.name} --sport "
        offered = values("bash", line)
        assert sorted(int(v) for v in offered) == sorted(listening)
        assert str(client_port) not in offered  # a client's ephemeral port is not what people look up
        # a prefix nothing listens on falls back to every local port in use: the client's
        assert values("bash", line + str(client_port)) == [str(client_port)]
        # forms the who argument takes
        assert f"{tcp_port}/tcp" in values("bash", f"{line}{tcp_port}/")
        assert values("zsh", f"{line}127.0.0.1:{tcp_port}") == [f"127.0.0.1:{tcp_port}"]
        # bash replaces what follows the colon only
        assert values("bash", f"{line}127.0.0.1:{tcp_port}") == [str(tcp_port)]
        assert values("bash", f"{line}[::1]:{udp_port}") == [str(udp_port)]
        assert values("bash", f"{line}127.0.0.1:{udp_port}") == []  # that port is held on ::1 only
        assert ns.name in values("bash", "portscope ls --netns ")


# Which parameter completes with which value source. ls is wired here; who and can-bind are wired by
# their commands (until they are, their rows skip with what is missing).
WIRING = [
    ("ls", "states", complete_states),
    ("ls", "ports", complete_ports),
    ("ls", "sport", complete_ports),
    ("ls", "pids", complete_pids),
    ("ls", "users", complete_users),
    ("ls", "netns", complete_netns),
    ("who", "port", complete_ports),
    ("who", "netns", complete_netns),
    ("can-bind", "address", complete_local_addresses),
    ("can-bind", "device", complete_interfaces),
    ("can-bind", "user", complete_users),
    ("can-bind", "netns", complete_netns),
]


def wired_param(command_name: str, param_name: str, callback) -> click.Parameter:
    command = cli.get_command(click.Context(cli), command_name)
    if command is None:
        pytest.skip(f"no {command_name} command in this build")
    param = next(p for p in command.params if p.name == param_name)
    if command_name != "ls" and param._custom_shell_complete is not callback:
        pytest.skip(f"{command_name} {param_name} is not wired to portscope.shell.values.{callback.__name__} yet")
    return param


@pytest.mark.parametrize(("command_name", "param_name", "callback"), WIRING)
def test_parameters_are_wired(command_name: str, param_name: str, callback) -> None:
    assert wired_param(command_name, param_name, callback)._custom_shell_complete is callback


@pytest.mark.live
def test_who_port_completion_live() -> None:
    wired_param("who", "port", complete_ports)
    with new_netns() as ns:
        tcp_port, udp_port, _ = _ports_with_listener(ns)
        offered = values("bash", f"portscope who --netns {ns.name} ")
        assert str(tcp_port) in offered and str(udp_port) in offered
        assert values("bash", f"portscope who --netns {ns.name} [::1]:") == [str(udp_port)]


@pytest.mark.live
def test_can_bind_address_completion_live() -> None:
    wired_param("can-bind", "address", complete_local_addresses)
    with new_netns() as ns:
        ns.run("ip", "addr", "add", "192.0.2.7/24", "dev", "lo")
        assert values("bash", f"portscope can-bind --netns {ns.name} 192.0.2") == ["192.0.2.7:"]
        assert values("zsh", f"portscope can-bind --netns {ns.name} 192.0.2") == ["192.0.2.7:"]
        assert "[::1]:" in values("fish", f"portscope can-bind --netns {ns.name} [")


@pytest.mark.live
def test_local_addresses_live() -> None:
    with new_netns() as ns:
        ns.run("ip", "addr", "add", "192.0.2.7/24", "dev", "lo")
        ns.run("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        ns.run("ip", "addr", "add", "2001:db8::7/64", "dev", "veth0", "nodad")
        ns.run("ip", "link", "set", "veth0", "up")
        ns.run("ip", "link", "set", "veth1", "up")
        links = json.loads(ns.run("ip", "-j", "addr", "show").stdout)
        oracle = {a["local"] for link in links for a in link["addr_info"]}
        with ns.inside():
            found = local_addresses()
        assert {"127.0.0.1", "192.0.2.7", "::1", "2001:db8::7"} <= {a.address for a in found}
        # every address ip(8) shows, and only those
        assert {a.address for a in found} == oracle
        command = click.Command("x", params=[click.Option(["--netns"])])
        ctx = click.Context(command)
        ctx.params["netns"] = ns.name
        offered = {i.value: i for i in complete_local_addresses(ctx, command.params[0], "")}
        assert {"0.0.0.0:", "[::]:", "127.0.0.1:", "192.0.2.7:", "[::1]:", "[2001:db8::7]:"} <= set(offered)
        assert all(i.type == "nospace" for i in offered.values())  # the port follows the colon
        link_local = [a for a in found if a.link_local and a.interface == "veth0"]
        assert link_local  # the kernel gives every up ethernet-like link an fe80:: address
        for address in link_local:
            assert f"[{address.address}%veth0]:" in offered
        assert complete_local_addresses(ctx, command.params[0], "192.0.2.7:") == []


def test_bash_trims_addresses_at_the_colon(monkeypatch) -> None:
    """The can-bind form ``ADDR:`` through the bash protocol class, with the real address callback."""
    address = click.Argument(["address"], shell_complete=complete_local_addresses)
    group = click.Group("portscope", commands=[click.Command("bind", params=[address])])
    monkeypatch.setenv("COMP_WORDBREAKS", BASH_WORDBREAKS)
    answers = {}
    for line in ("portscope bind ", "portscope bind 127.0", "portscope bind [::"):
        monkeypatch.setenv("COMP_LINE", line)
        answers[line] = BashCompletion(group, {}, "portscope", "_X").complete().splitlines()
    assert "nospace,127.0.0.1:" in answers["portscope bind "]
    assert answers["portscope bind 127.0"] == ["nospace,127.0.0.1:"]
    assert "nospace,1]:" in answers["portscope bind [::"]  # bash's word starts after the last colon


# ---------------------------------------------------------------------------------------------------
# Lean and fast


def _imported_modules(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    "line", ["portscope ", "portscope ls --state ", "portscope ls --sport ", "portscope who ", "portscope can-bind "]
)
def test_completion_imports_neither_rich_nor_pyroute2(line: str) -> None:
    result = request("bash", line, importtime=True)
    assert result.returncode == 0
    modules = _imported_modules(result.stderr)
    assert "portscope.cli" in modules
    heavy = {m for m in modules if m.split(".")[0] in ("rich", "pyroute2", "psutil")}
    assert not heavy, heavy


def test_cli_import_is_lean() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import portscope.cli"], capture_output=True, text=True, timeout=30
    )
    heavy = {m for m in _imported_modules(result.stderr) if m.split(".")[0] in ("rich", "pyroute2")}
    assert not heavy, heavy


def _cpu_seconds(argvs: list[list[str]], env: dict[str, str], runs: int = 7) -> list[float]:
    """The least CPU time (user + system) of a few runs of each command, run in turn (A B A B ...) so that a
    change of load on a busy machine reaches them alike: steadier than wall time."""
    best = [float("inf")] * len(argvs)
    for _ in range(runs):
        for index, argv in enumerate(argvs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(argv, env=env, capture_output=True, check=True, timeout=30)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            spent = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            best[index] = min(best[index], spent)
    return best


def test_completion_answers_fast() -> None:
    """What portscope adds to the interpreter's own start-up, for the costliest request: ports in use."""
    env = {**os.environ, "_PORTSCOPE_COMPLETE": "bash_complete", "COMP_LINE": "portscope ls --sport "}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, not on every <TAB>
    baseline, answer = _cpu_seconds([[sys.executable, "-c", "pass"], [sys.executable, "-m", "portscope"]], env)
    # 0.1 s on a quiet machine (the interpreter alone takes ~0.04 s); a loaded machine slows both alike
    budget = 0.1 * max(1.0, baseline / 0.04)
    assert answer - baseline < budget, f"completion took {answer:.3f} s of CPU, the bare interpreter {baseline:.3f} s"


# ---------------------------------------------------------------------------------------------------
# The scripts in real shells


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # CI installs every shell (.ci/run): there a missing one fails instead of skipping
        (pytest.fail if REQUIRE_LIVE else pytest.skip)(f"{name} is not installed (apt-get install {name})")
    if shutil.which("portscope", path=ENV_PATH) is None:
        pytest.fail("the portscope console script is not installed next to this Python (pip install -e .)")
    return path


def _shell_env() -> dict[str, str]:
    return {**os.environ, "PATH": ENV_PATH}


BASH_HARNESS = """
source "$1"
COMP_LINE=$2; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"; COMP_CWORD=${#COMP_WORDS[@]}
[[ $COMP_LINE == *" " ]] || COMP_CWORD=$((COMP_CWORD - 1))
_portscope_completion portscope
printf '%s\\n' "${COMPREPLY[@]}"
complete -p portscope
"""


def bash_completions(line: str) -> list[str]:
    bash = _shell("bash")
    script = ROOT / "completions" / "portscope"
    result = subprocess.run(
        [bash, "--norc", "-c", BASH_HARNESS, "harness", script, line],
        env=_shell_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    *replies, registration = result.stdout.splitlines()
    assert registration == "complete -o nosort -F _portscope_completion portscope"
    return [r for r in replies if r]


def test_bash_script_completes() -> None:
    assert bash_completions("portscope ") == command_names()
    assert bash_completions("portscope ls --state=est") == ["established", "estab"]
    assert bash_completions("portscope ls --backend n") == ["netlink"]


def test_fish_script_completes() -> None:
    fish = _shell("fish")
    script = ROOT / "completions" / "portscope.fish"

    def complete(line: str) -> list[str]:
        result = subprocess.run(
            [fish, "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            env=_shell_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert [c.split("\t")[0] for c in complete("portscope ")] == command_names()
    assert complete("portscope ls --state=time") == ["--state=time-wait"]
    assert "--state=listening\tlisten, unconn" in complete("portscope ls --state=listen")


ZSH_HARNESS = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
# print every match zsh is handed, then a marker once the completion is over
zpty -w z 'comptest() {'
zpty -w z '  compadd() { builtin compadd -O __m "$@"; print -rl -- "<ma""tch>${^__m[@]}"; builtin compadd "$@" }'
zpty -w z '  _main_complete "$@"; print -r -- "<e""nd>"'
zpty -w z '}'
zpty -w z 'zle -C complete-word .complete-word comptest; bindkey "^I" complete-word'
zpty -n -w z "$2"$'\t'
local out
zpty -r z out '*<end>*'
print -r -- "$out"
zpty -d z
"""


def zsh_completions(line: str) -> set[str]:
    zsh = _shell("zsh")
    result = subprocess.run(
        [zsh, "-f", "-c", ZSH_HARNESS, "harness", ROOT / "completions", line],
        env=_shell_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"<match>([^\r\n]*)", result.stdout))


def test_zsh_script_completes() -> None:
    assert zsh_completions("portscope ") == set(command_names())
    assert zsh_completions("portscope ls --state=time") == {"--state=time-wait"}
    assert zsh_completions("portscope ls --backend ") == {"auto", "netlink", "proc"}


@pytest.mark.parametrize(("shell", "flag"), [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")])
def test_scripts_parse(shell: str, flag: str) -> None:
    exe = _shell(shell)
    text = completion_script(shell)
    result = subprocess.run([exe, flag], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------------
# The completion command, --version, python -m portscope


def test_completion_command_prints_each_script() -> None:
    for shell in SHELLS:
        result = subprocess.run(
            [sys.executable, "-m", "portscope", "completion", shell], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0
        assert result.stdout == completion_script(shell)
        assert "_PORTSCOPE_COMPLETE" in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "portscope", "completion", "tcsh"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_version_and_module_entry_point() -> None:
    for argv in (["-m", "portscope", "--version"], ["-m", "portscope", "-V"]):
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0
        assert result.stdout.strip() == f"portscope, version {__version__}"
    helped = subprocess.run([sys.executable, "-m", "portscope", "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0
    for name in command_names():
        assert re.search(rf"^\s+{re.escape(name)}\s", helped.stdout, re.M), name


# ---------------------------------------------------------------------------------------------------
# Hostile values: interface names other namespaces choose

HOSTILE_INTERFACES = ["a;id>x", "ab'$(id)'", "a\\b", "a\x1b]0;x\x07"]  # the last holds controls: never offered


def _add_interfaces(ns, names: list[str]) -> None:
    for index, name in enumerate(names):
        ns.run("ip", "link", "add", name, "type", "veth", "peer", "name", f"peer{index}")


def _printf_q(values: list[str]) -> list[str]:
    done = subprocess.run(
        [_shell("bash"), "-c", 'printf "%q\\n" "$@"', "q", *values], capture_output=True, text=True, timeout=30
    )
    return done.stdout.splitlines()


@pytest.mark.live
def test_hostile_interfaces_complete_quoted_in_each_shell() -> None:
    wired_param("can-bind", "device", complete_interfaces)
    offered = HOSTILE_INTERFACES[:3]
    with new_netns() as ns:
        _add_interfaces(ns, HOSTILE_INTERFACES)
        line = f"portscope can-bind --netns {ns.name} --device a"
        # bash inserts replies verbatim: they come quoted as printf %q quotes them
        assert bash_completions(line) == _printf_q(offered) == ["a\\;id\\>x", "ab\\'\\$\\(id\\)\\'", "a\\\\b"]
        # zsh's compadd quotes what it inserts: it is handed the names themselves (backslash kept)
        assert zsh_completions(line) == set(offered)
        script = ROOT / "completions" / "portscope.fish"
        fish = subprocess.run(
            [_shell("fish"), "--no-config", "-c", f"source {script}; complete -C '{line}'"],
            env=_shell_env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert [c.split("\t")[0] for c in fish.stdout.splitlines()] == offered
        for shell in SHELLS:  # nothing raw in the protocol either
            assert "\x1b" not in request(shell, line).stdout


SHELL_SESSIONS = {
    "bash": ("bash --norc --noprofile -i", "PS1='$ '; source {completions}/portscope"),
    "zsh": ("zsh -f -i", "PS1='$ '; fpath=({completions} $fpath); autoload -U compinit; compinit -u -D"),
    "fish": ("fish --no-config -i", "function fish_prompt; echo '$ '; end; source {completions}/portscope.fish"),
}


@pytest.mark.live
@pytest.mark.parametrize("shell", SHELLS)
def test_tab_then_enter_runs_nothing_hidden_in_a_name(shell: str, tmp_path) -> None:
    """An interactive shell in a tmux pane: ``--device a<TAB>`` completes ``a;id>x``; Enter runs only portscope."""
    _shell(shell)
    if shutil.which("tmux") is None:
        (pytest.fail if REQUIRE_LIVE else pytest.skip)("tmux is not installed")
    wired_param("can-bind", "device", complete_interfaces)
    server = f"pstest-{os.getpid()}-{shell}"

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", server, *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def wait_for(marker: str) -> str:
        deadline = time.monotonic() + 30
        while marker not in (screen := tmux("capture-pane", "-p", "-J")):
            assert time.monotonic() < deadline, f"{marker!r} never appeared:\n{screen}"
            time.sleep(0.2)
        return screen

    command, setup = SHELL_SESSIONS[shell]
    with new_netns() as ns:
        _add_interfaces(ns, ["a;id>x"])
        tmux("-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "50", "-c", str(tmp_path),
             "env", f"PATH={ENV_PATH}", f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}", *command.split())  # fmt: skip
        pid = int(tmux("display", "-p", "#{pid}"))
        try:
            tmux("send-keys", "-l", setup.format(completions=ROOT / "completions") + "; echo READ''Y")
            tmux("send-keys", "Enter")
            wait_for("READY")
            tmux("send-keys", "-l", f"portscope can-bind --netns {ns.name} --device a")
            tmux("send-keys", "Tab")
            wait_for("--device a\\;id\\>x")
            tmux("send-keys", "-l", " :80; echo DONE''-42")
            tmux("send-keys", "Enter")
            screen = wait_for("DONE-42")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        assert "with device a;id>x" in screen  # portscope got the whole name as one argument
        assert not (tmp_path / "x").exists() and "uid=" not in screen  # and id>x never ran
