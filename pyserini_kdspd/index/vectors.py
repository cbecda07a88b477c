"""Encoded documents in the formats the rest of the ecosystem reads.

Pyserini writes vectors as a FAISS folder (``index`` + ``docid``, from ``pyserini.encode --to-faiss``)
or as JSON lines (``{"id", "contents", "vector"}``, without ``--to-faiss``). Anserini indexes
JsonDenseVectorCollection (``{"docid", "vector"}`` per line) and ParquetDenseVectorCollection
(columns ``docid`` and ``vector``), and data engines (Ray, Spark, DuckDB) exchange Parquet. This
module moves one collection's vectors between them, in memory as :class:`Vectors`:

* Parquet: ``docid`` (string), ``vector`` (list<float32>), ``lang`` (string, null when unknown);
  one file, or a folder of part files (how a distributed writer leaves them);
* JSON vectors: Anserini's JsonDenseVectorCollection. Anserini reads the key ``docid``: a record
  with ``id`` instead is skipped without an error, which is why the Lucene builder counts what it
  indexed (``index.lucene``).

A document id twice is an error wherever it is found: every index would hold it twice and a run
would rank it twice.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..io import FormatError, atomic_write, collection_files, read_jsonl, text_lines

COLUMNS = ("docid", "vector", "lang")
ROWS_PER_PART = 500_000  # a folder's part files: Anserini indexes one file per thread


@dataclass
class Vectors:
    """``docids[i]`` has vector ``vectors[i]`` (float32, rows) and language ``langs[i]`` (None: unknown)."""

    docids: list[str]
    vectors: np.ndarray
    langs: list[str | None] | None = None
    source: str = "vectors"

    def __post_init__(self):
        self.docids = [str(d) for d in self.docids]
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.docids):
            raise ValueError(f"{self.source}: {len(self.docids)} docids but vectors of shape {self.vectors.shape}")
        if self.langs is not None and len(self.langs) != len(self.docids):
            raise ValueError(f"{self.source}: {len(self.docids)} docids but {len(self.langs)} languages")
        if not np.isfinite(self.vectors).all():
            row = int(np.argwhere(~np.isfinite(self.vectors))[0][0])
            raise ValueError(f"{self.source}: the vector of {self.docids[row]!r} is not finite")
        check_unique(self.docids, self.source)

    def __len__(self) -> int:
        return len(self.docids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.vectors, axis=1)


def check_unique(docids: Sequence[str], source) -> None:
    seen: set[str] = set()
    for d in docids:
        if d in seen:
            raise ValueError(f"{source}: document id {d!r} occurs twice; ids must be unique")
        seen.add(d)


# ------------------------------------------------------------------ readers
def read_faiss(index_dir) -> Vectors:
    """The vectors of a Pyserini FAISS folder (``index`` + ``docid``), reconstructed by FAISS itself, so any
    index type that stores its vectors works (flat, HNSW-flat; not PQ, whose vectors are approximations)."""
    import faiss

    index_dir = Path(index_dir)
    for name in ("index", "docid"):
        if not (index_dir / name).is_file():
            raise FileNotFoundError(f"{index_dir}: no {name} file (expected a Pyserini FAISS index folder)")
    docids = [line for _, line in text_lines(index_dir / "docid")]
    index = faiss.read_index(str(index_dir / "index"))
    if index.ntotal != len(docids):
        raise ValueError(f"{index_dir}: the index holds {index.ntotal} vectors but docid lists {len(docids)} ids")
    return Vectors(docids, index.reconstruct_n(0, index.ntotal), source=str(index_dir))


def _parquet_parts(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such Parquet file or folder")
    # Writers leave markers (_SUCCESS) and hidden temporaries beside the parts; Arrow skips them too.
    parts = sorted(p for p in path.rglob("*.parquet") if p.is_file()
                   and not any(s.startswith(("_", ".")) for s in p.relative_to(path).parts))
    if not parts:
        raise FileNotFoundError(f"{path}: no .parquet files")
    return parts


def _vector_rows(column, source) -> np.ndarray:
    """(n, d) float32 from an Arrow list / large_list / fixed_size_list column of floats."""
    import pyarrow as pa

    rows = []
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        if not (pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)
                or pa.types.is_fixed_size_list(chunk.type)) or not pa.types.is_floating(chunk.type.value_type):
            raise FormatError(source, None, f"column 'vector' is {chunk.type}; expected a list of floats")
        if chunk.null_count:
            raise FormatError(source, None, f"column 'vector' has {chunk.null_count} null vectors")
        if len(chunk) == 0:
            continue
        lengths = np.asarray(chunk.value_lengths()) if not pa.types.is_fixed_size_list(chunk.type) \
            else np.full(len(chunk), chunk.type.list_size)
        if (lengths != lengths[0]).any():
            raise FormatError(source, None, f"vectors of different lengths ({sorted(set(lengths.tolist()))[:5]})")
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        rows.append(values.astype(np.float32, copy=False).reshape(len(chunk), int(lengths[0])))
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    if len({r.shape[1] for r in rows}) > 1:
        raise FormatError(source, None, "vectors of different lengths")
    return np.concatenate(rows)


def scan_parquet(path) -> Iterator[tuple[Path, list[str], np.ndarray, list[str | None] | None]]:
    """``(part, docids, vectors, langs)`` per part file, in file-name order: the streaming form of
    :func:`read_vectors`, for checks that need not hold a whole collection in memory."""
    import pyarrow.parquet as pq

    for part in _parquet_parts(Path(path)):
        table = pq.read_table(part)
        missing = [c for c in ("docid", "vector") if c not in table.column_names]
        if missing:
            raise FormatError(part, None, f"no column {', '.join(missing)} (has {', '.join(table.column_names)}); "
                                          f"vector Parquet needs {', '.join(COLUMNS)}")
        docid = table.column("docid")
        if docid.null_count:
            raise FormatError(part, None, f"{docid.null_count} null docids")
        langs = table.column("lang").to_pylist() if "lang" in table.column_names else None
        yield part, [str(d) for d in docid.to_pylist()], _vector_rows(table.column("vector"), part), langs


def read_vectors(path) -> Vectors:
    """A vector Parquet file, or a folder of part files (read in file-name order), or JSON vector lines
    (a file or a folder of ``.jsonl``: Anserini's ``docid`` or Pyserini's ``id`` with ``vector``).
    A docid repeated anywhere, within a part or across parts, is an error naming it."""
    path = Path(path)
    if _is_json(path):
        return read_json_vectors(path)
    docids, blocks, langs, where = [], [], [], {}
    for part, ids, vecs, part_langs in scan_parquet(path):
        for d in ids:
            if d in where:
                raise ValueError(f"{path}: document id {d!r} occurs twice (in {where[d].name} and {part.name}); "
                                 "ids must be unique")
            where[d] = part
        docids += ids
        if len(ids):
            blocks.append(vecs)
        langs += part_langs if part_langs is not None else [None] * len(ids)
    if not docids:
        raise FormatError(path, None, "no vectors: nothing to index")
    if len({b.shape[1] for b in blocks}) > 1:
        raise FormatError(path, None, f"part files hold vectors of different dimensions "
                                      f"({sorted({b.shape[1] for b in blocks})})")
    return Vectors(docids, np.concatenate(blocks), langs if any(x is not None for x in langs) else None,
                   source=str(path))


def _is_json(path: Path) -> bool:
    if path.is_file():
        return path.suffix in (".jsonl", ".json") or path.name.endswith((".jsonl.gz", ".json.gz"))
    return path.is_dir() and not _has_parquet(path) and any(path.glob("*.json*"))


def _has_parquet(path: Path) -> bool:
    return any(path.rglob("*.parquet"))


def read_json_vectors(path) -> Vectors:
    """JSON lines with ``vector`` and ``docid`` (Anserini) or ``id`` (Pyserini's ``pyserini.encode`` without
    ``--to-faiss``): a file or a folder of them."""
    docids, rows = [], []
    for f in collection_files(path):
        for lineno, line in text_lines(f):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f, lineno, f"not valid JSON ({e.msg})") from None
            docid = rec.get("docid", rec.get("id")) if isinstance(rec, dict) else None
            if docid is None or not isinstance(rec.get("vector"), list):
                raise FormatError(f, lineno, "expected an object with 'docid' (or 'id') and a 'vector' list")
            docids.append(str(docid))
            rows.append(rec["vector"])
    if not docids:
        raise FormatError(path, None, "no vectors: nothing to index")
    if len({len(r) for r in rows}) > 1:
        raise FormatError(path, None, "vectors of different lengths")
    return Vectors(docids, np.asarray(rows, dtype=np.float32), source=str(path))


def with_langs(vectors: Vectors, corpus) -> Vectors:
    """``vectors`` with each document's ``lang`` read from its JsonCollection (``id``/``_id``/``docid`` keys);
    a vector whose document is not in the corpus is an error (the index was built from another corpus)."""
    lang_of: dict[str, str | None] = {}
    for f in collection_files(corpus):
        for rec in read_jsonl(f):
            docid = rec.get("id", rec.get("_id", rec.get("docid")))
            if docid is not None:
                lang = rec.get("lang")
                lang_of[str(docid)] = str(lang) if lang not in (None, "") else None
    missing = [d for d in vectors.docids if d not in lang_of]
    if missing:
        raise ValueError(f"{vectors.source}: {len(missing)} document ids are not in {corpus} (e.g. {missing[0]!r}); "
                         "were the vectors encoded from another corpus?")
    return Vectors(vectors.docids, vectors.vectors, [lang_of[d] for d in vectors.docids], vectors.source)


# ------------------------------------------------------------------ writers
def arrow_table(vectors: Vectors, rows: slice = slice(None)):
    """Rows ``rows`` of ``vectors`` as the project's vector Parquet schema (:data:`COLUMNS`: ``docid`` string,
    ``vector`` list<float32>, ``lang`` string): the one table every vector writer (this module, the Ray actors) emits."""
    import pyarrow as pa

    block = vectors.vectors[rows]
    n, d = block.shape
    values = pa.array(block.reshape(-1), type=pa.float32())
    vector = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), values)
    langs = vectors.langs[rows] if vectors.langs is not None else [None] * n
    return pa.table({"docid": pa.array(vectors.docids[rows], type=pa.string()), "vector": vector,
                     "lang": pa.array(langs, type=pa.string())})


def _fresh_folder(out: Path, overwrite: bool) -> Path:
    """A new ``out.partial`` folder, renamed over ``out`` by :func:`_publish` once complete."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, out: Path) -> Path:
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    os.replace(tmp, out)
    return out


