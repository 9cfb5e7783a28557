"""Generated files: man pages, shell completion scripts and the fast path's tables, kept in the repository.

``python -m portscope.docs`` writes them all (``man/*.1``, ``completions/*``,
``src/portscope/cli/argtable.py`` and ``helptext.py``: see :mod:`portscope.docs.argtable`); ``--check``
only says which are out of date. The tests fail on a stale file, so the copies in the repository always match
the commands.
"""

from __future__ import annotations

from pathlib import Path

REGENERATE_COMMAND = "python -m portscope.docs"
COMPLETION_FILES = {
    "bash": "completions/portscope",
    "zsh": "completions/_portscope",
    "fish": "completions/portscope.fish",
}


def generated_files() -> dict[str, str]:
    """Path relative to the project root -> content, as the code produces them now."""
    from portscope.cli import cli
    from portscope.docs.argtable import fast_path_files
    from portscope.docs.manpages import man_pages
    from portscope.shell.scripts import completion_script

    files = {f"man/{name}": text for name, text in man_pages(cli).items()}
    for shell, path in COMPLETION_FILES.items():
        files[path] = completion_script(shell, cli)
    files.update(fast_path_files(cli))
    return files


def project_root() -> Path:
    """The checkout this package runs from (src layout), else the current directory."""
    candidate = Path(__file__).resolve().parents[3]
    return candidate if (candidate / "pyproject.toml").is_file() else Path.cwd()


def _obsolete(root: Path, files: dict[str, str]) -> list[str]:
    """Man pages of commands that no longer exist."""
    man_dir = root / "man"
    if not man_dir.is_dir():
        return []
    return sorted(f"man/{p.name}" for p in man_dir.glob("*.1") if f"man/{p.name}" not in files)


def stale_files(root: Path) -> list[str]:
    """Generated files that are missing, differ from what the code produces, or should be gone."""
    files = generated_files()
    stale = []
    for path, text in files.items():
        try:
            current = (root / path).read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            stale.append(path)
    return stale + _obsolete(root, files)


def write_all(root: Path) -> list[str]:
    """Write every generated file, remove obsolete man pages; returns what changed."""
    files = generated_files()
    changed = []
    for path in _obsolete(root, files):
        (root / path).unlink()
        changed.append(path)
    for path, text in files.items():
        target = root / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        changed.append(path)
    return changed


__all__ = ["COMPLETION_FILES", "REGENERATE_COMMAND", "generated_files", "project_root", "stale_files", "write_all"]
