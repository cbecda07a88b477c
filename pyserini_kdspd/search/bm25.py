"""BM25 over one language's sub-collection, with that language's Lucene analyzer.

Indexing runs Anserini's IndexCollection, as ``python -m pyserini.index.lucene`` does
but in this JVM (so the index is an ordinary Anserini index), with ``--language xx`` when Anserini
maps the language to its Lucene analyzer, and with ``--pretokenized`` over text
we analysed ourselves when it does not (Greek, Vietnamese: see ``analyzers``).
Queries are always analysed here with the same analyzer and searched as
pre-analysed terms, so plain and weighted (SMT) queries share one term space.

    python -m pyserini_kdspd.search.bm25 index --corpus collections/lareqa/by-lang/el \
        --index indexes/lareqa.el --language el
    python -m pyserini_kdspd.search.bm25 search --index indexes/lareqa.el --language el \
        --topics topics/lareqa.en.tsv --translation smt --output runs/bm25-smt.el.txt
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Union

from ..io import (FormatError, Run, check_collection, collection_files, newer, read_jsonl, read_topics,
                  write_jsonl, write_run)
from .analyzers import analyze, spec, whitespace_analyzer

log = logging.getLogger(__name__)

# A query is text (analysed with the language's analyzer) or a weighted bag of
# already-analysed index terms {term: weight}, as produced by the SMT translator.
Query = Union[str, Mapping[str, float]]
META = "pyserini_kdspd.json"  # written beside the Lucene files: which analysis the index used
K1, B = 0.9, 0.4  # Anserini's BM25 defaults


def _pretokenize(corpus_dir: Path, out_dir: Path, lang: str) -> tuple[int, list[str]]:
    """Write a copy of the collection whose ``contents`` are the analysed terms (original kept in ``text``).

    Returns the number of records and the ids of those left with no term (Anserini skips them as empty).
    """
    n, empty = 0, []
    for f in collection_files(corpus_dir):
        recs = []
        for i, rec in enumerate(read_jsonl(f), 1):
            if "id" not in rec or not isinstance(rec.get("contents"), str):
                raise FormatError(f, None, f"record {i} has no 'id' or no string 'contents'")
            out = dict(rec)
            out.setdefault("text", rec["contents"])
            out["contents"] = " ".join(analyze(rec["contents"], lang))
            if not out["contents"]:
                empty.append(str(rec["id"]))
            recs.append(out)
        n += write_jsonl(out_dir / (f.stem + ".jsonl"), recs)
    return n, empty


def index_current(index_dir, corpus_dir, lang: str) -> bool:
    """True when ``index_dir`` is a finished index of ``corpus_dir`` in ``lang``, newer than every corpus file.

    The metadata file is written last, so its presence means Anserini finished."""
    meta_file = Path(index_dir) / META
    if not meta_file.is_file():
        return False
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return (meta.get("lang") == lang and meta.get("analyzer") == spec(lang).java
            and all(newer(meta_file, f) for f in collection_files(corpus_dir)))


def build_index(corpus_dir, index_dir, lang: str, threads: int = 2, overwrite: bool = False,
                reuse: bool = False) -> Path:
    """Index a JsonCollection folder (records ``{"id", "contents", ...}``) for BM25 in ``lang``.

    ``reuse`` returns a current index (see :func:`index_current`) untouched and rebuilds anything else;
    ``overwrite`` rebuilds unconditionally; with neither, an existing non-empty folder is an error."""
    corpus_dir, index_dir = Path(corpus_dir), Path(index_dir)
    s = spec(lang)
    if not corpus_dir.exists():
        raise FileNotFoundError(f"{corpus_dir}: no such collection")
    files = collection_files(corpus_dir)
    if reuse and not overwrite:
        if index_current(index_dir, corpus_dir, lang):
            log.info("reusing %s", index_dir)
            return index_dir
        overwrite = True  # stale or unfinished: rebuild
    check_collection(corpus_dir)  # before an existing index is removed: Anserini would index it regardless
    if index_dir.exists():
        if not overwrite and any(index_dir.iterdir()):
            raise FileExistsError(f"{index_dir} exists and is not empty (pass overwrite=True / --overwrite)")
        shutil.rmtree(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    import pyserini.index.lucene  # noqa: F401  (Pyserini's own class set-up before we touch Anserini)

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="kdspd-pretok-") as tmp:
        if s.pretokenized:
            n, empty = _pretokenize(corpus_dir, Path(tmp), lang)
            src, lang_args = Path(tmp), ["-pretokenized"]
        else:
            recs = [r for f in files for r in read_jsonl(f)]
            n, empty = len(recs), [str(r.get("id")) for r in recs if not str(r.get("contents", "")).strip()]
            if corpus_dir.is_file():  # the indexer wants a folder
                os.symlink(corpus_dir.resolve(), Path(tmp) / corpus_dir.name)
                src = Path(tmp)
            else:
                src = corpus_dir
            lang_args = ["-language", lang]
        _index_collection(["-collection", "JsonCollection", "-input", str(src), "-index", str(index_dir),
                           "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
                           "-storePositions", "-storeDocvectors", "-storeRaw", "-quiet", *lang_args])
    indexed = _num_docs(index_dir)
    if indexed != n - len(empty):
        raise RuntimeError(f"{corpus_dir}: {n} records ({len(empty)} without terms) but {indexed} documents "
                           f"indexed (see Anserini's log)")
    if empty:  # nothing can retrieve them anyway; say so rather than hide it
        log.warning("%s: %d of %d documents have no %s terms and are not indexed: %s", corpus_dir, len(empty), n,
                    lang, ", ".join(empty[:10]))
    meta = {"lang": lang, "analyzer": s.java, "pretokenized": s.pretokenized, "documents": indexed,
            "records": n, "without_terms": empty, "corpus": str(corpus_dir)}
    (index_dir / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log.info("indexed %d %s documents in %.1fs (%s)", n, lang, time.time() - t0, s.java)
    return index_dir


def _index_collection(args: list[str]) -> None:
    """Anserini's IndexCollection in this JVM (what ``python -m pyserini.index.lucene`` runs, minus a JVM start
    and minus its ``System.exit`` on bad arguments)."""
    from jnius import JavaException
    from pyserini.pyclass import autoclass

    jargs = autoclass("io.anserini.index.IndexCollection$Args")()
    jlist = autoclass("java.util.ArrayList")()
    for a in args:
        jlist.add(a)
    try:
        autoclass("org.kohsuke.args4j.CmdLineParser")(jargs).parseArgument(jlist)
        autoclass("io.anserini.index.IndexCollection")(jargs).run()
    except JavaException as e:
        raise RuntimeError(f"Anserini IndexCollection {' '.join(args)} failed: {e}") from None


def _num_docs(index_dir: Path) -> int:
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(index_dir))
    try:
        return int(reader.stats()["documents"])
    finally:
        reader.close() if hasattr(reader, "close") else None


def index_language(index_dir) -> str | None:
    """The language :func:`build_index` recorded in the index (None for an index made otherwise)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise FileNotFoundError(f"{index_dir}: no such index")
    meta = index_dir / META
    if meta.is_file():
        return json.loads(meta.read_text(encoding="utf-8")).get("lang")
    return None


