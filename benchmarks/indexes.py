"""Every index over the same dense vectors, in one Markdown table: FAISS flat, HNSW and PQ built by stock
``python -m pyserini.index.faiss``, IVF-Flat and IVF-PQ (which Pyserini does not build) and Lucene flat and HNSW
built by Anserini, each searched through Pyserini's own searchers.

    python benchmarks/indexes.py                  # the driver's LAReQA KD-SPD index, models/kdspd, LAReQA en topics/qrels
    python benchmarks/indexes.py --synthetic 1000000 --hnsw 32,100 --build-threads 2 --queries 300   # 1M vectors (see below)
    python benchmarks/indexes.py --readme         # run nothing: README block <!-- index-variants --> from the tables

Collections. Default: the vectors of a Pyserini FAISS flat folder (``--faiss-index``), judged by ``--qrels``.
``--synthetic N``: N vectors made from those: the real ones, then noisy copies (copy k of real vector i % n is
``v_i + sigma * g``, g standard normal, seeded; renormalised when the real vectors are unit length, as Lucene's
DOT_PRODUCT needs). ``--noise auto`` sets sigma so that the noise moves a copy (``sigma * sqrt(d)``) as far as
the median real vector lies from its nearest real neighbour: the exact top 100 of a query then mixes copies of
several real documents, as a bigger collection of similar texts would. Much smaller noise makes clusters of
near-duplicates (the top 100 is one or two clusters, ties decide it); much larger makes isotropic noise dominate
and, in hundreds of dimensions, every distance alike. Same queries; no qrels there, so the synthetic table gives
each index's recall of the exact top 100 (FAISS flat's run) instead of MAP.

Indexes. FAISS flat / HNSW / PQ / HNSW-PQ: ``python -m pyserini.index.faiss --input FLAT`` with its flags, its
defaults unless given (``--M 256 --efC 256``, ``--pq-m 192 --pq-nbits 8``; ``--dim`` and ``--threads`` are always
passed: its defaults, 768 and 12, fit no 384-d model on 2 cores). IVF-Flat / IVF-PQ: ``faiss.index_factory``
("IVF{nlist},Flat", "IVF{nlist},PQ{pq_m}", inner product; k-means on at most 64 vectors per list, FAISS's seed),
saved in Pyserini's folder layout (``index`` + ``docid``) with its first ``--nprobe`` stored in the index, so
stock ``pyserini.search.faiss`` reads and searches it as it is. Every FAISS index is built in a fresh
interpreter from the flat folder: build time is that process's wall time (start-up and reading the flat
index included: the flat row shows that fixed cost), with its CPU time (user + system, which a busy machine
does not inflate) and peak RSS. Lucene flat / HNSW: Anserini in this process's JVM from Parquet
(``pyserini_kdspd.index.lucene``), Anserini's own indexing time; CPU and peak RSS not separable from this process.

Per row: size on disk (index files + docid), single-query latency p50 / p95 (``--threads``, default one thread,
the query vector given: search only, after one untimed warm-up pass over all queries), MAP and R@100 at depth
``--hits`` and their difference to FAISS flat, and recall of FAISS flat's top 100. HNSW rows repeat per ``--ef``,
IVF rows per ``--nprobe``. The queries are encoded once by the model's query encoder (``search.dense.query_vectors``).
The table, with the command, CPU and date, is written to ``--output`` (default under runs/benchmarks/).
Nothing here is a test: the figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pyserini_kdspd._cli import NONNEGATIVE, POSITIVE_INT, configure_logging, output_file, rewrite_readme_block  # noqa: E402

VARIANTS = ("flat", "hnsw", "pq", "hnsw-pq", "ivf-flat", "ivf-pq", "lucene-flat", "lucene-hnsw")
DEFAULT_VARIANTS = ("flat", "hnsw", "pq", "ivf-flat", "ivf-pq", "lucene-flat", "lucene-hnsw")
STOCK_M, STOCK_EFC, STOCK_PQ_M, STOCK_PQ_NBITS = 256, 256, 192, 8  # pyserini.index.faiss's defaults
POINTS_PER_LIST = 64  # IVF k-means sample: FAISS's own default is 256 per list (all of 1M vectors at nlist 4000)
MARKER = "index-variants"
TABLES = ROOT / "runs" / "benchmarks"


# ------------------------------------------------------------------ collections
def noise_scale(vectors: np.ndarray) -> float:
    """Per-dimension sigma whose displacement ``sigma * sqrt(d)`` equals the median distance of a vector to its
    nearest other vector (exact duplicates, at distance 0, are skipped)."""
    import faiss

    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    dist, _ = index.search(vectors, 2)
    nearest = np.sqrt(np.maximum(dist[:, 1], 0))
    nearest = nearest[nearest > 1e-6]
    if not len(nearest):
        raise ValueError("every vector is a duplicate of another: no scale to derive the noise from; give --noise")
    return float(np.median(nearest) / math.sqrt(vectors.shape[1]))


def is_unit(vectors) -> bool:
    """Unit length within Lucene's tolerance (``index.lucene.UNIT_TOLERANCE``)."""
    from pyserini_kdspd.index.lucene import UNIT_TOLERANCE

    return bool(np.abs(vectors.norms() - 1).max() <= UNIT_TOLERANCE)


