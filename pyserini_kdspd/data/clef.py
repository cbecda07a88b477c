"""CLEF 2000-2003 ad hoc (multilingual) as Pyserini collections: de, fr, it (Table 2), and fi for zero-shot.

The CLEF collections are licensed (ELRA / the CLEF organisers), so this module
only *reads* a copy the user owns, in the layout it was distributed in:

* documents: TREC-style SGML, ``<DOC><DOCNO>id</DOCNO> ... </DOC>``, many per file,
  files plain or gzipped, one folder per language, ISO-8859-1 (most sources) or
  UTF-8 (decoded as UTF-8 when valid, else Latin-1). The text fields differ by
  source: Frankfurter Rundschau, Der Spiegel, Le Monde, La Stampa use ``TITLE``/
  ``LEAD``/``TEXT`` (Spiegel also ``LEAD``), the SDA/ATS/AGZ news agency files use
  ``TI`` (title), ``LD`` (lead) and ``TX`` (text), others ``HEADLINE``/``HL``. A document's
  text is the content of those tags (:data:`TEXT_TAGS`) in document order; a document
  with none of them falls back to all its content except the metadata tags
  (:data:`METADATA_TAGS`: DOCNO, DOCID, DATE, ...), so an unforeseen source loses no text.
  Nested markup is stripped and SGML entities (``&amp;``) decoded.
* topics: CLEF topic files, ``<top> <num> C041 </num> <EN-title> .. <EN-desc> .. <EN-narr> .. </top>``
  (CLEF 2000 writes ``<E-title>``/``<E-desc>``/``<E-narr>``; closing tags are optional).
  Only the English fields are read; the query is title + description, as in the paper.
* qrels: TREC format (``qid 0 docno grade``); query ids may be ``C041``, ``041`` or ``41``:
  they are matched to the topics by number and written with the topic file's id.

Written under ``output_root`` (``name`` defaults to ``clef``):

* ``collections/clef/corpus/corpus.jsonl``: whole documents ``{"id","contents","text","lang"}``
  (ids are the DOCNOs, which the qrels use), for BM25 (``by-lang/{lang}/`` per analyzer);
* ``collections/clef/passages/corpus.jsonl``: the documents split into passages of 180
  tokens of the student's tokenizer (default: the backbone's, multilingual-e5-small =
  XLM-R SentencePiece), stride 90 (:mod:`.passages`), ids ``{DOCNO}#{k}``, for dense
  encoding; ``collections/clef/passages.json`` records the tokenizer and the passages per
  document, from which :func:`.passages.maxp_search_args` sets how many passages to search
  so that Pyserini's ``--max-passage`` leaves the documents asked for;
* ``topics/clef.en.tsv``: the topics with at least one relevant document in *each* of the
  required languages (de, fr, it: 133 topics in the paper);
* ``qrels/clef.txt``: their judgments on documents of the collection (judgments of
  documents outside it, e.g. English or Spanish ones, are dropped and counted);
* ``collections/clef/stats.json``: counts, dropped judgments, duplicate DOCNOs, parameters.

The languages are de, fr and it by default (the paper's Table 2); Finnish, never seen in
training, joins only when asked (``--languages de fr it fi``: the zero-shot experiment).
A build is reused while its inputs (files, sizes, times), tokenizer (SHA-256 of its
serialised form), passage length, stride and languages are those asked for; any
difference rebuilds it, so passages cut by another tokenizer are never reused.
"""
from __future__ import annotations

import codecs
import contextlib
import functools
import gzip
import html
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from .. import io
from ..io import FormatError
from . import register
from .passages import (DEFAULT_TOKENIZER, DELIMITER, PASSAGE_LENGTH, STRIDE, load_tokenizer, metadata_path,
                       write_passages)

log = logging.getLogger(__name__)

