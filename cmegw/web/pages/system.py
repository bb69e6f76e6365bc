# -*- test-case-name: tests.test_web_pages_system -*-
"""
The System page: restart, factory defaults and software update.

A restart answers first and restarts a moment later: 303 to
``/system/restarting?kind=...&boot=...``, a page that asks ``/api/status``
until the gateway is back (a boot id other than the one in its address) and
then goes to the Status page (without JavaScript, a meta refresh does).

A software update is a cmegw wheel.  It is verified before anything is
installed (a sound zip, a cmegw wheel by name and metadata, a version, every
file's hash against the wheel's RECORD, and the SHA-256 the operator typed,
if any), installed with ``python -m pip install --no-deps --no-index`` into
the running environment in a child process (the reactor keeps serving), and
the process then starts itself again on the new code.  pip leaves the old
version in place when it fails; the page says why.
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
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

import cmegw
from cmegw.host.commands import ProcessOutput
from cmegw.web.http import UPLOAD_MAX_BYTES
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.forms import Field, FormState, form_value, post_form, render_field, uploads
from cmegw.web.pages.widgets import Notice, button, card, kv_table

log = Logger(namespace="cmegw.web.system")

#: The System section's tabs (the backup tab is cmegw.web.pages.backup's).
TABS = (("Software", "/system"), ("Configuration backup", "/system/configuration"))
#: Seconds between the answer to a restart and the restart itself.
RESTART_DELAY = 1.0
#: The largest wheel accepted.
MAX_WHEEL_BYTES = 64 * 1024 * 1024
#: The longest pip may run before it is stopped.
INSTALL_TIMEOUT = 600.0
#: The longest the restart page polls before it gives up (seconds).
POLL_LIMIT = 180

_WHEEL_NAME = re.compile(
    r"^cmegw-(?P<version>[0-9][0-9A-Za-z.+!_]*)(-[0-9][0-9A-Za-z_.]*)?-py3(\.py3\d*)*-none-any\.whl$")
_VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")


class UpdateError(Exception):
    """The uploaded software cannot be installed; the message says why."""


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


@attrs.define
class UpdateState:
    """Where the last update is: idle, installing, restarting or failed (with why)."""

    phase: str = "idle"
    message: str = ""
    version: str = ""
    output: str = ""

    def as_dict(self) -> dict[str, str]:
        return attrs.asdict(self)


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
        return self.state.phase in ("installing", "restarting")

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


# -- pages ----------------------------------------------------------------------------------


def boot_id(admin: Admin) -> str:
    """Changes whenever the gateway (re)starts: the restart page waits for a new one."""
    status = admin.gateway.state.status
    return f"{status.started_at:.6f}-{status.restarts}"


#: What the restart page says while it waits, by the kind of restart in its address: (title, text, fallback).
WAITING = {
    "restart": ("Restarting", "The gateway restarts now.", "/status"),
    "factory": ("Restoring factory defaults",
                "The factory configuration is written and the gateway restarts. The user is admin with password "
                "admin again; if the HTTP port changes, open the new one.", "/status"),
    "update": ("Installing the software update",
               "The gateway restarts on the new software once it is installed. If the installation fails, the "
               "System page says why and the running version stays.", "/system"),
}
_BOOT_ID = re.compile(r"^[0-9.]{1,32}-[0-9]{1,9}$")


def restarting(admin: Admin, request: IRequest, kind: str, notice: Notice | None = None) -> bytes:
    """Answer a restart's form: 303 to the page that waits for the boot after this one."""
    return admin.see_other(request, f"/system/restarting?kind={kind}&boot={boot_id(admin)}", notice)


def waiting_page(admin: Admin, request: IRequest, title: str, text: Any, fallback: str = "/status",
                 boot: str = "") -> Any:
    """
    A page that goes to the Status page once the gateway answers with a boot id
    other than `boot` (this one's by default; to `fallback` without JavaScript).
    """
    head = tags.transparent(tags.meta(**{"http-equiv": "refresh", "content": f"20;url={fallback}"}),
                            tags.script(src="/static/restart.js", defer="defer"))
    content = card(title, tags.div(
        tags.span("", class_="spinner", **{"aria-hidden": "true"}),
        tags.p(text), tags.p("This page goes to the ", tags.a("Status page", href="/status"),
                             " once the gateway answers again.", id="restart-progress", class_="muted"),
        id="restart", **{"data-boot": boot or boot_id(admin), "data-limit": str(POLL_LIMIT)}, class_="waiting"))
    return admin.page(request, section="system", title="System", content=content, head=head, active="/system",
                      tabs=TABS)


