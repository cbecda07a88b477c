"""Collections in Pyserini's own formats (JSON-lines corpora, TSV topics, TREC qrels).

Each collection module registers a ``prepare`` function here, so that
``python -m pyserini_kdspd.data <name>`` gets one sub-command per collection
without the CLI knowing them: the registry is the only coupling.

A prepare function is called as ``prepare(data_dir=..., output_root=..., force=..., **options)``
where ``options`` are the sub-command's own flags (added by ``add_arguments``);
it writes under ``output_root`` (``collections/``, ``topics/``, ``qrels/``) and
returns a small object (ideally a dataclass) describing what it wrote.

    from pyserini_kdspd.data import register

    def _args(parser):                       # optional: extra flags of the sub-command
        parser.add_argument("--languages", nargs="+")

    @register("mtrec", help="mTREC: TREC DL 2020 ...", add_arguments=_args)
    def prepare_mtrec(data_dir=None, output_root=".", force=False, languages=None): ...
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Preparer:
    """A registered collection: its prepare function, one-line help and optional extra CLI flags."""

    name: str
    prepare: Callable[..., object]
    help: str = ""
    add_arguments: Optional[Callable[[argparse.ArgumentParser], None]] = None


# name -> Preparer; collection modules add themselves with @register(...)
PREPARERS: dict[str, Preparer] = {}


def register(name: str, *, help: str = "", add_arguments=None):
    """Decorator adding a prepare function to :data:`PREPARERS` (and so to the CLI) under ``name``."""

    def decorate(fn):
        if name in PREPARERS and PREPARERS[name].prepare is not fn:
            raise ValueError(f"collection {name!r} is registered twice "
                             f"({PREPARERS[name].prepare.__module__} and {fn.__module__})")
        doc = help or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        PREPARERS[name] = Preparer(name, fn, doc, add_arguments)
        return fn

    return decorate


def load_all() -> dict[str, Preparer]:
    """Import every module of this package so that each registers itself; returns the registry."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            try:
                importlib.import_module(f"{__name__}.{info.name}")
            except Exception as e:  # one broken collection module must not take the others' CLI down
                logging.getLogger(__name__).warning("collection module %s.%s failed to import: %s",
                                                    __name__, info.name, e)
    return PREPARERS


from .lareqa import LANGUAGES, LareqaData, LareqaPaths, load_lareqa, prepare_lareqa  # noqa: E402

__all__ = ["PREPARERS", "Preparer", "register", "load_all",
           "LANGUAGES", "LareqaData", "LareqaPaths", "load_lareqa", "prepare_lareqa"]

# mTREC and CLEF register themselves on import (load_all() would find them too; importing here makes
# PREPARERS complete after a plain `import pyserini_kdspd.data`, as for LAReQA).
from . import clef, mtrec  # noqa: E402,F401