NAME = "clef"
LANGUAGES = ("de", "fr", "it")  # Table 2; Finnish (fi), never trained on, only when asked for (zero-shot)
REQUIRED_LANGUAGES = ("de", "fr", "it")
TEXT_TAGS = ("TITLE", "HEADLINE", "HL", "TI", "LEAD", "LD", "TEXT", "TX")
METADATA_TAGS = ("DOCNO", "DOCID", "DATE", "DAT", "NO", "ID", "FILEID", "FIRST", "SECOND", "DOCHDR",
                 "PAGE", "CHA", "CHA1", "CHA2", "CHA3", "AU", "AUTHOR", "BYLINE", "FILE", "SOURCE")

_DOC = re.compile(r"<DOC>(.*?)</DOC>", re.S | re.I)
_DOCNO = re.compile(r"<DOCNO>\s*(.*?)\s*</DOCNO>", re.S | re.I)
_ELEMENT = re.compile(r"<([A-Za-z][\w.-]*)\b[^>]*>(.*?)</\1\s*>", re.S)
_TAG = re.compile(r"<[^>]*>")
_TOP = re.compile(r"<top>(.*?)</top>", re.S | re.I)
_NUM = re.compile(r"<num>\s*(?:Number:)?\s*([^<\s]+)", re.I)
_PREFIX = re.compile(r"^\s*(?:Topic|Title|Description|Narrative)\s*:\s*", re.I)


