# -*- test-case-name: tests.test_web_pages_backup -*-
"""
Backup and restore of the configuration, on the System section's
"Configuration backup" tab and in the JSON API (``GET``/``PUT
/api/config/file``).

The download is the saved file with its secrets left out
(`cmegw.config.backup`); an upload is checked as a whole like every change
and saved through the store in one atomic step, the secrets it leaves out
keeping their current values.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, tags

import cmegw
from cmegw.config.backup import MAX_FILE_BYTES, Restore, RestoreError, backup_of, restore_file, secret_names
from cmegw.web import api
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.forms import Field, FormState, post_form, render_field, uploads
from cmegw.web.pages.meters import download
from cmegw.web.pages.widgets import Notice, button, card, kv_table

PAGE_PATH = "/system/configuration"
FILE_PATH = "/system/configuration/cmegw.toml"
API_PATH = "/api/config/file"
UPLOAD_FIELD = Field("file", "Configuration file (cmegw.toml)", "file",
                     help="A backup downloaded above, or a cmegw.toml edited by hand.")


def backup_file(admin: Admin) -> tuple[str, str]:
    """The download's file name and text: the saved configuration without its secrets."""
    return backup_of(admin.gateway.store, admin.clock.seconds(), cmegw.__version__)


def apply_file(admin: Admin, data: bytes, where: str = "the uploaded file") -> Restore:
    """`restore_file` into the gateway's store."""
    return restore_file(admin.gateway.store, data, where)


def restore_message(result: Restore, filename: str) -> Notice:
    return Notice("ok" if result.changed else "info", result.summary(filename))


def content(admin: Admin, request: IRequest, error: str = "") -> Tag:
    secrets = secret_names(admin.gateway.store.config)
    left_out = kv_table([
        ("Passwords and tokens", ", ".join(secrets) if secrets else "none set"),
        ("Users' password hashes", "left out (user names stay)"),
    ])
    backup = card("Download a backup", tags.p(
        "The configuration file as saved (cmegw.toml), to keep or to load into this or another gateway. "
        "Secrets are left out, and the file's first lines say so:"), left_out,
        tags.div(tags.a("Download cmegw.toml", href=FILE_PATH, class_="button primary", download=""),
                 class_="actions"), id="backup")
    state = FormState(errors={"file": error} if error else {})
    upload = card("Restore a backup", tags.p(
        "The file is checked as a whole, as every change is: TOML, every section present (a cut-short file is "
        "refused), every setting allowed. Then it is saved in one step and applied: settings that apply at once "
        "are in force at once, the others after a restart. If anything is wrong nothing changes, and this page "
        "says which line and setting."),
        tags.p("Secrets the file leaves out (a backup's passwords, tokens and password hashes) keep this "
               "gateway's current values; the serial number stays this gateway's.", class_="muted"),
        post_form(admin, request, PAGE_PATH, tags.div(render_field(UPLOAD_FIELD, state), class_="fields"),
                  tags.div(button("Check and restore"), class_="actions"), multipart=True, class_="settings",
                  novalidate="novalidate"), id="restore")
    return tags.div(backup, upload, class_="cards")


def routes(app: Klein, admin: Admin) -> None:
    from cmegw.web.pages.system import TABS

    page = admin.section_page("system", "System", TABS)

    @app.route(PAGE_PATH, methods=["GET"], endpoint="system_configuration")
    def show(request: IRequest) -> Any:
        return page(request, content(admin, request))

    def send_backup(request: IRequest) -> Any:
        name, text = backup_file(admin)
        request.setHeader(b"cache-control", b"no-store")
        return download(request, text.encode("utf-8"), b"application/toml; charset=utf-8", name)

    app.route(FILE_PATH, methods=["GET"], endpoint="system_configuration_file")(send_backup)
    app.route(API_PATH, methods=["GET"], endpoint="api_config_file")(send_backup)

    @app.route(PAGE_PATH, methods=["POST"], endpoint="system_configuration_post")
    @admin.csrf_checked
    def upload(request: IRequest) -> Any:
        sent = uploads(request).get("file")
        try:
            if sent is None or not sent.filename:
                raise RestoreError("choose the configuration file to upload")
            result = apply_file(admin, sent.data, sent.filename.replace("\\", "/").rsplit("/", 1)[-1])
        except RestoreError as e:
            return page(request, content(admin, request, f"Not restored: {e}."), code=400,
                        notice=Notice("error", f"Nothing was changed: {e}."))
        return admin.see_other(request, PAGE_PATH, restore_message(result, sent.filename))

    @app.route(API_PATH, methods=["PUT", "POST"], endpoint="api_config_file_put")
    @api.json_handler
    def api_restore(request: IRequest) -> Any:
        api.guard(request, "application/toml", "text/plain", "application/octet-stream")
        request.content.seek(0)
        try:
            result = apply_file(admin, request.content.read(MAX_FILE_BYTES + 1))
        except RestoreError as e:
            raise api.ApiError(400, str(e), **({"setting": e.setting} if e.setting else {})) from None
        return {"changed": list(result.changed), "applied_now": result.applied_now,
                "after_restart": result.after_restart, "kept": list(result.kept)}