def synthetic_vectors(base, n: int, sigma: float, seed: int = 0, block: int = 65_536):
    """``n`` vectors: ``base``'s own (docids unchanged), then noisy copies ``<docid>~<k>`` (copy k of base row
    ``i % len(base)``: that row plus ``sigma`` x standard normal noise, seeded), renormalised when ``base`` is
    unit length. Made block by block in float32, so 1M x 384 needs the 1.5 GB of the result only."""
    from pyserini_kdspd.index.vectors import Vectors

    if n < len(base):
        raise ValueError(f"--synthetic {n} is smaller than the {len(base)} real vectors it is made from")
    unit = is_unit(base)
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.dim), dtype=np.float32)
    out[:len(base)] = base.vectors
    for start in range(len(base), n, block):
        rows = np.arange(start, min(start + block, n))
        x = base.vectors[rows % len(base)] + sigma * rng.standard_normal((len(rows), base.dim), dtype=np.float32)
        if unit:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[rows] = x
    docids = base.docids + [f"{base.docids[i % len(base)]}~{i // len(base)}" for i in range(len(base), n)]
    return Vectors(docids, out, source=f"{n} synthetic vectors from {base.source}")


def write_flat_folder(vectors, out: Path) -> Path:
    """A Pyserini FAISS folder (``index``: IndexFlatIP, ``docid``): what ``pyserini.encode --to-faiss`` writes."""
    import faiss

    out.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexFlatIP(vectors.dim)
    index.add(vectors.vectors)
    faiss.write_index(index, str(out / "index"))
    (out / "docid").write_text("".join(d + "\n" for d in vectors.docids), encoding="utf-8")
    return out