# ------------------------------------------------------------------- documents
def _read_text(path: Path) -> str:
    """Whole file as text: gunzipped if gzip, UTF-8 when valid, else ISO-8859-1 (CLEF's usual encoding).

    A UTF-8 byte-order mark is dropped, as :func:`~pyserini_kdspd.io.text_lines` drops it
    (in Latin-1 it would read as the text ``ï»¿`` before the first tag).
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _clean(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", fragment)).split())


@functools.lru_cache(maxsize=8)
def _text_element(tags: tuple[str, ...]) -> re.Pattern:
    """Elements with one of ``tags`` at any depth (a nested one inside another is part of the outer's text)."""
    names = "|".join(re.escape(t) for t in tags)
    return re.compile(rf"<({names})\b[^>]*>(.*?)</\1\s*>", re.S | re.I)


def document_text(body: str, text_tags: Sequence[str] = TEXT_TAGS,
                  metadata_tags: Sequence[str] = METADATA_TAGS) -> str:
    """The text of one ``<DOC>`` body: its text-tag contents in order, else everything but metadata."""
    parts = [m.group(2) for m in _text_element(tuple(text_tags)).finditer(body)]
    if not parts:
        meta = {t.upper() for t in metadata_tags}
        parts = [_ELEMENT.sub(lambda m: " " if m.group(1).upper() in meta else m.group(0), body)]
    return " ".join(filter(None, (_clean(p) for p in parts)))


def iter_documents(path, text_tags: Sequence[str] = TEXT_TAGS) -> Iterator[tuple[str, str]]:
    """``(docno, text)`` for every ``<DOC>`` of a CLEF SGML file (plain or gzipped)."""
    path = Path(path)
    content = _read_text(path)
    n = 0
    for m in _DOC.finditer(content):
        no = _DOCNO.search(m.group(1))
        if not no or not no.group(1):
            raise FormatError(path, content.count("\n", 0, m.start()) + 1, "<DOC> without a <DOCNO>")
        docno = no.group(1).strip()
        if DELIMITER in docno or any(c.isspace() for c in docno):
            raise FormatError(path, content.count("\n", 0, m.start()) + 1,
                              f"DOCNO {docno!r} contains whitespace or the passage delimiter {DELIMITER!r}")
        n += 1
        yield docno, document_text(m.group(1), text_tags)
    if n == 0 and content.strip():
        raise FormatError(path, None, "no <DOC>...</DOC> element: not a CLEF/TREC SGML document file")


def document_files(paths) -> list[Path]:
    """Files under the given files/folders (recursively, sorted; hidden files and README-like files skipped)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                          and not f.name.lower().startswith(("readme", "license", "licence")))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder of CLEF documents")
    if not out:
        raise FileNotFoundError(f"no document files in {', '.join(map(str, paths))}")
    return out


# ---------------------------------------------------------------------- topics
@dataclass(frozen=True)
class ClefTopic:
    qid: str
    title: str
    description: str
    narrative: str

    @property
    def query(self) -> str:
        """Title + description: the paper's query."""
        return " ".join(f"{self.title} {self.description}".split())


def _field(block: str, name: str) -> str:
    m = re.search(rf"<(?:EN|E)-{name}>(.*?)(?=</?(?:[A-Za-z]+-)?(?:title|desc|narr|top|num)\b|$)", block, re.S | re.I)
    return _PREFIX.sub("", _clean(m.group(1))) if m else ""


def read_topics(path) -> dict[str, ClefTopic]:
    """English CLEF topics of one file, by the id in ``<num>`` (e.g. ``C041``)."""
    path = Path(path)
    content = _read_text(path)
    topics: dict[str, ClefTopic] = {}
    for m in _TOP.finditer(content):
        lineno = content.count("\n", 0, m.start()) + 1
        block = m.group(1)
        num = _NUM.search(block)
        if not num:
            raise FormatError(path, lineno, "<top> without <num>")
        qid = num.group(1).strip()
        title, desc = _field(block, "title"), _field(block, "desc")
        if not title:
            raise FormatError(path, lineno, f"topic {qid} has no English title (<EN-title> or <E-title>)")
        if qid in topics:
            raise FormatError(path, lineno, f"duplicate topic {qid}")
        topics[qid] = ClefTopic(qid, title, desc, _field(block, "narr"))
    if not topics:
        raise FormatError(path, None, "no <top>...</top> topic")
    return topics


def topic_number(qid: str) -> int | None:
    """``C041``, ``041``, ``41``, ``10.2452/41-AH`` -> 41 (how CLEF ids differ between topic and qrels files)."""
    m = re.search(r"(\d+)(?:-[A-Za-z]+)?$", qid)
    return int(m.group(1)) if m else None


def read_qrels(paths, topic_ids: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """Merge TREC qrels files; query ids are rewritten to the matching topic id (matched by number)."""
    by_number = {}
    for t in topic_ids or ():
        k = topic_number(t)
        if k in by_number:
            raise ValueError(f"topics {by_number[k]} and {t} have the same number")
        by_number[k] = t
    merged: dict[str, dict[str, int]] = {}
    for path in ([paths] if isinstance(paths, (str, os.PathLike)) else paths):
        for qid, docs in io.read_qrels(path).items():
            key = by_number.get(topic_number(qid), qid) if by_number else qid
            target = merged.setdefault(key, {})
            for d, g in docs.items():
                if d in target and target[d] != g:
                    raise ValueError(f"{path}: ({qid}, {d}) judged {g} here but {target[d]} in another qrels file")
                target[d] = g
    return merged


# ---------------------------------------------------------------------- output
@dataclass(frozen=True)
class ClefPaths:
    """Where :func:`build_clef` wrote the collection, topics and qrels."""

    name: str
    root: Path                  # collections/{name}
    corpus: Path                # collections/{name}/corpus: whole documents (BM25)
    by_lang: dict[str, Path]    # lang -> collections/{name}/by-lang/{lang} (whole documents)
    passages: Path              # collections/{name}/passages: 180/90-token passages (dense)
    topics: Path                # topics/{name}.en.tsv
    qrels: Path                 # qrels/{name}.txt
    stats: Path                 # collections/{name}/stats.json


def output_paths(output_root=".", langs: Sequence[str] = LANGUAGES, name: str = NAME) -> ClefPaths:
    out = Path(output_root)
    root = out / "collections" / name
    return ClefPaths(name, root, root / "corpus", {lg: root / "by-lang" / lg for lg in langs},
                     root / "passages", out / "topics" / f"{name}.en.tsv", out / "qrels" / f"{name}.txt",
                     root / "stats.json")


def build_clef(documents: Mapping[str, object], topics, qrels, output_root=".",
               required_languages: Sequence[str] = REQUIRED_LANGUAGES, tokenizer=DEFAULT_TOKENIZER,
               passage_length: int = PASSAGE_LENGTH, stride: int = STRIDE,
               text_tags: Sequence[str] = TEXT_TAGS, name: str = NAME) -> ClefPaths:
    """Build the CLEF collection from ``{lang: files or folders}`` of SGML documents, topic files and qrels files.

    ``tokenizer`` counts passage tokens: the model that encodes them (an alias, folder or
    Hugging Face id), a ``tokenizer.json``, a fast tokenizer object, or None for whitespace words.
    """
    langs = tuple(documents)
    missing = [lg for lg in required_languages if lg not in langs]
    if missing:
        raise ValueError(f"no documents for required language(s) {missing} (have {list(langs)})")
    tok = load_tokenizer(tokenizer)
    key = build_key(documents, topics, qrels, tok, required_languages, passage_length, stride, text_tags)
    paths = output_paths(output_root, langs, name)
    all_topics = _read_all_topics(topics)
    judged = read_qrels(qrels, all_topics)
    corpus, passages = _write_documents(documents, paths, tok, passage_length, stride, text_tags)
    selection = _select_topics(judged, all_topics, corpus.doc_lang, langs, required_languages)
    order = sorted(selection.qrels, key=lambda q: (topic_number(q) or 0, q))
    io.write_topics(paths.topics, {q: all_topics[q].query for q in order})
    io.write_qrels(paths.qrels, {q: selection.qrels[q] for q in order})

    stats = {
        "name": name, "languages": list(langs), "required_languages": list(required_languages),
        "documents": {lg: corpus.documents[lg] for lg in langs},
        "passages": {lg: passages["passages_by_lang"].get(lg, 0) for lg in langs},
        "document_files": corpus.files, "duplicate_docnos_skipped": {lg: corpus.duplicates[lg] for lg in langs},
        "topics_read": len(all_topics), "topics_judged": len(judged), "topics": len(order),
        "judgments": sum(len(d) for d in selection.qrels.values()), "dropped": dict(selection.dropped),
        "relevant_per_language": {q: selection.relevant_per_lang[q] for q in order},
        "build": key,  # written last: a build whose stats match is complete
    }
    io.write_json(paths.stats, stats)
    log.info("%s: %s documents, %d passages (%s tokens), %d of %d judged topics kept", name,
             ", ".join(f"{lg} {corpus.documents[lg]}" for lg in langs), passages["passages"],
             tok.fingerprint()["name"], len(order), len(judged))
    return paths


def build_key(documents: Mapping[str, object], topics, qrels, tok, required_languages: Sequence[str],
              passage_length: int, stride: int, text_tags: Sequence[str]) -> dict:
    """Everything a build depends on: input files (size, modification time), tokenizer fingerprint, parameters."""

    def files(paths) -> list:
        return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in document_files(paths)]

    return {"documents": {lg: files(documents[lg]) for lg in documents}, "topics": files(topics),
            "qrels": files(qrels), "tokenizer": tok.fingerprint(), "passage_length": passage_length,
            "stride": stride, "passage_delimiter": DELIMITER, "required_languages": list(required_languages),
            "text_tags": list(text_tags)}


def _is_complete(paths: ClefPaths, key: dict) -> bool:
    """True when stats.json records the same build key and every output file is there."""
    try:
        if io.read_json(paths.stats)["build"] != key:
            return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    outputs = [paths.corpus / "corpus.jsonl", paths.passages / "corpus.jsonl", metadata_path(paths.passages),
               paths.topics, paths.qrels] + [p / "corpus.jsonl" for p in paths.by_lang.values()]
    return all(p.is_file() for p in outputs)


def _read_all_topics(topics) -> dict[str, ClefTopic]:
    """The topics of one or several files; a topic id defined twice must be the same topic."""
    all_topics: dict[str, ClefTopic] = {}
    for p in ([topics] if isinstance(topics, (str, os.PathLike)) else topics):
        for qid, t in read_topics(p).items():
            if qid in all_topics and all_topics[qid] != t:
                raise ValueError(f"{p}: topic {qid} differs from an earlier topic file's")
            all_topics[qid] = t
    return all_topics


@dataclass
class _Corpus:
    """What :func:`_write_documents` wrote: each DOCNO's language and counts per language."""

    doc_lang: dict[str, str] = field(default_factory=dict)
    documents: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)
    files: dict[str, int] = field(default_factory=dict)   # lang -> number of document files


