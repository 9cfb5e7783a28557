"""When a forked helper process is safe: the collectors fork to use a second CPU."""

from __future__ import annotations

import os
import sys


def may_fork() -> bool:
    """Only from a single-threaded process: a child forked beside other threads may inherit held locks."""
    threading = sys.modules.get("threading")
    return hasattr(os, "fork") and (threading is None or threading.active_count() == 1)
