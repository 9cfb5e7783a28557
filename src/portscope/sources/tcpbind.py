"""The TCP bind table as the kernel holds it, read with a BPF socket iterator (``iter/tcp``).

No socket dump shows what bind() consults for sockets without a readable holder: the SO_REUSEADDR /
SO_REUSEPORT / IPV6_V6ONLY of TIME-WAIT and orphaned sockets (a TIME-WAIT socket keeps them in its
``sock_common``: ``tw_reuse``, ``tw_reuseport``, ``tw_ipv6only``), nor the port's SO_REUSEPORT fast-path
cache (``struct inet_bind_bucket``: ``fastreuse``, ``fastreuseport``, ``fastuid`` and the address that set
it), which decides binds before any conflict check. A BPF iterator program visits every TCP socket of
the namespace (listeners, connections, TIME-WAIT; not bound-only sockets) and copies, for those on the
wanted ports, its ``sock_common`` and its bind bucket (``icsk_bind_hash``, ``tw_tb``) with
``bpf_probe_read_kernel``; offsets come from the kernel's own BTF (``/sys/kernel/btf/vmlinux``), so
nothing is compiled and no layout is assumed.

Needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), BTF, and a kernel with BPF iterators (5.9+). Anything
missing answers ``None``: the model then reasons over the values it cannot see, as before. The program
only reads; it is unloaded when its file descriptors are closed, before this returns.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import struct
from collections.abc import Iterable

from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Family
from portscope.rules.bind import BindBucket
from portscope.sources import netns

BTF_PATH = "/sys/kernel/btf/vmlinux"
SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361, "s390x": 351}
BPF_PROG_LOAD, BPF_LINK_CREATE, BPF_ITER_CREATE = 5, 28, 33
BPF_PROG_TYPE_TRACING, BPF_TRACE_ITER = 26, 28
HELPER_PROBE_READ_KERNEL, HELPER_SEQ_WRITE = 113, 127
TCP_TIME_WAIT, TCP_NEW_SYN_RECV = 6, 12
AF_INET6 = 10


@dataclass_lite(frozen=True)
class KernelSocket:
    """What bind() reads of one TCP socket, straight from its ``sock_common``."""

    port: int
    state: int  # the kernel's TCP state number (TIME-WAIT: 6)
    reuse: int  # sk_reuse: 0, 1 (SO_REUSEADDR), 2 (TCP_REPAIR)
    reuseport: bool
    v6only: bool
    device: int  # sk_bound_dev_if


@dataclass_lite(frozen=True)
class TcpBindState:
    sockets: dict[int, KernelSocket]  # socket cookie -> its fields
    buckets: dict[int, BindBucket]  # port -> the bind bucket (absent: not seen, or more than one)


# ---------------------------------------------------------------------------------------------------
# BTF: the offsets of the few fields read, from the running kernel's type information

_KIND_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12)}
_KIND_EXTRA.update({17: (4, 0), 19: (0, 12)})
_STRUCT, _UNION, _FUNC = 4, 5, 12
_MODIFIERS = (8, 9, 10, 11, 18)  # typedef, volatile, const, restrict, type tag


@dataclass_lite(frozen=True)
class Layout:
    """Byte offsets (bit offsets for the flag bits) of what the program copies and this module decodes."""

    iter_func: int  # BTF id of bpf_iter_tcp, the attach point
    files_func: int  # BTF id of bpf_iter_task_file: every open file of every task
    ctx_file: int  # struct bpf_iter__task_file: file
    file_inode: int  # struct file: f_inode, private_data (the struct socket of a socket file)
    file_private: int
    inode_mode: int
    socket_sk: int
    sk_protocol: int  # struct sock
    common_size: int
    family: int
    state: int
    reuse_bit: int  # skc_reuse (4 bits), then skc_reuseport and skc_ipv6only (1 bit each), in bits
    reuseport_bit: int
    v6only_bit: int
    device: int
    port: int  # skc_num, host order
    cookie: int
    icsk_bind_hash: int
    tw_tb: int
    bucket_size: int
    b_port: int
    b_fastreuse: int
    b_fastreuseport: int
    b_fastuid: int
    b_v6: int
    b_v4: int
    b_family: int
    b_v6only: int


class _Btf:
    def __init__(self, data: bytes) -> None:
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != 0xEB9F:
            raise ValueError("not little-endian BTF")
        self.types = data[hdr_len + type_off : hdr_len + type_off + type_len]
        self.strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        words = memoryview(self.types)[: len(self.types) // 4 * 4].cast("I")
        positions = [0]  # type id -> word index (id 0 is void)
        index, end = 0, len(words)
        while index < end:
            positions.append(index)
            info = words[index + 1]
            fixed, per_item = _KIND_EXTRA.get((info >> 24) & 0x1F, (0, 0))
            index += 3 + (fixed + per_item * (info & 0xFFFF)) // 4
        self.words = words
        self.positions = positions

    def name(self, offset: int) -> str:
        return self.strings[offset : self.strings.index(b"\0", offset)].decode()

    def find(self, name: str, kind: int) -> int:
        """The id of the type ``name`` of ``kind`` (its name's offset found first: one compare per type)."""
        target = self.strings.find(b"\0" + name.encode() + b"\0")
        if target < 0:
            raise KeyError(name)
        words, positions = self.words, self.positions
        for type_id in range(1, len(positions)):
            index = positions[type_id]
            if words[index] == target + 1 and (words[index + 1] >> 24) & 0x1F == kind:
                return type_id
        raise KeyError(name)

    def size(self, type_id: int) -> int:
        return self.words[self.positions[type_id] + 2]

    def members(self, type_id: int, base: int = 0) -> Iterable[tuple[str, int]]:
        """(name, bit offset) of a struct's members, anonymous structs and unions flattened."""
        words, index = self.words, self.positions[type_id]
        info = words[index + 1]
        bitfields = info >> 31
        for item in range(info & 0xFFFF):
            name_off, member_type, offset = words[index + 3 + 3 * item : index + 6 + 3 * item]
            bits = base + (offset & 0xFFFFFF if bitfields else offset)
            if name_off:
                yield self.name(name_off), bits
                continue
            while (words[self.positions[member_type] + 1] >> 24) & 0x1F in _MODIFIERS:
                member_type = words[self.positions[member_type] + 2]
            if (words[self.positions[member_type] + 1] >> 24) & 0x1F in (_STRUCT, _UNION):
                yield from self.members(member_type, bits)

    def offsets(self, struct_name: str) -> tuple[int, dict[str, int]]:
        type_id = self.find(struct_name, _STRUCT)
        return self.size(type_id), dict(self.members(type_id))


_layouts: dict[tuple[int, int, int], Layout] = {}  # per BTF file identity: pure, immutable results


def read_layout(path: str = BTF_PATH) -> Layout:
    """The field offsets for the running kernel (parsed once per process and kernel)."""
    status = os.stat(path)
    key = (status.st_dev, status.st_ino, status.st_size)
    if key not in _layouts:
        with open(path, "rb") as handle:
            btf = _Btf(handle.read())
        common_size, common = btf.offsets("sock_common")
        bucket_size, bucket = btf.offsets("inet_bind_bucket")
        _, icsk = btf.offsets("inet_connection_sock")
        _, tw = btf.offsets("inet_timewait_sock")
        _, files_ctx = btf.offsets("bpf_iter__task_file")
        _, file = btf.offsets("file")
        _layouts[key] = Layout(
            iter_func=btf.find("bpf_iter_tcp", _FUNC),
            files_func=btf.find("bpf_iter_task_file", _FUNC),
            ctx_file=files_ctx["file"] // 8,
            file_inode=file["f_inode"] // 8,
            file_private=file["private_data"] // 8,
            inode_mode=btf.offsets("inode")[1]["i_mode"] // 8,
            socket_sk=btf.offsets("socket")[1]["sk"] // 8,
            sk_protocol=btf.offsets("sock")[1]["sk_protocol"] // 8,
            common_size=common_size,
            family=common["skc_family"] // 8,
            state=common["skc_state"] // 8,
            reuse_bit=common["skc_reuse"],
            reuseport_bit=common["skc_reuseport"],
            v6only_bit=common["skc_ipv6only"],
            device=common["skc_bound_dev_if"] // 8,
            port=common["skc_num"] // 8,
            cookie=common["skc_cookie"] // 8,
            icsk_bind_hash=icsk["icsk_bind_hash"] // 8,
            tw_tb=tw["tw_tb"] // 8,
            bucket_size=bucket_size,
            b_port=bucket["port"] // 8,
            b_fastreuse=bucket["fastreuse"] // 8,
            b_fastreuseport=bucket["fastreuseport"] // 8,
            b_fastuid=bucket["fastuid"] // 8,
            b_v6=bucket["fast_v6_rcv_saddr"] // 8,
            b_v4=bucket["fast_rcv_saddr"] // 8,
            b_family=bucket["fast_sk_family"] // 8,
            b_v6only=bucket["fast_ipv6_only"] // 8,
        )
    return _layouts[key]


# ---------------------------------------------------------------------------------------------------
# The program: for each socket on the wanted ports, write [sock_common | bucket pointer | bucket]

_MOV_REG, _MOV_IMM, _ADD_IMM = 0xBF, 0xB7, 0x07
_LOAD_DW, _LOAD_H, _LOAD_B, _STORE_IMM_DW = 0x79, 0x69, 0x71, 0x7A
_JEQ_IMM, _JNE_IMM, _JLT_IMM, _JGT_IMM, _JUMP, _CALL, _EXIT = 0x15, 0x55, 0xA5, 0x25, 0x05, 0x85, 0x95
_AND_IMM = 0x57
S_IFMT, S_IFSOCK, IPPROTO_TCP, TCP_CLOSE = 0o170000, 0o140000, 6, 7
R0, R1, R2, R3, R6, R7, R8, FP = 0, 1, 2, 3, 6, 7, 8, 10


def record_size(layout: Layout) -> int:
    return layout.common_size + 8 + layout.bucket_size


def program(layout: Layout, low: int, high: int, files: bool = False) -> bytes:
    """The iterator program's instructions (little-endian ``struct bpf_insn``).

    ``files``: for ``iter/task_file``, which reaches the sockets processes hold, bound-only ones included
    (``iter/tcp`` walks the listening and established tables only): a TCP socket file's ``struct sock``,
    kept if it is bound-only (TCP_CLOSE with a port)."""
    size = record_size(layout)
    buf = -((size + 7) // 8 * 8) - 8  # stack offsets of the record, its bucket pointer and bucket
    scratch = -8  # one word for the pointers walked to reach a file's socket
    pointer = buf + layout.common_size
    bucket = pointer + 8
    code: list[tuple[int, int, int, int | str, int]] = []  # (op, dst, src, offset or label, imm)
    labels: dict[str, int] = {}

    def op(opcode: int, dst: int = 0, src: int = 0, offset: int | str = 0, imm: int = 0) -> None:
        code.append((opcode, dst, src, offset, imm))

    def label(name: str) -> None:
        labels[name] = len(code)

    def probe_read(dst: int, length: int) -> None:  # R3 holds the kernel address
        op(_MOV_REG, R1, FP)
        op(_ADD_IMM, R1, imm=dst)
        op(_MOV_IMM, R2, imm=length)
        op(_CALL, imm=HELPER_PROBE_READ_KERNEL)

    def follow(offset: int, length: int = 8) -> None:  # scratch := *(R3 + offset), zero-extended
        op(_STORE_IMM_DW, FP, 0, scratch, 0)
        op(_ADD_IMM, R3, imm=offset)
        probe_read(scratch, length)

    op(_MOV_REG, R6, R1)  # ctx: struct bpf_iter__tcp {meta, sk_common, uid} or bpf_iter__task_file
    op(_LOAD_DW, R7, R6, layout.ctx_file if files else 8)
    op(_JEQ_IMM, R7, 0, "out", 0)  # the end of the iteration
    op(_LOAD_DW, R1, R6, 0)
    op(_LOAD_DW, R8, R1, 0)  # meta->seq
    if files:  # file -> f_inode -> i_mode is a socket? then file -> private_data (struct socket) -> sk
        op(_MOV_REG, R3, R7)
        follow(layout.file_inode)
        op(_LOAD_DW, R3, FP, scratch)
        op(_JEQ_IMM, R3, 0, "out", 0)
        follow(layout.inode_mode, 2)
        op(_LOAD_DW, R1, FP, scratch)
        op(_AND_IMM, R1, imm=S_IFMT)
        op(_JNE_IMM, R1, 0, "out", S_IFSOCK)
        op(_MOV_REG, R3, R7)
        follow(layout.file_private)
        op(_LOAD_DW, R3, FP, scratch)
        op(_JEQ_IMM, R3, 0, "out", 0)
        follow(layout.socket_sk)
        op(_LOAD_DW, R7, FP, scratch)
        op(_JEQ_IMM, R7, 0, "out", 0)
        op(_MOV_REG, R3, R7)
        follow(layout.sk_protocol, 2)
        op(_LOAD_DW, R1, FP, scratch)
        op(_JNE_IMM, R1, 0, "out", IPPROTO_TCP)
    op(_MOV_REG, R3, R7)
    probe_read(buf, layout.common_size)
    op(_LOAD_H, R1, FP, buf + layout.port)
    op(_JLT_IMM, R1, 0, "out", low)
    op(_JGT_IMM, R1, 0, "out", high)
    if files:
        op(_LOAD_B, R1, FP, buf + layout.state)
        op(_JNE_IMM, R1, 0, "out", TCP_CLOSE)
    op(_STORE_IMM_DW, FP, 0, pointer, 0)
    op(_STORE_IMM_DW, FP, 0, bucket, 0)  # the first bytes at least: a record without a bucket reads as none
    op(_LOAD_B, R1, FP, buf + layout.state)
    op(_JEQ_IMM, R1, 0, "write", TCP_NEW_SYN_RECV)  # a request socket: not in the bind table
    op(_MOV_REG, R3, R7)
    op(_JEQ_IMM, R1, 0, "timewait", TCP_TIME_WAIT)
    op(_ADD_IMM, R3, imm=layout.icsk_bind_hash)
    op(_JUMP, offset="pointer")
    label("timewait")
    op(_ADD_IMM, R3, imm=layout.tw_tb)
    label("pointer")
    probe_read(pointer, 8)
    op(_LOAD_DW, R3, FP, pointer)
    op(_JEQ_IMM, R3, 0, "write", 0)
    probe_read(bucket, layout.bucket_size)
    label("write")
    op(_MOV_REG, R1, R8)
    op(_MOV_REG, R2, FP)
    op(_ADD_IMM, R2, imm=buf)
    op(_MOV_IMM, R3, imm=size)
    op(_CALL, imm=HELPER_SEQ_WRITE)
    label("out")
    op(_MOV_IMM, R0, imm=0)
    op(_EXIT)
    out = bytearray()
    for index, (opcode, dst, src, offset, imm) in enumerate(code):
        if isinstance(offset, str):
            offset = labels[offset] - index - 1
        out += struct.pack("<BBhi", opcode, dst | src << 4, offset, imm)
    return bytes(out)


# ---------------------------------------------------------------------------------------------------
# Loading and reading

_libc = None


def _bpf(command: int, attr: bytes) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    number = SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(0, "bpf(): unknown system call number on this architecture")
    buffer = ctypes.create_string_buffer(attr, 128)
    result = _libc.syscall(number, command, buffer, len(buffer))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _load(layout: Layout, low: int, high: int, files: bool = False) -> int:
    code = program(layout, low, high, files)
    instructions = ctypes.create_string_buffer(code, len(code))
    license_text = ctypes.create_string_buffer(b"GPL")  # bpf_probe_read_kernel and bpf_seq_write are GPL-only
    attr = struct.pack(
        "<IIQQIIQII16sIIIIQIIQIII",
        BPF_PROG_TYPE_TRACING,
        len(code) // 8,
        ctypes.addressof(instructions),
        ctypes.addressof(license_text),
        0,  # no verifier log
        0,
        0,
        0,
        0,
        b"portscope_bind",
        0,
        BPF_TRACE_ITER,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        layout.files_func if files else layout.iter_func,
        0,
    )
    return _bpf(BPF_PROG_LOAD, attr)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(data: bytes, layout: Layout, ports: set[int], only: frozenset[int] | None = None) -> TcpBindState:
    sockets: dict[int, KernelSocket] = {}
    buckets: dict[int, set[bytes]] = {}
    decoded: dict[bytes, BindBucket] = {}
    size, common = record_size(layout), layout.common_size
    for start in range(0, len(data) - size + 1, size):
        record = data[start : start + size]
        port = int.from_bytes(record[layout.port : layout.port + 2], "little")
        if port not in ports:
            continue
        flags = int.from_bytes(record[layout.reuse_bit // 8 : layout.reuse_bit // 8 + 2], "little")
        shift = layout.reuse_bit // 8 * 8
        cookie = int.from_bytes(record[layout.cookie : layout.cookie + 8], "little")
        if only is not None and cookie not in only:
            continue  # a file walk sees every namespace's sockets: only those of the dump count
        state = record[layout.state]
        if state == TCP_NEW_SYN_RECV:
            continue
        if cookie:
            sockets[cookie] = KernelSocket(
                port=port,
                state=state,
                reuse=(flags >> (layout.reuse_bit - shift)) & 0xF,
                reuseport=bool((flags >> (layout.reuseport_bit - shift)) & 1),
                v6only=bool((flags >> (layout.v6only_bit - shift)) & 1),
                device=int.from_bytes(record[layout.device : layout.device + 4], "little", signed=True),
            )
        pointer = record[common : common + 8]
        if pointer == bytes(8):
            continue
        raw = record[common + 8 :]
        if int.from_bytes(raw[layout.b_port : layout.b_port + 2], "little") != port:
            continue  # the bucket changed under the read
        buckets.setdefault(port, set()).add(pointer)
        if pointer not in decoded:
            decoded[pointer] = _bucket(raw, layout)
    # one bucket per port, or the port is split (VRF devices): then the cache is not used
    chosen = {port: decoded[next(iter(found))] for port, found in buckets.items() if len(found) == 1}
    return TcpBindState(sockets, chosen)


def _bucket(raw: bytes, layout: Layout) -> BindBucket:
    family_number = int.from_bytes(raw[layout.b_family : layout.b_family + 2], "little")
    return BindBucket(
        fastreuse=struct.unpack_from("b", raw, layout.b_fastreuse)[0],
        fastreuseport=struct.unpack_from("b", raw, layout.b_fastreuseport)[0],
        fastuid=int.from_bytes(raw[layout.b_fastuid : layout.b_fastuid + 4], "little"),
        family=Family.IPV6 if family_number == AF_INET6 else Family.IPV4,
        address6=str(ipaddress.IPv6Address(raw[layout.b_v6 : layout.b_v6 + 16])),
        address4=str(ipaddress.IPv4Address(raw[layout.b_v4 : layout.b_v4 + 4])),
        v6only=bool(raw[layout.b_v6only]),
    )


def _iterate(prog: int, target: netns.NetnsTarget | None, pid: int = 0) -> bytes:
    """One pass of the iterator (``pid``: iter/task_file over that process's files only)."""
    task = ctypes.create_string_buffer(struct.pack("<III", 0, pid, 0))  # bpf_iter_link_info.task: tid, pid, pid_fd
    info = (ctypes.addressof(task), len(task.raw)) if pid else (0, 0)
    link = _bpf(BPF_LINK_CREATE, struct.pack("<IIIIQI", prog, 0, BPF_TRACE_ITER, 0, *info))
    try:
        with netns.entered(target):  # iter/tcp walks the namespace it is created in
            iterator = _bpf(BPF_ITER_CREATE, struct.pack("<II", link, 0))
        try:
            return _read_all(iterator)
        finally:
            os.close(iterator)
    finally:
        os.close(link)


def _run(
    layout: Layout, ports: set[int], target: netns.NetnsTarget | None, pids: Iterable[int] = (), files: bool = False
) -> bytes | None:
    """Load the program for ``ports``, iterate (in the target namespace; for files, those of ``pids`` or of
    every process), unload; None if refused."""
    try:
        prog = _load(layout, min(ports), max(ports), files)
    except OSError:
        return None  # no privilege, no iterator support
    try:
        return b"".join(_iterate(prog, target, pid) for pid in (sorted(pids) or [0]))
    except OSError:
        return None
    finally:
        os.close(prog)


CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def _may_trace(status_path: str = "/proc/thread-self/status") -> bool:
    """CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), which loading a tracing program needs: asked before the
    BTF is parsed, so that a caller without them pays nothing."""
    try:
        with open(status_path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    return bool(caps >> CAP_SYS_ADMIN & 1) or bool(caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)
    except (OSError, ValueError, IndexError):
        pass
    return True  # unknown: let the kernel say


MAX_HOLDER_WALKS = 16  # past this many holder processes, one walk of every process's files


def read_tcp_bind_state(
    target: netns.NetnsTarget | None,
    ports: set[int],
    bound: frozenset[int] = frozenset(),
    holders: frozenset[int] = frozenset(),
) -> TcpBindState | None:
    """The kernel's view of the TCP sockets on ``ports`` and of their bind buckets; None if not readable.

    ``bound``: cookies of bound-only sockets of the dump, held by the processes ``holders`` (empty: not
    known). A port whose bucket no listening, connected or TIME-WAIT socket showed is looked up through
    them, in the files those processes hold."""
    wanted = {port for port in ports if port}
    if not wanted or not _may_trace():
        return None
    try:
        layout = read_layout()
    except (OSError, ValueError, KeyError, IndexError, struct.error):
        return None  # no BTF, or a kernel without these types
    data = _run(layout, wanted, target, files=False)
    if data is None:
        return None
    state = _decode(data, layout, wanted)
    unseen = wanted - set(state.buckets)
    if unseen and bound:
        pids = holders if 0 < len(holders) <= MAX_HOLDER_WALKS else ()
        held = _run(layout, unseen, target, pids, files=True)
        if held is not None:
            extra = _decode(held, layout, unseen, only=bound)
            state = TcpBindState({**extra.sockets, **state.sockets}, {**extra.buckets, **state.buckets})
    return state


__all__ = ["KernelSocket", "TcpBindState", "read_tcp_bind_state"]
