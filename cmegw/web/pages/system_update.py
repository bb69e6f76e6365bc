# -*- test-case-name: tests.test_web_pages_system -*-
"""
The System page's software update: verify a cmegw wheel, install it with pip
in a child process, then start the process again on the new code.

Loaded when an update is first asked for (`cmegw.web.pages.system.software_updater`
builds the `SoftwareUpdater` then): the System page and the API show the
update's state (`UpdateState`, idle until then) without it.

A wheel is verified before anything is installed: a sound zip, a cmegw wheel
by name and metadata, a version, every file's hash against the wheel's
RECORD, and the SHA-256 the operator typed, if any.  It is installed with
``python -m pip install --no-deps --no-index`` into the running environment
(the reactor keeps serving); pip leaves the old version in place when it
fails, and the state says why.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
import zipfile
from email.parser import HeaderParser
from typing import Any, Callable

import attrs
from twisted.internet import defer
from twisted.logger import Logger

import cmegw
from cmegw.host.commands import ProcessOutput
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.update_state import BUSY_PHASES, RESTART_DELAY, UpdateError, UpdateState

log = Logger(namespace="cmegw.web.system")

#: The largest wheel accepted.
MAX_WHEEL_BYTES = 64 * 1024 * 1024
#: The longest pip may run before it is stopped.
INSTALL_TIMEOUT = 600.0

_WHEEL_NAME = re.compile(
    r"^cmegw-(?P<version>[0-9][0-9A-Za-z.+!_]*)(-[0-9][0-9A-Za-z_.]*)?-py3(\.py3\d*)*-none-any\.whl$")
_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")


@attrs.frozen
class WheelInfo:
    filename: str
    version: str
    sha256: str
    size: int


def _record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def verify_wheel(data: bytes, filename: str, expected_sha256: str = "") -> WheelInfo:
    """Check that `data` is a sound cmegw wheel; raise `UpdateError` saying why not."""
    if not data:
        raise UpdateError("the file is empty")
    if len(data) > MAX_WHEEL_BYTES:
        raise UpdateError(f"the file is larger than {MAX_WHEEL_BYTES} bytes")
    name = os.path.basename(filename or "")
    match = _WHEEL_NAME.match(name)
    if not match:
        raise UpdateError(f"{name or 'the file'!r} is not named as a cmegw wheel "
                          "(cmegw-VERSION-py3-none-any.whl)")
    version = match["version"]
    if not _VERSION.match(version):
        raise UpdateError(f"{version!r} is not a version number")
    digest = hashlib.sha256(data).hexdigest()
    wanted = expected_sha256.strip().lower()
    if wanted:
        if not re.fullmatch(r"[0-9a-f]{64}", wanted):
            raise UpdateError("the SHA-256 must be 64 hexadecimal digits")
        if wanted != digest:
            raise UpdateError(f"the SHA-256 of the file is {digest}, not the one given")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise UpdateError(f"the file is not a valid zip archive ({e})") from None
    if bad is not None:
        raise UpdateError(f"the archive is damaged at {bad}")
    names = archive.namelist()
    for member in names:
        if member.startswith("/") or ".." in member.split("/") or "\\" in member:
            raise UpdateError(f"the archive holds an unsafe path {member!r}")
    info_dir = f"cmegw-{version}.dist-info/"
    for required in ("METADATA", "WHEEL", "RECORD"):
        if info_dir + required not in names:
            raise UpdateError(f"the wheel has no {info_dir}{required}")
    metadata = HeaderParser().parsestr(archive.read(info_dir + "METADATA").decode("utf-8", "replace"))
    if (metadata.get("Name") or "").strip().lower().replace("_", "-") != "cmegw":
        raise UpdateError(f"the wheel is {metadata.get('Name')!r}, not cmegw")
    if (metadata.get("Version") or "").strip() != version:
        raise UpdateError(f"the wheel's metadata says version {metadata.get('Version')!r}, its name {version!r}")
    if "cmegw/__init__.py" not in names:
        raise UpdateError("the wheel does not contain the cmegw package")
    recorded = set()
    for line in archive.read(info_dir + "RECORD").decode("utf-8", "replace").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) != 3 or not parts[0]:
            continue
        path, hash_, _size = parts
        recorded.add(path)
        if path == info_dir + "RECORD":
            continue
        if path not in names:
            raise UpdateError(f"RECORD lists {path}, which the archive lacks")
        if not hash_ or _record_digest(archive.read(path)) != hash_:
            raise UpdateError(f"{path} does not match its hash in RECORD")
    unlisted = [n for n in names if not n.endswith("/") and n not in recorded]
    if unlisted:
        raise UpdateError(f"{unlisted[0]} is in the archive but not in RECORD")
    return WheelInfo(name, version, digest, len(data))


def run_process(reactor: Any, argv: list[str], timeout: float = INSTALL_TIMEOUT) -> defer.Deferred:
    """Run a child process without blocking the reactor: fires with (output, exit code)."""
    done: defer.Deferred = defer.Deferred()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    collect = ProcessOutput(done)
    process = reactor.spawnProcess(collect, argv[0], argv, env=env)

    def too_long() -> None:
        collect.output += b"\n(stopped: it ran too long)"
        process.signalProcess("KILL")

    timer = reactor.callLater(timeout, too_long)

    def ended(result: tuple[Any, bytes]) -> tuple[bytes, int]:
        reason, output = result
        if timer.active():
            timer.cancel()
        code = getattr(reason, "exitCode", None)
        return output, code if code is not None else -1

    return done.addCallback(ended)


def pidfile_of(argv: list[str]) -> str | None:
    """The pidfile twistd was started with (``--pidfile X``, ``--pidfile=X``; twistd.pid by default)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--pidfile="):
            return arg.split("=", 1)[1] or None
        if arg == "--pidfile" and i + 1 < len(argv):
            return argv[i + 1] or None
    return "twistd.pid" if any("twistd" in a for a in argv) else None


