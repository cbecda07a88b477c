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
    """The shared data folder (see ``../shared/data/README.md``), or None when there is none."""
    candidates = [override, os.environ.get("PYSERINI_KDSPD_DATA"),
                  Path.cwd().parent / "shared" / "data", CHECKOUT_ROOT.parent / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c).resolve()
    if override and required:
        raise FileNotFoundError(f"data folder {override} does not exist")
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
