"""``python -m portscope.docs [--check] [--root DIR]``: regenerate man pages and completion scripts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from portscope.docs import REGENERATE_COMMAND, project_root, stale_files, write_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE_COMMAND, description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help="project root (default: this checkout)")
    parser.add_argument("--check", action="store_true", help="only list stale files; exit 1 if there are any")
    args = parser.parse_args(argv)
    root = args.root or project_root()
    if args.check:
        stale = stale_files(root)
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        if stale:
            print(f"run: {REGENERATE_COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
