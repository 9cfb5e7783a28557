"""kill's pure parts: the guards (rules/kill.py), signal names, unit names from cgroups, the SOCK_DESTROY message,
the advice in words (quoted for a shell) and the completion of signal names."""

from __future__ import annotations

import signal
import socket
import struct

import click
import pytest

from portscope.cli import cli
from portscope.commands.kill import parse_signal
from portscope.errors import UsageError
from portscope.model.records import Family, Proto, Socket, State
from portscope.render.kill import advice_lines, stop_container_command
from portscope.rules.kill import (
    Advice,
    AdviceKind,
    Caller,
    Candidate,
    ContainerRef,
    KillRole,
    Refusal,
    decide,
    service_unit,
    socket_unit,
)
from portscope.shell.values import complete_signals, signal_choices
from portscope.sources import terminate

CALLER = Caller(pid=5000, ancestors=frozenset({4000, 1}), unit=None)
HOLDER = KillRole.HOLDER
CLIENT = KillRole.CLIENT
WEB = ContainerRef("docker", "a" * 64, "web")


def one(candidate: Candidate, *, force: bool = False, caller: Caller = CALLER):
    (decision,) = decide([candidate], caller, force=force)
    return decision


# ---------------------------------------------------------------------------------------------------
# Guards


@pytest.mark.parametrize(
    ("candidate", "refusal"),
    [
        (Candidate(1, HOLDER), Refusal.PID_1),
        (Candidate(1, HOLDER, service_manager=True), Refusal.PID_1),
        (Candidate(77, HOLDER, kernel_thread=True), Refusal.KERNEL_THREAD),
        (Candidate(5000, HOLDER), Refusal.CALLER),
        (Candidate(4000, HOLDER), Refusal.CALLER_ANCESTOR),
        (Candidate(900, HOLDER, service_manager=True, unit_user=1000), Refusal.SERVICE_MANAGER),
    ],
)
def test_never_signalled_even_with_force(candidate: Candidate, refusal: Refusal) -> None:
    assert one(candidate).refusal is refusal
    assert one(candidate, force=True).refusal is refusal


def test_plain_process_is_signalled() -> None:
    decision = one(Candidate(812, HOLDER))
    assert decision.signal and decision.refusal is None and decision.advice == ()


def test_systemd_unit_refused_with_systemctl_advice_unless_forced() -> None:
    candidate = Candidate(812, HOLDER, unit="nginx.service")
    decision = one(candidate)
    assert decision.refusal is Refusal.SYSTEMD_UNIT
    assert decision.advice[0] == Advice(AdviceKind.STOP_UNITS, ("nginx.service",))
    assert decision.advice[-1].kind is AdviceKind.FORCE
    assert one(candidate, force=True).signal


def test_socket_activated_service_advice_names_the_socket_unit_first() -> None:
    candidate = Candidate(812, HOLDER, unit="echo.service", socket_units=("echo.socket",))
    assert one(candidate).advice[0].units == ("echo.socket", "echo.service")


def test_socket_activation_held_by_pid_1_is_refused_with_the_socket_unit() -> None:
    manager = Candidate(1, HOLDER, service_manager=True, socket_units=("echo.socket",))
    service = Candidate(812, HOLDER, unit="echo.service", socket_units=("echo.socket",))
    first, second = decide([manager, service], CALLER, force=True)
    assert first.refusal is Refusal.PID_1 and first.advice == (Advice(AdviceKind.STOP_UNITS, ("echo.socket",)),)
    # --force lifts the unit guard, but PID 1 holds the socket too: killing the service would not free it
    assert second.refusal is Refusal.PORT_HELD_BY_REFUSED
    lone = Candidate(1, HOLDER, service_manager=True)
    assert one(lone).advice == (Advice(AdviceKind.FIND_SOCKET_UNIT),)


def test_a_containers_systemd_is_refused_with_the_container_stop() -> None:
    decision = one(Candidate(900, HOLDER, service_manager=True, container=WEB), force=True)
    assert decision.refusal is Refusal.SERVICE_MANAGER
    assert decision.advice == (Advice(AdviceKind.STOP_CONTAINER, container=WEB),)


