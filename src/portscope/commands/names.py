"""What output shows that is looked up in the system, resolved by the command layer, not by renderers.

Service names from /etc/services (none with ``-n``), user names of socket owners, and whether the caller
is root (which decides the advice about processes that could not be inspected). A command resolves these
once and hands them to its renderer with the result; renderers never read the system themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import field

from portscope.commands.places import Places
from portscope.model.dataclass_lite import dataclass_lite
from portscope.model.records import NetnsInfo
from portscope.sources.services import Services


@dataclass_lite(frozen=True)
class Names:
    services: Services | None  # None: show no service names (-n)
    caller_is_root: bool
    lookup_user: Callable[[int], str]  # uid -> name (the uid as text when it has none)
    places: Places | None = None  # namespace names, containers, forwarders (JSON); None: not looked up
    _users: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    def user(self, uid: int) -> str:
        """The name of ``uid``, looked up once per uid."""
        name = self._users.get(uid)
        if name is None:
            name = self._users[uid] = self.lookup_user(uid)
        return name

    @classmethod
    def resolve(cls, *, numeric: bool = False, namespaces: Iterable[NetnsInfo] = ()) -> Names:
        """The names of this system: /etc/services (unless ``numeric``), the user database, this process's euid.

        ``namespaces``: those a ``--netns all`` snapshot found (their names are not looked up again).
        """
        from portscope.sources.services import load_services

        places = Places()
        places.learn(namespaces)
        return cls(
            services=None if numeric else load_services(),
            caller_is_root=os.geteuid() == 0,
            lookup_user=_user_name,
            places=places,
        )


def _user_name(uid: int) -> str:
    from portscope.sources.procinfo import user_name  # only when a table shows a uid: not on the JSON path

    return user_name(uid)
