"""Lazy package exports: a package ``__init__`` names what it offers without importing it (PEP 562).

``import training.models.config`` runs ``training/models/__init__.py`` first; if that imported the models
eagerly, every torch-free module inside the package would load torch too. With :func:`lazy_exports` the
``__init__`` maps each public name to the submodule defining it, and the submodule is imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose ``exports`` (name -> submodule) load lazily.

    Usage, in the package's ``__init__.py``: ``__getattr__, __dir__ = lazy_exports(__name__, {...})``.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
