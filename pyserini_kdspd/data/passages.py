"""Split long documents into overlapping passages for dense encoding, and collapse passage runs back (MaxP).

The paper encodes CLEF documents as passages of 180 tokens with a stride of 90
(every token is covered by up to two windows) and scores a document by its best
passage (MaxP). Passage ids are ``{docid}#{k}`` with k counted from 0, because
that is what Pyserini's own MaxP expects: ``python -m pyserini.search.faiss
... --max-passage --max-passage-delimiter '#'`` (the default delimiter; same flag
for ``pyserini.search.lucene``) keeps ``docid.split('#')[0]`` and the first
(= best-scoring) hit of each document. So a document id must never contain ``#``;
:func:`split_document` refuses such ids rather than let MaxP merge two documents.

With ``--max-passage``, Pyserini's ``--hits`` is the number of *passages* searched
and ``--max-passage-hits`` the number of documents written, so ``--hits 100`` leaves
fewer than 100 documents whenever a document has two passages among the top 100.
:func:`write_passages` records how many passages each document has, and
:func:`maxp_search_args` turns that into a ``--hits`` that always leaves the
documents asked for.

Tokens are counted with the dense model's own tokenizer (a Hugging Face *fast*
tokenizer, whose character offsets let a passage be cut as a clean substring of
the document: no detokenisation artefacts, and the model re-tokenises it to
the same tokens, but for a piece or two where a window cuts a word: SentencePiece
then starts the passage with a word-initial piece). Without a tokenizer,
whitespace-separated words are the tokens.
The tokenizer's identity (name and the SHA-256 of its serialised form) is written
beside the passages, so passages cut by another tokenizer are never mistaken for these.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from .. import io
from ..io import Run

PASSAGE_LENGTH = 180
STRIDE = 90
DELIMITER = "#"
DEFAULT_TOKENIZER = "multilingual-e5-small"  # the student backbone's (XLM-R SentencePiece): it encodes the passages

_WORD = re.compile(r"\S+")


class WhitespaceTokenizer:
    """Fallback tokenizer: a token is a maximal run of non-space characters."""

    name = "whitespace"

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [self.spans(t) for t in texts]

    def fingerprint(self) -> dict:
        return {"name": self.name}


class FastTokenizer:
    """Token character offsets from a Hugging Face ``tokenizers`` backend (no special tokens, no truncation).

    Calling the backend directly (not ``PreTrainedTokenizer.__call__``) avoids the
    "sequence longer than max length" warnings and batches in Rust.
    """

    def __init__(self, backend, name: str | None = None):
        # A model's tokenizer usually carries truncation (e.g. 512) and padding settings: counting must see
        # every token, so work on a copy without them (the caller's tokenizer is left untouched).
        if getattr(backend, "truncation", None) is not None or getattr(backend, "padding", None) is not None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        self.backend = backend
        self.name = name or "tokenizer"

    def _spans(self, enc) -> list[tuple[int, int]]:
        # Tokens of width 0 (e.g. a lone SentencePiece "▁") still count as tokens, as the model sees them.
        return [tuple(o) for o in enc.offsets]

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self._spans(self.backend.encode(text, add_special_tokens=False))

    def spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [self._spans(e) for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def fingerprint(self) -> dict:
        """The name it was loaded by and the SHA-256 of the serialised tokenizer (vocabulary, normaliser, ...)."""
        return {"name": self.name, "sha256": hashlib.sha256(self.backend.to_str().encode("utf-8")).hexdigest()}


def load_tokenizer(tokenizer=None):
    """A span tokenizer from None or ``"whitespace"``, a ``tokenizers.Tokenizer``, a transformers fast tokenizer,
    a ``tokenizer.json`` file, or a model: an offline alias (``multilingual-e5-small``), a folder or a
    Hugging Face id, resolved as every model of the project is (:func:`~pyserini_kdspd.models.resolve_model`)."""
    if tokenizer is None or tokenizer == WhitespaceTokenizer.name:
        return WhitespaceTokenizer()
    if isinstance(tokenizer, (WhitespaceTokenizer, FastTokenizer)):
        return tokenizer
    name = None
    if isinstance(tokenizer, (str, os.PathLike)):
        from tokenizers import Tokenizer

        name = str(tokenizer)
        if Path(tokenizer).is_file():
            return FastTokenizer(Tokenizer.from_file(name), name)
        from ..models import resolve_model

        folder = Path(resolve_model(name))
        if (folder / "tokenizer.json").is_file():
            return FastTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")), name)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return FastTokenizer(backend, name or getattr(tokenizer, "name_or_path", None))
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "encode"):
        return FastTokenizer(tokenizer, name)  # a bare tokenizers.Tokenizer
    raise TypeError(f"{type(tokenizer).__name__} gives no character offsets: pass a Hugging Face *fast* "
                    "tokenizer (or its tokenizer.json), or None for whitespace tokens")


def windows(n_tokens: int, length: int = PASSAGE_LENGTH, stride: int = STRIDE) -> list[tuple[int, int]]:
    """Token windows ``[start, end)``: starts at 0, stride, 2*stride, ... until a window reaches the end.

    A text of at most ``length`` tokens is one window; an empty text is one empty window,
    so every document keeps at least one passage (and stays retrievable).
    """
    if length <= 0 or stride <= 0 or stride > length:
        raise ValueError(f"need 0 < stride <= length, got length={length}, stride={stride}")
    out = []
    start = 0
    while True:
        end = min(start + length, n_tokens)
        out.append((start, end))
        if end >= n_tokens:
            return out
        start += stride


def _check_docid(docid: str, delimiter: str) -> None:
    if delimiter in docid:
        raise ValueError(f"document id {docid!r} contains the passage delimiter {delimiter!r}: "
                         "Pyserini's --max-passage would cut it there")


def split_text(text: str, spans: Sequence[tuple[int, int]], length: int = PASSAGE_LENGTH,
               stride: int = STRIDE) -> list[str]:
    """Passage texts: for each token window, the substring from its first token's start to its last token's end
    (stripped: a SentencePiece token's span includes the space before it)."""
    if not spans:
        return [text.strip()]
    return [text[spans[s][0]:spans[e - 1][1]].strip() for s, e in windows(len(spans), length, stride)]


def split_document(docid: str, text: str, tokenizer=None, length: int = PASSAGE_LENGTH,
                   stride: int = STRIDE, delimiter: str = DELIMITER) -> list[tuple[str, str]]:
    """``[(f"{docid}#{k}", passage_text), ...]`` for one document."""
    _check_docid(docid, delimiter)
    tok = load_tokenizer(tokenizer)
    return [(f"{docid}{delimiter}{k}", p)
            for k, p in enumerate(split_text(text, tok.spans(text), length, stride))]


def split_records(records: Iterable[Mapping], tokenizer=None, length: int = PASSAGE_LENGTH,
                  stride: int = STRIDE, delimiter: str = DELIMITER, text_field: str = "contents",
                  batch_size: int = 256) -> Iterator[dict]:
    """Passage records from corpus records (``{"id", "contents", ...}``), for Pyserini's JsonCollection.

    Every other field (``lang``, ``title`` ...) is copied to each passage; ``contents`` and
    ``text`` both hold the passage text (``text`` is what ``pyserini.encode --fields text lang`` reads).
    Tokenizes in batches so a fast tokenizer runs in Rust over many documents at once.
    """
    tok = load_tokenizer(tokenizer)
    batch: list[Mapping] = []

    def flush():
        texts = [str(r.get(text_field) or "") for r in batch]
        for rec, text, spans in zip(batch, texts, tok.spans_batch(texts)):
            docid = str(rec["id"])
            _check_docid(docid, delimiter)
            for k, p in enumerate(split_text(text, spans, length, stride)):
                out = dict(rec)
                out.update(id=f"{docid}{delimiter}{k}", contents=p, text=p)
                yield out
        batch.clear()

    for rec in records:
        if "id" not in rec:
            raise ValueError(f"corpus record without an 'id': {str(dict(rec))[:80]}")
        batch.append(rec)
        if len(batch) >= batch_size:
            yield from flush()
    if batch:
        yield from flush()


# ------------------------------------------------------------------ a passage collection and its metadata
def metadata_path(folder) -> Path:
    """``{folder}.json`` beside the passage folder: inside it, ``pyserini.encode`` would read it as a corpus file."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".json")


def write_passages(records: Iterable[Mapping], folder, tokenizer=None, length: int = PASSAGE_LENGTH,
                   stride: int = STRIDE, delimiter: str = DELIMITER, text_field: str = "contents") -> dict:
    """Split corpus records into ``{folder}/corpus.jsonl`` and write its metadata (:func:`metadata_path`).

    The metadata holds what the passages depend on (tokenizer fingerprint, length, stride,
    delimiter) and what MaxP needs to know (passages per document); it is returned too.
    """
    tok = load_tokenizer(tokenizer)
    sizes: Counter = Counter()     # passages of a document -> documents (a document's passages come together)
    by_lang: Counter = Counter()
    last, n = None, 0
    with io.atomic_write(Path(folder) / "corpus.jsonl") as f:
        for rec in split_records(records, tok, length, stride, delimiter, text_field):
            docid = docid_of(rec["id"], delimiter)
            if docid != last:
                if last is not None:
                    sizes[n] += 1
                last, n = docid, 0
            n += 1
            by_lang[rec.get("lang")] += 1
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    if last is not None:
        sizes[n] += 1
    meta = {"tokenizer": tok.fingerprint(), "passage_length": length, "stride": stride, "delimiter": delimiter,
            "documents": sum(sizes.values()), "passages": sum(k * n for k, n in sizes.items()),
            "passages_by_lang": {str(lang): n for lang, n in sorted(by_lang.items(), key=str)},
            "documents_by_passages": {str(k): sizes[k] for k in sorted(sizes)}}
    io.write_json(metadata_path(folder), meta)
    return meta


def read_metadata(folder) -> dict:
    path = metadata_path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} was not written by write_passages (or is from an "
                                "older version); rebuild the collection (e.g. python -m pyserini_kdspd.data clef "
                                "--force ...)")
    return io.read_json(path)


def passages_for_documents(documents_by_passages: Mapping, documents: int) -> int:
    """The fewest top-ranked passages that always hold ``documents`` distinct documents (or all of them).

    ``documents_by_passages`` maps a passage count to the number of documents with that many
    passages. In the worst case the top of the ranking is taken by the documents with the most
    passages, so one passage more than the ``documents - 1`` largest documents have together is enough.
    """
    counts = sorted(((int(k), int(n)) for k, n in documents_by_passages.items()), reverse=True)
    total = sum(k * n for k, n in counts)
    need, depth = documents - 1, 1
    for k, n in counts:
        take = min(n, need)
        depth += take * k
        need -= take
        if need == 0:
            break
    return min(depth, total)


def maxp_search_args(folder, documents: int) -> list[str]:
    """Flags for ``pyserini.search.faiss`` on a passage collection: MaxP down to ``documents`` documents per query.

    ``--hits`` (passages searched) comes from the passage counts in the folder's metadata, so that
    ``min(documents, #documents)`` distinct documents remain after MaxP. Placed after another
    ``--hits``, it wins (argparse keeps the last value).
    """
    meta = read_metadata(folder)
    depth = passages_for_documents(meta["documents_by_passages"], documents)
    return ["--hits", str(depth), "--max-passage", "--max-passage-hits", str(documents),
            "--max-passage-delimiter", meta["delimiter"]]


def docid_of(passage_id: str, delimiter: str = DELIMITER) -> str:
    """The document a passage belongs to, cut exactly as Pyserini's MaxP cuts it (at the first delimiter)."""
    return passage_id.split(delimiter)[0]


def maxp(run: Mapping[str, Mapping[str, float]], delimiter: str = DELIMITER, hits: int | None = None) -> Run:
    """Collapse a passage run to documents by their best passage, as Pyserini's ``--max-passage`` does.

    Pyserini walks the ranked passages and keeps each document's first (= highest-scoring)
    hit; ``hits`` plays ``--max-passage-hits`` (documents kept per query; None keeps all).
    Ties are ranked by docid (see ``io.ranked``), so the result does not depend on dict order.
    """
    out: Run = {}
    for qid, docs in run.items():
        best: dict[str, float] = {}
        for pid, score in docs.items():
            d = docid_of(pid, delimiter)
            if d not in best or score > best[d]:
                best[d] = score
        out[qid] = dict(io.ranked(best, hits))
    return out
