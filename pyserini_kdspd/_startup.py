"""Interpreter start-up hook (run by ``pyserini_kdspd.pth``): make stock Pyserini work here.

It costs nothing until Pyserini is imported. Then, before ``pyserini`` runs, it
sets the dummy ``OPENAI_API_KEY`` Pyserini 1.6.0 needs; before
``pyserini.pyclass`` runs, it starts a suitable JVM (see ``_java``); after
``pyserini.encode`` has run, it registers the ``kdspd`` encoders so that
``python -m pyserini.encode`` and ``python -m pyserini.search.faiss`` accept a
KD-SPD model folder. Any failure here is reported, never raised at start-up.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys


def _before_pyserini():
    from . import _java

    _java.prepare_environment()


def _before_jnius():
    from . import _java

    _java.configure_jvm()


def _before_pyclass():
    from . import _java

    _java.start_jvm()


def _after_encode():
    mod = sys.modules.get("pyserini_kdspd.encoders")
    if mod is not None and not getattr(mod, "READY", False):
        return  # our encoders module is itself importing pyserini.encode; it registers when done
    from .encoders import register

    register()


def _after_faiss_searcher():
    from .encoders import guard_faiss_dimension

    guard_faiss_dimension()


_BEFORE = {"pyserini": _before_pyserini, "pyserini.pyclass": _before_pyclass, "jnius": _before_jnius}
_AFTER = {"pyserini.encode": _after_encode, "pyserini.search.faiss._searcher": _after_faiss_searcher}


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, running our action before or after the module executes."""

    def __init__(self, loader, name):
        self._loader, self._name = loader, name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        if self._name in _BEFORE:
            _BEFORE[self._name]()
        self._loader.exec_module(module)
        if self._name in _AFTER:
            _AFTER[self._name]()

    def __getattr__(self, item):  # get_code, get_resource_reader, is_package, ...
        return getattr(self._loader, item)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _BEFORE and name not in _AFTER:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, name)
        return spec


def install() -> None:
    """Idempotent; also applies the actions at once to Pyserini modules already imported."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    if "pyserini.encode" in sys.modules:
        _after_encode()
    if "pyserini.search.faiss._searcher" in sys.modules:
        _after_faiss_searcher()


try:
    install()
except Exception as e:  # a broken hook must never break the interpreter
    print(f"pyserini_kdspd: start-up hook not installed: {e}", file=sys.stderr)
