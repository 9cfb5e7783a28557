"""The console script: :func:`portscope.cli.run`, with the command line itself imported under a quiet Ctrl-C.

click and the command modules take tens of milliseconds to load; a Ctrl-C meanwhile would end in a
traceback from the import machinery instead of the usual exit status.
"""

from __future__ import annotations

import os
import sys

INTERRUPTED = 130  # errors.ExitStatus.INTERRUPTED, without importing anything yet


def run() -> None:
    try:
        from portscope.cli import run as run_cli
    except KeyboardInterrupt:
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    run_cli()
