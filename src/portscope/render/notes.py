"""Sentences about what could not be seen, shared by the ls and who renderers."""

from __future__ import annotations


def hidden_owner_advice(caller_is_root: bool) -> str:
    """What to do about processes that could not be inspected: root sees all, unless something refuses even root."""
    if not caller_is_root:
        return "run as root to see them"
    return "access was refused even to root (a security module or a ptrace restriction)"
