"""Test-session set-up shared by every test module."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_inherited_width():
    # GNU readline (imported by pytest through pdb) puts the COLUMNS and LINES of pytest's terminal into the
    # C environment (not os.environ), which child processes inherit. portscope fits a pipe's output to
    # COLUMNS when it is set (as under watch), so every test starts without them and sets them where it
    # tests a width.
    for name in ("COLUMNS", "LINES"):
        if name not in os.environ:
            os.unsetenv(name)
    yield
