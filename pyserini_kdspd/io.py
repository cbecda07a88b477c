"""Strict readers and atomic writers for the files every stage exchanges.

TREC runs, TREC qrels, TSV topics and JSON-lines collections are the contract
between stages (and with Pyserini, trec_eval and ranx), so a malformed line is an
error naming the file and line, never a silently skipped record. Writers go
through a temporary file and a rename, so a killed job never leaves half a run.
"""
from __future__ import annotations

import contextlib
import json
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


def _lines(path) -> Iterator[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield lineno, line


# --------------------------------------------------------------------- topics
def read_topics(path) -> dict[str, str]:
    """Pyserini's TSV topics: ``qid<TAB>text`` per line."""
    topics: dict[str, str] = {}
    for lineno, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise FormatError(path, lineno, f"expected 'qid<TAB>text', got {line[:80]!r}")
        qid = parts[0].strip()
        if qid in topics:
            raise FormatError(path, lineno, f"duplicate query id {qid!r}")
        topics[qid] = parts[1].strip()
    return topics


def write_topics(path, topics: Mapping[str, str]) -> None:
    with atomic_write(path) as f:
        for qid, text in topics.items():
            text = " ".join(str(text).split())  # tabs or newlines inside a query would break the format
            f.write(f"{qid}\t{text}\n")


# ---------------------------------------------------------------------- qrels
def read_qrels(path) -> Qrels:
    """TREC qrels: ``qid iter docid grade``."""
    qrels: Qrels = {}
    for lineno, line in _lines(path):
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
    return qrels


def write_qrels(path, qrels: Mapping[str, Mapping[str, int]]) -> None:
    with atomic_write(path) as f:
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                f.write(f"{qid} 0 {docid} {int(grade)}\n")


# ----------------------------------------------------------------------- runs
def read_run(path) -> Run:
    """TREC run: ``qid Q0 docid rank score tag``; a docid twice in one query is an error."""
    run: Run = {}
    for lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise FormatError(path, lineno, f"expected 'qid Q0 docid rank score tag', got {line[:80]!r}")
        qid, _, docid, rank, score, _ = parts
        try:
            int(rank)
            s = float(score)
        except ValueError:
            raise FormatError(path, lineno, f"rank {rank!r} or score {score!r} is not a number") from None
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise FormatError(path, lineno, f"document {docid!r} ranked twice for query {qid!r}")
        docs[docid] = s
    return run


def ranked(docs: Mapping[str, float], depth: int | None = None) -> list[tuple[str, float]]:
    """Documents by descending score, ties by descending docid: the order trec_eval itself uses,
    so a written rank agrees with how the run is scored."""
    items = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
    items.sort(key=lambda kv: -kv[1])  # stable: keeps the docid order among ties
    return items[:depth] if depth else items


def write_run(path, run: Mapping[str, Mapping[str, float]], tag: str = "pyserini_kdspd",
              depth: int | None = None) -> None:
    with atomic_write(path) as f:
        for qid, docs in run.items():
            for rank, (docid, score) in enumerate(ranked(docs, depth), 1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


# ---------------------------------------------------------------- collections
def read_jsonl(path) -> Iterator[dict]:
    for lineno, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(path, lineno, f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise FormatError(path, lineno, "expected a JSON object")
        yield obj


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
