# -*- test-case-name: tests.test_web_pages_layout -*-
"""
The page frame of every admin page: where the web files are (`web_root`, the
one place that finds the repository's ``web/`` folder or its installed copy,
for the templates and the static files alike), the navigation and
`Layout`, web/templates/layout.xml around a page's content.

Live pages: the parts of a page marked with `live` (an id and
``data-live="SECONDS"``) are fetched again and replaced in place by
web/static/live.js, which every page loads; each page ends with the time it
was drawn ("Drawn at 10:42:05."), which the script turns into the time of
the last update, and which is what a browser without JavaScript shows.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

from twisted.web.iweb import IRequest
from twisted.web.template import Element, Tag, renderer, tags

import cmegw
from cmegw.web.auth import authenticated_user as _authenticated_user
from cmegw.web.signout import SIGN_OUT_PATH
from cmegw.web.pages.widgets import Notice, notice_tag


class AdminView(Protocol):
    """What the layout and the forms use of the admin (`cmegw.web.pages.admin.Admin`)."""

    gateway: Any
    csrf: Any
    flash: Any
    clock: Any

    def template(self, name: str) -> Any: ...

    def banners(self) -> Any: ...


#: Where `pip install .` puts the files of the repository's web/ folder (setup.cfg data_files).
DATA_SUBDIR = Path("share") / "cmegw" / "web"


def _web_root_candidates() -> Iterable[Path]:
    override = os.environ.get("CMEGW_WEB_ROOT")
    if override:
        yield Path(override)
    yield Path(cmegw.__file__).resolve().parents[1] / "web"  # a checkout
    for prefix in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix):
        if prefix:
            yield Path(prefix) / DATA_SUBDIR
    user = sysconfig.get_config_var("userbase") or os.path.expanduser("~/.local")
    yield Path(user) / DATA_SUBDIR


def web_root() -> Path:
    """The folder with ``templates/`` and ``static/``: a checkout's web/ or the installed copy."""
    for path in _web_root_candidates():
        if (path / "templates" / "layout.xml").is_file():
            return path
    raise FileNotFoundError("the web files (templates/layout.xml) are not installed; "
                            "set CMEGW_WEB_ROOT to the folder that holds them")


# -- the signed-in user --------------------------------------------------------------------


def authenticated_user(request: IRequest) -> str:
    """The user the authentication wrapper let in ("" when none is known)."""
    return _authenticated_user(request) or ""


# -- live parts ----------------------------------------------------------------------------

#: Seconds between the live updates of a page's parts, unless a part asks for another.
LIVE_SECONDS = 5


def live(tag: Tag, seconds: int = LIVE_SECONDS) -> Tag:
    """Mark `tag` (which has an id) as a part web/static/live.js updates every `seconds`."""
    if not tag.attributes.get("id"):
        raise ValueError("a live part needs an id to be found again")
    tag.attributes["data-live"] = str(seconds)
    return tag


def reload_without_script(request: IRequest, seconds: int) -> Any:
    """
    The page reloads itself every `seconds` when script is off (a <noscript>
    meta refresh); only in a GET's answer, whose reload asks for the page again:
    the answer of a refused form would send the form again.
    """
    if request.method not in (b"GET", b"HEAD"):
        return ""
    return tags.noscript(tags.meta(**{"http-equiv": "refresh", "content": str(seconds)}))


def drawn_at(seconds: float) -> Tag:
    """The line that says when the page was drawn (the script says when it was last updated)."""
    moment = time.localtime(seconds)
    return tags.p("Drawn at ", tags.time(time.strftime("%H:%M:%S", moment),
                                         datetime=time.strftime("%Y-%m-%dT%H:%M:%S", moment)), ".",
                  id="drawn-at", class_="drawn-at muted")


# -- navigation and the page frame ----------------------------------------------------------

#: The device's navigation: (key, label, URL).
SECTIONS = (
    ("status", "Status", "/status"),
    ("network", "Network", "/network"),
    ("tcpip", "M-Bus TCP/IP", "/tcpip"),
    ("serial", "M-Bus Serial", "/serial"),
    ("meters", "Meters", "/meters"),
    ("http", "HTTP", "/http"),
    ("system", "System", "/system"),
)


class Layout(Element):
    """The page frame of web/templates/layout.xml around a page's content."""

    def __init__(self, admin: AdminView, request: IRequest, *, section: str, title: str, content: Any,
                 tabs: Sequence[tuple[str, str]] = (), active: str = "", notice: Notice | None = None,
                 head: Any = "") -> None:
        super().__init__(loader=admin.template("layout.xml"))
        self.admin = admin
        self.section = section
        self.title = title
        self.content = content
        self.tabs = tabs
        self.active = active
        self.notice = notice
        self.head = head
        self.user = authenticated_user(request)

    @renderer
    def page(self, request: IRequest, tag: Tag) -> Tag:
        gateway = self.admin.gateway
        identity = gateway.state.config.identity
        nav = tags.ul(*[
            tags.li(tags.a(label, href=url, **({"aria-current": "page", "class": "active"}
                                               if key == self.section else {})))
            for key, label, url in SECTIONS])
        tabs: Any = ""
        if self.tabs:
            tabs = tags.ul(*[
                tags.li(tags.a(label, href=url, **({"aria-current": "page", "class": "active"}
                                                   if url == self.active else {})))
                for label, url in self.tabs], class_="tabs")
        return tag.fillSlots(
            title=self.title,
            product=identity.product_type,
            identity=f"S/N {identity.serial_number or '—'}",
            version=f"{cmegw.__version__}",
            user=tags.transparent(" · signed in as ", self.user, " · ", tags.a("Sign out", href=SIGN_OUT_PATH))
            if self.user else "",
            nav=nav,
            tabs=tabs,
            banners=self.admin.banners(),
            notice=notice_tag(self.notice) if self.notice else "",
            content=tags.transparent(self.content, drawn_at(self.admin.clock.seconds()),
                                     tags.script(src="/static/live.js", defer="defer")),
            head=self.head,
        )
