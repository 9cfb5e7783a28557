"""Rendering of ``portscope kill``: the targets and what became of each, the guards' refusals with the
command that stops the thing properly, and what is left on the port; the question asked before signalling;
the JSON document. Words are made here from the codes of :mod:`portscope.commands.kill` and
:mod:`portscope.rules.kill`; everything from outside goes through :func:`safe_text` or :func:`shell_word`.
"""

from __future__ import annotations

from typing import IO, Any

from portscope.commands.kill import (
    ConnectionOutcome,
    ConnectionResult,
    KillPlan,
    KillResult,
    KillVerdict,
    Outcome,
    TargetResult,
)
from portscope.commands.names import Names
from portscope.commands.who import BOUND_STATES, WhoTarget
from portscope.model.notation import STATE_LABELS, format_endpoint, proto_label
from portscope.model.records import Process, Socket, State
from portscope.render import jsonout
from portscope.render.environment import Environment
from portscope.render.text import safe_text
from portscope.render.who import command_line, format_time_left, shell_word
from portscope.render.who import query_object as who_query_object
from portscope.rules.kill import Advice, AdviceKind, ContainerRef, KillRole, Refusal
from portscope.sources.terminate import Identity

REFUSAL_WORDS = {
    Refusal.PID_1: "PID 1, the init process: never signalled",
    Refusal.KERNEL_THREAD: "a kernel thread: never signalled",
    Refusal.CALLER: "portscope itself",
    Refusal.CALLER_ANCESTOR: "an ancestor of portscope (the shell or program running it): never signalled",
    Refusal.SERVICE_MANAGER: "a service manager (systemd): never signalled",
    Refusal.SYSTEMD_UNIT: "runs in systemd unit {unit}: its manager would restart it",
    Refusal.CONTAINER: "a process of {container}",
    Refusal.FORWARDER: "forwards the port to {container}: stopping it would not stop the container",
    Refusal.PORT_HELD_BY_REFUSED: "not signalled: another holder of the port is refused, "
    "so this alone would not free it",
}
IDENTITY_WORDS = {
    Identity.GONE: "had exited before the signal",
    Identity.REPLACED: "its pid names another process now: not signalled",
    Identity.RELEASED: "no longer holds the port: not signalled",
}
OUTCOME_WORDS = {
    Outcome.EXITED: "exited",
    Outcome.KILLED: "killed",
    Outcome.SURVIVED: "survived",
    Outcome.DENIED: "denied",
    Outcome.REFUSED: "refused",
    Outcome.WOULD_SIGNAL: "would signal",
}
STOP_COMMANDS = {
    "docker": "docker stop {name}",
    "podman": "podman stop {name}",
    "lxc": "lxc-stop -n {name}",
    "systemd-nspawn": "machinectl stop {name}",
    "containerd": "nerdctl stop {name}",
    "cri-o": "crictl stop {id}",
    "kubernetes": "crictl stop {id}",
}


# ---------------------------------------------------------------------------------------------------
# Words


def port_label(target: WhoTarget, netns: str | None) -> str:
    label = target.describe()
    if netns:
        label += f" in network namespace {safe_text(netns)}"
    return label


def container_words(container: ContainerRef) -> str:
    name = container.name or (container.id[:12] if len(container.id) == 64 else container.id)
    return f"container {safe_text(name)} ({safe_text(container.runtime)})"


def stop_container_command(container: ContainerRef) -> str | None:
    kubernetes = container.runtime in ("kubernetes", "cri-o")
    if kubernetes and container.pod and container.namespace and container.name:
        return f"kubectl delete pod {shell_word(container.pod)} -n {shell_word(container.namespace)}"
    template = STOP_COMMANDS.get(container.runtime)
    if template is None:
        return None
    return template.format(name=shell_word(container.name or container.id), id=shell_word(container.id))


