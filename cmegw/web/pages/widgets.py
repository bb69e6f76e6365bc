# -*- test-case-name: tests.test_web_pages_layout -*-
"""
The building blocks of the admin pages: cards, tables, buttons, hidden
inputs and the notice at the top of a page.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import attrs
from twisted.web.template import Tag, tags

from cmegw.stats import byte_size_text


@attrs.frozen
class Notice:
    """A message at the top of a page: kind is ok, info, warn or error."""

    kind: str
    text: Any



def notice_tag(notice: Notice) -> Tag:
    return tags.div(notice.text, class_=f"notice notice-{notice.kind}", role="status")


# -- building blocks ----------------------------------------------------------------------


def card(title: str, *children: Any, id: str | None = None, wide: bool = False) -> Tag:
    attributes: dict[str, str] = {"class": "card wide" if wide else "card"}
    if id:
        attributes["id"] = id
    return tags.section(tags.h2(title), *children, **attributes)


def cell(value: Any) -> Any:
    """Numbers as text (the flattener takes strings and tags only)."""
    return str(value) if isinstance(value, (int, float)) else value


def kv_table(rows: Iterable[tuple[str, Any]]) -> Tag:
    return tags.table(tags.tbody(*[tags.tr(tags.th(k, scope="row"), tags.td(cell(v))) for k, v in rows]),
                      class_="kv")


def grid_table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: bool = True) -> Tag:
    return tags.div(tags.table(
        tags.thead(tags.tr(*[tags.th(h, scope="col") for h in header])),
        tags.tbody(*[tags.tr(tags.th(r[0], scope="row"), *[tags.td(cell(v)) for v in r[1:]]) for r in rows]),
        class_="grid numeric" if numeric else "grid"), class_="scroll")


def unavailable(value: Any) -> Any:
    """A kernel counter the driver does not keep is shown as such, never as 0."""
    return tags.span("unavailable", class_="muted") if value is None else value


def byte_size(count: int) -> Tag:
    """`byte_size_text` with the exact count in its title."""
    return tags.span(byte_size_text(count), title=f"{count:,} bytes".replace(",", "\u202f"), class_="bytes")


def hidden(name: str, value: str) -> Tag:
    return tags.input(type="hidden", name=name, value=value)


def button(label: str, kind: str = "primary", **attributes: str) -> Tag:
    return tags.button(label, type="submit", class_=f"button {kind}", **attributes)