def test_user_unit_advice_uses_the_user_manager() -> None:
    decision = one(Candidate(812, HOLDER, unit="app.service", unit_user=1000))
    assert decision.advice[0] == Advice(AdviceKind.STOP_UNITS, ("app.service",), user_uid=1000)


def test_the_callers_own_unit_is_not_a_service() -> None:
    # without logind, a login shell and what it starts live in ssh.service: that is the user's session
    caller = Caller(5000, frozenset({1}), unit="ssh.service")
    assert one(Candidate(812, HOLDER, unit="ssh.service"), caller=caller).signal
    assert one(Candidate(812, HOLDER, unit="nginx.service"), caller=caller).refusal is Refusal.SYSTEMD_UNIT


def test_container_process_and_forwarder_get_the_runtimes_stop_command() -> None:
    inside = one(Candidate(812, HOLDER, container=WEB))
    assert inside.refusal is Refusal.CONTAINER
    assert inside.advice[0] == Advice(AdviceKind.STOP_CONTAINER, container=WEB)
    proxy = one(Candidate(813, HOLDER, forwards_to=WEB, unit="docker.service"))
    assert proxy.refusal is Refusal.FORWARDER and proxy.advice[0].container == WEB
    assert one(Candidate(813, HOLDER, forwards_to=WEB), force=True).signal


def test_a_refused_holder_keeps_every_other_holder_of_the_port_but_not_the_clients() -> None:
    candidates = [
        Candidate(812, HOLDER, unit="nginx.service"),
        Candidate(813, HOLDER),
        Candidate(900, CLIENT),
    ]
    decisions = decide(candidates, CALLER)
    assert [d.refusal for d in decisions] == [Refusal.SYSTEMD_UNIT, Refusal.PORT_HELD_BY_REFUSED, None]
    # a refused client (the caller's own connection) stops nobody else
    decisions = decide([Candidate(813, HOLDER), Candidate(5000, CLIENT)], CALLER)
    assert [d.refusal for d in decisions] == [None, Refusal.CALLER]


# ---------------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("/system.slice/nginx.service", ("nginx.service", None)),
        ("/system.slice/system-getty.slice/getty@tty1.service", ("getty@tty1.service", None)),
        ("/system.slice/foo\\x2dbar.service", ("foo-bar.service", None)),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/app.service", ("app.service", 1000)),
        ("/user.slice/user-1000.slice/user@1000.service/init.scope", (None, None)),
        ("/user.slice/user-1000.slice/session-3.scope", (None, None)),
        ("/system.slice/docker-" + "a" * 64 + ".scope", (None, None)),
        ("/", (None, None)),
        (None, (None, None)),
    ],
)
def test_service_unit_of_cgroup(cgroup, expected) -> None:
    assert service_unit(cgroup) == expected


@pytest.mark.parametrize(
    ("service", "fd_name", "expected"),
    [
        ("echo.service", "echo.socket", "echo.socket"),
        ("echo.service", "listener", "echo.socket"),
        ("echo.service", None, "echo.socket"),
        ("echo@3-127.0.0.1:7-127.0.0.1:5.service", "unknown", "echo.socket"),
        ("web.service", "web-http.socket", "web-http.socket"),
    ],
)
def test_socket_unit_of_an_activated_service(service, fd_name, expected) -> None:
    assert socket_unit(service, fd_name) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("TERM", signal.SIGTERM), ("sigint", signal.SIGINT), ("Kill", signal.SIGKILL), ("1", signal.SIGHUP)],
)
def test_signal_names_and_numbers(text: str, expected: signal.Signals) -> None:
    assert parse_signal(text) is expected


@pytest.mark.parametrize("text", ["0", "TERMINATE", "", "SIG", "99999", "-9", "１５"])
def test_bad_signals_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="unknown signal"):
        parse_signal(text)


class _Names:
    @staticmethod
    def user(uid: int) -> str:
        return {1000: "alice"}.get(uid, str(uid))


