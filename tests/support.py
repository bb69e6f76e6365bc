"""
Helpers for the end-to-end tests: a real ``twistd cmegw`` process, free
loopback ports, pty pairs and the shared real frames.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import codecs
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import IO, Any, Callable, Sequence

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


class Output:
    """
    What a process writes (stdout and stderr together), copied to `path` by a
    reader thread as it comes.  `wait` blocks until a condition on the text
    holds: woken by each chunk (a `threading.Condition`), never polling, and
    never longer than its timeout or past the end of the output.
    """

    def __init__(self, stream: IO[bytes], path: Path) -> None:
        self.path = path
        self._stream = stream
        self._text = ""
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._copy, name=f"output of {path.name}", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        with open(self.path, "ab") as copy:
            while True:
                chunk = os.read(self._stream.fileno(), 65536)
                if chunk:
                    copy.write(chunk)
                    copy.flush()
                text = decoder.decode(chunk, final=not chunk)
                with self._changed:
                    self._text += text
                    self._ended = not chunk
                    self._changed.notify_all()
                if not chunk:
                    break
        self._stream.close()

    @property
    def text(self) -> str:
        with self._changed:
            return self._text

    def wait(self, condition: Callable[[str], Any], what: str, timeout: float = START_TIMEOUT) -> Any:
        """The first true value of `condition(text)`; TimeoutError after `timeout` s, RuntimeError at the end."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = condition(self._text)
                if value:
                    return value
                if self._ended:
                    raise RuntimeError(f"the output ended before {what}:\n{self._text[-4000:]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s:\n{self._text[-4000:]}")
                self._changed.wait(remaining)

    def wait_for_line(self, text: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        """Until `text` has appeared `count` times."""
        self.wait(lambda output: output.count(text) >= count, f"{text!r} (x{count})", timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the end of the output (the process and its children have exited)."""
        self._thread.join(timeout)


def twistd_command(python: str | None = None) -> list[str]:
    """Run twistd with this interpreter (or `python`), the repository first on the path."""
    return [python or sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class GatewayProcess:
    """
    A real ``twistd -n cmegw`` process, started in `directory` with `args`.

    Its log (twistd's ``--logfile -``, with stderr) is `output`, an `Output`
    copied to ``directory/twistd.log``: wait on it for a log line.  `stop`
    ends the process (and any child) and is safe to call twice.  Use as
    ``self.addCleanup(gw.stop)``.

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
        self.output: Output | None = None

    def start(self, wait_ports: Sequence[int] = ()) -> "GatewayProcess":
        cmd = twistd_command(self.python) + ["-n", "--pidfile=", "--logfile", "-", "cmegw"]
        cmd += self.args
        self.process = subprocess.Popen(cmd, cwd=self.directory, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert self.process.stdout is not None
        self.output = Output(self.process.stdout, self.log_path)
        try:
            for port in wait_ports:
                self._wait(port)
            if "--simulate" in self.args:
                # The simulated bus runs in a process of its own: line 1 opens once that process answers.
                self.wait_log(lambda log: "Line 1: opened" in log, "line 1 open on the simulated bus")
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
        self.wait_log(lambda log: any(mark in log for mark in marks), f"twistd listening on {port}")

    def wait_log(self, condition: Callable[[str], Any], what: str, timeout: float = START_TIMEOUT) -> Any:
        """Until `condition(log)` holds (`Output.wait`); the process ending first is an error."""
        assert self.output is not None, "the process was not started"
        try:
            return self.output.wait(condition, what, timeout)
        except RuntimeError:
            code = self.process.wait(timeout=10) if self.process is not None else None
            raise RuntimeError(f"twistd exited with {code} before {what}:\n{self.log()}") from None

    def log(self) -> str:
        return self.output.text if self.output is not None else ""

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            else:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
        if self.output is not None:
            self.output.close()


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


def local_time_in_utc(testcase: Any) -> None:
    """Make the process's local time UTC for one test (pages and console show local times), then restore it."""
    tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()

    def restore() -> None:
        if tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = tz
        time.tzset()

    testcase.addCleanup(restore)


def simulated_gateway(test: Any, folder: Path) -> GatewayProcess:
    """A real ``twistd cmegw --simulate`` on loopback ports, stopped at the test's end; its HTTP port is `.http`."""
    (folder / "gw").mkdir(parents=True, exist_ok=True)
    http = free_port()
    loopback = ":interface=127.0.0.1"
    gateway = GatewayProcess(folder / "gw", [
        "--simulate", "--http", f"tcp:{http}{loopback}", "--https", f"tcp:{free_port()}{loopback}",
        "--console", f"tcp:{free_port()}{loopback}", "--tunnel", f"tcp:{free_port()}{loopback}",
        "--config", str(folder / "gw" / "cmegw.toml")])
    test.addCleanup(gateway.stop)
    gateway.start(wait_ports=[http])
    gateway.http = http  # type: ignore[attr-defined]
    return gateway
