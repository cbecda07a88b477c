"""FAISS flat against Anserini's Lucene flat and HNSW indexes of the same vectors, as one Markdown table.

    python benchmarks/lucene_dense.py        # the driver's LAReQA KD-SPD index, models/kdspd, LAReQA topics/qrels
    python benchmarks/lucene_dense.py --faiss-index DIR --encoder MODEL --topics T.tsv --qrels Q.txt --ef 100 200

Per index: build time (FAISS: the flat index from the vectors in memory; Lucene: Anserini reading the Parquet),
size on disk, single-query latency p50 / p95 (one thread, the query vector given, after one untimed warm-up
pass over all queries: search only, no query encoding), MAP and R@100 of the run at depth ``--hits``. The queries
are encoded once by the model's query encoder (``search.dense.query_vectors``). Lucene's latency includes
Pyserini's call into Java and Anserini's parsing of the query vector from JSON. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2 ** 20


def _percentiles(ms: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(ms, n=20, method="inclusive")
    return statistics.median(ms), q[18]


def _timed(search, queries: dict, hits: int) -> tuple[dict, list[float]]:
    for v in queries.values():  # warm-up: JIT, page cache
        search(v, hits)
    run, ms = {}, []
    for qid, v in queries.items():
        t0 = time.perf_counter()
        run[qid] = search(v, hits)
        ms.append((time.perf_counter() - t0) * 1e3)
    return run, ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faiss-index", type=Path, default=ROOT / "indexes" / "lareqa" / "kdspd")
    p.add_argument("--encoder", default=str(ROOT / "models" / "kdspd"), help="the model whose queries are searched")
    p.add_argument("--topics", type=Path, default=ROOT / "topics" / "lareqa.en.tsv")
    p.add_argument("--qrels", type=Path, default=ROOT / "qrels" / "lareqa.txt")
    p.add_argument("--hits", type=int, default=100)
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--efC", type=int, default=100)
    p.add_argument("--ef", type=int, nargs="+", default=[100, 200], help="HNSW search beams (each >= --hits)")
    p.add_argument("--threads", type=int, default=1, help="FAISS and Anserini threads (default 1)")
    p.add_argument("--work", type=Path, default=None, help="where to build the Lucene indexes (default: a temp dir)")
    args = p.parse_args(argv)
    if not (args.faiss_index / "index").is_file():
        p.error(f"{args.faiss_index}: no FAISS index (run bash scripts/reproduce_table2.sh, or give --faiss-index)")
    if min(args.ef) < args.hits:
        p.error("every --ef must be at least --hits")

    import faiss
    from pyserini.search.faiss import FaissSearcher

    from pyserini_kdspd.evaluate import evaluate
    from pyserini_kdspd.index import lucene
    from pyserini_kdspd.index.vectors import read_faiss, write_parquet
    from pyserini_kdspd.search.dense import DenseModel, query_vectors

    faiss.omp_set_num_threads(args.threads)
    vectors = read_faiss(args.faiss_index)
    queries = query_vectors(DenseModel.from_name("query", args.encoder), args.topics)
    rows = []

    def row(name, build_s, size, run, ms):
        e = evaluate(run, args.qrels, depth=args.hits)
        p50, p95 = _percentiles(ms)
        rows.append((name, build_s, size, p50, p95, e["map"], e["recall_100"]))

    with tempfile.TemporaryDirectory(prefix="kdspd-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        flat = faiss.IndexFlatIP(vectors.dim)
        flat.add(vectors.vectors)
        faiss.write_index(flat, str(work / "faiss.index"))
        faiss_build = time.perf_counter() - t0
        searcher = FaissSearcher(str(args.faiss_index), None)

        def faiss_search(v, k):
            return {h.docid: float(h.score) for h in searcher.search(v[None], k, threads=args.threads)}

        run, ms = _timed(faiss_search, queries, args.hits)
        row("FAISS flat (IP)", faiss_build, _size_mb(args.faiss_index / "index") + _size_mb(args.faiss_index / "docid"),
            run, ms)

        t0 = time.perf_counter()
        parquet = write_parquet(vectors, work / "vectors.parquet", overwrite=True)
        parquet_s, parquet_mb = time.perf_counter() - t0, _size_mb(parquet)
        builds = {"flat": lucene.build(parquet, work / "lucene-flat", kind="flat", threads=args.threads,
                                       overwrite=True),
                  "hnsw": lucene.build(parquet, work / "lucene-hnsw", kind="hnsw", M=args.M, efC=args.efC,
                                       threads=args.threads, overwrite=True)}
        for kind, efs in (("flat", [None]), ("hnsw", args.ef)):
            meta = lucene.index_meta(builds[kind])
            for ef in efs:
                s = lucene.searcher(builds[kind], ef_search=ef)

                def lucene_search(v, k, s=s):
                    return {h.docid: lucene.to_inner_product(h.score) for h in s.search(lucene.query_string(v), k)}

                run, ms = _timed(lucene_search, queries, args.hits)
                s.close()
                name = "Lucene flat" if kind == "flat" else f"Lucene HNSW (M={args.M}, efC={args.efC}, ef={ef})"
                row(name, meta["build_seconds"], _size_mb(builds[kind]), run, ms)

    base = rows[0][5]
    print(f"{len(vectors)} vectors (d={vectors.dim}) from {args.faiss_index}; {len(queries)} queries, depth "
          f"{args.hits}, {args.threads} thread(s); Parquet written in {parquet_s:.2f} s ({parquet_mb:.1f} MB)\n")
    print("| index | build (s) | size (MB) | query p50 (ms) | query p95 (ms) | MAP | R@100 | MAP - FAISS flat |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, b, size, p50, p95, m, r in rows:
        print(f"| {name} | {b:.2f} | {size:.1f} | {p50:.2f} | {p95:.2f} | {m:.4f} | {r:.4f} | {m - base:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
