#!/usr/bin/env python3
"""
gwbench_imports: what importing the fixed dependencies costs in RSS, before cmegw runs a line.

Each row is a fresh interpreter that imports the modules given and nothing else, then reports
its peak RSS (VmHWM) and its file-backed and anonymous resident memory (RssFile, RssAnon of
/proc/self/status).  "Alone" rows show one dependency; "stack" rows add the service's parts one
after another, up to cmegw's own entry point, so the step from one row to the next is what that
part adds.  Standard library only (the imports run in child processes).

    PYTHONPATH=$PWD python bench/gwbench_imports.py          # about 10 s
    PYTHONPATH=$PWD python bench/gwbench_imports.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

#: (label, modules imported) of one dependency alone.
ALONE = (
    ("python (nothing imported)", ()),
    ("asyncio (Twisted's defer imports it)", ("asyncio",)),
    ("OpenSSL.SSL (Twisted's tcp imports it)", ("OpenSSL.SSL",)),
    ("twisted.internet.defer", ("twisted.internet.defer",)),
    ("twisted.internet.tcp", ("twisted.internet.tcp",)),
)

#: (label, modules imported) of the stack, each row adding to the one before.
STACK = (
    ("reactor", ("twisted.internet.reactor",)),
    ("+ SerialPort", ("twisted.internet.serialport",)),
    ("+ twistd", ("twisted.scripts.twistd", "twisted.application.app")),
    ("+ twisted.web server", ("twisted.web.server", "twisted.web.guard")),
    ("+ Klein", ("klein",)),
    ("+ telnet console (conch telnet, insults, recvline)",
     ("twisted.conch.telnet", "twisted.conch.insults.insults", "twisted.conch.recvline")),
    ("+ cmegw.tap (the plugin's entry point)", ("cmegw.tap",)),
    ("+ cmegw.service (every part's code)", ("cmegw.service", "cmegw.web.app", "cmegw.console.service")),
)

#: Printed by the child: its figures, as JSON.
_CHILD = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)
fields = {}
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("VmHWM", "RssFile", "RssAnon"):
        fields[key] = int(value.split()[0])
fields["modules"] = len(sys.modules)
print(json.dumps(fields))
"""

#: At most this long for one child.
CHILD_TIMEOUT_S = 60


def measure(modules: tuple[str, ...]) -> dict[str, Any]:
    """A fresh interpreter's figures after importing `modules`."""
    out = subprocess.run([sys.executable, "-c", _CHILD, *modules], capture_output=True, text=True,
                         timeout=CHILD_TIMEOUT_S, env=dict(os.environ, PYTHONDONTWRITEBYTECODE=""))
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    figures = json.loads(out.stdout)
    return {"peak_rss_mb": round(figures["VmHWM"] / 1024, 1), "rss_file_mb": round(figures["RssFile"] / 1024, 1),
            "rss_anon_mb": round(figures["RssAnon"] / 1024, 1), "modules": figures["modules"]}


def table() -> dict[str, list[dict[str, Any]]]:
    alone = [dict(label=label, **measure(modules)) for label, modules in ALONE]
    stack, imported = [], ()
    for label, modules in STACK:
        imported += modules
        stack.append(dict(label=label, **measure(imported)))
    return {"alone": alone, "stack": stack}


def render(figures: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"{'imported (fresh interpreter each row)':<52}{'peak RSS':>9}{'file':>7}{'anon':>7}{'added':>7}"
             f"{'modules':>8}"]
    for part in ("alone", "stack"):
        lines.append(f"{part}:")
        before = None
        for row in figures[part]:
            if "error" in row:
                lines.append(f"  {row['label']:<50}  {row['error']}")
                continue
            added = "" if before is None or part == "alone" else f"{row['peak_rss_mb'] - before:+.1f}"
            lines.append(f"  {row['label']:<50}{row['peak_rss_mb']:>9.1f}{row['rss_file_mb']:>7.1f}"
                         f"{row['rss_anon_mb']:>7.1f}{added:>7}{row['modules']:>8}")
            before = row["peak_rss_mb"]
    lines.append("(MB; file: shared libraries' and the interpreter's pages resident, anon: the process's own)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = table()
    print(json.dumps(figures, indent=2) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