def weighted_query(terms: Mapping[str, float], field: str = "contents"):
    """One Lucene BooleanQuery: a SHOULD clause per (already analysed) term, boosted by its weight.

    BM25 then scores sum_t w_t * bm25(t, d), the Lucene counterpart of Galago's
    ``#combine:w1:..(t1 ..)`` over translation alternatives.
    """
    from pyserini.search.lucene.querybuilder import (JBooleanClauseOccur, JTerm, JTermQuery,
                                                      get_boolean_query_builder, get_boost_query)

    # Terms are already analysed, so we make TermQuery objects directly: querybuilder.get_term_query would
    # re-analyse each term through jnius (tens of ms per term), with the same result under a whitespace analyzer.
    builder = get_boolean_query_builder()
    should = JBooleanClauseOccur.should.value
    n = 0
    for term, w in terms.items():
        if not isinstance(term, str) or not term or any(c.isspace() for c in term):
            raise ValueError(f"query term {term!r} must be one analysed, non-empty token without spaces")
        w = float(w)
        if not w > 0:
            if w == 0:
                continue
            raise ValueError(f"query term {term!r} has weight {w}; weights must be positive")
        builder.add(get_boost_query(JTermQuery(JTerm(field, term)), w), should)
        n += 1
    return builder.build() if n else None


