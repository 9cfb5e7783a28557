"""A long output made by two processes: a forked child makes the second part while this process makes the first.

Used by the JSON listing (:mod:`portscope.render.jsonout`) and the plain table (:func:`portscope.render.table.
write_plain`), where the text of each socket is made apart from the others' and the making, not the writing,
takes the time. Whether to fork at all is the caller's decision (:meth:`portscope.engine.parallel.Parallelism.
split_render`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from portscope.sources.linux import end_child

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: see portscope/__init__.py
if TYPE_CHECKING:
    from typing import IO, NoReturn

Write = Callable[[str], object]


class SplitWriter:
    """The second part of a long output, made by a forked child while this process makes the first.

    The child writes its part's text, encoded as the stream encodes, into an anonymous memory file as it makes
    it (its heap stays small: holding the texts instead cost 40k page faults at 1M sockets), and says on a
    pipe that it finished. Once this process has written its part, :meth:`finish` passes that file on to the
    stream with ``sendfile()``: the order and the bytes are those of one process, and every write to the
    stream is this process's, so its errors (a closed pipe: ``BrokenPipeError``) are raised as one process
    meets them. A child that does not finish (a text the stream cannot encode, a kill) leaves its part to
    this process, which then meets the same error one process would. For a text stream with a file
    descriptor only (:meth:`start` gives None otherwise).
    """

    def __init__(self, out: IO[str], pid: int, done: int, text: int) -> None:
        self.out = out
        self.pid: int | None = pid
        self._done = done  # the child's b"0" once its whole part is in ``text``; nothing if it failed
        self._text = text

    @classmethod
    def start(cls, out: IO[str], make: Callable[[Write], object]) -> SplitWriter | None:
        """``make(write)`` writes the second part's text with ``write``, in the child."""
        encoding, errors = getattr(out, "encoding", None), getattr(out, "errors", None)
        if not isinstance(encoding, str):  # not a text stream over bytes: one process
            return None
        try:
            out.fileno()
            text = os.memfd_create("portscope-text", os.MFD_CLOEXEC)
        except (AttributeError, OSError, ValueError):  # a StringIO, a closed stream, no memfd: one process
            return None
        done_read, done_write = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError:
            for fd in (text, done_read, done_write):
                os.close(fd)
            return None
        if pid == 0:  # pragma: no cover - runs in the child, which ends with _exit
            os.close(done_read)
            _child_makes(text, encoding, errors or "strict", make, done_write)
        os.close(done_write)
        return cls(out, pid, done_read, text)

    def finish(self) -> bool:
        """After this process's part: the child's part written after it. False when the child ended without
        it (this process makes that part then)."""
        if os.read(self._done, 1) != b"0":
            return False
        self.out.flush()
        _copy_file(self._text, self.out.fileno(), os.fstat(self._text).st_size)
        return True

    def close(self) -> None:
        """Reap the child (stopped first if it still runs: this process failed, or was interrupted)."""
        for fd in (self._done, self._text):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.pid is not None:
            end_child(self.pid)
            self.pid = None


def write_in_two(out: IO[str], half: int, count: int, write_part: Callable[[Write, int, int], object]) -> None:
    """``write_part(write, start, stop)`` for items ``[0, half)`` here and ``[half, count)`` by a forked child
    (:class:`SplitWriter`) while this process makes the first part; the second made here too when no child
    could be started or it ended early. The same text either way. ``half`` 0: all of them here, in one part."""
    if not half:
        write_part(out.write, 0, count)
        return
    writer = SplitWriter.start(out, lambda write: write_part(write, half, count))
    try:
        write_part(out.write, 0, half)
        if writer is None or not writer.finish():
            write_part(out.write, half, count)
    finally:
        if writer is not None:
            writer.close()


def _child_makes(  # pragma: no cover - runs in the forked child
    text: int, encoding: str, errors: str, make: Callable[[Write], object], done: int
) -> NoReturn:
    status = 1
    try:
        with open(text, "w", encoding=encoding, errors=errors, closefd=False) as stream:
            make(stream.write)
        os.write(done, b"0")
        status = 0
    except BaseException:  # a text the stream cannot encode, an interrupt: the parent makes the part itself
        pass
    finally:
        os._exit(status)


def _copy_file(source: int, target: int, size: int) -> None:
    """``size`` bytes of file ``source`` from its start to ``target``: by ``sendfile()`` (the kernel hands a
    memory file's pages to a pipe without copying them), else (a file opened to append) by read and write."""
    offset = 0
    with contextlib.suppress(OSError):
        while offset < size:
            sent = os.sendfile(target, source, offset, size - offset)
            if not sent:
                break
            offset += sent
    # what sendfile() left: a target it refuses (a file opened to append), or an error the writes below raise
    while offset < size:
        data = memoryview(os.pread(source, min(size - offset, 1 << 20), offset))
        if not data:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        offset += len(data)
        while data:
            data = data[os.write(target, data) :]