def system_content(admin: Admin, request: IRequest, update_errors: dict[str, str] | None = None,
                   typed_sha: str = "") -> Tag:
    identity = admin.gateway.state.config.identity
    about = card("Software", kv_table([
        ("Product type", identity.product_type),
        ("Software version", cmegw.__version__),
        ("Python", sys.version.split()[0]),
        ("Environment", sys.prefix),
    ]))
    restart = card("Restart", tags.p("Stops every part (lines, tunnels, web, console), reads the saved "
                                     "configuration and starts again. Tunnel clients are disconnected."),
                   post_form(admin, request, "/system/restart", button("Restart the gateway", "primary")),
                   id="restart")
    confirm = Field("confirm", "Yes, replace every setting with the factory defaults", "checkbox")
    factory_errors = update_errors.get("confirm", "") if update_errors else ""
    factory = card("Factory defaults", tags.p(
        "Writes the factory configuration (DHCP on, port 10001, 2400 bit/s, user admin with password admin) "
        "and restarts. The serial number stays; settings given on the command line still apply."),
        post_form(admin, request, "/system/factory-defaults",
                  render_field(confirm, FormState(errors={"confirm": factory_errors} if factory_errors else {})),
                  tags.div(button("Restore factory defaults", "danger"), class_="actions")), id="factory")
    updater = admin.updater
    state = updater.state if updater is not None else UpdateState()
    status_line: Any = ""
    if state.phase != "idle":
        kind = {"failed": "error", "installing": "info", "restarting": "info"}.get(state.phase, "info")
        status_line = tags.div(tags.strong(f"Last update: {state.phase}. "), state.message,
                               class_=f"notice notice-{kind}", role="status")
    errors = update_errors or {}
    fields = [Field("wheel", "Software (cmegw wheel)", "file",
                    help=f"A file named cmegw-VERSION-py3-none-any.whl, at most "
                         f"{UPLOAD_MAX_BYTES // (1024 * 1024)} MiB (uploads are not bound by Max bytes)."),
              Field("sha256", "SHA-256 (optional)", help="The checksum published with the release: the file "
                                                         "is refused if it differs.")]
    form_state = FormState(values={"sha256": typed_sha}, errors={k: v for k, v in errors.items()
                                                                 if k in ("wheel", "sha256")})
    update = card("Software update", status_line, tags.p(
        "The file is verified before anything is installed, then installed into the running environment, "
        "and the gateway restarts on it. If anything fails, the running version stays and this page says why."),
        post_form(admin, request, "/system/update", tags.div(*[render_field(f, form_state) for f in fields],
                                                               class_="fields"),
                  tags.div(button("Verify, install and restart"), class_="actions"), multipart=True,
                  class_="settings", novalidate="novalidate"), id="update")
    return tags.div(about, restart, factory, update, class_="cards")


def routes(app: Klein, admin: Admin) -> None:
    route = PageRoutes(app, admin)

    def page(request: IRequest, content: Any, code: int = 200, notice: Any = None) -> Any:
        """The System page; while an update installs, it reloads itself (a GET's answer only: never re-posts)."""
        busy = admin.updater is not None and admin.updater.busy and request.method == b"GET"
        return admin.page(request, section="system", title="System", content=content, code=code, notice=notice,
                          tabs=TABS, active="/system",
                          head=tags.meta(**{"http-equiv": "refresh", "content": "5"}) if busy else "")

    @route.get("/system")
    def system_page(request: IRequest) -> Any:
        return page(request, system_content(admin, request))

    @route.get("/system/restarting")
    def system_restarting(request: IRequest) -> Any:
        title, text, fallback = WAITING.get(form_value(request, "kind"), WAITING["restart"])
        boot = form_value(request, "boot")
        return waiting_page(admin, request, title, text, fallback, boot if _BOOT_ID.match(boot) else "")

    @route.post("/system/restart")
    def system_restart(request: IRequest) -> Any:
        schedule_restart(admin)
        return restarting(admin, request, "restart")

    @route.post("/system/factory-defaults")
    def system_factory(request: IRequest) -> Any:
        if form_value(request, "confirm") != "on":
            return page(request, system_content(admin, request, {"confirm": "Tick the box to confirm."}),
                        code=400, notice=Notice("error", "Nothing was changed: confirm the factory defaults."))
        schedule_factory_reset(admin)
        return restarting(admin, request, "factory")

    @route.post("/system/update")
    def system_update(request: IRequest) -> Any:
        sha = form_value(request, "sha256")
        upload = uploads(request).get("wheel")
        try:
            if upload is None or not upload.data:
                raise UpdateError("choose the wheel file to upload")
            info = admin.updater.start(upload.data, upload.filename, sha)
        except UpdateError as e:
            field = "sha256" if "SHA-256" in str(e) else "wheel"
            return page(request, system_content(admin, request, {field: f"Not installed: {e}."}, sha), code=400,
                        notice=Notice("error", f"The software was not installed: {e}. "
                                               f"Still running {cmegw.__version__}."))
        return restarting(admin, request, "update", Notice(
            "info", f"Installing {info.version}: {info.filename} ({info.size} bytes, SHA-256 {info.sha256}) was "
                    f"verified and is being installed; {cmegw.__version__} keeps running until it is."))


def schedule_restart(admin: Admin) -> None:
    """Restart after the answer has gone out."""
    log.info("Restart asked from the web")
    admin.clock.callLater(RESTART_DELAY, _logged, admin.gateway.restart)


def schedule_factory_reset(admin: Admin) -> None:
    log.info("Factory defaults asked from the web")
    admin.clock.callLater(RESTART_DELAY, _logged, admin.gateway.factory_reset)


def _logged(action: Callable[[], Any]) -> None:
    d = defer.maybeDeferred(action)
    d.addErrback(lambda f: log.failure("The restart failed", f))
