"""
The configuration console: telnet and SSH sessions over one command table.

`make_console(gateway)` is the gateway part; `COMMANDS` is the table other
parts add their commands to (see `cmegw.console.commands`).
"""

from cmegw.console.commands import COMMANDS, Arguments, Command, CommandError, CommandTable, Question, Reply, Session
from cmegw.console.service import make_console

__all__ = ["COMMANDS", "Arguments", "Command", "CommandError", "CommandTable", "Question", "Reply", "Session",
           "make_console"]
