# -*- test-case-name: tests.test_web_pages_system -*-
"""
The System page: restart, factory defaults and software update.

A restart answers first and restarts a moment later: 303 to
``/system/restarting?kind=...&boot=...``, a page that asks ``/api/status``
until the gateway is back (a boot id other than the one in its address) and
then goes to the Status page (without JavaScript, a meta refresh does).

A software update is a cmegw wheel, verified, installed with pip in a child
process, and then the process starts itself again on the new code
(`cmegw.web.pages.system_update`, loaded when an update is first asked for;
until then the page shows the idle `UpdateState`).  pip leaves the old
version in place when it fails; the page says why.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

import cmegw
from cmegw.web.http import UPLOAD_MAX_BYTES
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.forms import Field, FormState, form_value, post_form, render_field, uploads
from cmegw.web.pages.update_state import BUSY_PHASES, RESTART_DELAY, UpdateError, UpdateState
from cmegw.web.pages.widgets import Notice, button, card, kv_table

log = Logger(namespace="cmegw.web.system")

#: The System section's tabs (the backup tab is cmegw.web.pages.backup's).
TABS = (("Software", "/system"), ("Configuration backup", "/system/configuration"))
#: The longest the restart page polls before it gives up (seconds).
POLL_LIMIT = 180




def update_state(admin: Admin) -> UpdateState:
    """The last software update's state: idle until one is asked for (the updater is built then)."""
    updater = admin.built_updater
    return updater.state if updater is not None else UpdateState()  # type: ignore[no-any-return]


def software_updater(admin: Admin) -> Any:
    """The System page's `cmegw.web.pages.system_update.SoftwareUpdater` (its module loads now)."""
    from cmegw.web.pages.system_update import SoftwareUpdater

    return SoftwareUpdater(admin)


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
    state = update_state(admin)
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
        busy = update_state(admin).phase in BUSY_PHASES and request.method == b"GET"
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
