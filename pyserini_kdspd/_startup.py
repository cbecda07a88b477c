"""Interpreter start-up hook (run by ``pyserini_kdspd.pth``): make stock Pyserini run here, and add ``kdspd``.

It costs nothing until Pyserini is imported, and it changes no Pyserini object.
Before ``pyserini`` runs it sets the dummy ``OPENAI_API_KEY`` Pyserini 1.6.0 needs
and exports a Java >= 21 (``JAVA_HOME``, ``PATH``) for the ``java`` subprocesses
Pyserini runs; before ``jnius`` loads it configures the JVM (see ``_java``); after
``pyserini.encode`` has run it adds the ``kdspd`` entries to Pyserini's two encoder
maps (``encoders.register``). That list is the whole of what the plugin adds.
Any failure here is reported, never raised at start-up.
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
    # When our encoders module is what imported pyserini.encode, it registers itself when it is done.
    if "pyserini_kdspd.encoders" not in sys.modules:
        from . import encoders  # noqa: F401  (registers on import)


_BEFORE = {"pyserini": _before_pyserini, "pyserini.pyclass": _before_pyclass, "jnius": _before_jnius}
_AFTER = {"pyserini.encode": _after_encode}


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
    """Idempotent; registers at once when ``pyserini.encode`` was imported before us."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    if "pyserini.encode" in sys.modules:
        _after_encode()


try:
    install()
except Exception as e:  # a broken hook must never break the interpreter
    print(f"pyserini_kdspd: start-up hook not installed: {e}", file=sys.stderr)
