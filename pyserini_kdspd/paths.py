"""Where inputs are read from and generated things are written to; every default can be overridden.

Data: ``--data-dir`` flags, else ``$PYSERINI_KDSPD_DATA``, else ``../shared/data``
beside the working directory or beside the source checkout. Caches (converted
backbones, teacher targets): ``$PYSERINI_KDSPD_CACHE``, else
``$XDG_CACHE_HOME/pyserini-kd-spd``, else ``~/.cache/pyserini-kd-spd`` (deliberately
not containing "kdspd": Pyserini picks encoder classes by substring of the model path).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
CHECKOUT_ROOT = PACKAGE_ROOT.parent


def data_dir(override: str | os.PathLike | None = None, required: bool = False) -> Path | None:
    """The shared data folder (see ``../shared/data/README.md``), or None when there is none.

    A folder named explicitly (``override``, i.e. ``--data-dir``, else ``$PYSERINI_KDSPD_DATA``)
    must exist: falling back to another folder would silently run on data nobody asked for.
    """
    for given, source in ((override, "--data-dir"), (os.environ.get("PYSERINI_KDSPD_DATA"), "PYSERINI_KDSPD_DATA")):
        if given:
            if not Path(given).is_dir():
                raise FileNotFoundError(f"data folder {given} (from {source}) does not exist")
            return Path(given).resolve()
    for c in (Path.cwd().parent / "shared" / "data", CHECKOUT_ROOT.parent / "shared" / "data"):
        if c.is_dir():
            return c.resolve()
    if required:
        raise FileNotFoundError(
            "No data folder: pass --data-dir, set PYSERINI_KDSPD_DATA, or put the data in ../shared/data")
    return None


def cache_dir() -> Path:
    root = os.environ.get("PYSERINI_KDSPD_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "pyserini-kd-spd")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
