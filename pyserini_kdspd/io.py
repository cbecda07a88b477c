"""Strict readers and atomic writers for the files every stage exchanges.

TREC runs, TREC qrels, TSV topics and JSON-lines collections are the contract
between stages (and with Pyserini, trec_eval and ranx), so a malformed line is an
error naming the file and line, never a silently skipped record. Writers go
through a temporary file and a rename, so a killed job never leaves half a run.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


class FormatError(ValueError):
    """A line of an input file is not what its format requires."""

    def __init__(self, path, lineno: int | None, message: str):
        where = f"{path}:{lineno}" if lineno is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.lineno = str(path), lineno


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temporary file beside ``path`` and rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs should look like any other
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def text_lines(path, blank: bool = False) -> Iterator[tuple[int, str]]:
    """Lines with their numbers (the non-blank ones unless ``blank``), without line ends, decoded as
    UTF-8 one line at a time so that a bad byte is a :class:`FormatError` naming its line.

    The one text reader of the package. A byte-order mark at the start is dropped: Windows
    editors add one, and it would otherwise become part of the first query or document id
    and silently unmatch it. A gzip file (by its magic bytes) is read decompressed.
    """
    path = Path(path)
    if path.is_dir():
        raise FormatError(path, None, "is a folder; expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gzipped else open)(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise FormatError(path, lineno, f"not UTF-8 (byte {raw[e.start]:#04x} at byte {e.start + 1} of the "
                                                "line): convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8") from None
            line = line.rstrip("\n").rstrip("\r")
            if blank or line.strip():
                yield lineno, line


def read_json(path):
    """A JSON file, decoded as :func:`text_lines` does (BOM dropped, a bad byte names its line);
    invalid JSON is a :class:`FormatError` naming the line."""
    text = "\n".join(line for _, line in text_lines(path, blank=True))  # blank lines kept: errors name file lines
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(path, e.lineno, f"not valid JSON ({e.msg}, column {e.colno})") from None


def write_json(path, obj) -> None:
    """Indented UTF-8 JSON with a final newline, written atomically: stats files, model configs, manifests
    (whose hashes depend on these exact bytes)."""
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


# --------------------------------------------------------------------- topics
def read_tagged_topics(path) -> dict[str, tuple[str, str | None]]:
    """Pyserini's TSV topics, ``qid<TAB>text`` per line, each with an optional third column, its language
    (``qid<TAB>text<TAB>lang``): ``{qid: (text, lang or None)}``. Pyserini reads the first two columns
    and ignores the third; a KD-SPD query encoder reads it (``PYSERINI_KDSPD_QUERY_LANG``)."""
    topics: dict[str, tuple[str, str | None]] = {}
    for lineno, line in text_lines(path):
        parts = line.split("\t")
        if len(parts) not in (2, 3) or not parts[0].strip() or not parts[1].strip():
            raise FormatError(path, lineno, f"expected 'qid<TAB>text' or 'qid<TAB>text<TAB>lang', got {line[:80]!r}")
        qid = parts[0].strip()
        if qid in topics:
            raise FormatError(path, lineno, f"duplicate query id {qid!r}")
        topics[qid] = (parts[1].strip(), (parts[2].strip() or None) if len(parts) == 3 else None)
    if not topics:
        raise FormatError(path, None, "no topics: the file is empty")
    return topics


def read_topics(path) -> dict[str, str]:
    """Pyserini's TSV topics: ``qid<TAB>text`` per line (a third column, the language, is read and dropped,
    as Pyserini drops it; :func:`read_tagged_topics` keeps it)."""
    return {qid: text for qid, (text, _) in read_tagged_topics(path).items()}


def write_topics(path, topics: Mapping[str, str], langs: Mapping[str, str] | None = None) -> None:
    """``qid<TAB>text`` per line, and ``<TAB>lang`` when ``langs`` tags the queries (every one of them)."""
    with atomic_write(path) as f:
        for qid, text in topics.items():
            text = " ".join(str(text).split())  # tabs or newlines inside a query would break the format
            f.write(f"{qid}\t{text}\t{langs[qid]}\n" if langs is not None else f"{qid}\t{text}\n")


# ---------------------------------------------------------------------- qrels
def read_qrels(path) -> Qrels:
    """TREC qrels: ``qid iter docid grade``."""
    qrels: Qrels = {}
    for lineno, line in text_lines(path):
        parts = line.split()
        if len(parts) != 4:
            raise FormatError(path, lineno, f"expected 'qid iter docid grade', got {line[:80]!r}")
        qid, _, docid, grade = parts
        try:
            g = int(grade)
        except ValueError:
            raise FormatError(path, lineno, f"relevance grade {grade!r} is not an integer") from None
        if docid in qrels.setdefault(qid, {}):
            raise FormatError(path, lineno, f"duplicate judgment for ({qid}, {docid})")
        qrels[qid][docid] = g
    if not qrels:
        raise FormatError(path, None, "no judgments: the file is empty")
    return qrels


def write_qrels(path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    with atomic_write(path) as f:
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                f.write(f"{qid} 0 {docid} {int(grade)}\n")


# ----------------------------------------------------------------------- runs
def read_run(path) -> Run:
    """TREC run: ``qid Q0 docid rank score tag``; a docid twice in one query or a score that is
    not finite is an error. An empty file is an empty run (a system that found nothing)."""
    run: Run = {}
    for lineno, line in text_lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise FormatError(path, lineno, f"expected 'qid Q0 docid rank score tag', got {line[:80]!r}")
        qid, _, docid, rank, score, _ = parts
        try:
            int(rank)
            s = float(score)
        except ValueError:
            raise FormatError(path, lineno, f"rank {rank!r} or score {score!r} is not a number") from None
        if not math.isfinite(s):  # NaN sorts arbitrarily and inf always first: either would fake a ranking
            raise FormatError(path, lineno, f"score {score!r} is not a finite number")
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise FormatError(path, lineno, f"document {docid!r} ranked twice for query {qid!r}")
        docs[docid] = s
    return run


def check_scores(run: Mapping[str, Mapping[str, float]], name: str = "run") -> None:
    """A run given in memory must have finite scores, as :func:`read_run` requires of a file."""
    for qid, docs in run.items():
        for docid, score in docs.items():
            if not math.isfinite(score):
                raise ValueError(f"{name}: query {qid!r}, document {docid!r} has score {score}; "
                                 "scores must be finite numbers")


def ranked(docs: Mapping[str, float], depth: int | None = None) -> list[tuple[str, float]]:
    """Documents by descending score, ties by descending docid: the order trec_eval itself uses,
    so a written rank agrees with how the run is scored."""
    items = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
    items.sort(key=lambda kv: -kv[1])  # stable: keeps the docid order among ties
    return items[:depth] if depth else items


RUN_DECIMALS = 6  # a run file's scores keep 6 decimals: what trec_eval sees, and where fusion judges ties


def write_run(path, run: Mapping[str, Mapping[str, float]], tag: str = "pyserini_kdspd",
              depth: int | None = None) -> None:
    with atomic_write(path) as f:
        for qid, docs in run.items():
            for rank, (docid, score) in enumerate(ranked(docs, depth), 1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.{RUN_DECIMALS}f} {tag}\n")


# ---------------------------------------------------------------- collections
def read_jsonl(path) -> Iterator[dict]:
    for _, obj in _json_records(path):
        yield obj


def _json_records(path) -> Iterator[tuple[int, dict]]:
    for lineno, line in text_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(path, lineno, f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise FormatError(path, lineno, "expected a JSON object")
        yield lineno, obj


def collection_files(path) -> list[Path]:
    """The files of a JsonCollection: one JSON-lines file, or the ``*.jsonl``/``*.json`` files of a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such collection file or folder")
    files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json") and p.is_file())
    if not files:
        raise FileNotFoundError(f"{path}: no .jsonl files (expected a JsonCollection folder)")
    return files