# ------------------------------------------------------------------ builders
def build_ivf(src: str, out: str, factory: str, nprobe: int, threads: int, points_per_list: int) -> None:
    """``factory`` (an IVF index, inner product) trained and filled from the flat Pyserini folder ``src``, written
    to ``out`` in the same layout with ``nprobe`` stored in the index (stock pyserini.search.faiss has no flag)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    src, out = Path(src), Path(out)
    flat = faiss.read_index(str(src / "index"))
    x = flat.reconstruct_n(0, flat.ntotal)
    del flat
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.max_points_per_centroid = points_per_list
    index.train(x)
    index.add(x)
    ivf.nprobe = nprobe
    out.mkdir(parents=True)
    faiss.write_index(index, str(out / "index"))
    shutil.copy(src / "docid", out / "docid")


# Runs ``python -m MODULE ARGS`` or ``python -c CODE ARGS`` and writes the program's own peak RSS on exit
# (runtime.peak_rss_mb: a child's ru_maxrss would report this benchmark's memory whenever that is larger).
RUN_MEASURED = """import atexit, runpy, sys
sys.path.insert(0, sys.argv[1])
from pyserini_kdspd.runtime import peak_rss_mb
report, kind, target, *rest = sys.argv[2:]
atexit.register(lambda: open(report, "w").write(repr(peak_rss_mb())))
sys.argv = [target, *rest]
if kind == "-m":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def timed_process(cmd: list[str], log_file: Path, threads: int) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system: what a loaded machine does not inflate) and peak RSS (MB) of
    ``cmd`` (``python -m ...`` or ``python -c ...``), its output to ``log_file``. CPU time from ``wait4``: this
    child's own, not the largest of every child so far (``RUSAGE_CHILDREN``)."""
    from pyserini_kdspd._java import java_env

    env = {**java_env(), "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    report = log_file.with_name(log_file.name + ".rss")
    with open(log_file, "w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([cmd[0], "-c", RUN_MEASURED, str(ROOT), str(report), *cmd[1:]], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); {log_file}:\n{tail}")
    return seconds, usage.ru_utime + usage.ru_stime, float(report.read_text())


def stock_faiss(src: Path, out: Path, dim: int, threads: int, flags: list[str]) -> tuple[float, float, float]:
    """``python -m pyserini.index.faiss`` converting the flat folder ``src`` into ``out``."""
    cmd = [sys.executable, "-m", "pyserini.index.faiss", "--input", str(src), "--output", str(out),
           "--dim", str(dim), "--threads", str(threads), *flags]
    return timed_process(cmd, out.with_name(out.name + ".log"), threads)


def ivf_process(src: Path, out: Path, factory: str, nprobe: int, threads: int) -> tuple[float, float, float]:
    """:func:`build_ivf` in a fresh interpreter, timed as the stock builds are."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from benchmarks.indexes import build_ivf; "
            "build_ivf(**json.loads(sys.argv[2]))")
    spec = {"src": str(src), "out": str(out), "factory": factory, "nprobe": nprobe, "threads": threads,
            "points_per_list": POINTS_PER_LIST}
    return timed_process([sys.executable, "-c", code, str(ROOT), json.dumps(spec)],
                         out.with_name(out.name + ".log"), threads)


def default_nlist(n: int) -> int:
    """4 sqrt(n) lists (FAISS's guideline: 4-16 sqrt(n)), but at least 39 training vectors per list (below
    that FAISS warns and k-means is unstable)."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


# ------------------------------------------------------------------ measuring
def size_mb(*paths: Path) -> float:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2 ** 20


def percentiles(ms: list[float]) -> tuple[float, float]:
    """p50 and p95 (inclusive quantiles)."""
    if len(ms) < 2:
        return ms[0], ms[0]
    return statistics.median(ms), statistics.quantiles(ms, n=20, method="inclusive")[18]


def timed_search(search, queries: dict, hits: int) -> tuple[dict, list[float]]:
    """One untimed warm-up pass over all queries (page cache, JIT), then each query timed alone."""
    for v in queries.values():
        search(v, hits)
    run, ms = {}, []
    for qid, v in queries.items():
        t0 = time.perf_counter()
        run[qid] = search(v, hits)
        ms.append((time.perf_counter() - t0) * 1e3)
    return run, ms


@dataclass
class Row:
    name: str
    build_s: float
    build_cpu_s: float | None
    build_rss_mb: float | None
    size_mb: float
    p50: float
    p95: float
    map: float | None
    recall: float | None
    exact_recall: float


def faiss_searches(index_dir: Path, settings: list[tuple[str, dict]], threads: int):
    """``(label, search)`` per search setting of one FAISS folder, through Pyserini's FaissSearcher
    (``efSearch`` by its ``set_hnsw_ef_search``, ``nprobe`` on the IVF index it loaded)."""
    import faiss
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(str(index_dir), None)

    def search(v, k):
        return {h.docid: float(h.score) for h in searcher.search(v[None], k, threads=threads)}

    for label, setting in settings:
        if "ef" in setting:
            searcher.set_hnsw_ef_search(setting["ef"])
        if "nprobe" in setting:
            faiss.extract_index_ivf(searcher.index).nprobe = setting["nprobe"]
        yield label, search
    del searcher
    gc.collect()


# ------------------------------------------------------------------ table
def render(rows: list[Row], synthetic: bool) -> str:
    base = rows[0]
    if synthetic:
        head = ("| index | build (s) | build CPU (s) | build peak RSS (MB) | size (MB) | query p50 (ms) | "
                "query p95 (ms) | recall of flat top 100 |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    else:
        head = ("| index | build (s) | build CPU (s) | build peak RSS (MB) | size (MB) | query p50 (ms) | "
                "query p95 (ms) | MAP | MAP − flat | R@100 | R@100 − flat | recall of flat top 100 |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        cpu = f"{r.build_cpu_s:,.1f}" if r.build_cpu_s is not None else "–"
        rss = f"{r.build_rss_mb:,.0f}" if r.build_rss_mb is not None else "–"
        cells = [r.name, f"{r.build_s:,.1f}", cpu, rss, f"{r.size_mb:,.1f}", f"{r.p50:.2f}", f"{r.p95:.2f}"]
        if not synthetic:
            cells += [f"{r.map:.4f}", f"{r.map - base.map:+.4f}", f"{r.recall:.4f}", f"{r.recall - base.recall:+.4f}"]
        cells.append(f"{r.exact_recall:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def shown(path) -> str:
    """A path as the table shows it: relative to the checkout when inside it (the defaults), else as given."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def command_line(argv: list[str]) -> str:
    return "python benchmarks/indexes.py" + "".join(" " + shlex.quote(a) for a in argv)


# ------------------------------------------------------------------ main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faiss-index", type=Path, default=ROOT / "indexes" / "lareqa" / "kdspd",
                   help="a Pyserini FAISS flat folder (index + docid): the vectors (default: the driver's LAReQA index)")
    p.add_argument("--encoder", default=str(ROOT / "models" / "kdspd"), help="the model whose queries are searched")
    p.add_argument("--topics", type=Path, default=ROOT / "topics" / "lareqa.en.tsv")
    p.add_argument("--qrels", type=Path, default=ROOT / "qrels" / "lareqa.txt", help="(not read with --synthetic)")
    p.add_argument("--queries", type=POSITIVE_INT, default=None, metavar="K", help="only the first K topics (default all)")
    p.add_argument("--synthetic", type=POSITIVE_INT, default=None, metavar="N",
                   help="search N vectors: the real ones plus noisy copies (documented run: 1000000)")
    p.add_argument("--noise", default="auto", help="per-dimension noise sigma of the copies, or `auto` (see above)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS),
                   help=f"indexes to build (FAISS flat always; default: {' '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--hits", type=POSITIVE_INT, default=100)
    p.add_argument("--hnsw", nargs="+", default=[f"{STOCK_M},{STOCK_EFC}"], metavar="M,efC",
                   help=f"FAISS HNSW builds (default {STOCK_M},{STOCK_EFC}: pyserini.index.faiss's defaults)")
    p.add_argument("--ef", type=POSITIVE_INT, nargs="+", default=[100, 200], help="HNSW search beams, FAISS and Lucene (>= --hits)")
    p.add_argument("--pq-m", type=POSITIVE_INT, default=STOCK_PQ_M, help=f"PQ sub-quantizers (stock default {STOCK_PQ_M})")
    p.add_argument("--pq-nbits", type=POSITIVE_INT, default=STOCK_PQ_NBITS, help="bits per PQ code (stock default 8)")
    p.add_argument("--nlist", type=POSITIVE_INT, default=None, help="IVF lists (default min(4 sqrt(n), n / 39))")
    p.add_argument("--nprobe", type=POSITIVE_INT, nargs="+", default=[16, 64], help="IVF lists searched (the first is stored)")
    p.add_argument("--lucene-M", type=POSITIVE_INT, default=16, help="Lucene HNSW M (Anserini's default 16)")
    p.add_argument("--lucene-efC", type=POSITIVE_INT, default=100, help="Lucene HNSW efC (Anserini's default 100)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="search threads (default 1: single-query latency)")
    p.add_argument("--build-threads", type=POSITIVE_INT, default=1, help="FAISS and Anserini build threads (default 1)")
    p.add_argument("--work", type=Path, default=None, help="build and keep the indexes here (default: a temp dir, "
                                                           "each index removed once measured)")
    p.add_argument("--output", type=output_file, default=None,
                   help="the table file (default runs/benchmarks/indexes-lareqa.md or indexes-synthetic-N.md)")
    p.add_argument("--readme", type=Path, nargs="?", const=ROOT / "README.md", default=None, metavar="README",
                   help=f"run nothing: rewrite the block between <!-- {MARKER}:start --> and <!-- {MARKER}:end --> "
                        "of README (default README.md) from the --tables files")
    p.add_argument("--tables", type=Path, nargs="+", default=None,
                   help="with --readme: the table files, in order (default runs/benchmarks/indexes-*.md)")
    args = p.parse_args(argv)
    if args.readme is not None:
        return args
    if not (args.faiss_index / "index").is_file():
        p.error(f"{args.faiss_index}: no FAISS index (run bash scripts/reproduce_table2.sh, or give --faiss-index)")
    if args.hits < 100:
        p.error("--hits must be at least 100 (the table's R@100 columns)")
    if min(args.ef) < args.hits:
        p.error("every --ef must be at least --hits")
    try:
        args.hnsw = [tuple(POSITIVE_INT(x) for x in spec.split(",")) for spec in args.hnsw]
        args.noise = None if args.noise == "auto" else NONNEGATIVE(args.noise)
    except argparse.ArgumentTypeError as e:
        p.error(f"--hnsw (M,efC pairs) or --noise (`auto` or a number): {e}")
    if any(len(spec) != 2 for spec in args.hnsw):
        p.error(f"--hnsw takes M,efC pairs, got {args.hnsw}")
    if args.synthetic is None and not args.qrels.is_file():
        p.error(f"{args.qrels}: no qrels (give --qrels, or --synthetic N)")
    args.variants = ["flat"] + [v for v in VARIANTS if v in args.variants and v != "flat"]
    return args


def readme_block(tables: list[Path]) -> str:
    found = [t for t in tables if t.is_file()]
    if not found:
        raise FileNotFoundError(f"no table file among {', '.join(map(str, tables))}: run the benchmark first")
    return (f"<!-- written by `python benchmarks/indexes.py --readme` from {', '.join(shown(t) for t in found)}; edits "
            "here are overwritten -->\n" + "\n".join(t.read_text(encoding="utf-8").strip() + "\n" for t in found))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    configure_logging()
    if args.readme is not None:
        tables = args.tables or sorted(TABLES.glob("indexes-*.md"))
        return rewrite_readme_block(args.readme, MARKER, lambda: readme_block(tables), "index-variants tables")

    import faiss

    from pyserini_kdspd.evaluate import evaluate
    from pyserini_kdspd.index import lucene
    from pyserini_kdspd.index.vectors import read_faiss, write_parquet
    from pyserini_kdspd.io import ranked
    from pyserini_kdspd.runtime import cpu_info, peak_rss_mb
    from pyserini_kdspd.search.dense import DenseModel, query_vectors

    faiss.omp_set_num_threads(args.threads)
    started = datetime.datetime.now().astimezone()
    vectors = read_faiss(args.faiss_index)
    queries = query_vectors(DenseModel.from_name("query", args.encoder), args.topics)
    if args.queries:
        queries = dict(list(queries.items())[:args.queries])
    synthetic = args.synthetic is not None
    tmp = tempfile.TemporaryDirectory(prefix="kdspd-indexes-")
    work = args.work or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    keep = args.work is not None

    def done(*paths: Path) -> None:
        for path in paths if not keep else ():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    lucene_variants = [v for v in args.variants if v.startswith("lucene")]
    if lucene_variants and not is_unit(vectors):
        raise SystemExit(f"error: {args.faiss_index} holds vectors that are not unit length, which Lucene's "
                         f"DOT_PRODUCT cannot score: leave out {' '.join(lucene_variants)} (--variants)")
    if synthetic:
        real, unit = len(vectors), is_unit(vectors)
        sigma = noise_scale(vectors.vectors) if args.noise is None else args.noise
        vectors = synthetic_vectors(vectors, args.synthetic, sigma, seed=args.seed)
        source = write_flat_folder(vectors, work / "source")
        about = (f"the {real:,} of `{shown(args.faiss_index)}` and noisy copies (sigma {sigma:.4g} per dimension"
                 f"{', auto' if args.noise is None else ''}, seed {args.seed}{', renormalised' if unit else ''})")
    else:
        source = args.faiss_index
        about = f"`{shown(args.faiss_index)}`"
    n, d = len(vectors), vectors.dim
    if {"pq", "ivf-pq", "hnsw-pq"} & set(args.variants) and d % args.pq_m:
        raise SystemExit(f"error: --pq-m {args.pq_m} does not divide the dimension {d}")
    nlist = args.nlist or default_nlist(n)
    nprobes = list(dict.fromkeys(min(p, nlist) for p in args.nprobe))

    rows: list[Row] = []
    exact: dict[str, dict[str, int]] = {}

    def measure(name: str, search, build: tuple[float, float | None, float | None], size: float) -> None:
        run, ms = timed_search(search, queries, args.hits)
        if not exact:  # the first row is FAISS flat: its top 100 is the exact one
            exact.update({q: {doc: 1 for doc, _ in ranked(hits, 100)} for q, hits in run.items()})
        m = r = None
        if not synthetic:
            e = evaluate(run, args.qrels, depth=args.hits)
            m, r = e["map"], e["recall_100"]
        overlap = evaluate(run, exact, depth=args.hits, metrics=("recall_100",))["recall_100"]
        rows.append(Row(name, *build, size, *percentiles(ms), m, r, overlap))
        print(render([rows[0], rows[-1]], synthetic).splitlines()[-1], flush=True)

    def faiss_variant(out: Path, name: str, settings, build) -> None:
        """Build ``out`` (``build()`` returns its wall and CPU seconds and peak RSS), then a row per search setting."""
        cost = build()
        size = size_mb(out / "index", out / "docid")
        for label, search in faiss_searches(out, settings, args.threads):
            measure(name + label, search, cost, size)
        done(out, out.with_name(out.name + ".log"))

    def stock(out: Path, flags: list[str]):
        return lambda: stock_faiss(source, out, d, args.build_threads, flags)

    efs = [(f", ef={ef})", {"ef": ef}) for ef in args.ef]
    faiss_variant(work / "faiss-flat", "FAISS flat (IP)", [("", {})], stock(work / "faiss-flat", ["--metric", "inner"]))
    for M, efC in args.hnsw if "hnsw" in args.variants else []:
        out = work / f"faiss-hnsw-{M}-{efC}"
        faiss_variant(out, f"FAISS HNSW (M={M}, efC={efC}", efs, stock(out, ["--hnsw", "--M", str(M), "--efC", str(efC)]))
    pq_flags = ["--pq", "--pq-m", str(args.pq_m), "--pq-nbits", str(args.pq_nbits)]
    if "pq" in args.variants:
        out = work / "faiss-pq"
        faiss_variant(out, f"FAISS PQ (m={args.pq_m}, {args.pq_nbits} bits)", [("", {})], stock(out, pq_flags))
    if "hnsw-pq" in args.variants:
        M, efC = args.hnsw[0]
        out = work / "faiss-hnsw-pq"
        faiss_variant(out, f"FAISS HNSW-PQ (M={M}, efC={efC}, m={args.pq_m}", efs,
                      stock(out, ["--hnsw", "--M", str(M), "--efC", str(efC), *pq_flags]))
    probes = [(f", nprobe={p})", {"nprobe": p}) for p in nprobes]
    for kind, factory in (("ivf-flat", f"IVF{nlist},Flat"), ("ivf-pq", f"IVF{nlist},PQ{args.pq_m}x{args.pq_nbits}")):
        if kind in args.variants:
            out = work / f"faiss-{kind}"
            faiss_variant(out, f"FAISS {factory} (index_factory", probes,
                          lambda out=out, factory=factory: ivf_process(source, out, factory, nprobes[0],
                                                                       args.build_threads))

    lucene_note = ""
    if lucene_variants:
        t0 = time.perf_counter()
        parquet = write_parquet(vectors, work / "vectors.parquet", overwrite=True)
        lucene_note = (f" Lucene rows: Anserini's own indexing time from Parquet (written in "
                       f"{time.perf_counter() - t0:.1f} s, {size_mb(parquet):,.0f} MB), in this process's JVM; "
                       f"HNSW segments left as Anserini writes them (no -optimize).")
        for kind in ("flat", "hnsw"):
            if f"lucene-{kind}" not in args.variants:
                continue
            index_dir = lucene.build(parquet, work / f"lucene-{kind}", kind=kind, M=args.lucene_M,
                                     efC=args.lucene_efC, threads=args.build_threads, overwrite=True)
            cost, size = (lucene.index_meta(index_dir)["build_seconds"], None, None), size_mb(index_dir)
            for ef in ([None] if kind == "flat" else args.ef):
                s = lucene.searcher(index_dir, ef_search=ef)

                def lucene_search(v, k, s=s):
                    return {h.docid: lucene.to_inner_product(h.score) for h in s.search(lucene.query_string(v), k)}

                measure("Lucene flat" if kind == "flat" else
                        f"Lucene HNSW (M={args.lucene_M}, efC={args.lucene_efC}, ef={ef})", lucene_search, cost, size)
                s.close()
            done(index_dir)
        done(parquet)
    tmp.cleanup()

    cpu = cpu_info()
    peak = peak_rss_mb()
    text = (f"**{'Synthetic' if synthetic else 'LAReQA'}, {n:,} vectors** (d={d}): {about}; {len(queries):,} "
            f"queries of `{shown(args.topics)}` encoded by `{shown(args.encoder)}`, depth {args.hits}; search {args.threads} "
            f"thread(s), builds {args.build_threads}. {cpu['model']}, {cpu['cores']} cores, "
            f"{started:%Y-%m-%d %H:%M %Z}; benchmark process peak RSS {peak:,.0f} MB.\n\n"
            f"`{command_line(argv)}`\n\n{render(rows, synthetic)}\n"
            f"FAISS rows: built by a fresh interpreter from the flat folder (wall and CPU time and peak RSS of that "
            f"process: start-up and reading the flat index included, see the flat row); IVF nlist {nlist}, k-means on <= {POINTS_PER_LIST} vectors "
            f"per list.{lucene_note}\n")
    output = args.output or TABLES / (f"indexes-synthetic-{n}.md" if synthetic else "indexes-lareqa.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print("\n" + text + f"\nwritten to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