def analyze_query(query: Query, lang: str) -> dict[str, float]:
    """A text query becomes a bag of analysed terms weighted by their count (as Anserini's BagOfWords)."""
    if isinstance(query, str):
        bag: dict[str, float] = {}
        for t in analyze(query, lang):
            bag[t] = bag.get(t, 0.0) + 1.0
        return bag
    if isinstance(query, Mapping):
        return {str(t): float(w) for t, w in query.items()}
    raise TypeError(f"a query must be a string or a dict term -> weight, got {type(query).__name__}")


def search(index_dir, queries: Mapping[str, Query], lang: str | None = None, k: int = 100,
           k1: float = K1, b: float = B, threads: int = 2) -> Run:
    """BM25 top-``k`` per query. Text queries are searched in batch (Anserini threads); weighted ones one by one.

    ``lang`` defaults to the language recorded at indexing time; a mismatch is an
    error, since analysing queries differently from documents silently ruins recall.
    """
    from pyserini.search.lucene import LuceneSearcher

    index_dir = Path(index_dir)
    recorded = index_language(index_dir)
    if lang is None:
        if recorded is None:
            raise ValueError(f"{index_dir} was not built by build_index: pass the language it was indexed with")
        lang = recorded
    elif recorded is not None and recorded != lang:
        raise ValueError(f"{index_dir} was indexed with the {recorded!r} analyzer, not {lang!r}")
    spec(lang)
    searcher = LuceneSearcher(str(index_dir))
    searcher.set_bm25(float(k1), float(b))
    searcher.set_analyzer(whitespace_analyzer())  # queries arrive analysed
    run: Run = {qid: {} for qid in queries}
    texts, qids = [], []
    for qid, q in queries.items():
        bag = analyze_query(q, lang)
        if not bag:
            log.warning("query %s has no terms after %s analysis: empty ranking", qid, lang)
            continue
        if isinstance(q, str) and all(float(w).is_integer() for w in bag.values()):
            # Repeating a term reproduces its count as Anserini's bag-of-words boost.
            texts.append(" ".join(t for t, w in bag.items() for _ in range(int(w))))
            qids.append(str(qid))
        else:
            jq = weighted_query(bag)
            if jq is not None:
                run[qid] = {h.docid: float(h.score) for h in searcher.search(jq, k=k)}
    if texts:
        for qid, hits in searcher.batch_search(texts, qids, k=k, threads=threads).items():
            run[qid] = {h.docid: float(h.score) for h in hits}
    searcher.close()
    return run


# ------------------------------------------------------------------------ CLI
def _translate(args, topics: dict[str, str], lang: str) -> dict[str, Query]:
    mode = args.translation
    if mode == "none" or lang == args.source_language:
        return dict(topics)
    if mode == "smt":
        from .translate.smt import SMTTranslator

        tr = SMTTranslator.for_language(lang, source_lang=args.source_language, model_dir=args.smt_dir,
                                        bitext_dir=args.bitext_dir, max_pairs=args.smt_max_pairs,
                                        aligner=args.smt_aligner)
        return tr.translate_topics(topics, lang)
    from .translate.nmt import FileTranslator, HFTranslator, HumanTranslator

    if mode == "human":
        pattern = args.translation_file or _sibling_topics(args.topics, args.source_language)
        tr = HumanTranslator(pattern, source_topics=topics)
    elif mode == "file":
        if not args.translation_file:
            raise ValueError("--translation file needs --translation-file (TSV qid<TAB>lang<TAB>text, "
                             "or a topics path with {lang})")
        tr = FileTranslator(args.translation_file, source_topics=topics)
    elif mode == "nmt":
        tr = HFTranslator(args.nmt_model)
    else:  # argparse restricts choices
        raise ValueError(mode)
    from .translate import translate_topics

    return translate_topics(tr, topics, lang)