def check_collection(path) -> int:
    """Number of documents in a JsonCollection, after checking that there is at least one and that
    their ids (Pyserini's ``id``, ``_id`` or ``docid``) are unique across its files.

    Anserini and FAISS index whatever they are given: a repeated id becomes two documents
    (a run then lists one docid twice and scoring keeps only one), and an empty collection
    becomes an empty index that answers every query with nothing.
    """
    seen: set[str] = set()
    for f in collection_files(path):
        for lineno, rec in _json_records(f):
            docid = rec.get("id", rec.get("_id", rec.get("docid")))
            if docid is None:
                raise FormatError(f, lineno, "record has no 'id'")
            docid = str(docid)
            if docid in seen:
                raise FormatError(f, lineno, f"document id {docid!r} occurs twice in {path}; ids must be unique")
            seen.add(docid)
    if not seen:
        raise FormatError(path, None, "the collection is empty: nothing to index")
    return len(seen)


def write_jsonl(path, records: Iterable[Mapping]) -> int:
    n = 0
    with atomic_write(path) as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def newer(output, source) -> bool:
    """True when ``output`` exists and was written no earlier than ``source``: the reuse test for derived files."""
    output, source = Path(output), Path(source)
    return output.is_file() and source.is_file() and output.stat().st_mtime_ns >= source.stat().st_mtime_ns


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks: the content identity of inputs and caches."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def replace_marked_block(path, key: str, block: str) -> None:
    """Rewrite the lines of ``path`` between the lines ``<!-- key:start -->`` and ``<!-- key:end -->``
    with ``block`` (how the README's generated tables are kept in step with the runs)."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    found = {m: [i for i, line in enumerate(lines) if line.strip() == m] for m in (start, end)}
    for marker, at in found.items():
        if len(at) != 1:
            where = "has no line" if not at else f"has {len(at)} lines (lines {', '.join(str(i + 1) for i in at)})"
            raise ValueError(f"{path} {where} {marker}: the generated block sits between one line {start} and "
                             f"one line {end}; put them around the place it belongs")
    i, j = found[start][0], found[end][0]
    if j < i:
        raise ValueError(f"{path}:{j + 1}: {end} comes before {start} (line {i + 1})")
    with atomic_write(path) as f:
        f.write("".join(lines[:i + 1]) + block.rstrip("\n") + "\n" + "".join(lines[j:]))
