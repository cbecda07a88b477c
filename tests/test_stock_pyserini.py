"""The stock Pyserini CLIs work in this environment with no user setup (Java, OPENAI_API_KEY).

Each CLI runs once, for real, in a subprocess whose environment has neither JAVA_HOME
nor OPENAI_API_KEY: the package's start-up hook must supply both.
"""
import json
import os
import subprocess

import pytest

from pyserini_kdspd import io
from pyserini_kdspd.models import resolve_model


@pytest.fixture(scope="module")
def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "OPENAI_API_KEY", "JDK_HOME")}
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """60 English FLORES sentences as a JsonCollection, and 5 of them (paraphrased by truncation) as topics."""
    root = tmp_path_factory.mktemp("tiny")
    lines = (shared_data / "flores200/devtest/eng_Latn.devtest").read_text(encoding="utf-8").splitlines()[:60]
    corpus = root / "corpus"
    io.write_jsonl(corpus / "docs.jsonl",
                   ({"id": f"d{i}", "contents": t, "text": t, "lang": "en"} for i, t in enumerate(lines)))
    topics = {f"q{i}": " ".join(lines[i].split()[:8]) for i in range(0, 50, 10)}
    io.write_topics(root / "topics.tsv", topics)
    return root, topics


def _run(python, args, env):
    proc = subprocess.run([python, *args], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{args[:2]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_lucene_index_and_search(python, tiny, clean_env, tmp_path):
    root, topics = tiny
    _run(python, ["-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input", str(root / "corpus"),
                  "--index", str(tmp_path / "idx"), "--generator", "DefaultLuceneDocumentGenerator",
                  "--threads", "1", "--storeRaw"], clean_env)
    _run(python, ["-m", "pyserini.search.lucene", "--index", str(tmp_path / "idx"), "--topics",
                  str(root / "topics.tsv"), "--output", str(tmp_path / "run.txt"), "--bm25", "--hits", "10"],
         clean_env)
    run = io.read_run(tmp_path / "run.txt")
    assert set(run) == set(topics)
    for qid in topics:  # each query is the first words of its own document
        assert io.ranked(run[qid])[0][0] == "d" + qid[1:]


def test_faiss_encode_and_search(python, tiny, clean_env, tmp_path):
    root, topics = tiny
    teacher = resolve_model("all-MiniLM-L6-v2")
    _run(python, ["-m", "pyserini.encode", "input", "--corpus", str(root / "corpus"), "--fields", "text",
                  "output", "--embeddings", str(tmp_path / "faiss"), "--to-faiss",
                  "encoder", "--encoder", teacher, "--encoder-class", "auto", "--pooling", "mean", "--l2-norm",
                  "--dimension", "384", "--device", "cpu", "--batch-size", "16"], clean_env)
    assert (tmp_path / "faiss" / "index").is_file()
    _run(python, ["-m", "pyserini.search.faiss", "--index", str(tmp_path / "faiss"), "--topics",
                  str(root / "topics.tsv"), "--encoder", teacher, "--encoder-class", "auto", "--pooling", "mean",
                  "--l2-norm", "--device", "cpu", "--output", str(tmp_path / "run.txt"), "--hits", "10"], clean_env)
    run = io.read_run(tmp_path / "run.txt")
    for qid in topics:
        assert io.ranked(run[qid])[0][0] == "d" + qid[1:]


def test_java_is_found_without_user_setup(python, clean_env):
    proc = _run(python, ["-c", "import pyserini_kdspd, json; from pyserini_kdspd._java import find_java; "
                               "from pyserini.search.lucene import LuceneSearcher; from jnius import autoclass; "
                               "rt = find_java(); print(json.dumps({'major': rt.major, 'source': rt.source, "
                               "'runtime': autoclass('java.lang.System').getProperty('java.version')}))"],
                clean_env)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["major"] >= 21
    assert int(info["runtime"].split(".")[0]) == info["major"]


# ---------------------------------------------------------------- every stock CLI, Java 17 first on PATH
def _old_java_first(env):
    """``PATH`` with a Java older than 21 first when this machine has one (Debian's is 17)."""
    from pyserini_kdspd._java import MIN_JAVA, _installed

    old = [rt for rt in _installed() if rt.major < MIN_JAVA]
    if old:
        env = dict(env, PATH=f"{old[0].home / 'bin'}:{env.get('PATH', '')}")
    return env, (old[0].major if old else None)


@pytest.mark.slow
def test_every_stock_cli_beside_the_plugin(python, tiny_student, lareqa_slice, clean_env, tmp_path):
    """index/search Lucene (German BM25), encode/search FAISS with --encoder kdspd, HNSW from the flat
    vectors, RRF fusion and trec_eval: all stock, in this environment, with an old Java first on PATH."""
    from pyserini_kdspd.evaluate import DEFAULT_METRICS, evaluate, trec_eval

    root, qids = lareqa_slice
    env, old_major = _old_java_first(dict(clean_env, PYSERINI_KDSPD_MODEL=str(tiny_student)))
    t = tmp_path
    _run(python, ["-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input", str(root / "de"),
                  "--index", str(t / "bm25-de"), "--generator", "DefaultLuceneDocumentGenerator",
                  "--language", "de", "--threads", "1"], env)
    _run(python, ["-m", "pyserini.search.lucene", "--index", str(t / "bm25-de"), "--topics",
                  str(root / "topics.de.tsv"), "--language", "de", "--bm25", "--hits", "100",
                  "--output", str(t / "bm25-de.txt")], env)
    _run(python, ["-m", "pyserini.encode", "input", "--corpus", str(root / "corpus"), "--fields", "text", "lang",
                  "output", "--embeddings", str(t / "vectors"),
                  "encoder", "--encoder", "kdspd", "--fields", "text", "lang", "--dimension", "384",
                  "--batch-size", "64", "--device", "cpu"], env)
    _run(python, ["-m", "pyserini.index.faiss", "--input", str(t / "vectors"), "--output", str(t / "flat"),
                  "--dim", "384"], env)
    _run(python, ["-m", "pyserini.index.faiss", "--input", str(t / "vectors"), "--output", str(t / "hnsw"),
                  "--dim", "384", "--hnsw"], env)
    for index in ("flat", "hnsw"):
        _run(python, ["-m", "pyserini.search.faiss", "--index", str(t / index), "--topics",
                      str(root / "topics.en.tsv"), "--encoder", "kdspd", "--device", "cpu", "--hits", "100",
                      "--output", str(t / f"kdspd-{index}.txt")], env)
    _run(python, ["-m", "pyserini.fusion", "--runs", str(t / "kdspd-flat.txt"), str(t / "bm25-de.txt"),
                  "--output", str(t / "rrf.txt"), "--method", "rrf", "--k", "100"], env)

    n_docs = sum(1 for _ in io.read_jsonl(root / "corpus" / "docs.jsonl"))
    flat, hnsw = io.read_run(t / "kdspd-flat.txt"), io.read_run(t / "kdspd-hnsw.txt")
    assert set(flat) == set(qids) and all(len(d) == min(100, n_docs) for d in flat.values())
    for q in qids:  # on a few hundred vectors HNSW finds the exact top 10
        assert [d for d, _ in io.ranked(flat[q])[:10]] == [d for d, _ in io.ranked(hnsw[q])[:10]]
    bm25 = io.read_run(t / "bm25-de.txt")
    assert evaluate(bm25, root / "qrels.txt")["recall_100"] > 0.05  # German questions find German answers
    assert set(io.read_run(t / "rrf.txt")) == set(qids)

    # trec_eval runs java from PATH: it must get the plugin's Java >= 21, not the old one first on PATH.
    for name in ("bm25-de", "kdspd-flat", "kdspd-hnsw", "rrf"):
        proc = _run(python, ["-m", "pyserini.eval.trec_eval", "-c", "-M", "100", "-m", "map", "-m", "recip_rank",
                             "-m", "ndcg_cut.10", "-m", "P.10", "-m", "recall.100", str(root / "qrels.txt"),
                             str(t / f"{name}.txt")], env)
        assert "UnsupportedClassVersionError" not in proc.stderr
        printed = {p[0]: float(p[2]) for p in (line.split() for line in proc.stdout.splitlines())
                   if len(p) == 3 and p[1] == "all"}
        ours = evaluate(t / f"{name}.txt", root / "qrels.txt", depth=100)
        assert set(printed) == set(DEFAULT_METRICS)
        for m in DEFAULT_METRICS:
            assert abs(ours[m] - printed[m]) <= 5e-5 + 1e-9, (name, m, ours[m], printed[m])
        assert trec_eval(t / f"{name}.txt", root / "qrels.txt") == printed
    if old_major is None:
        pytest.skip("no Java older than 21 on this machine: ran with the default PATH only")
