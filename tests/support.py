"""
Helpers for the end-to-end tests: a real ``twistd cmegw`` process, free
loopback ports, pty pairs and the shared real frames.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Sequence

from twisted.trial.unittest import SkipTest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FRAMES = SHARED / "mbus-frames"

#: The longest a test waits for a process or a port (seconds).
START_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = START_TIMEOUT, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
            time.sleep(0.05)


def open_pty() -> tuple[int, int, str]:
    """A raw pty pair: (master fd, slave fd, slave path)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def real_frames(folder: str = "test-frames") -> list[Path]:
    """The real meter frames of ../shared (skips the test where they are absent)."""
    path = FRAMES / folder
    if not path.is_dir():
        raise SkipTest(f"{path} is absent: the real frames come with ../shared")
    return sorted(path.glob("*.hex"))


def read_hex(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().replace("\n", " ").strip())


def twistd_command(python: str | None = None) -> list[str]:
    """Run twistd with this interpreter (or `python`), the repository first on the path."""
    return [python or sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class GatewayProcess:
    """
    A real ``twistd -n cmegw`` process, started in `directory` with `args`.

    Its log goes to ``directory/twistd.log``; `stop` ends it (and any child)
    and is safe to call twice.  Use as ``self.addCleanup(gw.stop)``.

    By default it runs this interpreter with the repository first on
    ``PYTHONPATH``; with `python` (another environment's interpreter, e.g. a
    virtualenv with cmegw installed from a wheel) it runs that one, and
    ``PYTHONPATH`` is left out so the installed code is what runs.
    """

    def __init__(self, directory: str | Path, args: Sequence[str], env: dict[str, str] | None = None,
                 python: str | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.args = list(args)
        self.log_path = self.directory / "twistd.log"
        self.python = python
        if python is None:
            self.env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        else:
            self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.env.pop("NOTIFY_SOCKET", None)
        if env:
            self.env.update(env)
        self.process: subprocess.Popen | None = None

    def start(self, wait_ports: Sequence[int] = ()) -> "GatewayProcess":
        cmd = twistd_command(self.python) + ["-n", "--pidfile=", "--logfile", str(self.log_path), "cmegw"]
        cmd += self.args
        self.process = subprocess.Popen(cmd, cwd=self.directory, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=open(self.directory / "stderr", "w"),
                                        start_new_session=True)
        try:
            for port in wait_ports:
                self._wait(port)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, port: int) -> None:
        """
        Wait for the log to say the port listens.  Connecting to find out would
        take the tunnel's one client place from the test's own client.
        """
        marks = (f"listening on 127.0.0.1:{port}", f"starting on {port}", f"listening on [::1]:{port}")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"twistd exited with {self.process.returncode}:\n{self.log()}")
            log = self.log()
            if any(mark in log for mark in marks):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"twistd does not listen on {port}:\n{log}")
            time.sleep(0.05)

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        err = self.directory / "stderr"
        if err.exists():
            text += err.read_text(errors="replace")
        return text

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SkipTest(f"{name} is not installed (the test command installs it)")
    return path


def read_fd(fd: int, size: int, timeout: float = 5.0) -> bytes:
    """Up to `size` bytes from a descriptor (a pty's side), waiting at most `timeout` seconds."""
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < size and time.monotonic() < deadline:
        if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            data += os.read(fd, size - len(data))
    return data


def read_socket(sock: socket.socket, limit: float = 5.0, until: bytes = b"", size: int | None = None) -> bytes:
    """
    What arrives on `sock` until `until` is seen, `size` bytes have come, the
    peer closes, or `limit` seconds pass.
    """
    deadline = time.monotonic() + limit
    data = b""
    while time.monotonic() < deadline and not (until and until in data) and (size is None or len(data) < size):
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536 if size is None else size - len(data))
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def defaults_with(*changes: tuple[str, str], extra: str = "") -> str:
    """
    The factory defaults text with each ``(old, new)`` replaced once (each
    `old` must be there) and `extra` appended: a complete ``cmegw.toml``.
    """
    from cmegw.config.store import factory_defaults_text

    text = factory_defaults_text()
    for old, new in changes:
        if old not in text:
            raise AssertionError(f"{old!r} is not in the factory defaults")
        text = text.replace(old, new, 1)
    return text + extra