def test_advice_is_quoted_for_a_shell() -> None:
    hostile = ContainerRef("podman", "b" * 64, "web;rm -rf ~")
    assert stop_container_command(hostile) == "podman stop 'web;rm -rf ~'"
    assert stop_container_command(ContainerRef("docker", "c" * 64)) == f"docker stop {'c' * 64}"
    assert stop_container_command(ContainerRef("container", "d" * 64)) is None
    control = ContainerRef("docker", "e" * 64, "a\x1b[31mb")
    assert "\x1b" not in stop_container_command(control)
    units = advice_lines(Advice(AdviceKind.STOP_UNITS, ("echo.socket", "echo.service")), _Names())
    assert units == ["systemctl stop echo.socket echo.service"]
    user = advice_lines(Advice(AdviceKind.STOP_UNITS, ("app.service",), user_uid=1000), _Names())
    assert user == ["systemctl --user -M alice@ stop app.service"]


# ---------------------------------------------------------------------------------------------------
# SOCK_DESTROY message


def _sock(**changes) -> Socket:
    fields = dict(
        proto=Proto.TCP,
        family=Family.IPV4,
        state=State.ESTABLISHED,
        local_address="127.0.0.1",
        local_port=5432,
        remote_address="10.1.2.3",
        remote_port=51234,
        recv_q=0,
        send_q=0,
        uid=0,
        inode=1,
        ifindex=0,
        interface=None,
        v6only=None,
        timer=None,
        timer_ms=None,
        netns=None,
        cookie=0x1234,
    )
    fields.update(changes)
    return Socket(**fields)


def test_destroy_request_layout() -> None:
    data = terminate.destroy_request(_sock(), seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data)
    assert (length, kind, flags, seq) == (len(data), 21, 0x1 | 0x4, 7)
    family, protocol, ext, states = struct.unpack_from("=BBBxI", data, 16)
    assert (family, protocol, ext, states) == (socket.AF_INET, socket.IPPROTO_TCP, 0, 0xFFFFFFFF)
    sport, dport = struct.unpack_from("!HH", data, 24)
    assert (sport, dport) == (5432, 51234)
    assert data[28:32] == socket.inet_aton("127.0.0.1") and data[44:48] == socket.inet_aton("10.1.2.3")
    assert struct.unpack_from("=IQ", data, 60) == (0, 0x1234)
    assert len(data) == 16 + 8 + 48
    v6 = _sock(cookie=None, family=Family.IPV6, local_address="::1", remote_address="::1")
    unknown = terminate.destroy_request(v6)
    assert struct.unpack_from("=Q", unknown, 64) == (terminate.INET_DIAG_NOCOOKIE,)
    with pytest.raises(ValueError):
        terminate.destroy_request(_sock(remote_address=None, remote_port=None))


def test_ack_parsing() -> None:
    def ack(code: int) -> bytes:
        return struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -code) + bytes(16)

    assert terminate.parse_ack(ack(0)) == 0
    assert terminate.parse_ack(ack(95)) == 95  # EOPNOTSUPP: no CONFIG_INET_DIAG_DESTROY


# ---------------------------------------------------------------------------------------------------
# Completion of --signal


def test_signal_completion() -> None:
    names = [name for name, _ in signal_choices()]
    assert names[:5] == ["TERM", "INT", "HUP", "QUIT", "KILL"] and "STOP" in names
    offered = [item.value for item in complete_signals(None, None, "")]
    assert offered[:2] == ["TERM", "INT"]
    assert [item.value for item in complete_signals(None, None, "SIGK")] == ["SIGKILL"]
    assert [item.value for item in complete_signals(None, None, "us")] == ["USR1", "USR2"]
    assert "9" in [item.value for item in complete_signals(None, None, "9")]
    command = cli.get_command(click.Context(cli), "kill")
    param = next(p for p in command.params if p.name == "signal_name")
    assert param._custom_shell_complete is complete_signals


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1", "1e9", "soon"])
def test_bad_timeouts_are_one_line_and_status_2(timeout: str, capsys) -> None:
    from portscope.cli import exit_status

    assert exit_status(["kill", "1", "--timeout", timeout, "--dry-run"], debug=False) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timeout" in err and "Traceback" not in err