def advice_lines(advice: Advice, names: Names) -> list[str]:
    """Shell commands (or sentences) that stop the thing properly."""
    if advice.kind is AdviceKind.STOP_UNITS:
        units = " ".join(shell_word(u) for u in advice.units)
        if advice.user_uid is None:
            return [f"systemctl stop {units}"]
        return [f"systemctl --user -M {shell_word(names.user(advice.user_uid))}@ stop {units}"]
    if advice.kind is AdviceKind.STOP_CONTAINER and advice.container is not None:
        command = stop_container_command(advice.container)
        return [command] if command else [f"stop {container_words(advice.container)} with its runtime"]
    if advice.kind is AdviceKind.FIND_SOCKET_UNIT:
        user = " --user" if advice.user_uid is not None else ""
        return [f"systemctl{user} list-sockets    (systemd listens itself: stop the .socket unit it lists)"]
    return []


def reason_code(result: TargetResult) -> str | None:
    if result.hidden is not None:
        return "hidden"
    if result.refusal is not None:
        return result.refusal.value
    if result.identity is not None:
        return result.identity.value
    return None


def reason_words(result: TargetResult) -> str | None:
    target = result.target
    if result.hidden is not None:
        return "its holder is not visible to you: run as root to see and signal it"
    if result.refusal is not None:
        unit = safe_text(target.unit) if target is not None and target.unit else "?"
        container = container_words(target.container) if target is not None and target.container else "a container"
        return REFUSAL_WORDS[result.refusal].format(unit=unit, container=container)
    if result.identity is not None:
        return IDENTITY_WORDS[result.identity]
    if result.outcome is Outcome.DENIED:
        return "not permitted to signal it (another user's process)"
    if result.outcome is Outcome.REFUSED:
        return "not signalled"
    return None


def _process(process: Process) -> str:
    return f"{safe_text(process.name)}[{process.pid}]"


def _user(process: Process) -> str:
    return safe_text(process.user) if process.user else "?"


def _signals(result: TargetResult, timeout: float) -> str:
    if not result.signals:
        return ""
    parts = []
    for name in result.signals:
        parts.append(f"{name} after {timeout:g}s" if name == "SIGKILL" and parts else name)
    return ", ".join(parts)


def _advice(results: list[TargetResult], names: Names) -> tuple[list[str], bool]:
    lines: list[str] = []
    force = False
    for result in results:
        if result.target is None:
            continue
        for advice in result.target.decision.advice:
            if advice.kind is AdviceKind.FORCE:
                force = True
            for line in advice_lines(advice, names):
                if line not in lines:
                    lines.append(line)
    return lines, force


def _time_wait_note(left: tuple[Socket, ...], target: WhoTarget) -> str | None:
    waiting = [s for s in left if s.state is State.TIME_WAIT]
    if not waiting:
        return None
    longest = max((s.timer_ms or 0) for s in waiting)
    port = waiting[0].local_port
    where = f":{port}" if target.address is None else format_endpoint(str(target.address), port)
    count = f"{len(waiting)} TIME-WAIT socket{'s' if len(waiting) != 1 else ''}"
    return (
        f"{count} remain{'s' if len(waiting) == 1 else ''} ({format_time_left(longest)}): no process owns "
        f"{'it' if len(waiting) == 1 else 'them'}, the kernel ends {'it' if len(waiting) == 1 else 'them'}. "
        f"A server that sets SO_REUSEADDR (most do) can listen now; check with: portscope can-bind {where}"
    )


def socket_line(sock: Socket, snapshot) -> str:
    holders = snapshot.holders_of(sock) if snapshot is not None else ()
    who = ", ".join(f"{safe_text(h.process.name)}[{h.process.pid}]" for h in holders) or "no visible process"
    interface = safe_text(sock.interface) if sock.interface else None
    endpoint = format_endpoint(sock.local_address, sock.local_port, sock.family, interface)
    return f"{proto_label(sock.proto, sock.family)} {STATE_LABELS[sock.state]} {endpoint}  {who}"


