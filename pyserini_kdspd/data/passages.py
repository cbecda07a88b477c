"""Split long documents into overlapping passages for dense encoding, and collapse passage runs back (MaxP).

The paper encodes CLEF documents as passages of 180 tokens with a stride of 90
(every token is covered by up to two windows) and scores a document by its best
passage (MaxP). Passage ids are ``{docid}#{k}`` with k counted from 0, because
that is what Pyserini's own MaxP expects: ``python -m pyserini.search.faiss
... --max-passage --max-passage-delimiter '#'`` (the default delimiter; same flag
for ``pyserini.search.lucene``) keeps ``docid.split('#')[0]`` and the first
(= best-scoring) hit of each document. So a document id must never contain ``#``;
:func:`split_document` refuses such ids rather than let MaxP merge two documents.
Remember that Pyserini's ``--max-passage-hits`` (default 100) caps the documents
per query and ``--hits`` the passages searched, so ask for enough passages.

Tokens are counted with the dense model's own tokenizer (a Hugging Face *fast*
tokenizer, whose character offsets let a passage be cut as a clean substring of
the document: no detokenisation artefacts, and the model re-tokenises it to
the same tokens). Without a tokenizer, whitespace-separated words are the tokens.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from ..io import Run

PASSAGE_LENGTH = 180
STRIDE = 90
DELIMITER = "#"

_WORD = re.compile(r"\S+")


class WhitespaceTokenizer:
    """Fallback tokenizer: a token is a maximal run of non-space characters."""

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [self.spans(t) for t in texts]


class FastTokenizer:
    """Token character offsets from a Hugging Face ``tokenizers`` backend (no special tokens, no truncation).

    Calling the backend directly (not ``PreTrainedTokenizer.__call__``) avoids the
    "sequence longer than max length" warnings and batches in Rust.
    """

    def __init__(self, backend):
        # A model's tokenizer usually carries truncation (e.g. 512) and padding settings: counting must see
        # every token, so work on a copy without them (the caller's tokenizer is left untouched).
        if getattr(backend, "truncation", None) is not None or getattr(backend, "padding", None) is not None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(backend.to_str())
            backend.no_truncation()
            backend.no_padding()
        self.backend = backend

    def _spans(self, enc) -> list[tuple[int, int]]:
        # Tokens of width 0 (e.g. a lone SentencePiece "▁") still count as tokens, as the model sees them.
        return [tuple(o) for o in enc.offsets]

    def spans(self, text: str) -> list[tuple[int, int]]:
        return self._spans(self.backend.encode(text, add_special_tokens=False))

    def spans_batch(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [self._spans(e) for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]


def load_tokenizer(tokenizer=None):
    """A span tokenizer from None (whitespace), a ``tokenizers.Tokenizer``, a transformers fast tokenizer,
    a ``tokenizer.json`` file, or a model folder / Hugging Face id (loaded with ``AutoTokenizer``)."""
    if tokenizer is None:
        return WhitespaceTokenizer()
    if isinstance(tokenizer, (WhitespaceTokenizer, FastTokenizer)):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        if path.is_file():
            from tokenizers import Tokenizer

            return FastTokenizer(Tokenizer.from_file(str(path)))
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), use_fast=True)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return FastTokenizer(backend)
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "encode"):
        return FastTokenizer(tokenizer)  # a bare tokenizers.Tokenizer
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
    """Passage texts: for each token window, the substring from its first token's start to its last token's end."""
    if not spans:
        return [text.strip()]
    return [text[spans[s][0]:spans[e - 1][1]] for s, e in windows(len(spans), length, stride)]


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


def docid_of(passage_id: str, delimiter: str = DELIMITER) -> str:
    """The document a passage belongs to, cut exactly as Pyserini's MaxP cuts it (at the first delimiter)."""
    return passage_id.split(delimiter)[0]


def maxp(run: Mapping[str, Mapping[str, float]], delimiter: str = DELIMITER, hits: int | None = None) -> Run:
    """Collapse a passage run to documents by their best passage, as Pyserini's ``--max-passage`` does.

    Pyserini walks the ranked passages and keeps each document's first (= highest-scoring)
    hit; ``hits`` plays ``--max-passage-hits`` (documents kept per query; None keeps all).
    Ties are ranked by docid (see ``io.ranked``), so the result does not depend on dict order.
    """
    from ..io import ranked

    out: Run = {}
    for qid, docs in run.items():
        best: dict[str, float] = {}
        for pid, score in docs.items():
            d = docid_of(pid, delimiter)
            if d not in best or score > best[d]:
                best[d] = score
        out[qid] = dict(ranked(best, hits))
    return out
