"""Deprecation helpers for the old flat module paths (issue 18), kept for one release.

``labkit.bench``, ``labkit.hardware``, ``labkit.models``, ... are thin re-exports of the new
homes; each calls :func:`warn_moved` when it is imported. Package shims (``labkit.training``)
use :func:`moved_getattr` to warn only when an old name is looked up on the package.
"""

from __future__ import annotations

import importlib
import warnings


def warn_moved(old: str, new: str) -> None:
    """Emit the DeprecationWarning that says ``old`` moved to ``new``."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; "
                  f"import from {new} instead", DeprecationWarning, stacklevel=3)


def moved_getattr(package: str, names: dict[str, str]):
    """A PEP 562 ``__getattr__`` that serves ``names`` (old name -> new module) with a warning."""
    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        warnings.warn(f"{package}.{name} is deprecated and will be removed in the next release; "
                      f"import it from {names[name]} instead", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(names[name]), name)
    return __getattr__
