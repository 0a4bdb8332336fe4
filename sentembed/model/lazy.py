"""Public names that load on first use: a package's `__getattr__`, built once for all of them.

Importing torch costs 2-4 s of CPU; `sentembed --help` and the subpackages that need no model do
not pay for it. Each package names where its public names live:

    __getattr__ = lazy_names(__name__, {"Index": "index", "semantic_search": "exact"})
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `name` from `package.homes[name]` when first asked."""
    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
    return __getattr__
