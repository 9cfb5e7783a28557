"""A corpus of bad command lines: each must end in exit status 2 with exactly one line on stderr,
no traceback and nothing on stdout.

Every case runs through the command line's :func:`portscope.cli.main` in this process (streams
captured); a sample also runs as a real ``python -m portscope`` subprocess, all started at once, as
the truer oracle (the console script, its import and exit paths).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from portscope.cli import main

HUGE = "9" * 5000  # beyond int()'s 4300-digit limit
BAD_PORTS = [
    "",
    " ",
    "٨٠",  # Arabic-Indic digits: int() takes them
    "８０",  # fullwidth digits
    "१२",
    "²",  # isdigit() but not int()
    "8_0",  # int() takes underscores
    "-5",
    "-0x1",
    "0",
    "65536",
    "99999999999",
    HUGE,
    "0x50",
    "+80",
    "80.0",
    "8 0",
    "80-",
    "-",
    "9-3",
    "1-70000",
    "0-10",
    "nosuchservice",
    "80,",
    ",80",
    "80,,81",
    "a\x1b[2J",
]
BAD_PIDS = ["", "0", "-1", "²", "٨", "abc", "4194305", HUGE, "1_0", "1,", " ", "0x10"]
BAD_USERS = ["", "²", "4294967295", "4294967296", "-1", HUGE, "no-such-user-xyz", "root,", "٣"]
BAD_STATES = ["", "lisen", "nope", "listen,", ",", "estab lished", "²"]
BAD_NETWORKS = [
    "",
    "10.0.0.0/33",
    "10.0.0.0/²",
    "10.0.0.0/٨",
    "1.2.3.4.5",
    "::1/129",
    "fe80::1%nosuchif0",
    "[fe80::1%]",
    "[2001:db8::1%eth0]",  # a zone id on an address that does not use one
    "10.0.0.1%eth0",
    "[10.0.0.1]",
    "[::1]x",
    "300.0.0.0/8",
    "10.0.0.0/-1",
    "garbage",
    "10.0.0.0/8,",
    "١.١.١.١",
]
BAD_NETNS = ["", "no-such-netns-xyz", "999999999", "/nonexistent/netns/path", "٨"]

BAD_WHO = [
    "",
    " ",
    "0",
    "65536",
    "٨٠",
    "²",
    "8_0",
    "0x50",
    "99999999999",
    HUGE,
    "80/sctp",
    "80/",
    "80/tcp/udp",
    "nosuchservice",
    "ntp/tcp/",
    "[::1",
    "[::1]80",
    "[::1]",
    "[::1]:",
    "[]:80",
    "[127.0.0.1]:80",
    "1.2.3:80",
    "localhost:80",
    "127.0.0.1:",
    "127.0.0.1",
    "::1:80",
    "a:b:c",
    "[fe80::1%nosuchif0]:80",  # no such interface
    "[::1%lo]:80",  # a zone id on an address that does not use one
    "[fe80::1%]:80",
    "127.0.0.1%eth0:80",
    "8100-8000",
    "0-10",
    "70000-70001",
    "*",
    "300.1.1.1:22",
    "1.2.3.4:٨٠",
    "[::1]:٨٠",
    "[::1]:²",
    "80-",
    ":",
    "%",
]
BAD_TARGETS = [
    "",
    ":٨٠",
    ":²",
    ":8_0",
    ":-1",
    ":65536",
    ":99999999999",
    ":" + HUGE,
    "127.0.0.1",
    "1.2.3:80",
    "[1.2.3.4]:80",
    "[::1]",
    "[::1:80",
    "::1:80",
    "[fe80::1%]:80",
    "[2001:db8::1%lo]:80",  # a zone id on an address that does not use one
    "127.0.0.1%lo:80",
    "bad host!:80",
    ":nosuchservice",
    "127.0.0.1:",
    ":80/udp",  # names UDP, the socket is TCP
    "[::1]:80/sctp",
    ":8000-8100",
    "[fe80::1%nope0]:80",
    "[fe80::1%²]:80",
    ":0x50",
    ":+80",
    "[::1]:٨٠",
    "١٢٧.0.0.1:80",
]


def _cases() -> list[list[str]]:
    cases: list[list[str]] = [[], ["nope"], ["--nope"], ["completion"], ["completion", "tcsh"]]
    cases += [["completion", "bash", "extra"], ["ls", "extra"], ["who"], ["who", "80", "81"], ["can-bind"]]
    for option in ("--port", "--sport", "--dport"):
        cases += [["ls", f"{option}={value}"] for value in BAD_PORTS]
    cases += [["ls", f"--pid={value}"] for value in BAD_PIDS]
    cases += [["ls", f"--user={value}"] for value in BAD_USERS]
    cases += [["ls", f"--state={value}"] for value in BAD_STATES]
    for option in ("--src", "--dst"):
        cases += [["ls", f"{option}={value}"] for value in BAD_NETWORKS]
    cases += [["ls", f"--netns={value}"] for value in BAD_NETNS]
    cases += [["ls", "--process="], ["ls", "--process=a,"], ["ls", "--backend=nope"], ["ls", "--backend="]]
    cases += [["ls", "-l", "-a"], ["ls", "-l", "--state=listen"], ["ls", "-a", "-s", "listen"]]
    cases += [["who", "--", value] for value in BAD_WHO]
    cases += [["who", f"--netns={value}", "80"] for value in BAD_NETNS]
    cases += [["can-bind", "--", value] for value in BAD_TARGETS]
    cases += [["can-bind", ":8080", f"--user={value}"] for value in BAD_USERS]
    cases += [["can-bind", ":8080", f"--device={value}"] for value in ("", "²", "٨", "nope0", "99999999")]
    cases += [["can-bind", f"--netns={value}", ":8080"] for value in BAD_NETNS]
    cases += [["can-bind", "-4", "-6", ":80"], ["can-bind", "-6", "127.0.0.1:80"], ["can-bind", "-4", "[::1]:80"]]
    cases += [["can-bind", "--udp", ":80/tcp"], ["can-bind", ":80", "--v6only", "--user", "²"]]
    return cases


CASES = _cases()
# argv cannot carry NUL; everything else goes through a real process too, a sample of it here
SAMPLE = [case for case in CASES[::25] if not any("\0" in arg for arg in case)] + [[], ["completion"]]


def test_the_corpus_is_large():
    assert len(CASES) >= 250
    assert len({tuple(case) for case in CASES}) == len(CASES)  # no case counted twice


def _check(status, out: str, err: str, argv: list[str]) -> None:
    shown = f"portscope {' '.join(argv)!r}: status {status}, stdout {out!r}, stderr {err!r}"
    assert status == 2, shown
    assert out == "", shown
    assert err.count("\n") == 1 and err.endswith("\n"), shown
    assert "error" in err and "Traceback" not in err, shown


@pytest.mark.parametrize("argv", CASES, ids=lambda argv: " ".join(argv)[:60].encode("unicode_escape").decode())
def test_in_process(argv, capsys, monkeypatch):
    monkeypatch.delenv("PORTSCOPE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    _check(exited.value.code, out, err, argv)


def test_real_processes():
    env = {key: value for key, value in os.environ.items() if key != "PORTSCOPE_DEBUG"}
    started = [
        (argv, subprocess.Popen([sys.executable, "-m", "portscope", *argv], env=env, text=True, **_PIPES))
        for argv in SAMPLE
    ]
    try:
        for argv, process in started:
            out, err = process.communicate(timeout=60)
            _check(process.returncode, out, err, argv)
    finally:
        for _, process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


_PIPES = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["who", "a\\b"], "'a\\\\b'"),  # one backslash, escaped once at the boundary: 'a\\b'
        (["who", "a\x1bb"], "'a\\x1bb'"),  # ESC as the boundary writes it, not repr's and then escaped again
        (["ls", "--netns", "x\\y"], "'x\\\\y'"),
        (["can-bind", "q\\r:80"], "'q\\\\r'"),
    ],
)
def test_values_in_errors_are_escaped_once(argv, shown, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert shown in err and "\\\\\\\\" not in err, err