# ---------------------------------------------------------------------------------------------------
# Text


def target_line(result: TargetResult, timeout: float, width: int) -> list[str]:
    """``  killed  python3[4243]  dev  [SIGTERM, SIGKILL after 5s]  python3 -m http.server 3000``, then why."""
    outcome = OUTCOME_WORDS[result.outcome].ljust(width)
    if result.target is None:
        sock = result.hidden.socket if result.hidden is not None else None
        where = socket_line(sock, None).rsplit("  ", 1)[0] if sock is not None else "?"
        lines = [f"  {outcome}  (hidden)  uid {sock.uid if sock is not None else '?'}  {where}"]
    else:
        process = result.target.process
        signals = _signals(result, timeout)
        signals = f"[{signals}]  " if signals else ""
        command = command_line(process.cmdline, process.name)
        lines = [f"  {outcome}  {_process(process)}  {_user(process)}  {signals}{command}"]
        if result.target.role is KillRole.CLIENT:
            lines.append("      holds only connections from the port (--include-clients)")
    words = reason_words(result)
    if words:
        lines.append(f"      {words}")
    return lines


def _write(out: IO[str], lines: list[str]) -> None:
    out.write("".join(line + "\n" for line in lines))


def render_kill(result: KillResult, env: Environment, names: Names, *, as_json: bool) -> None:
    if as_json:
        jsonout.dump(kill_object(result, names), env.stdout)
        return
    _write(env.stdout, kill_lines(result, names))


def kill_lines(result: KillResult, names: Names) -> list[str]:
    plan = result.plan
    label = port_label(plan.target, plan.netns)
    verdict = result.verdict
    lines: list[str] = []
    if plan.nothing:
        return nothing_lines(result, label)
    count = len(plan.to_signal)
    processes = f"{count} process{'es' if count != 1 else ''}"
    if plan.refused:
        lines.append(f"Nothing signalled: port {label} is held by a process portscope does not signal.")
    elif not result.confirmed:
        lines.append(f"Nothing signalled on port {label}.")
    elif plan.dry_run:
        then = f", then SIGKILL to those still running after {plan.timeout:g}s" if _escalates(plan) else ""
        if verdict is KillVerdict.WOULD_SIGNAL:
            lines.append(f"Would send {plan.signal.name} to {processes} on port {label}{then}:")
        else:
            lines.append(f"Would signal nothing on port {label}:")
    else:
        lines.append(f"Port {label}: {plan.signal.name} to {processes}")
    width = max(len(OUTCOME_WORDS[r.outcome]) for r in result.results) if result.results else 0
    for target_result in result.results:
        lines.extend(target_line(target_result, plan.timeout, width))
    advice, force = _advice(list(result.results), names)
    if advice and any(r.outcome is Outcome.REFUSED for r in result.results):
        lines.append("To stop it properly:" if len(advice) == 1 else "To stop them properly:")
        lines.extend(f"  {line}" for line in advice)
        if force:
            lines.append("  (or --force to signal them anyway)")
    if plan.clients_left:
        shown = ", ".join(f"{safe_text(p.name)}[{p.pid}]" for p in plan.clients_left[:8])
        lines.append(f"Not touched: {shown} hold only connections from the port (--include-clients adds them).")
    if plan.dry_run or plan.refused or not result.confirmed:
        return lines
    lines.extend(after_lines(result, label))
    return lines


def _escalates(plan: KillPlan) -> bool:
    return plan.escalate and plan.signal.name != "SIGKILL"


