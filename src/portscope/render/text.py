"""The one escaping boundary: text that comes from outside portscope, made safe to show.

Process names and command lines, interface, unit, cgroup and container names, service and user
names, paths: other users and other namespaces choose them, and root's terminal shows them. Every
renderer passes such text through :func:`safe_text` where it becomes output text (tables, who pages,
can-bind sentences, notes, errors, completion descriptions). The rules:

- Printable text (``str.isprintable()``: letters of every script, marks, symbols, the space) stays
  as it is. That one test also catches every character a terminal or a reader could be fooled by:
  C0 and C1 controls, DEL, bidi controls (U+202A-202E, U+2066-2069, U+200E/200F, U+061C), the line
  and paragraph separators U+2028/2029, zero-width and other format characters, unassigned code
  points.
- A character that is not printable is written as an escape made of printable ASCII:
  ``\\xNN`` below U+0080 (``\\x1b``), ``\\uNNNN`` up to U+FFFF (``\\u0085``, ``\\u202e``),
  ``\\UNNNNNNNN`` above.
- A byte that is not UTF-8 (names reach Python as bytes, or as str with ``surrogateescape``'s lone
  surrogates U+DC80-DCFF) is written ``\\xNN`` with the byte's value (``\\xff``). So ``\\xNN`` always
  means one byte and ``\\u``/``\\U`` one code point, as in bash's ``$'...'``.
- A backslash is doubled (``\\\\``), so an escape in the output is never a name's own text.

:func:`dollar_quoted` quotes a command-line argument that is not printable so that it can still be
pasted back into bash or zsh: inside ``$'...'`` the same escapes mean exactly what they mean here.
"""

from __future__ import annotations

_SURROGATE_BYTES = range(0xDC80, 0xDD00)  # surrogateescape: the byte 0xNN is the code point U+DCNN


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if code in _SURROGATE_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(text: str | bytes) -> str:
    """``text`` as it may be written to a terminal: printable, escapes unambiguous (rules above).

    Bytes are read as UTF-8, bytes that are not UTF-8 escaped. The common case, printable text
    without a backslash, is returned as it is after two checks in C.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escape, text))


def has_surrogates(text: str) -> bool:
    """Does ``text`` hold lone surrogates (bytes that were not UTF-8), which no UTF-8 stream can carry?"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def dollar_quoted(arg: str) -> str:
    """``arg`` as a bash/zsh ``$'...'`` word, printable, that the shell turns back into ``arg``'s bytes."""
    return "$'" + safe_text(arg).replace("'", "\\'") + "'"
