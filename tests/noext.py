# SPDX-License-Identifier: MIT OR Apache-2.0
"""An import hook that refuses meshcni's compiled extensions, as if they had never been built.

The pure tier must import and run with no built extension and no libbpf:
``MESHCNI_NO_EXTENSION=1`` makes tests/conftest.py install this before any
meshcni import, and tests/pure/test_pure_imports.py runs the pure modules
under it in a fresh interpreter. Refused: every compiled module inside the
``meshcni`` package (``_fastmap``, ``_libbpf`` and whatever else is built
there, found by its loader rather than by a list of names) and cffi's
backend, which only a cffi-built module needs.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

import pytest

ENV = "MESHCNI_NO_EXTENSION"
REFUSED_TOP = ("_cffi_backend",)


class ExtensionRefused(ModuleNotFoundError):
    """What importing a refused module raises: the error a never-built extension gives."""


class RefuseExtensions(importlib.abc.MetaPathFinder):
    """Finds nothing itself; raises for a module that would load compiled code."""

    def find_spec(self, name, path=None, target=None):
        if name in REFUSED_TOP:
            raise ExtensionRefused(f"{name}: refused ({ENV}=1: the pure tier runs without compiled code)",
                                   name=name)
        if name.startswith("meshcni."):
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
                raise ExtensionRefused(f"{name}: compiled extension {spec.origin} refused ({ENV}=1)", name=name)
        return None


def install() -> None:
    """Refuse from now on; a refused module already imported is an error, not a silent pass."""
    loaded = [m for m in sys.modules if m in REFUSED_TOP or
              (m.startswith("meshcni.") and isinstance(getattr(sys.modules[m], "__loader__", None),
                                                       importlib.machinery.ExtensionFileLoader))]
    if loaded:
        raise RuntimeError(f"{ENV}=1 but already imported: {', '.join(sorted(loaded))}")
    if not any(isinstance(f, RefuseExtensions) for f in sys.meta_path):
        sys.meta_path.insert(0, RefuseExtensions())


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def require_extension(why: str) -> None:
    """Declare, at the top of a test module, that it needs the compiled extension: skipped (with
    ``why``) under MESHCNI_NO_EXTENSION=1 only, so a build that lost its extension fails there."""
    if enabled():
        pytest.skip(f"needs the compiled extension: {why} ({ENV}=1)", allow_module_level=True)
