# -*- test-case-name: tests.test_console_backup_commands -*-
"""
The console's ``config export`` and ``config import``: the configuration
file without its secrets, and a file pasted back, checked and saved as the
System page's Configuration backup tab does (`cmegw.config.backup`).
"""

from __future__ import annotations

import cmegw
from cmegw.config.backup import RestoreError, backup_of, restore_file
from cmegw.console.framework import COMMANDS, Arguments, Question, Reply, Result, Session

#: The line that ends a pasted file.
END = "."
#: The most lines a pasted file may have.
MAX_LINES = 5000

CONFIG = COMMANDS.group("config", "export the configuration file (a backup) or import one", "ACTION",
                        details="The System page's Configuration backup tab does the same.")


@CONFIG.command("export", "print the configuration file without its secrets (a backup)")
def config_export(session: Session, args: Arguments) -> Result:
    """
    The saved file as the web's backup download: passwords, tokens and the
    users' password hashes are left out (its first lines say so).  Paste it
    back with 'config import'.
    """
    args.expect(0, 0, "")
    gateway = session.gateway
    _, text = backup_of(gateway.store, gateway.reactor.seconds(), cmegw.__version__)
    return text.rstrip("\n")


@CONFIG.command("import", "paste a configuration file: checked as a whole, then saved and applied")
def config_import(session: Session, args: Arguments) -> Result:
    """
    Paste the file, then a line with a single '.'.  It is checked like every
    change (a bad value is refused naming its line, and nothing changes); the
    secrets it leaves out keep their current values.
    """
    args.expect(0, 0, "")
    lines: list[str] = []

    def collect(line: str) -> Result:
        if line.strip() == END:
            try:
                result = restore_file(session.gateway.store, "\n".join(lines).encode("utf-8"), "the pasted file")
            except RestoreError as e:
                return Reply(f"config import: nothing was changed: {e}.", error=True)
            return result.summary("the pasted file")
        if len(lines) >= MAX_LINES:
            return Reply(f"config import: more than {MAX_LINES} lines; nothing was changed.", error=True)
        lines.append(line)
        return Reply(ask=Question("", collect, command="config import"))

    return Reply(f"Paste the configuration file, then a line with a single '{END}'.",
                 ask=Question("", collect, command="config import"))
