"""`pip install .` into a fresh virtual environment installs the man pages and completion scripts where
man-db (found from PATH) and the shells' completion loaders look."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netns_util import REQUIRE_LIVE

ROOT = Path(__file__).resolve().parent.parent
INSTALLED_DOCS = {
    "share/bash-completion/completions/portscope": "completions/portscope",
    "share/zsh/site-functions/_portscope": "completions/_portscope",
    "share/fish/vendor_completions.d/portscope.fish": "completions/portscope.fish",
}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    if shutil.which("man") is None:
        missing = "man is not installed (apt-get install man-db)"
        pytest.fail(missing) if REQUIRE_LIVE else pytest.skip(missing)
    prefix = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True, timeout=120)
    # The new environment's own pip (another pip would treat this install as an upgrade of its own copy);
    # dependencies are not needed to see where the files go.
    subprocess.run(
        [prefix / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", str(ROOT)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return prefix


def test_man_finds_every_page_from_path(venv: Path) -> None:
    pages = sorted(p.stem for p in (ROOT / "man").glob("*.1"))
    assert "portscope" in pages and "portscope-who" in pages
    env = {key: value for key, value in os.environ.items() if key != "MANPATH"}  # man-db derives it from PATH
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    for page in pages:
        found = subprocess.run(["man", "-w", page], capture_output=True, text=True, env=env, timeout=30)
        assert found.returncode == 0, found.stderr
        assert Path(found.stdout.strip()).resolve() == (venv / "share/man/man1" / f"{page}.1").resolve()
        assert (venv / "share/man/man1" / f"{page}.1").read_bytes() == (ROOT / "man" / f"{page}.1").read_bytes()


def test_completion_scripts_installed_under_share(venv: Path) -> None:
    for installed, source in INSTALLED_DOCS.items():
        assert (venv / installed).read_bytes() == (ROOT / source).read_bytes(), installed