def after_lines(result: KillResult, label: str) -> list[str]:
    lines = []
    held = [s for s in result.left if s.state in BOUND_STATES]
    if result.port_free:
        lines.append(f"Port {label} is free: nothing listens on it.")
    else:
        lines.append(f"Port {label} is still held:")
        lines.extend(f"  {socket_line(s, result.after)}" for s in held[:10])
        if len(held) > 10:
            lines.append(f"  ... and {len(held) - 10} more")
        new = result.new_holders
        if new:
            shown = ", ".join(f"{safe_text(p.name)}[{p.pid}]" for p in new[:8])
            lines.append(f"  by processes that were not targets: {shown} (restarted by a service manager?)")
    connections = [s for s in result.left if s.state not in BOUND_STATES and s.state is not State.TIME_WAIT]
    held = [s for s in connections if result.after.holders_of(s)]
    closing = [s for s in connections if not result.after.holders_of(s)]
    if held:
        pids = sorted({h.process.pid for s in held for h in result.after.holders_of(s)})
        shown = ", ".join(str(pid) for pid in pids[:8])
        lines.append(
            f"{len(held)} connection{'s' if len(held) != 1 else ''} from the port remain{'s' if len(held) == 1 else ''}"
            f", held by pid {shown} (--include-clients signals their processes)."
        )
    if closing:
        one = len(closing) == 1
        lines.append(
            f"{len(closing)} connection{'' if one else 's'} on the port {'is' if one else 'are'} closing: no process "
            f"holds {'it' if one else 'them'}; the kernel ends {'it' if one else 'them'} (then TIME-WAIT)."
        )
    note = _time_wait_note(result.left, result.plan.target)
    if note:
        lines.append(note)
    return lines


def nothing_lines(result: KillResult, label: str) -> list[str]:
    plan = result.plan
    if not plan.who.sockets:
        return [f"Nothing is using port {label}: nothing to kill."]
    lines = [f"Nothing to kill on port {label}:"]
    unowned = [u.socket for u in plan.who.unheld if u.socket.state is not State.TIME_WAIT and u.socket.inode]
    closing = [u.socket for u in plan.who.unheld if u.socket.inode is None and u.socket.state is not State.TIME_WAIT]
    if plan.clients_left:
        shown = ", ".join(f"{safe_text(p.name)}[{p.pid}]" for p in plan.clients_left[:8])
        lines.append(f"  no process listens on it; {shown} hold only connections from it (--include-clients adds them)")
    if unowned:
        lines.append(
            f"  {len(unowned)} socket{'s' if len(unowned) != 1 else ''} held by no process (a kernel socket: "
            "WireGuard, NFS, a tunnel device...):"
        )
        lines.extend(f"    {socket_line(s, None).rsplit('  ', 1)[0]}" for s in unowned[:10])
    if closing:
        lines.append(f"  {len(closing)} connection{'s' if len(closing) != 1 else ''} closing or not yet accepted")
    note = _time_wait_note(plan.who.sockets, plan.target)
    if note:
        lines.append(f"  {note}")
    return lines


def plan_prompt_lines(plan: KillPlan) -> list[str]:
    """What is about to happen, before the question."""
    count = len(plan.to_signal)
    then = f", then SIGKILL to any still running after {plan.timeout:g}s" if _escalates(plan) else ""
    lines = [
        f"About to send {plan.signal.name} to {count} process{'es' if count != 1 else ''} on port "
        f"{port_label(plan.target, plan.netns)}{then}:"
    ]
    for target in plan.to_signal:
        process = target.process
        client = "  (connections only)" if target.role is KillRole.CLIENT else ""
        lines.append(f"  {_process(process)}  {_user(process)}  {command_line(process.cmdline, process.name)}{client}")
    return lines


# ---------------------------------------------------------------------------------------------------
# JSON


def _container_object(container: ContainerRef | None) -> dict[str, Any] | None:
    if container is None:
        return None
    return {"runtime": container.runtime, "id": container.id, "name": container.name, "pod": container.pod}


