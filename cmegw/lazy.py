# -*- test-case-name: tests.test_lazy -*-
"""
Packages that name their public surface without importing it: `lazy_names`
gives a package's ``__getattr__``, which imports a name's module on first use
(start-up memory is measured; TLS and host code load only when used).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `package`: each name of `homes` from its module (relative to the package)."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{home}"), name)

    return __getattr__
