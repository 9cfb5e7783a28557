"""A FUSE file system whose one file, /trap, never finishes a FLUSH or RELEASE (the hostile holder's tool).

Run as ``python fuse_trap.py MOUNTPOINT``; it prints "mounted" once serving and "flush" for each
FLUSH it receives (then never answers it). Killing it aborts the connection, which ends every wait.
"""

from __future__ import annotations

import errno
import stat
import sys
import threading
import time

from fuse import FUSE, FuseOSError, Operations


class Trap(Operations):
    def init(self, path: str) -> None:
        print("mounted", flush=True)

    def getattr(self, path: str, fh: int | None = None) -> dict:
        now = time.time()
        times = {"st_ctime": now, "st_mtime": now, "st_atime": now, "st_uid": 0, "st_gid": 0}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times}
        if path == "/trap":
            return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": 0, **times}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", "trap"]

    def open(self, path: str, flags: int) -> int:
        return 0

    def flush(self, path: str, fh: int) -> int:
        print("flush", flush=True)
        threading.Event().wait()  # never answer
        return 0

    def release(self, path: str, fh: int) -> int:
        threading.Event().wait()
        return 0


if __name__ == "__main__":
    FUSE(Trap(), sys.argv[1], foreground=True, allow_other=True)
