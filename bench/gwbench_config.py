"""
The benches' cmegw.toml: cmegw's factory defaults with the bench's sections
merged in.  cmegw refuses a file that lacks a section of its factory defaults
and then runs on the defaults (which listen on every address); so the benches
write the whole file: each key they set replaces the default's line in its
section, and sections the defaults do not have ([line.2], ...) are appended.
Standard library only; cmegw's defaults are read from the package that
``import cmegw`` would load, without importing it.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

#: What cmegw logs when it refuses the file it was given (it then runs on the factory defaults).
REFUSED = "configuration file was not loaded"

#: One line with its tunnel, as the benches set them: any client replaces the last one, no
#: keep-alive, no idle disconnect.  `device` is a whole TOML line (``device = "..."`` or ``simulate = true``).
LINE_AND_TUNNEL = """
[line.{n}]
{device}

[tunnel.{n}]
listen = "tcp:{port}:interface=127.0.0.1"
on_busy = "replace"
keepalive = 0
disconnect_timeout = 0
"""

#: The web administration on HTTP and HTTPS and the telnet console, on 127.0.0.1.
LOCAL_FACES = """
[http]
enabled = true
interface = "127.0.0.1"
http_port = {http_port}
https_port = {https_port}

[console]
enabled = true
listen = "tcp:{console_port}:interface=127.0.0.1"
"""

HEADER = re.compile(r"^\s*\[\[?([^\]]+)\]\]?\s*(#.*)?$")


class ConfigMergeError(Exception):
    pass


def factory_defaults_text() -> str:
    spec = importlib.util.find_spec("cmegw")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigMergeError("cmegw is not importable here (run with PYTHONPATH=$PWD or install it)")
    return (Path(list(spec.submodule_search_locations)[0]) / "defaults.toml").read_text("utf-8")


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(header name, lines) in order; the text before the first header has the name ''."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        match = HEADER.match(line)
        if match:
            out.append((match.group(1).strip(), [line]))
        else:
            out[-1][1].append(line)
    return out


def merged(bench_text: str, defaults: str | None = None) -> str:
    """The factory defaults with `bench_text`'s keys set in their sections and its new sections appended."""
    defaults = factory_defaults_text() if defaults is None else defaults
    ours = tomllib.loads(bench_text)  # refuses a bench text that is not TOML
    sections = _sections(defaults)
    known = {name for name, _ in sections}
    appended = []
    for name, lines in _sections(bench_text):
        if not name:
            continue
        if name not in known:
            appended.append("\n".join(lines))
            continue
        target = next(body for section, body in sections if section == name)
        for line in lines[1:]:
            if "=" not in line or line.lstrip().startswith("#"):
                continue
            key = line.split("=", 1)[0].strip()
            pattern = re.compile(rf"^{re.escape(key)}\s*=")
            for i, old in enumerate(target):
                if pattern.match(old):
                    target[i] = line
                    break
            else:
                target.append(line)
    text = "\n".join("\n".join(lines) for _, lines in sections) + "\n" + "\n".join(appended) + "\n"
    check = tomllib.loads(text)
    for table in ("line", "tunnel", "http", "console"):
        if table in ours and table not in check:
            raise ConfigMergeError(f"[{table}] got lost in the merge")
    return text
