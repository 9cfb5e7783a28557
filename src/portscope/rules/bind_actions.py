"""What would make a refused bind work: actions planned per group of blockers, each one checked by the model.

Blockers are grouped by what holds them (the same processes, the kernel's TIME-WAIT, orphans, an
invisible holder). Removing a group is one action (stop its processes as one, wait once for the
longest TIME-WAIT timer). An option change is offered only if the model, re-run with the change,
lets the new socket past that group: so no "SO_REUSEPORT on both" when the owners' uid differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import Family, Process
from portscope.rules.codes import ActionKind, Coded, action

if TYPE_CHECKING:
    from portscope.rules.bind import NewSocket, Owner

# clears(new socket, owners) -> "yes" (the bind works), "maybe" (uncertain) or "no"
Clears = Callable[["NewSocket", Sequence["Owner"]], str]

TIME_WAIT, ORPHAN, HIDDEN = "time-wait", "orphan", "hidden"


@dataclass_lite(frozen=True)
class BlockerGroup:
    """Blockers with the same holders: ``key`` is a frozenset of pids, or TIME_WAIT, ORPHAN, HIDDEN."""

    key: frozenset[int] | str
    owners: tuple[Owner, ...]

    @property
    def processes(self) -> tuple[Process, ...]:
        seen: dict[int, Process] = {}
        for owner in self.owners:
            for holder in owner.holders:
                seen.setdefault(holder.process.pid, holder.process)
        return tuple(sorted(seen.values(), key=lambda p: p.pid))


def holder_key(owner: Owner) -> frozenset[int] | str:
    if owner.holders:
        return frozenset(h.process.pid for h in owner.holders)
    if owner.timewait:
        return TIME_WAIT
    if owner.socket is not None and owner.socket.inode is None:
        return ORPHAN
    return HIDDEN


def group_blockers(blockers: Sequence[Owner]) -> list[BlockerGroup]:
    """Groups in the order of their first blocker."""
    groups: dict[frozenset[int] | str, list[Owner]] = {}
    for owner in blockers:
        groups.setdefault(holder_key(owner), []).append(owner)
    return [BlockerGroup(key, tuple(owners)) for key, owners in groups.items()]


def stop_action(processes: Sequence[Process]) -> Coded:
    """One stop for processes sharing sockets: the one whose parent is not among them, and the rest."""
    pids = {p.pid for p in processes}
    roots = [p for p in processes if p.ppid not in pids] or list(processes)
    main = min(roots, key=lambda p: p.pid)
    workers = [p.pid for p in processes if p.pid != main.pid and p.ppid == main.pid]
    others = [p.pid for p in processes if p.pid != main.pid and p.ppid != main.pid]
    return action(ActionKind.STOP_PROCESS, pid=main.pid, name=main.name, workers=workers, other_pids=others)


def stopped_pids(stop: Coded) -> set[int]:
    return {stop["pid"], *stop["workers"], *stop["other_pids"]}


def _removals(groups: Sequence[BlockerGroup]) -> list[Coded]:
    actions: list[Coded] = []
    stopping: set[int] = set()
    # largest holder sets first: a worker's own connections are covered by stopping its parent's group
    by_size = sorted((g for g in groups if isinstance(g.key, frozenset)), key=lambda g: -len(g.key))
    for group in by_size:
        if group.key <= stopping:
            continue
        stop = stop_action(group.processes)
        stopping |= stopped_pids(stop)
        actions.append(stop)
    for group in groups:
        if group.key == TIME_WAIT:
            timers = [o.timer_ms for o in group.owners]
            seconds = None if None in timers else max(1, math.ceil(max(timers) / 1000))
            actions.append(action(ActionKind.WAIT, until="time-wait-expires", seconds=seconds))
        elif group.key == ORPHAN:
            actions.append(action(ActionKind.WAIT, until="orphan-closes"))
        elif group.key == HIDDEN:
            for owner in group.owners:
                hidden = action(ActionKind.STOP_UNKNOWN_PROCESS, address=owner.address, port=owner.port)
                if hidden not in actions:
                    actions.append(hidden)
    return actions


def _pids(owners: Sequence[Owner]) -> list[int]:
    return sorted({h.process.pid for o in owners for h in o.holders})


def _alike(owners: Sequence[Owner]) -> list[Owner]:
    """One socket for each set of the facts bind() reads: thousands of accepted connections are one case.

    The first of each keeps its place, which is all the UDP chain order needs.
    """
    cases: dict[tuple, Owner] = {}
    for o in owners:
        key = (o.proto, o.family, o.address, o.port, o.state, o.uid, o.device, o.reuseaddr, o.reuseport, o.v6only)
        cases.setdefault((*key, o.timewait), o)
    return list(cases.values())


def _changes(n: NewSocket, group: BlockerGroup, clears: Clears) -> list[Coded]:
    """Option changes that get the new socket past this group, cheapest first (new socket only, then both)."""
    owners = _alike(group.owners)
    found: list[Coded] = []
    changeable = group.key != TIME_WAIT  # a TIME-WAIT socket keeps the flags it had

    def on_new(option: str, changed: NewSocket, value: bool = True) -> bool:
        outcome = clears(changed, owners)
        if outcome == "no":
            return False
        found.append(
            action(ActionKind.SET_OPTION, option=option, on="new", value=value, if_existing_has_it=outcome == "maybe")
        )
        return outcome == "yes"

    def on_both(option: str, changed: NewSocket, field: str) -> bool:
        if not changeable or all(getattr(o, field) for o in owners):
            return False
        if clears(changed, [replace(o, **{field: True}) for o in owners]) != "yes":
            return False
        found.append(action(ActionKind.SET_OPTION, option=option, on="both", pids=_pids(group.owners)))
        return True

    if n.family is Family.IPV6 and n.address == "::" and not n.v6only:
        on_new("IPV6_V6ONLY", replace(n, v6only=True))

    def dual_stack(o: Owner) -> bool:
        return o.family is Family.IPV6 and o.address == "::" and o.v6only is not True

    wildcards6 = [o for o in owners if dual_stack(o)]
    new_is_ipv4 = n.family is Family.IPV4 or n.address.startswith("::ffff:")
    if wildcards6 and changeable and new_is_ipv4:
        flipped = [replace(o, v6only=True) if o in wildcards6 else o for o in owners]
        if clears(n, flipped) == "yes":
            found.append(
                action(
                    ActionKind.SET_OPTION,
                    option="IPV6_V6ONLY",
                    on="existing",
                    pids=_pids([o for o in group.owners if dual_stack(o)]),
                )
            )
    if not n.reuseport:
        on_new("SO_REUSEPORT", replace(n, reuseport=True))
    if not n.reuseaddr:
        on_new("SO_REUSEADDR", replace(n, reuseaddr=True))

    def settled_on_new(option: str) -> bool:
        return any(a["on"] == "new" and a["option"] == option and not a["if_existing_has_it"] for a in found)

    if not settled_on_new("SO_REUSEADDR"):
        on_both("SO_REUSEADDR", replace(n, reuseaddr=True), "reuseaddr")
    if not settled_on_new("SO_REUSEPORT") and not on_both("SO_REUSEPORT", replace(n, reuseport=True), "reuseport"):
        for uid in sorted({o.uid for o in owners if o.uid is not None and o.uid != n.uid and not o.timewait}):
            if clears(replace(n, uid=uid, reuseport=True), owners) == "yes":
                found.append(action(ActionKind.RUN_AS_USER, uid=uid, reuseport=not n.reuseport))
    devices = {o.device for o in owners}
    if not n.device and devices and None not in devices and 0 not in devices:
        elsewhere = max(devices) + 1  # an interface none of them is pinned to
        if clears(replace(n, device=elsewhere), owners) == "yes":
            found.append(action(ActionKind.SET_OPTION, option="SO_BINDTODEVICE", on="new"))
    return found


def plan(n: NewSocket, blockers: Sequence[Owner], clears: Clears) -> tuple[Coded, ...]:
    """The actions for a conflict with ``blockers``: removals, option changes, another port; no duplicates.

    An option change is an alternative to the removals only if it alone gets the new socket past every
    group (a listener and its workers' connections are two groups: SO_REUSEADDR on the new socket
    passes the connections, never the listener, so it is not offered). The same change found for
    several groups is offered once, with all the pids it concerns.
    """
    groups = group_blockers(blockers)
    actions = _removals(groups)
    per_group = [_changes(n, group, clears) for group in groups]
    merged: dict[tuple, Coded] = {}
    for changes in per_group:
        for change in changes:
            key = _change_key(change)
            known = merged.get(key)
            merged[key] = change if known is None else _merge(known, change)
    for key, change in merged.items():
        if all(any(_change_key(c) == key for c in changes) for changes in per_group) and change not in actions:
            actions.append(change)
    actions.append(action(ActionKind.USE_ANOTHER_PORT))
    return tuple(actions)


def _change_key(change: Coded) -> tuple:
    """What a change is, whichever sockets it concerns."""
    return (change.code, *((k, v) for k, v in change.args if k not in ("pids", "if_existing_has_it")))


def _merge(first: Coded, second: Coded) -> Coded:
    params = first.params
    if "pids" in params:
        params["pids"] = sorted({*first["pids"], *second["pids"]})
    if "if_existing_has_it" in params:
        params["if_existing_has_it"] = first["if_existing_has_it"] or second["if_existing_has_it"]
    return action(first.code, **params)  # type: ignore[arg-type]


__all__ = ["HIDDEN", "ORPHAN", "TIME_WAIT", "BlockerGroup", "group_blockers", "holder_key", "plan", "stop_action"]