def target_object(result: TargetResult, names: Names) -> dict[str, Any]:
    advice: list[str] = []
    if result.target is not None and result.outcome is Outcome.REFUSED:
        for item in result.target.decision.advice:
            advice.extend(advice_lines(item, names))
    if result.target is None:
        sock = result.hidden.socket if result.hidden is not None else None
        return {
            "pid": None,
            "name": None,
            "user": names.user(sock.uid) if sock is not None and sock.uid is not None else None,
            "cmdline": [],
            "role": KillRole.HOLDER.value,
            "unit": None,
            "container": None,
            "signals": [],
            "outcome": result.outcome.value,
            "reason": reason_code(result),
            "advice": [],
        }
    target = result.target
    process = target.process
    return {
        "pid": process.pid,
        "name": process.name,
        "user": process.user,
        "cmdline": list(process.cmdline),
        "role": target.role.value,
        "unit": target.unit,
        "container": _container_object(target.container),
        "signals": list(result.signals),
        "outcome": result.outcome.value,
        "reason": reason_code(result),
        "advice": advice,
    }


def query_object(plan: KillPlan) -> dict[str, Any]:
    """who's query object (kill takes the same port forms) without ``remote``, and how it signals."""
    query = who_query_object(plan.target, plan.netns)
    del query["remote"]  # kill never matches the peer's port
    return {
        **query,
        "signal": plan.signal.name,
        "timeout": plan.timeout,
        "escalate": plan.escalate,
        "include_clients": plan.include_clients,
        "force": plan.force,
        "dry_run": plan.dry_run,
    }


def kill_object(result: KillResult, names: Names) -> dict[str, Any]:
    return {
        "query": query_object(result.plan),
        "targets": [target_object(r, names) for r in result.results],
        "port_free": result.port_free,
        "left": [
            jsonout.socket_object(s, result.after.holders_of(s), names.services, names.places) for s in result.left
        ],
    }


# ---------------------------------------------------------------------------------------------------
# --connection

CONNECTION_WORDS = {
    ConnectionOutcome.CLOSED: "Closed",
    ConnectionOutcome.WOULD_CLOSE: "Would close",
    ConnectionOutcome.REFUSED: "Not closed",
    ConnectionOutcome.DENIED: "Not closed (permission denied: SOCK_DESTROY needs CAP_NET_ADMIN; run as root)",
    ConnectionOutcome.UNSUPPORTED: "Not closed: this kernel cannot destroy sockets (it was built without "
    "CONFIG_INET_DIAG_DESTROY; SOCK_DESTROY answers EOPNOTSUPP). Stop the process that holds it instead",
}


def connection_lines(result: ConnectionResult) -> list[str]:
    sock = result.connection
    if sock is None or result.outcome is ConnectionOutcome.NOT_FOUND:
        where = f" in network namespace {safe_text(result.netns)}" if result.netns else ""
        return [
            f"No TCP connection from {safe_text(result.local)} to {safe_text(result.remote)}{where}"
            + (" (it ended meanwhile)." if sock is not None else ".")
        ]
    line = socket_line(sock, result.snapshot)
    peer = format_endpoint(sock.remote_address, sock.remote_port, sock.family)
    text = f"{CONNECTION_WORDS[result.outcome]}: {line.split('  ', 1)[0]} -> {peer}"
    holders = line.split("  ", 1)[1] if "  " in line else ""
    return [text + (f"  (held by {holders})" if holders else "")]


def connection_object(result: ConnectionResult, names: Names) -> dict[str, Any]:
    sock = result.connection
    snap = result.snapshot
    import os

    return {
        "query": {"local": result.local, "remote": result.remote, "netns": result.netns},
        "connection": None
        if sock is None
        else jsonout.socket_object(sock, snap.holders_of(sock) if snap else (), names.services, names.places),
        "outcome": result.outcome.value,
        "error": os.strerror(result.errno) if result.errno else None,
    }


def render_connection(result: ConnectionResult, env: Environment, names: Names, *, as_json: bool) -> None:
    if as_json:
        jsonout.dump(connection_object(result, names), env.stdout)
        return
    _write(env.stdout, connection_lines(result))
