"""The software update's state, shared by the System page and the update machinery (`system_update`)."""

from __future__ import annotations

import attrs

#: Seconds between the answer to a restart and the restart itself.
RESTART_DELAY = 1.0


#: The phases of `UpdateState` in which an update is under way.
BUSY_PHASES = ("installing", "restarting")


class UpdateError(Exception):
    """The uploaded software cannot be installed; the message says why."""


@attrs.define
class UpdateState:
    """Where the last update is: idle, installing, restarting or failed (with why)."""

    phase: str = "idle"
    message: str = ""
    version: str = ""
    output: str = ""

    def as_dict(self) -> dict[str, str]:
        return attrs.asdict(self)
