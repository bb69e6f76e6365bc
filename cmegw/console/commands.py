# -*- test-case-name: tests.test_console_commands -*-
"""
The console's command table with every command: the built-in groups
(`config_commands`, `status_commands`, `system_commands`, registered in this
order, which is the order of ``help``) and, on first use of `commands`, the
modules of `EXTENSIONS`.

The framework (`Reply`, `CommandTable`, ...) is in `cmegw.console.framework`;
its names are imported here too, so that ``from cmegw.console.commands import
COMMANDS, Reply, Session`` keeps working.
"""

from __future__ import annotations

import importlib

from cmegw.console import config_commands, status_commands, system_commands
from cmegw.console.config_commands import change  # noqa: F401
from cmegw.console.framework import (  # noqa: F401
    COMMANDS,
    CONSOLE_URI,
    Arguments,
    Command,
    CommandError,
    CommandTable,
    Completer,
    Handler,
    Question,
    Reply,
    Result,
    Session,
    columns,
    error_reply,
    line_numbers,
    number_argument,
    table_lines,
)
from cmegw.console.status_commands import SHOW  # noqa: F401
from cmegw.console.system_commands import AUTH, CLEAR, YES  # noqa: F401

#: The built-in groups (imported above for their commands).
BUILT_IN = (status_commands, config_commands, system_commands)

#: Modules that add their commands to `COMMANDS` when imported; one that does not exist is skipped.
EXTENSIONS: tuple[str, ...] = ("cmegw.console.mbus_commands", "cmegw.console.trace_commands",
                               "cmegw.console.readout_commands", "cmegw.console.backup_commands")


# -- extensions ------------------------------------------------------------------------------

_loaded = False


def commands() -> CommandTable:
    """The command table, with the commands of `EXTENSIONS` added on first use."""
    global _loaded
    if not _loaded:
        _loaded = True
        for name in EXTENSIONS:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name != name:
                    raise
    return COMMANDS