def _write_documents(documents: Mapping[str, object], paths: ClefPaths, tok, passage_length: int, stride: int,
                     text_tags: Sequence[str]) -> tuple[_Corpus, dict]:
    """Write every document once to the corpus and its language's corpus, and its passages (one pass over
    the SGML files); a DOCNO seen before is skipped (and counted). Returns the passages' metadata too."""
    corpus = _Corpus()
    with contextlib.ExitStack() as stack:
        fc = stack.enter_context(io.atomic_write(paths.corpus / "corpus.jsonl"))
        fl = {lang: stack.enter_context(io.atomic_write(paths.by_lang[lang] / "corpus.jsonl")) for lang in documents}

        def records() -> Iterator[dict]:
            for lang in documents:
                files = document_files(documents[lang])
                corpus.files[lang] = len(files)
                yield from _tee(_records(lang, files, text_tags, corpus), fc, fl[lang])

        passages = write_passages(records(), paths.passages, tok, passage_length, stride, DELIMITER)
    return corpus, passages


def _tee(records: Iterable[dict], *outs) -> Iterator[dict]:
    """Pass the records on after writing each as a JSON line to every file of ``outs``."""
    for rec in records:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        for out in outs:
            out.write(line)
        yield rec


def _records(lang: str, files: list[Path], text_tags: Sequence[str], corpus: _Corpus) -> Iterator[dict]:
    """The JSON records of one language's documents, first occurrence of each DOCNO only."""
    seen_text: dict[str, int] = {}
    for f in files:
        for docno, text in iter_documents(f, text_tags):
            if docno in corpus.doc_lang:
                corpus.duplicates[lang] += 1
                if corpus.doc_lang[docno] != lang or seen_text.get(docno) != hash(text):
                    log.warning("%s: DOCNO %s seen before with other text or language; keeping the first",
                                f, docno)
                continue
            corpus.doc_lang[docno] = lang
            seen_text[docno] = hash(text)
            corpus.documents[lang] += 1
            yield {"id": docno, "contents": text, "text": text, "lang": lang}