def write_parquet(vectors: Vectors, out, rows_per_part: int = ROWS_PER_PART, overwrite: bool = False) -> Path:
    """``out`` ending in ``.parquet``: one file; otherwise a folder of ``part-NNNNN.parquet`` files of
    ``rows_per_part`` rows each, which Anserini (ParquetDenseVectorCollection) indexes one per thread."""
    import pyarrow.parquet as pq

    out = Path(out)
    if out.suffix == ".parquet":
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite)")
        with atomic_write(out, "wb") as f:
            pq.write_table(arrow_table(vectors), f)
        return out
    tmp = _fresh_folder(out, overwrite)
    for i, start in enumerate(range(0, len(vectors), rows_per_part)):
        pq.write_table(arrow_table(vectors, slice(start, start + rows_per_part)), tmp / f"part-{i:05d}.parquet")
    return _publish(tmp, out)


def write_json_vectors(vectors: Vectors, out, rows_per_part: int = ROWS_PER_PART, overwrite: bool = False) -> Path:
    """A folder of Anserini JsonDenseVectorCollection files (``{"docid", "vector"}`` per line), ready for
    ``-collection JsonDenseVectorCollection -input out``. Floats are written as the float32 values
    exactly (a float32 widened to a double prints digits that parse back to the same float32)."""
    out = Path(out)
    tmp = _fresh_folder(out, overwrite)
    for i, start in enumerate(range(0, len(vectors), rows_per_part)):
        with open(tmp / f"part-{i:05d}.jsonl", "w", encoding="utf-8") as f:
            for docid, row in zip(vectors.docids[start:start + rows_per_part],
                                  vectors.vectors[start:start + rows_per_part]):
                f.write(json.dumps({"docid": docid, "vector": row.tolist()}, ensure_ascii=False) + "\n")
    return _publish(tmp, out)
