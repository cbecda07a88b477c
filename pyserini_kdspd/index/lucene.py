"""Lucene dense indexes (flat and HNSW) built by Anserini's own indexers, in this process's JVM.

``io.anserini.index.IndexFlatDenseVectors`` / ``IndexHnswDenseVectors`` from Pyserini's bundled
Anserini fatjar read vector Parquet (ParquetDenseVectorCollection: columns ``docid``, ``vector``) or
JSON vector lines (JsonDenseVectorCollection: ``docid``, ``vector``) with Anserini's
DenseVectorDocumentGenerator, unquantised. They run in-process as ``pyserini.index.lucene`` runs
Anserini, but through their ``Args`` and ``run()`` rather than ``main``: ``main`` prints a bad flag and
returns, so a typo would look like success.

Similarity. Anserini indexes every dense vector with Lucene's ``DOT_PRODUCT``, which Lucene defines
for unit vectors only and scores as ``(1 + q.d) / 2``. KD-SPD students are L2-normalised whenever
their teacher is (``train --normalize`` follows the teacher's ``l2_norm``; all three packaged teachers
normalise), and so are the teacher's queries; :func:`build` refuses vectors that are not unit length
(for those, use FAISS's inner product), and the search side maps Lucene's score back to
``2 s - 1 = q.d``, the score FAISS's flat inner-product index gives. So the same documents, in the
same order, carry the same scores as in the FAISS run (to float precision).

Anserini logs a record it cannot index (such as a JSON line with ``id`` instead of ``docid``) and
carries on, so :func:`build` counts the documents of the finished index and fails unless every input
record is there.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import FormatError, atomic_write, collection_files, text_lines
from .vectors import _is_json, check_unique, scan_parquet

log = logging.getLogger(__name__)

META = "pyserini_kdspd.json"  # written last into a finished index: its kind, parameters and source
KINDS = ("flat", "hnsw")
UNIT_TOLERANCE = 1e-3  # |norm - 1| allowed: bf16 encodings renormalised in fp32 stay within 1e-6


@dataclass(frozen=True)
class InputStats:
    """What :func:`build` checked of its input before Anserini read it."""

    collection: str  # Anserini's collection class
    files: list  # the files read, which Anserini is given
    documents: int
    dimension: int
    max_norm_error: float


def _scan(path: Path) -> InputStats:
    """Count the records, check docids unique and vectors unit length, streaming part by part."""
    if _is_json(path):
        return _scan_json(path)
    n, dim, worst, seen, files = 0, None, 0.0, set(), []
    for part, docids, vectors, _ in scan_parquet(path):
        files.append(part)
        for d in docids:
            if d in seen:
                raise ValueError(f"{path}: document id {d!r} occurs twice; ids must be unique")
            seen.add(d)
        if len(docids):
            if dim is not None and vectors.shape[1] != dim:
                raise FormatError(part, None, f"vectors of dimension {vectors.shape[1]}, other parts {dim}")
            dim = vectors.shape[1]
            worst = max(worst, _norm_error(vectors, part, docids))
        n += len(docids)
    if not n:
        raise FormatError(path, None, "no vectors: nothing to index")
    return InputStats("ParquetDenseVectorCollection", files, n, int(dim), worst)


def _scan_json(path: Path) -> InputStats:
    """JSON vector lines, read as Anserini will: only ``docid`` is a document id there, and a record
    without one is left to Anserini, whose loss the document count after indexing reports."""
    n, dim, worst, docids, files = 0, None, 0.0, [], collection_files(path)
    for f in files:
        for lineno, line in text_lines(f):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f, lineno, f"not valid JSON ({e.msg})") from None
            vec = np.asarray(rec.get("vector") or [], dtype=np.float32) if isinstance(rec, dict) else None
            if vec is None or vec.ndim != 1 or not len(vec):
                raise FormatError(f, lineno, "expected an object with a non-empty 'vector' list")
            if dim is not None and len(vec) != dim:
                raise FormatError(f, lineno, f"vector of dimension {len(vec)}, earlier ones {dim}")
            dim = len(vec)
            if "docid" in rec:
                docids.append(str(rec["docid"]))
            worst = max(worst, _norm_error(vec[None], f"{f}:{lineno}", [rec.get("docid", rec.get("id"))]))
            n += 1
    if not n:
        raise FormatError(path, None, "no vectors: nothing to index")
    check_unique(docids, path)
    return InputStats("JsonDenseVectorCollection", files, n, int(dim), worst)


def _norm_error(vectors: np.ndarray, where, docids) -> float:
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    err = np.abs(norms - 1.0)
    if len(err) and err.max() > UNIT_TOLERANCE:
        i = int(err.argmax())
        raise ValueError(
            f"{where}: the vector of {docids[i]!r} has norm {norms[i]:.4f}, not 1. "
            "Anserini indexes dense vectors with Lucene's DOT_PRODUCT similarity, defined for unit vectors only "
            "(it would clamp and rescale these scores): L2-normalise the encoder (train --normalize), or search "
            "these vectors with FAISS's inner product instead")
    return float(err.max()) if len(err) else 0.0


def num_docs(index_dir) -> int:
    """Documents in a Lucene index, from Lucene itself (works for any index, dense or inverted)."""
    from pyserini.pyclass import autoclass

    directory = autoclass("org.apache.lucene.store.FSDirectory").open(autoclass("java.io.File")(str(index_dir)).toPath())
    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        return int(reader.numDocs())
    finally:
        reader.close()
        directory.close()


def anserini_index(indexer: str, args: list[str]) -> None:
    """Run ``io.anserini.index.<indexer>`` in this JVM: its ``Args`` parsed by args4j (a bad flag raises),
    then ``run()``."""
    from jnius import JavaException
    from pyserini.pyclass import autoclass

    import pyserini.index.lucene  # noqa: F401  (Pyserini's own JVM set-up before we touch Anserini)

    jargs = autoclass(f"io.anserini.index.{indexer}$Args")()
    jlist = autoclass("java.util.ArrayList")()
    for a in args:
        jlist.add(a)
    try:
        autoclass("org.kohsuke.args4j.CmdLineParser")(jargs).parseArgument(jlist)
        autoclass(f"io.anserini.index.{indexer}")(jargs).run()
    except JavaException as e:
        raise RuntimeError(f"Anserini {indexer} {' '.join(args)} failed: {e}") from None


def build(vectors_path, index_dir, kind: str = "hnsw", M: int = 16, efC: int = 100, threads: int = 1,
          optimize: bool = False, overwrite: bool = False) -> Path:
    """A Lucene ``kind`` ("flat" or "hnsw") dense index of ``vectors_path`` (vector Parquet, a file or a
    folder of parts, or JSON vector lines) at ``index_dir``, built by Anserini. HNSW takes ``M`` (graph
    degree) and ``efC`` (construction beam); ``optimize`` merges the index into one segment (one graph:
    faster queries, slower build). Built beside ``index_dir`` and renamed when complete and counted."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if min(M, efC, threads) < 1:
        raise ValueError(f"M, efC and threads must be positive (got {M}, {efC}, {threads})")
    vectors_path, index_dir = Path(vectors_path), Path(index_dir)
    if not vectors_path.exists():
        raise FileNotFoundError(f"{vectors_path}: no such vector file or folder")
    if index_dir.exists() and not overwrite:
        raise FileExistsError(f"{index_dir} exists (pass overwrite=True / --overwrite)")
    stats = _scan(vectors_path)
    tmp = index_dir.with_name(index_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdspd-vectors-") as link_dir:
        # Anserini's -input is a folder, and it tries every file there (a writer's _SUCCESS marker included):
        # it gets links to exactly the files counted above.
        for i, f in enumerate(stats.files):
            os.symlink(f.resolve(), Path(link_dir) / f"{i:05d}-{f.name}")
        args = ["-collection", stats.collection, "-input", link_dir, "-index", str(tmp),
                "-generator", "DenseVectorDocumentGenerator", "-threads", str(threads), "-quiet"]
        if kind == "hnsw":
            args += ["-M", str(M), "-efC", str(efC)]
        if optimize:
            args.append("-optimize")
        anserini_index("IndexHnswDenseVectors" if kind == "hnsw" else "IndexFlatDenseVectors", args)
    seconds = time.perf_counter() - t0
    indexed = num_docs(tmp) if tmp.is_dir() else 0
    if indexed != stats.documents:
        hint = (" JsonDenseVectorCollection reads each record's 'docid' (a record with 'id' instead is skipped); "
                if stats.collection == "JsonDenseVectorCollection" else " ")
        raise RuntimeError(f"Anserini indexed {indexed} of the {stats.documents} vectors in {vectors_path}."
                           f"{hint}see Anserini's log above for the records it skipped")
    meta = {"kind": kind, "similarity": "DOT_PRODUCT (unit vectors; score (1 + q.d) / 2, reported as q.d)",
            "documents": indexed, "dimension": stats.dimension, "collection": stats.collection,
            "source": str(vectors_path.resolve()), "build_seconds": round(seconds, 3), "threads": threads,
            "optimize": optimize, **({"M": M, "efC": efC} if kind == "hnsw" else {})}
    with atomic_write(tmp / META) as f:
        json.dump(meta, f, indent=1)
    if index_dir.exists():
        shutil.rmtree(index_dir)
    os.replace(tmp, index_dir)
    log.info("Lucene %s index of %d vectors (d=%d) in %.1fs: %s", kind, indexed, stats.dimension, seconds, index_dir)
    return index_dir


def index_meta(index_dir) -> dict:
    """What :func:`build` recorded in a finished index (its ``kind`` above all)."""
    meta = Path(index_dir) / META
    if not meta.is_file():
        raise FileNotFoundError(f"{index_dir}: not a finished dense index of pyserini_kdspd.index (no {META}); "
                                "build it with python -m pyserini_kdspd.index")
    return json.loads(meta.read_text(encoding="utf-8"))


def searcher(index_dir, ef_search: int | None = None):
    """Pyserini's own searcher for the index :func:`build` made: ``LuceneFlatDenseSearcher`` or
    ``LuceneHnswDenseSearcher`` (``ef_search``: the HNSW beam, also the most hits it can return)."""
    kind = index_meta(index_dir)["kind"]
    from pyserini.search.lucene import LuceneFlatDenseSearcher, LuceneHnswDenseSearcher

    if kind == "hnsw":
        return LuceneHnswDenseSearcher(str(index_dir), ef_search=int(ef_search or 100))
    if ef_search is not None:
        raise ValueError(f"{index_dir} is a flat index: ef_search applies to HNSW only")
    return LuceneFlatDenseSearcher(str(index_dir))


def query_string(vector) -> str:
    """A query vector as Anserini's VectorQueryGenerator parses it (a JSON array), exact to float32."""
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1.0) > UNIT_TOLERANCE:
        raise ValueError(f"query vector of norm {norm:.4f}: Lucene's DOT_PRODUCT needs unit vectors (the "
                         "query encoder must L2-normalise, as the teacher's does)")
    return json.dumps(vector.tolist())


def to_inner_product(score: float) -> float:
    """Lucene's DOT_PRODUCT score ``(1 + q.d) / 2`` as the inner product ``q.d`` FAISS reports."""
    return 2.0 * float(score) - 1.0
