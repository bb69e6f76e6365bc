"""
gwbench_floor: the memory floor of cmegw's fixed dependencies, measured in the same run as cmegw.

`gwbench_floor.tac` is what the full service cannot do without and nothing of
cmegw (twistd, a Klein application on HTTP and HTTPS with a certificate, a
SerialPort on a pty, a telnet listener).  gwbench starts it after its rounds as
``twistd -n --pidfile= -y gwbench_floor.tac`` on a pty of its own, reads its
peak RSS once it listens and has settled, and prints cmegw's peak RSS, the
floor's and the difference (cmegw's own share) against the 50 MB target.
Standard library only, like gwbench.py; the tac file needs Twisted, Klein and
cryptography, which cmegw's Python has.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

#: The floor's process, started by twistd.
FLOOR_TAC = Path(__file__).with_name("gwbench_floor.tac")
#: Seconds the floor runs after it listens before its peak RSS is read (cmegw's is read after the rounds).
SETTLE_S = 2.0


def floor_command(python: str) -> list[str]:
    """twistd in the foreground without a pid file, as gwbench starts cmegw, on the floor's tac file."""
    return [python, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "-y", str(FLOOR_TAC)]


def floor_env(device: str, http_port: int, https_port: int, telnet_port: int) -> dict[str, str]:
    """gwbench's environment with the floor's device and ports (the tac file reads them)."""
    return dict(os.environ, GWBENCH_FLOOR_DEVICE=device, GWBENCH_FLOOR_HTTP=str(http_port),
                GWBENCH_FLOOR_HTTPS=str(https_port), GWBENCH_FLOOR_TELNET=str(telnet_port))


def compiled(module_file: str) -> bool | None:
    """Whether the measured cmegw has its byte code (``__pycache__``) beside `module_file`; None if unknown."""
    if not module_file.endswith("__init__.py"):
        return None
    cache = Path(module_file).parent / "__pycache__"
    tag = sys.implementation.cache_tag
    return (cache / f"tap.{tag}.pyc").exists() and (cache / f"service.{tag}.pyc").exists()


def floor_figures(cmegw_mb: float | None, floor_mb: float | None, target_mb: float) -> dict[str, Any]:
    """cmegw's peak RSS, the floor's, cmegw's own share (the difference) and the target, in MB."""
    share = None if cmegw_mb is None or floor_mb is None else round(cmegw_mb - floor_mb, 1)
    return {"cmegw_peak_rss_mb": cmegw_mb, "floor_peak_rss_mb": floor_mb, "cmegw_share_mb": share,
            "target_mb": target_mb}


def render_floor(figures: dict[str, Any], compiled_code: bool | None = None) -> str:
    """The lines gwbench prints after its report."""
    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    cmegw, floor, target = figures["cmegw_peak_rss_mb"], figures["floor_peak_rss_mb"], figures["target_mb"]
    code = {True: "cmegw's modules had their .pyc files", False: "cmegw's modules had NO .pyc files "
            "(compiled at start: a higher peak than an installed cmegw)", None: ""}[compiled_code]
    lines = [f"memory, peak RSS (VmHWM, MB): cmegw {mb(cmegw)}; the dependency floor {mb(floor)} (twistd, Klein on "
             f"HTTP and HTTPS, SerialPort, telnet: bench/gwbench_floor.tac); cmegw's own share "
             f"{mb(figures['cmegw_share_mb'])}"]
    if code:
        lines.append(f"  {code}")
    if cmegw is not None:
        verdict = "met" if cmegw <= target else "not met"
        below = f"; {target:g} MB is below the dependency floor: the floor alone is {mb(floor)} MB" \
            if floor and floor > target else ""
        lines.append(f"  target peak RSS <= {target:g} MB: {verdict} ({mb(cmegw)} MB{below})")
    return "\n".join(lines)
