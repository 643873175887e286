"""Failpoints: named places in the move protocol where tests interrupt a mover.

A test arms a failpoint in-process (``armed("after_copy")``) or, for a separate mover
process, through ``REQSPEC_FAILPOINTS="after_copy=kill"`` (actions: ``raise``, ``kill``
for a real SIGKILL of the process, ``sleep:SECONDS``; in-process also a callable). Unarmed, a failpoint costs one
dict lookup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator

MOVE_FAILPOINTS = (
    "before_claim",
    "after_claim",
    "after_seal",
    "after_copy",
    "after_commit",
    "after_promote",
    "after_cleanup",
)

#: In ``SpecStore.create`` into a cell: the rows are written there, the locations (its
#: commit point, in the API database) are not.
CREATE_FAILPOINTS = ("create_after_rows",)

Action = str | Callable[[], None]
_armed: dict[str, Action] = {}


class FailpointHit(BaseException):
    """Raised by an armed failpoint. A BaseException, so that no ``except Exception`` in
    the mover treats it as an ordinary failure and tidies up: it stands for a crash."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"failpoint {name} hit")


def _from_env() -> None:
    spec = os.environ.get("REQSPEC_FAILPOINTS", "")
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = item.partition("=")
        _armed[name] = action or "raise"


_from_env()


def failpoint(name: str) -> None:
    """Do what the failpoint ``name`` is armed to do, if anything."""
    action = _armed.get(name)
    if action is None:
        return
    if callable(action):  # tests: do something (a concurrent save, kill a server) right here
        action()
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
        return
    raise FailpointHit(name)


@contextlib.contextmanager
def armed(name: str, action: Action = "raise") -> Iterator[None]:
    """Arm one failpoint for the duration of a block (tests)."""
    if name not in MOVE_FAILPOINTS and name not in CREATE_FAILPOINTS:
        raise ValueError(f"unknown failpoint {name!r}")
    _armed[name] = action
    try:
        yield
    finally:
        _armed.pop(name, None)
