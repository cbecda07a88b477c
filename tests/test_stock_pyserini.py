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