def _sibling_topics(topics_path: str, source_lang: str) -> str:
    p = Path(topics_path)
    marker = f".{source_lang}."
    if marker not in p.name:
        raise ValueError(f"cannot derive per-language topics from {p.name} (no {marker!r}); pass --translation-file")
    return str(p.with_name(p.name.replace(marker, ".{lang}.")))


def main(argv=None) -> int:
    from .translate.smt import ALIGNERS, DEFAULT_ALIGNER

    ap = argparse.ArgumentParser(prog="python -m pyserini_kdspd.search.bm25", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ix = sub.add_parser("index", help="build a BM25 index of one language's JsonCollection")
    ix.add_argument("--corpus", required=True)
    ix.add_argument("--index", required=True)
    ix.add_argument("--language", required=True)
    ix.add_argument("--threads", type=int, default=2)
    ix.add_argument("--overwrite", action="store_true")
    se = sub.add_parser("search", help="BM25 search with (translated) topics; writes a TREC run")
    se.add_argument("--index", required=True)
    se.add_argument("--topics", required=True, help="TSV qid<TAB>text in the source language")
    se.add_argument("--language", help="language of the index (default: recorded at indexing)")
    se.add_argument("--output", required=True)
    se.add_argument("--hits", type=int, default=100)
    se.add_argument("--k1", type=float, default=K1)
    se.add_argument("--b", type=float, default=B)
    se.add_argument("--threads", type=int, default=2)
    se.add_argument("--translation", choices=["none", "smt", "human", "file", "nmt"], default="none",
                    help="how the topics reach the index language (human = reference translations: an upper "
                         "bound for MT, not NMT)")
    se.add_argument("--translation-file", help="file/human: TSV qid<TAB>lang<TAB>text or a topics path with {lang}")
    se.add_argument("--source-language", default="en")
    se.add_argument("--smt-dir", default="models/smt")
    se.add_argument("--bitext-dir", help="folder of en-XX.tsv (default: <data>/bitext)")
    se.add_argument("--smt-max-pairs", type=int, default=None)
    se.add_argument("--smt-aligner", choices=ALIGNERS, default=DEFAULT_ALIGNER,
                    help="word aligner of tables trained here (a table another one made is trained again)")
    se.add_argument("--nmt-model", default=None, help="Hugging Face model id (default: NLLB-200 distilled 600M)")
    se.add_argument("--tag", default=None)
    args = ap.parse_args(argv)
    from .._cli import configure_logging, run_cli

    configure_logging()
    return run_cli(lambda: _main(args))


def _main(args) -> None:
    """Build the index or search it, as ``args.cmd`` says."""
    if args.cmd == "index":
        build_index(args.corpus, args.index, args.language, threads=args.threads, overwrite=args.overwrite)
        return
    recorded = index_language(args.index)  # a missing index fails here, before any translation
    lang = args.language or recorded
    if lang is None:
        raise ValueError(f"{args.index} records no language: pass --language")
    topics = read_topics(args.topics)
    queries = _translate(args, topics, lang)
    t0 = time.time()
    run = search(args.index, queries, lang, k=args.hits, k1=args.k1, b=args.b, threads=args.threads)
    write_run(args.output, run, tag=args.tag or f"bm25-{args.translation}-{lang}", depth=args.hits)
    log.info("%d queries searched in %.1fs -> %s", len(run), time.time() - t0, args.output)


if __name__ == "__main__":
    sys.exit(main())