@dataclass
class _Selection:
    qrels: dict[str, dict[str, int]]              # kept topics -> their judgments inside the collection
    dropped: Counter                              # reason -> count
    relevant_per_lang: dict[str, dict[str, int]]  # every judged topic -> relevant documents per language


def _select_topics(judged, all_topics, doc_lang: Mapping[str, str], langs: Sequence[str],
                   required_languages: Sequence[str]) -> _Selection:
    """Topics with relevant documents in every required language; judgments restricted to the collection."""
    out = _Selection({}, Counter(), {})
    for qid, docs in judged.items():
        if qid not in all_topics:
            raise ValueError(f"qrels judge query {qid}, which no topic file defines")
        in_coll = {d: g for d, g in docs.items() if d in doc_lang}
        out.dropped["judgments_outside_collection"] += len(docs) - len(in_coll)
        rel = Counter(doc_lang[d] for d, g in in_coll.items() if g > 0)
        out.relevant_per_lang[qid] = {lg: rel[lg] for lg in langs}
        if all(rel[lg] > 0 for lg in required_languages):
            out.qrels[qid] = dict(sorted(in_coll.items()))
        else:
            out.dropped["topics_without_relevant_in_every_required_language"] += 1
    return out


# ------------------------------------------------------------------------ CLI
def find_inputs(clef_dir, languages: Sequence[str] = LANGUAGES) -> tuple[dict[str, Path], list[Path], list[Path]]:
    """The expected layout of a user's copy: ``{clef_dir}/{lang}/`` documents, ``topics/``, ``qrels/``."""
    root = Path(clef_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"CLEF folder {root} does not exist (the CLEF collections are licensed and "
                                "not shipped: see the clef module's docstring for the expected layout)")
    docs = {lg: root / lg for lg in languages if (root / lg).is_dir()}
    topics = document_files(root / "topics") if (root / "topics").is_dir() else []
    qrels = document_files(root / "qrels") if (root / "qrels").is_dir() else []
    if len(docs) < len(languages) or not topics or not qrels:
        raise FileNotFoundError(f"{root}: expected {{{','.join(languages)}}}/ (SGML documents), topics/ and qrels/ "
                                f"sub-folders; found documents for {sorted(docs)}, {len(topics)} topic files, "
                                f"{len(qrels)} qrels files")
    return docs, topics, qrels


