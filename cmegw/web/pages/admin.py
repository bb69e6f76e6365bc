# -*- test-case-name: tests.test_web_pages_layout -*-
"""
`Admin`, what every page shares (the gateway, the clock, the CSRF guard, the
templates), and `PageRoutes`, the one way a page module mounts its routes.

Klein names a route after its function: every route function has a name
unique across the page modules (``serial_statistics``, ``tcpip_statistics``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.python.filepath import FilePath
from twisted.web.iweb import IRequest
from twisted.web.template import Tag, XMLFile, tags

from cmegw.web.auth import FACTORY_USER, factory_password_in_use
from cmegw.web.http import security_headers
from cmegw.web.pages.forms import (CSRF_FIELD, CsrfGuard, Field, Flash, form_value, save_form, save_numbered_form,
                                   see_other, waiting_notice)
from cmegw.web.pages.layout import Layout, web_root
from cmegw.web.pages.widgets import Notice, card

# -- the admin context ----------------------------------------------------------------------


class Admin:
    """What the pages share: the gateway, the clock, the CSRF guard, the templates."""

    def __init__(self, gateway: Any, *, clock: Any = None, root: Path | None = None,
                 csrf: CsrfGuard | None = None, host_network: Callable[[], Any] | None = None,
                 web: Callable[[], Any] | None = None, updater: Callable[[Admin], Any] | None = None) -> None:
        from cmegw.host.read import read_host_network

        self.gateway = gateway
        self.clock = clock if clock is not None else gateway.reactor
        self.root = root or web_root()
        self.csrf = csrf or CsrfGuard()
        #: The notices of forms' results, waiting for the page they redirected to.
        self.flash = Flash()
        self.host_network = host_network or read_host_network
        self._web = web or (lambda: gateway.state.web)
        self._templates: dict[str, XMLFile] = {}
        self._make_updater = updater
        self._updater: Any = None

    @property
    def updater(self) -> Any:
        """The System page's software updater, built by `updater(admin)` on first use (None without one)."""
        if self._updater is None and self._make_updater is not None:
            self._updater = self._make_updater(self)
        return self._updater

    @property
    def built_updater(self) -> Any:
        """The software updater if an update was asked for since the start, else None (nothing is built)."""
        return self._updater

    def web(self) -> Any:
        return self._web()

    def template(self, name: str) -> XMLFile:
        if name not in self._templates:
            self._templates[name] = XMLFile(FilePath(str(self.root / "templates" / name)))
        return self._templates[name]

    def banners(self) -> Tag:
        gateway = self.gateway
        out: list[Any] = []
        problem = gateway.state.status.config_problem
        if problem:
            out.append(tags.div(tags.strong("Configuration problem: "), problem,
                                " The gateway runs on the last good configuration; fix the file, "
                                "or save any page to write a valid one.",
                                class_="banner banner-error", role="alert"))
        if factory_password_in_use(gateway.store.config):
            out.append(tags.div(tags.strong("The factory password is in use. "),
                                "Anyone who knows the manual can change this gateway: ",
                                tags.a("change the password",
                                       href="/http/authentication?user=" + FACTORY_USER + "&uri=%2F#users"), ".",
                                class_="banner banner-warn", role="alert"))
        pending = gateway.state.pending_restart()
        if pending:
            out.append(tags.div("Saved changes wait for a restart: ", tags.code(", ".join(pending)), ". ",
                                tags.a("Restart", href="/system#restart"),
                                class_="banner banner-info"))
        return tags.div(*out, class_="banners") if out else tags.transparent()

    def page(self, request: IRequest, *, section: str, title: str, content: Any,
             tabs: Sequence[tuple[str, str]] = (), active: str = "", notice: Notice | None = None,
             code: int = 200, head: Any = "") -> Layout:
        security_headers(request)
        self.csrf.session_id(request)  # the cookie must go out with the headers, before any form renders
        notice = notice or waiting_notice(self, request)
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return Layout(self, request, section=section, title=title, content=content, tabs=tabs,
                      active=active or request.path.decode("utf-8", "replace"), notice=notice, head=head)

    def section_page(self, section: str, title: str, tabs: Sequence[tuple[str, str]] = ()) -> Callable[..., Layout]:
        """The page function of one navigation section: its section, title and tabs filled in."""

        def page(request: IRequest, content: Any, code: int = 200, notice: Any = None, head: Any = "",
                 active: str = "") -> Layout:
            return self.page(request, section=section, title=title, tabs=tabs, content=content, code=code,
                             notice=notice, head=head, active=active)

        return page

    def see_other(self, request: IRequest, target: str, notice: Notice | None = None) -> bytes:
        """A form's success: 303 to the page `target` that shows `notice` (`cmegw.web.pages.forms.see_other`)."""
        return see_other(self, request, target, notice)

    def forbidden(self, request: IRequest) -> Layout:
        return self.page(request, section="", title="Form expired", code=403, content=card(
            "The form could not be accepted",
            tags.p("It was sent without this browser's session, from another site, or the gateway "
                   "restarted since the page was loaded. Nothing was changed."),
            tags.p(tags.a("Go back", href=request.path.decode("utf-8", "replace")),
                   " and send the form again.")))

    def checked(self, request: IRequest) -> bool:
        return self.csrf.check(request, form_value(request, CSRF_FIELD))

    def csrf_checked(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """A form's POST handler that runs only with this browser's CSRF token (the 403 page otherwise)."""

        @functools.wraps(handler)
        def checked_handler(request: IRequest, *args: Any, **kwargs: Any) -> Any:
            if not self.checked(request):
                return self.forbidden(request)
            return handler(request, *args, **kwargs)

        return checked_handler


class PageRoutes:
    """
    How a page module mounts its routes on the admin application: GET routes,
    POST routes that run only with this browser's CSRF token, and the GET/POST
    pair of a settings form.  With a `section`, `page` is that navigation
    section's page function (`Admin.section_page`).
    """

    def __init__(self, app: Any, admin: Admin, section: str = "", title: str = "",
                 tabs: Sequence[tuple[str, str]] = ()) -> None:
        self.app = app
        self.admin = admin
        self.page: Callable[..., Layout] = admin.section_page(section, title, tabs) if section else admin.page

    def get(self, path: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """A GET route named after its function (or ``endpoint=``)."""
        return self.app.route(path, methods=["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[Callable[..., Any]], Any]:
        """A form's POST route: the handler runs only with the CSRF token (`Admin.csrf_checked`)."""

        def mount(handler: Callable[..., Any]) -> Any:
            return self.app.route(path, methods=["POST"], **options)(self.admin.csrf_checked(handler))

        return mount

    def settings(self, path: str, endpoint: str, fields: Sequence[Field], content: Callable[..., Any],
                 **options: Any) -> None:
        """
        A settings form at `path`: GET shows ``content(admin, request)``, POST
        saves it (`save_form` with `options`): 303 back to `path` once saved,
        400 with ``content(admin, request, state)`` when not.
        """
        admin, page = self.admin, self.page

        def show(request: IRequest) -> Any:
            return page(request, content(admin, request))

        def change(request: IRequest) -> Any:
            return save_form(admin, request, page, fields, lambda state: content(admin, request, state),
                             **options)

        self.get(path, endpoint=endpoint)(show)
        self.post(path, endpoint=endpoint + "_post")(change)

    def numbered_settings(self, path: str, endpoint: str, numbers: Callable[[], Any],
                          fields_of: Callable[[int], Sequence[Field]], content: Callable[..., Any],
                          anchor: str = "") -> None:
        """
        The forms of several lines or tunnels at `path`: GET shows
        ``content(admin, request, {})``, POST saves the one of ``numbers()`` it
        names (`save_numbered_form`: 303 to ``path#{anchor}N``, or 400 with
        ``content(admin, request, states)``).
        """
        admin, page = self.admin, self.page

        def show(request: IRequest) -> Any:
            return page(request, content(admin, request, {}))

        def change(request: IRequest) -> Any:
            return save_numbered_form(admin, request, page, numbers(), fields_of,
                                      lambda states: content(admin, request, states), anchor=anchor)

        self.get(path, endpoint=endpoint)(show)
        self.post(path, endpoint=endpoint + "_post")(change)
