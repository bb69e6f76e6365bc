#!/usr/bin/env python3
"""
gwbench_memory: where the full service's memory goes.

Builds cmegw's service in this process the way ``twistd cmegw`` does (the
same Options and makeService, the gateway's own reactor), runs it for a few
seconds with tracemalloc on from the first import, and prints the peak RSS
and a table of the modules that allocated the most.  An allocation is counted
for the innermost frame outside the import machinery: a module's own
top-level code (its classes, tables, functions) counts for that module, and
the code objects of a module being imported count for the module whose
``import`` brought it in (so ``cmegw.web.app`` carries Klein's code).

    PYTHONPATH=$PWD python bench/gwbench_memory.py --config cmegw.toml --device /dev/pts/5

gwbench.py runs it after its rounds (``--memory-table N``) on a pty of its own
with the configuration it measured, and prints `render`'s table; standard
library only (cmegw is imported by `run_service` alone, so gwbench.py may
import this module).
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

#: Frames kept per allocation: enough to find the first one outside the import machinery.
TRACE_FRAMES = 32

#: Frames of the import machinery: an allocation is counted for the first frame outside them.
IMPORT_FRAMES = ("<frozen importlib", "importlib/__init__", "<frozen zipimport")


def status_kb(field: str, pid: str = "self") -> int:
    """One ``kB`` field of /proc/PID/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def module_of(filename: str, roots: list[str]) -> str:
    """A source file's dotted module name, from the longest sys.path entry that holds it."""
    if filename.startswith("<"):
        return filename
    best = ""
    for root in roots:
        if filename.startswith(root + "/") and len(root) > len(best):
            best = root
    rest = filename[len(best) + 1:] if best else Path(filename).name
    rest = rest.removesuffix(".py").removesuffix("/__init__")
    return rest.replace("/", ".")


def group_of(module: str, depth: int) -> str:
    """A module's group in the table: cmegw and twisted by sub-package, others by top-level package."""
    parts = module.split(".")
    keep = depth if parts[0] in ("cmegw", "twisted") else 1
    return ".".join(parts[:keep])


def allocation_table(snapshot: tracemalloc.Snapshot, depth: int = 2) -> list[tuple[str, int, int]]:
    """(group, bytes, blocks) of the traced memory still held, largest first."""
    roots = sorted({p.rstrip("/") for p in sys.path if p and p.startswith("/")})
    sizes: dict[str, list[int]] = {}
    groups: dict[str, str] = {}
    for stat in snapshot.statistics("traceback"):  # one row per distinct traceback
        frames = list(reversed(stat.traceback))  # innermost first (tracemalloc keeps the oldest first)
        filename = frames[0].filename
        for frame in frames:
            if not frame.filename.startswith(IMPORT_FRAMES) and "importlib/_bootstrap" not in frame.filename:
                filename = frame.filename
                break
        group = groups.get(filename)
        if group is None:
            group = groups[filename] = group_of(module_of(filename, roots), depth)
        entry = sizes.setdefault(group, [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    return sorted(((name, size, count) for name, (size, count) in sizes.items()), key=lambda row: -row[1])


def run_service(config: Path, device: str, seconds: float) -> Any:
    """Build and start cmegw's service from `config` and run its reactor for `seconds`; the service."""
    from cmegw import tap

    options = tap.Options()
    options.parseOptions(["--config", str(config), "--device", device])
    gateway = tap.makeService(options)
    from twisted.internet import reactor

    gateway.startService()
    reactor.callLater(seconds, reactor.stop)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return gateway


def measure(config: Path, device: str, seconds: float, top: int) -> dict[str, Any]:
    """Trace from here (before cmegw's first import), run the service, and take the figures."""
    tracemalloc.start(TRACE_FRAMES)
    run_service(config, device, seconds)
    snapshot = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()
    table = allocation_table(snapshot)
    return {"peak_rss_mb": round(status_kb("VmHWM") / 1024, 1), "rss_mb": round(status_kb("VmRSS") / 1024, 1),
            "traced_mb": round(current / 2**20, 1), "traced_peak_mb": round(peak / 2**20, 1),
            "modules_loaded": len(sys.modules),
            "top": [{"module": name, "kib": round(size / 1024), "blocks": count} for name, size, count in table[:top]],
            "rest_kib": round(sum(size for _, size, _ in table[top:]) / 1024)}


def render(figures: dict[str, Any]) -> str:
    """The table gwbench prints."""
    lines = [f"cmegw memory, in-process with tracemalloc (RSS includes tracemalloc's own): "
             f"{figures['traced_mb']} MB traced in Python objects, peak {figures['traced_peak_mb']} MB; "
             f"{figures['modules_loaded']} modules loaded",
             f"  {'module (allocated in, or imported by)':<44}{'KiB':>8}{'blocks':>9}"]
    for row in figures["top"]:
        lines.append(f"  {row['module']:<44}{row['kib']:>8}{row['blocks']:>9}")
    lines.append(f"  {'(the rest)':<44}{figures['rest_kib']:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--seconds", type=float, default=2.0, help="how long the service runs (default 2)")
    parser.add_argument("--top", type=int, default=25, help="rows of the table (default 25)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    args = parser.parse_args(argv)
    figures = measure(args.config, args.device, args.seconds, args.top)
    print(json.dumps(figures) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
