"""A model of the kernel's INET_DIAG bytecode interpreter and audit (net/ipv4/inet_diag.c), for tests.

``run`` follows inet_diag_bc_run op by op: ports, host conditions (v4-mapped addresses meet IPv4
prefixes), the bound device, the bind lock (autobound); ``audit`` follows inet_diag_bc_audit.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from portscope.sources import netlink


@dataclass(frozen=True)
class Entry:
    """What the kernel compares: inet_diag_entry."""

    family: int
    saddr: int  # as an integer of the family's width
    daddr: int
    sport: int
    dport: int
    ifindex: int = 0
    autobound: bool = False
    mark: int = 0


_PORT_OPS = (netlink.BC_S_GE, netlink.BC_S_LE, netlink.BC_S_EQ, netlink.BC_D_GE, netlink.BC_D_LE, netlink.BC_D_EQ)


def _bits_match(a: int, b: int, width: int, length: int) -> bool:
    shift = width - length
    return a >> shift == b >> shift


def run(code: bytes, entry: Entry) -> bool:
    length = len(code)
    offset = 0
    while length > 0:
        op, yes, no = netlink.BC_OP.unpack_from(code, offset)
        result = True
        if op == netlink.BC_JMP:
            result = False
        elif op in (
            netlink.BC_S_GE,
            netlink.BC_S_LE,
            netlink.BC_S_EQ,
            netlink.BC_D_GE,
            netlink.BC_D_LE,
            netlink.BC_D_EQ,
        ):
            port = netlink.BC_OP.unpack_from(code, offset + 4)[2]
            value = entry.sport if op in (netlink.BC_S_GE, netlink.BC_S_LE, netlink.BC_S_EQ) else entry.dport
            if op in (netlink.BC_S_GE, netlink.BC_D_GE):
                result = value >= port
            elif op in (netlink.BC_S_LE, netlink.BC_D_LE):
                result = value <= port
            else:
                result = value == port
        elif op == netlink.BC_AUTO:
            result = entry.autobound
        elif op == netlink.BC_DEV_COND:
            result = struct.unpack_from("=I", code, offset + 4)[0] == entry.ifindex
        elif op == netlink.BC_MARK_COND:
            mark, mask = struct.unpack_from("=II", code, offset + 4)
            result = entry.mark & mask == mark
        elif op in (netlink.BC_S_COND, netlink.BC_D_COND):
            family, prefix_len, port = netlink.HOSTCOND.unpack_from(code, offset + 4)
            value = entry.sport if op == netlink.BC_S_COND else entry.dport
            address = entry.saddr if op == netlink.BC_S_COND else entry.daddr
            raw_at = offset + 4 + netlink.HOSTCOND.size
            if port != -1 and port != value:
                result = False
            elif family not in (socket.AF_UNSPEC, entry.family):
                result = False
                if entry.family == socket.AF_INET6 and family == socket.AF_INET and address >> 32 == 0xFFFF:
                    wanted = int.from_bytes(code[raw_at : raw_at + 4], "big")
                    result = _bits_match(address & 0xFFFFFFFF, wanted, 32, prefix_len)
            elif prefix_len:
                width = 32 if family == socket.AF_INET else 128
                wanted = int.from_bytes(code[raw_at : raw_at + width // 8], "big")
                result = _bits_match(address, wanted, width, prefix_len)
        else:
            raise AssertionError(f"op {op} not modelled")
        step = yes if result else no
        length -= step
        offset += step
    return length == 0


def _min_len(code: bytes, offset: int, op: int) -> int:
    if op in (netlink.BC_S_COND, netlink.BC_D_COND):
        family = code[offset + 4]
        return 4 + netlink.HOSTCOND.size + {socket.AF_UNSPEC: 0, socket.AF_INET: 4, socket.AF_INET6: 16}[family]
    if op == netlink.BC_DEV_COND:
        return 8
    if op == netlink.BC_MARK_COND:
        return 12
    if op in (netlink.BC_JMP, netlink.BC_AUTO, netlink.BC_NOP):
        return 4
    return 8


def audit(code: bytes) -> None:
    def reachable(target_len: int) -> bool:
        remaining, offset = len(code), 0
        while remaining >= 0:
            if target_len > remaining:
                return False
            if target_len == remaining:
                return True
            yes = netlink.BC_OP.unpack_from(code, offset)[1]
            assert yes >= 4 and yes % 4 == 0
            remaining -= yes
            offset += yes
        return False

    remaining, offset = len(code), 0
    while remaining > 0:
        op, yes, no = netlink.BC_OP.unpack_from(code, offset)
        min_len = _min_len(code, offset, op)
        assert min_len <= yes <= remaining + 4 and yes % 4 == 0
        assert min_len <= no <= remaining + 4 and no % 4 == 0
        if no < remaining:
            assert reachable(remaining - no)
        remaining -= yes
        offset += yes
    assert remaining == 0


def entry_of(family: int, local: str, remote: str | None, sport: int, dport: int | None, **kw) -> Entry:
    zero = "0.0.0.0" if family == socket.AF_INET else "::"
    return Entry(
        family, int(ipaddress.ip_address(local)), int(ipaddress.ip_address(remote or zero)), sport, dport or 0, **kw
    )
