"""
The configuration console: telnet and SSH sessions over one command table.

`make_console(gateway)` is the gateway part; `COMMANDS` is the table other
parts add their commands to, and `Reply`, `Session`, ... are what a command
takes and returns (see `cmegw.console.framework`).  The sessions are in
`protocol`, `login`, `telnet` and `ssh`; the built-in commands in one module
per group (`config_commands`, `status_commands`, `system_commands`,
`mbus_commands`, `trace_commands`).
"""

from cmegw.console.framework import COMMANDS, Arguments, Command, CommandError, CommandTable, Question, Reply, Session
from cmegw.console.service import make_console

__all__ = ["COMMANDS", "Arguments", "Command", "CommandError", "CommandTable", "Question", "Reply", "Session",
           "make_console"]
