"""The console script: :func:`portscope.cli.run`, with the command line itself imported under a quiet Ctrl-C.

click and the command modules take tens of milliseconds to load; a Ctrl-C meanwhile would end in a
traceback from the import machinery instead of the usual exit status.
"""

from __future__ import annotations

import io
import os
import sys

INTERRUPTED = 130  # errors.ExitStatus.INTERRUPTED, without importing anything yet


def reopen_closed_standard_fds() -> None:
    """Put /dev/null on fds 0-2 where they are closed, before anything opens a file.

    Started with a closed stdout (``>&-``), the next file opened would become fd 1 and receive the output
    (a memfd, a netlink socket); a closed stderr would turn every note into an error. Python starts
    with ``sys.stdout`` or ``sys.stderr`` None then: they get a stream on the new fd.
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:  # open() takes the lowest free fd, which is this one (those below are open by now)
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            mode = "r" if fd == 0 else "w"
            stream = io.TextIOWrapper(io.FileIO(fd, mode, closefd=False), errors="backslashreplace", write_through=True)
            setattr(sys, name, stream)


# Standard modules something on every path imports and no command line of portscope uses: ``dataclasses``
# imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``: 35M instructions, as much as the interpreter's whole
# start-up) for the one ``inspect.signature`` it calls when it writes a docstring for a class, and
# ``model/dataclass_lite.py`` makes the records without it.
DEFERRED_MODULES = ("inspect",)


def defer_imports(names: tuple[str, ...] = DEFERRED_MODULES) -> None:
    """Import these modules on first use of one of their attributes rather than at ``import``.

    Each gets its real module object in ``sys.modules`` at once (the import statement and identity checks see
    that object), executed the first time an attribute it lacks is read (``inspect.signature``, ``from
    inspect import cleandoc``); nothing else changes. The console script's alone: a library user's imports
    are not touched.
    """
    import _thread

    module_type = type(sys)
    for name in names:
        if name in sys.modules:
            continue
        spec = next((s for f in sys.meta_path if (s := _find_spec(f, name)) is not None), None)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            continue
        lock = _thread.allocate_lock()  # two threads reading the first attribute execute the module once

        class Deferred(module_type):  # type: ignore[valid-type,misc]
            def __getattr__(self, attribute: str, _spec=spec, _lock=lock):
                with _lock:
                    if type(self) is not module_type:
                        self.__class__ = module_type
                        _spec.loader.exec_module(self)
                return module_type.__getattribute__(self, attribute)

        module = Deferred(name)
        module.__spec__, module.__loader__, module.__package__ = spec, spec.loader, spec.parent
        module.__file__, module.__cached__ = spec.origin, spec.cached
        sys.modules[name] = module


def _find_spec(finder: object, name: str):
    find = getattr(finder, "find_spec", None)
    return find(name, None) if find is not None else None


VERSION_FLAGS = ({"--version"}, {"-V"})


def print_version_quickly(args: list[str]) -> bool:
    """``portscope --version`` without loading click: the same line click's version option prints."""
    if set(args) not in VERSION_FLAGS or "PORTSCOPE_DEBUG" in os.environ or "_PORTSCOPE_COMPLETE" in os.environ:
        return False
    from portscope import __version__

    try:
        sys.stdout.write(f"portscope, version {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:  # portscope --version | true: the reader is gone, the answer stands
        pass
    return True


def run() -> None:
    reopen_closed_standard_fds()
    if print_version_quickly(sys.argv[1:]):
        os._exit(0)
    defer_imports()
    try:
        from portscope.cli import run as run_cli
    except KeyboardInterrupt:
        try:
            sys.stderr.write("portscope: interrupted\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os._exit(INTERRUPTED)
    run_cli()
