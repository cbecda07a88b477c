"""``python -m pyserini_kdspd.index``: encoded documents to Parquet / Anserini JSON vectors / Lucene indexes,
and ``... index search``: KD-SPD (or any Pyserini dense model's) queries against those Lucene indexes.

    python -m pyserini_kdspd.index --faiss-index indexes/lareqa/kdspd --corpus collections/lareqa/corpus \\
        --parquet indexes/lareqa/kdspd.parquet --lucene-flat indexes/lareqa/kdspd.lucene-flat \\
        --lucene-hnsw indexes/lareqa/kdspd.lucene-hnsw --M 16 --efC 100
    python -m pyserini_kdspd.index search --index indexes/lareqa/kdspd.lucene-hnsw --encoder models/kdspd \\
        --topics topics/lareqa.en.tsv --output runs/lareqa/kdspd.lucene-hnsw.txt --hits 100 --ef-search 100
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from .._cli import POSITIVE_INT, configure_logging, output_file, run_cli

log = logging.getLogger("pyserini_kdspd.index")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.index",
                                description="Write encoded documents as Parquet / Anserini JSON vectors and build "
                                            "Lucene flat / HNSW indexes with Anserini. `python -m "
                                            "pyserini_kdspd.index search --help`: search those indexes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--faiss-index", type=Path, metavar="DIR",
                     help="a Pyserini FAISS folder (index + docid), e.g. from pyserini.encode --to-faiss")
    src.add_argument("--vectors", type=Path, metavar="PATH",
                     help="vector Parquet (a file or a folder of parts) or JSON vector lines (Pyserini's `id` or "
                          "Anserini's `docid`, with `vector`)")
    p.add_argument("--corpus", type=Path, help="the JsonCollection the vectors were encoded from: each "
                                               "document's `lang` goes into the Parquet")
    p.add_argument("--parquet", type=Path, metavar="OUT",
                   help="write Parquet (docid, vector, lang): OUT.parquet one file, otherwise a folder of parts")
    p.add_argument("--json-vectors", type=Path, metavar="OUT",
                   help="write a folder of Anserini JsonDenseVectorCollection files (docid, vector)")
    p.add_argument("--lucene-flat", type=Path, metavar="OUT", help="build a Lucene flat dense index (Anserini)")
    p.add_argument("--lucene-hnsw", type=Path, metavar="OUT", help="build a Lucene HNSW dense index (Anserini)")
    p.add_argument("--M", type=POSITIVE_INT, default=16, help="HNSW graph degree (default 16)")
    p.add_argument("--efC", type=POSITIVE_INT, default=100, help="HNSW construction beam (default 100)")
    p.add_argument("--optimize", action="store_true", help="merge each Lucene index into one segment")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="Anserini indexing threads (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    return p


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.index search",
                                description="A TREC run of a dense model's queries against a Lucene index built by "
                                            "`python -m pyserini_kdspd.index`, scored by inner product as FAISS is.")
    p.add_argument("--index", type=Path, required=True, help="a Lucene flat or HNSW index made by this command")
    p.add_argument("--encoder", required=True,
                   help="the query side: a KD-SPD folder (its query_encoder/; `kdspd`: the default folder or "
                        "$PYSERINI_KDSPD_MODEL), a packaged alias or a HF model")
    p.add_argument("--topics", type=Path, required=True, help="TSV topics (qid<TAB>text)")
    p.add_argument("--output", type=output_file, required=True, help="the TREC run to write")
    p.add_argument("--hits", type=POSITIVE_INT, default=100)
    p.add_argument("--ef-search", type=POSITIVE_INT, default=None,
                   help="HNSW search beam (default 100; at least --hits)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="search threads (default 1)")
    p.add_argument("--force", action="store_true", help="search again even when the run is newer than the index")
    return p


def _build(args) -> int:
    from . import lucene
    from .vectors import _is_json, read_faiss, read_vectors, with_langs, write_json_vectors, write_parquet

    outputs = [args.parquet, args.json_vectors, args.lucene_flat, args.lucene_hnsw]
    if not any(outputs):
        raise ValueError("nothing to write: give --parquet, --json-vectors, --lucene-flat and/or --lucene-hnsw")
    for out in filter(None, outputs):  # checked before any work
        if out.exists() and not args.overwrite:
            raise ValueError(f"{out} exists (pass --overwrite)")
    builds = [(kind, out) for kind, out in (("flat", args.lucene_flat), ("hnsw", args.lucene_hnsw)) if out]
    # Anserini reads Parquet itself (ParquetDenseVectorCollection): the one written here, or the one given.
    parquet = args.parquet or (args.vectors if args.vectors and not _is_json(args.vectors) else None)
    vectors = None
    if args.faiss_index or args.parquet or args.json_vectors or (builds and parquet is None):
        vectors = read_faiss(args.faiss_index) if args.faiss_index else read_vectors(args.vectors)
        if args.corpus:
            vectors = with_langs(vectors, args.corpus)
        log.info("%d vectors of dimension %d from %s", len(vectors), vectors.dim, vectors.source)
    if args.parquet:
        print(f"parquet: {write_parquet(vectors, args.parquet, overwrite=args.overwrite)}")
    if args.json_vectors:
        print(f"json vectors: {write_json_vectors(vectors, args.json_vectors, overwrite=args.overwrite)}")
    with tempfile.TemporaryDirectory(prefix="kdspd-parquet-") as tmp:
        for kind, out in builds:
            if parquet is None:
                parquet = write_parquet(vectors, Path(tmp) / "vectors.parquet")
            lucene.build(parquet, out, kind=kind, M=args.M, efC=args.efC, threads=args.threads,
                         optimize=args.optimize, overwrite=args.overwrite)
            print(f"lucene {kind}: {out} ({lucene.index_meta(out)['documents']} documents)")
    return 0


def _search(args) -> int:
    from ..encoders import resolve_kdspd_model
    from ..search.dense import DenseModel, search_lucene

    # a bare `kdspd` means what it means to the stock CLIs: the default folder or $PYSERINI_KDSPD_MODEL
    name = str(resolve_kdspd_model(args.encoder)) if args.encoder.strip().lower() == "kdspd" else args.encoder
    model = DenseModel.from_name("query", name)
    out = search_lucene(model, args.index, args.topics, args.output, hits=args.hits, ef_search=args.ef_search,
                        threads=args.threads, force=args.force)
    print(out)
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    if argv[:1] == ["search"]:
        args = search_parser().parse_args(argv[1:])
        return run_cli(lambda: _search(args))
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _build(args))


if __name__ == "__main__":
    sys.exit(main())