def _register_args(parser) -> None:
    parser.add_argument("--clef-dir", default=None,
                        help="your CLEF 2000-2003 copy: {de,fr,it}/ documents (fi/ for zero-shot), topics/, qrels/")
    parser.add_argument("--docs", nargs="+", default=None, metavar="LANG=PATH",
                        help="documents per language instead of --clef-dir's folders (repeatable pairs)")
    parser.add_argument("--topics", nargs="+", default=None, help="topic files (instead of --clef-dir/topics)")
    parser.add_argument("--qrels", nargs="+", default=None, help="qrels files (instead of --clef-dir/qrels)")
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES),
                        help="languages to take from --clef-dir (default: de fr it, Table 2's; add fi for the "
                             "zero-shot collection)")
    parser.add_argument("--required-languages", nargs="+", default=list(REQUIRED_LANGUAGES),
                        help="keep topics with relevant documents in all of these (default: de fr it)")
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                        help="what counts passage tokens: the encoding model (alias, folder or HF id) or a "
                             f"tokenizer.json; 'whitespace' for words (default: {DEFAULT_TOKENIZER}, the student's "
                             "backbone)")
    parser.add_argument("--passage-length", type=int, default=PASSAGE_LENGTH)
    parser.add_argument("--stride", type=int, default=STRIDE)


@register(NAME, help="CLEF 2000-2003 de/fr/it news (fi for zero-shot), English topics C001-C200 (your licensed "
                     "copy: --clef-dir)", add_arguments=_register_args)
def prepare_clef(data_dir=None, output_root=".", force: bool = False, clef_dir=None, docs=None, topics=None,
                 qrels=None, languages: Sequence[str] = LANGUAGES,
                 required_languages: Sequence[str] = REQUIRED_LANGUAGES, tokenizer=DEFAULT_TOKENIZER,
                 passage_length: int = PASSAGE_LENGTH, stride: int = STRIDE) -> ClefPaths:
    """Build the CLEF collection from the user's copy (never shipped: CLEF is licensed); a complete build
    from the same inputs, tokenizer and parameters is reused unless ``force``."""
    documents, topic_files, qrels_files = {}, list(topics or []), list(qrels or [])
    if clef_dir is not None:
        d, t, q = find_inputs(clef_dir, languages)
        documents.update(d)
        topic_files = topic_files or t
        qrels_files = qrels_files or q
    for pair in docs or []:
        lang, sep, path = pair.partition("=")
        if not sep or not lang or not path:
            raise ValueError(f"--docs expects LANG=PATH, got {pair!r}")
        documents[lang] = Path(path)
    if not documents or not topic_files or not qrels_files:
        raise FileNotFoundError("CLEF needs --clef-dir (or --docs LANG=PATH ... --topics ... --qrels ...): "
                                "the CLEF 2000-2003 collections are licensed and not included")
    tok = load_tokenizer(tokenizer)
    paths = output_paths(output_root, tuple(documents))
    key = build_key(documents, topic_files, qrels_files, tok, required_languages, passage_length, stride, TEXT_TAGS)
    if not force and _is_complete(paths, key):
        log.info("%s is complete (see %s); pass --force to rebuild", paths.root, paths.stats)
        return paths
    return build_clef(documents, topic_files, qrels_files, output_root=output_root,
                      required_languages=required_languages, tokenizer=tok,
                      passage_length=passage_length, stride=stride)