def reexec(reactor: Any) -> None:
    """Stop the reactor cleanly, then start this process again with the same command line (new code)."""
    argv = [sys.executable] + list(getattr(sys, "orig_argv", sys.argv)[1:])

    def again() -> None:
        pidfile = pidfile_of(argv)
        try:
            if pidfile and int(open(pidfile).read().strip()) == os.getpid():
                os.unlink(pidfile)
        except (OSError, ValueError):
            pass
        log.info("Starting again on the new software: {argv}", argv=" ".join(argv))
        os.execv(sys.executable, argv)

    reactor.addSystemEventTrigger("after", "shutdown", again)
    reactor.stop()


class SoftwareUpdater:
    """Verify, install with pip in a child process, then restart the process."""

    def __init__(self, admin: Admin, *, run: Callable[[list[str]], defer.Deferred] | None = None,
                 restart_process: Callable[[], None] | None = None, python: str = sys.executable) -> None:
        reactor = admin.gateway.reactor
        self.clock = admin.clock
        self.run = run or (lambda argv: run_process(reactor, argv))
        self.restart_process = restart_process or (lambda: reexec(reactor))
        self.python = python
        self.state = UpdateState()

    @property
    def busy(self) -> bool:
        return self.state.phase in BUSY_PHASES

    def start(self, data: bytes, filename: str, sha256: str = "") -> WheelInfo:
        """Verify now (raises `UpdateError`), then install in the background."""
        if self.busy:
            raise UpdateError(f"an update to {self.state.version} is already {self.state.phase}")
        info = verify_wheel(data, filename, sha256)
        folder = tempfile.mkdtemp(prefix="cmegw-update-")
        path = os.path.join(folder, info.filename)
        with open(path, "wb") as f:
            f.write(data)
        self.state = UpdateState("installing", f"installing {info.version}", info.version)
        log.info("Installing software {version} ({sha256})", version=info.version, sha256=info.sha256)
        d = self._install(path, info)
        d.addBoth(lambda result: (shutil.rmtree(folder, ignore_errors=True), result)[1])
        return info

    @defer.inlineCallbacks
    def _install(self, path: str, info: WheelInfo) -> Any:
        argv = [self.python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-input",
                "--force-reinstall", path]
        try:
            output, code = yield self.run(argv)
        except Exception as e:
            output, code = str(e).encode(), -1
        text = output.decode("utf-8", "replace")
        if code != 0:
            last = [line for line in text.splitlines() if line.strip()][-3:]
            self.state = UpdateState("failed", f"pip could not install {info.version} (exit {code}): "
                                     + " / ".join(last) + f"; still running {cmegw.__version__}",
                                     info.version, text[-4000:])
            log.error("Software update failed: {message}", message=self.state.message)
            return
        yield self.run([self.python, "-c", "from twisted.plugin import IPlugin, getPlugins; "
                                           "list(getPlugins(IPlugin))"])
        self.state = UpdateState("restarting", f"{info.version} installed; restarting", info.version,
                                 text[-4000:])
        log.info("Software {version} installed; restarting", version=info.version)
        self.clock.callLater(RESTART_DELAY, self.restart_process)
