"""Exit status 4 when the system cannot be read (a namespace refused), 2 when the input is bad."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netns_util import REQUIRE_LIVE, new_netns
from portscope.errors import ExitStatus, SourceError, UsageError
from portscope.sources import netns

SRC = Path(__file__).resolve().parent.parent / "src"


def portscope_without_sys_admin(*args: str) -> subprocess.CompletedProcess:
    """portscope as root, but with CAP_SYS_ADMIN dropped from the bounding set: setns() is refused."""
    if shutil.which("setpriv") is None:
        if REQUIRE_LIVE:
            pytest.fail("needs setpriv (util-linux)")
        pytest.skip("needs setpriv (util-linux)")
    command = ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"]
    command += [sys.executable, "-m", "portscope", *args]
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_namespace_refused_for_lack_of_privilege_exits_4():
    with new_netns("psrefused") as ns:
        result = portscope_without_sys_admin("ls", "--netns", ns.name)
    assert result.returncode == ExitStatus.UNREADABLE == 4, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("portscope: error: ")
    assert "Operation not permitted" in result.stderr and ns.name in result.stderr


def test_same_namespace_with_privilege_is_read():
    with new_netns("psallowed") as ns:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        result = subprocess.run(
            [sys.executable, "-m", "portscope", "ls", "--netns", ns.name],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr


def test_unknown_namespace_is_bad_input_exits_2():
    result = portscope_without_sys_admin("ls", "--netns", "no-such-namespace-a7c1")
    assert result.returncode == ExitStatus.USAGE == 2
    assert "unknown network namespace" in result.stderr


def test_setns_refusal_is_a_source_error_other_failures_bad_input(monkeypatch, tmp_path):
    with new_netns("pssetns") as ns:
        target = netns.NetnsTarget(ns.path, None)

        def refuse(fd: int) -> None:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(netns, "_setns", refuse)
        with pytest.raises(SourceError, match="needs CAP_SYS_ADMIN"), netns.entered(target):
            pass
    not_a_namespace = tmp_path / "plain-file"
    not_a_namespace.write_text("")
    monkeypatch.undo()
    with pytest.raises(UsageError, match="cannot enter"), netns.entered(netns.NetnsTarget(str(not_a_namespace), None)):
        pass
