"""Rendering of ``portscope stats``: ss -s's summary, the dumps by state, the busiest ports, bound-only sockets."""

from __future__ import annotations

from typing import Any

from portscope.commands.names import Names
from portscope.commands.stats import StatsReport
from portscope.model.notation import STATE_LABELS, format_endpoint, proto_label
from portscope.render import jsonout
from portscope.render.environment import Environment
from portscope.render.table import compact_holders
from portscope.render.text import safe_text


def _number(value: int | None) -> str:
    return "?" if value is None else str(value)


def _columns(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def stats_lines(report: StatsReport, names: Names) -> list[str]:
    summary = report.summary
    lines = [
        f"Total: {_number(summary.total)}",
        f"TCP:   {_number(summary.tcp_total)} (estab {_number(summary.tcp_estab)}, closed "
        f"{_number(summary.tcp_closed)}, orphaned {_number(summary.tcp_orphaned)}, timewait "
        f"{_number(summary.tcp_timewait)})",
        "",
    ]
    rows = [["Transport", "Total", "IPv4", "IPv6"]]
    rows += [[row.name, _number(row.total), _number(row.ipv4), _number(row.ipv6)] for row in summary.transport]
    lines += _columns(rows, {1, 2, 3})
    lines += ["", "Sockets listed, by state"]
    rows = []
    for counts in report.counts:
        states = ", ".join(f"{STATE_LABELS[state]} {count}" for state, count in counts.states)
        rows.append([f"  {counts.proto}", counts.kind, str(counts.total), states])
    lines += _columns(rows, {2})
    lines.append(
        f"  TIME-WAIT {report.time_wait}, orphaned {report.orphans} in this namespace "
        f"(the kernel's orphan count is host-wide: {_number(summary.tcp_orphaned)})"
    )
    lines += ["", "Busiest listening ports"]
    if report.busiest:
        rows = [["  Port", "Conns", "Estab", "TIME-WAIT", "Listening on", "Process"]]
        for busy in report.busiest:
            holders = [h for sock in busy.listeners for h in report.holders_of(sock)]
            unique = list({h.process.pid: h for h in holders}.values())
            addresses = ", ".join(
                format_endpoint(s.local_address, s.local_port, s.family, safe_text(s.interface or "") or None)
                for s in busy.listeners
            )
            rows.append(
                [
                    f"  {busy.port}",
                    str(busy.connections),
                    str(busy.established),
                    str(busy.time_wait),
                    addresses,
                    compact_holders(unique) if unique else "-",
                ]
            )
        lines += _columns(rows, {1, 2, 3})
    else:
        lines.append("  none: no connection on a listening TCP port")
    lines += ["", "Bound-only TCP sockets (a port held, neither listening nor connected)"]
    if report.bound_visible is False:
        lines.append("  cannot be listed here (needs netlink on Linux 6.8+)")
    elif report.bound_only:
        rows = []
        for sock in report.bound_only:
            holders = report.holders_of(sock)
            endpoint = format_endpoint(sock.local_address, sock.local_port, sock.family)
            rows.append([f"  {proto_label(sock.proto, sock.family)}", endpoint, compact_holders(holders) or "-"])
        lines += _columns(rows, set())
    else:
        lines.append("  none")
    return lines


def stats_object(report: StatsReport, names: Names) -> dict[str, Any]:
    summary = report.summary

    def socket_json(sock) -> dict[str, Any]:
        return jsonout.socket_object(sock, report.holders_of(sock), names.services, names.places)

    return {
        "netns": report.netns_inode,
        "summary": {
            "total": summary.total,
            "tcp_total": summary.tcp_total,
            "tcp_estab": summary.tcp_estab,
            "tcp_closed": summary.tcp_closed,
            "tcp_orphaned": summary.tcp_orphaned,
            "tcp_timewait": summary.tcp_timewait,
            "transport": [
                {"name": row.name, "total": row.total, "ipv4": row.ipv4, "ipv6": row.ipv6} for row in summary.transport
            ],
        },
        "counts": [
            {
                "proto": counts.proto,
                "kind": counts.kind,
                "total": counts.total,
                "states": {state.value: count for state, count in counts.states},
            }
            for counts in report.counts
        ],
        "time_wait": report.time_wait,
        "orphans": report.orphans,
        "sockstat": report.counters,
        "busiest": [
            {
                "port": busy.port,
                "connections": busy.connections,
                "established": busy.established,
                "time_wait": busy.time_wait,
                "listeners": [socket_json(sock) for sock in busy.listeners],
            }
            for busy in report.busiest
        ],
        "bound_only": [socket_json(sock) for sock in report.bound_only],
        "bound_visible": report.bound_visible,
    }


def render_stats(report: StatsReport, env: Environment, names: Names, *, as_json: bool) -> None:
    if as_json:
        jsonout.dump(stats_object(report, names), env.stdout)
    else:
        env.stdout.write("\n".join(stats_lines(report, names)) + "\n")
    for note in report.snapshot.warnings:
        env.note(safe_text(note))
