"""The index stage: vectors as Parquet / Anserini JSON, Lucene flat and HNSW indexes built by Anserini, the
runs they give against FAISS's, and Pyserini's sharded encoding against one unsharded encode.

The fast tests use a real FAISS folder of a few unit vectors (Pyserini's layout), real pyarrow and real
Anserini; the slow ones encode a LAReQA slice with stock ``pyserini.encode --encoder kdspd``.
"""
import os
import subprocess

import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.index import lucene, vectors as V

DIM = 16


def _unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def faiss_dir(tmp_path_factory):
    """A Pyserini FAISS folder (index + docid) of 40 unit vectors, and its JsonCollection with two languages."""
    import faiss

    root = tmp_path_factory.mktemp("faiss")
    vecs = _unit(40)
    index = faiss.IndexFlatIP(DIM)
    index.add(vecs)
    faiss.write_index(index, str(root / "index"))
    docids = [f"doc-{i:02d}" for i in range(40)]
    (root / "docid").write_text("".join(d + "\n" for d in docids), encoding="utf-8")
    corpus = root.parent / "corpus"
    io.write_jsonl(corpus / "docs.jsonl", ({"id": d, "text": "t", "lang": "de" if i % 2 else "en"}
                                           for i, d in enumerate(docids)))
    return root, corpus, docids, vecs


def test_parquet_and_json_vectors_round_trip(faiss_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, corpus, docids, vecs = faiss_dir
    got = V.with_langs(V.read_faiss(folder), corpus)
    assert got.docids == docids and np.array_equal(got.vectors, vecs)
    one = V.write_parquet(got, tmp_path / "v.parquet")
    parts = V.write_parquet(got, tmp_path / "parts", rows_per_part=15)  # a folder of part files, as Ray writes
    assert len(list(parts.glob("*.parquet"))) == 3
    schema = pq.read_schema(one)
    assert schema.field("docid").type == pa.string() and schema.field("lang").type == pa.string()
    assert schema.field("vector").type == pa.list_(pa.float32())
    for path in (one, parts):
        back = V.read_vectors(path)
        assert back.docids == docids and np.array_equal(back.vectors, vecs)  # bit for bit
        assert back.langs == ["de" if i % 2 else "en" for i in range(40)]
    js = V.write_json_vectors(got, tmp_path / "json")
    first = io.read_jsonl(next(js.glob("*.jsonl"))).__next__()
    assert set(first) == {"docid", "vector"}  # what Anserini's JsonDenseVectorCollection reads
    back = V.read_vectors(js)
    assert back.docids == docids and np.array_equal(back.vectors, vecs)  # float32 survives JSON exactly
    with pytest.raises(ValueError, match="not in"):  # vectors of another corpus
        V.with_langs(V.Vectors(["nope"], vecs[:1]), corpus)


def test_duplicate_docids_are_rejected(faiss_dir, tmp_path):
    _, _, docids, vecs = faiss_dir
    V.write_parquet(V.Vectors(docids[:20], vecs[:20]), tmp_path / "parts" / "a.parquet")
    V.write_parquet(V.Vectors(docids[19:], vecs[19:]), tmp_path / "parts" / "b.parquet")  # doc-19 in both
    with pytest.raises(ValueError, match=r"'doc-19' occurs twice \(in a.parquet and b.parquet\)"):
        V.read_vectors(tmp_path / "parts")
    with pytest.raises(ValueError, match="'doc-19' occurs twice"):  # before Anserini would index it twice
        lucene.build(tmp_path / "parts", tmp_path / "idx", kind="flat")
    assert not (tmp_path / "idx").exists()
    with pytest.raises(ValueError, match="'doc-03' occurs twice"):
        V.Vectors(docids[:4] + ["doc-03"], vecs[:5])


def test_json_with_id_instead_of_docid_fails_loudly(faiss_dir, tmp_path):
    """Anserini skips every such record and exits normally; the count after indexing must catch it."""
    _, _, docids, vecs = faiss_dir
    io.write_jsonl(tmp_path / "json" / "v.jsonl", ({"id": d, "vector": v.tolist()} for d, v in zip(docids, vecs)))
    with pytest.raises(RuntimeError, match=r"indexed 0 of the 40 vectors.*'docid'"):
        lucene.build(tmp_path / "json", tmp_path / "idx", kind="flat")
    assert not (tmp_path / "idx").exists()


def test_lucene_scores_are_faiss_inner_products(faiss_dir, tmp_path):
    """Anserini's flat and HNSW indexes of the Parquet (two parts) and of the JSON vectors hold every document
    and rank like FAISS's inner product, with Lucene's (1 + q.d) / 2 mapped back to q.d."""
    folder, _, docids, vecs = faiss_dir
    got = V.read_faiss(folder)
    parquet = V.write_parquet(got, tmp_path / "parts", rows_per_part=25)
    js = V.write_json_vectors(got, tmp_path / "json")
    indexes = {"flat": lucene.build(parquet, tmp_path / "flat", kind="flat"),
               "hnsw": lucene.build(parquet, tmp_path / "hnsw", kind="hnsw", M=8, efC=50),
               "flat-json": lucene.build(js, tmp_path / "flat-json", kind="flat")}
    for name, index in indexes.items():
        assert lucene.num_docs(index) == 40 and lucene.index_meta(index)["documents"] == 40
        searcher = lucene.searcher(index, ef_search=40 if name == "hnsw" else None)
        for q in _unit(3, seed=1):
            hits = searcher.search(lucene.query_string(q), 10)
            ip = vecs @ q
            expected = np.argsort(-ip)[:10]
            assert [h.docid for h in hits] == [docids[i] for i in expected], name
            np.testing.assert_allclose([lucene.to_inner_product(h.score) for h in hits], ip[expected], atol=1e-6)
        searcher.close()
    assert lucene.index_meta(indexes["hnsw"])["M"] == 8


def test_what_lucene_cannot_score_is_refused(faiss_dir, tmp_path):
    from pyserini_kdspd.search.dense import DenseModel, search_lucene

    _, _, docids, vecs = faiss_dir
    V.write_parquet(V.Vectors(docids, vecs * 2), tmp_path / "long.parquet")
    with pytest.raises(ValueError, match="norm 2.0000, not 1.*DOT_PRODUCT"):
        lucene.build(tmp_path / "long.parquet", tmp_path / "idx", kind="hnsw")
    with pytest.raises(ValueError, match="unit vectors"):
        lucene.query_string(vecs[0] * 3)
    V.write_parquet(V.Vectors(docids, vecs), tmp_path / "v.parquet")
    hnsw = lucene.build(tmp_path / "v.parquet", tmp_path / "hnsw", kind="hnsw")
    with pytest.raises(FileExistsError):
        lucene.build(tmp_path / "v.parquet", hnsw, kind="hnsw")
    io.write_topics(tmp_path / "t.tsv", {"q1": "a question"})
    with pytest.raises(ValueError, match="ef_search"):  # HNSW returns at most ef_search documents
        search_lucene(DenseModel("q", "unused"), hnsw, tmp_path / "t.tsv", tmp_path / "run.txt", hits=100,
                      ef_search=50)


def test_cli_checks_its_outputs_before_any_work(faiss_dir, tmp_path, capsys):
    from pyserini_kdspd.index.__main__ import main

    folder, corpus, _, _ = faiss_dir
    assert main(["--faiss-index", str(folder)]) == 2
    (tmp_path / "flat").mkdir()
    assert main(["--faiss-index", str(folder), "--parquet", str(tmp_path / "v.parquet"),
                 "--lucene-flat", str(tmp_path / "flat")]) == 2
    assert "exists" in capsys.readouterr().err and not (tmp_path / "v.parquet").exists()
    assert main(["--faiss-index", str(folder), "--corpus", str(corpus), "--parquet", str(tmp_path / "v.parquet"),
                 "--lucene-flat", str(tmp_path / "flat"), "--overwrite"]) == 0
    assert V.read_vectors(tmp_path / "v.parquet").langs[:2] == ["en", "de"]
    assert lucene.index_meta(tmp_path / "flat")["collection"] == "ParquetDenseVectorCollection"


# ------------------------------------------------------------------ LAReQA slice, stock pyserini.encode
def assert_same_ranking(a, b, tol):
    """Same queries, the same documents at every rank with scores within ``tol``; two documents may trade
    places only where their scores are within ``tol`` (a near-tie that float rounding can flip)."""
    assert set(a) == set(b)
    for q in a:
        ra, rb = io.ranked(a[q]), io.ranked(b[q])
        assert len(ra) == len(rb), q
        for (da, sa), (db, sb) in zip(ra, rb):  # equal score at every rank, and each document's own score
            assert abs(sa - sb) <= tol, (q, da, sa, db, sb)
        assert all(abs(a[q][d] - b[q][d]) <= tol for d in set(a[q]) & set(b[q])), q
        for run, ranking in ((a, ra), (b, rb)):  # a document in one run only sits at the cut, in a near-tie
            assert all(abs(run[q][d] - ranking[-1][1]) <= tol for d in set(run[q]) - set(a[q]).intersection(b[q]))


def _run(cmd, env):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd[:3]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def kdspd_env(tiny_student):
    env = dict(os.environ, PYSERINI_KDSPD_MODEL=str(tiny_student), TOKENIZERS_PARALLELISM="false",
               PYSERINI_KDSPD_PRECISION="fp32", OMP_NUM_THREADS="1", PYSERINI_KDSPD_THREADS="1")
    return env


def _encode(python, corpus, out, env, shard=None):
    """Stock ``pyserini.encode`` with ``--encoder kdspd`` (the folder in $PYSERINI_KDSPD_MODEL), one shard or all."""
    shard_args = ["--shard-id", str(shard[0]), "--shard-num", str(shard[1])] if shard else []
    _run([python, "-m", "pyserini.encode", "input", "--corpus", str(corpus), "--fields", "text", "lang",
          *shard_args, "output", "--embeddings", str(out), "--to-faiss",
          "encoder", "--encoder", "kdspd", "--fields", "text", "lang", "--dimension", "384",
          "--batch-size", "64", "--device", "cpu"], env)
    return out


@pytest.fixture(scope="module")
def slice_index(python, lareqa_slice, kdspd_env, tmp_path_factory):
    """The LAReQA slice encoded once, unsharded (fp32), and its FAISS flat run through the project's dense search."""
    from pyserini_kdspd.search.dense import DenseModel, search

    root, _ = lareqa_slice
    work = tmp_path_factory.mktemp("slice-index")
    faiss_dir = _encode(python, root / "corpus", work / "faiss", kdspd_env)
    model = DenseModel.from_name("kdspd", kdspd_env["PYSERINI_KDSPD_MODEL"])
    run = search(model, faiss_dir, root / "topics.en.tsv", work / "faiss.txt", hits=100, threads=1)
    return work, faiss_dir, run, model


@pytest.mark.slow
def test_lucene_runs_match_the_faiss_run(python, lareqa_slice, slice_index, kdspd_env):
    """The CLI builds Lucene flat and HNSW indexes from the FAISS folder (through Parquet) and searches them with
    the KD-SPD folder's query encoder: flat gives FAISS's run, HNSW the same MAP within 0.005."""
    from pyserini_kdspd.evaluate import evaluate

    root, qids = lareqa_slice
    work, faiss_dir, faiss_run, _ = slice_index
    _run([python, "-m", "pyserini_kdspd.index", "--faiss-index", str(faiss_dir), "--corpus", str(root / "corpus"),
          "--parquet", str(work / "v.parquet"), "--lucene-flat", str(work / "flat"),
          "--lucene-hnsw", str(work / "hnsw"), "--M", "16", "--efC", "100"], kdspd_env)
    n_docs = sum(1 for _ in io.read_jsonl(root / "corpus" / "docs.jsonl"))
    assert lucene.index_meta(work / "flat")["documents"] == n_docs == lucene.index_meta(work / "hnsw")["documents"]
    assert set(V.read_vectors(work / "v.parquet").langs) == {"ar", "de", "el", "en", "es", "hi", "ru", "th", "tr",
                                                             "vi", "zh"}
    for kind in ("flat", "hnsw"):
        _run([python, "-m", "pyserini_kdspd.index", "search", "--index", str(work / kind), "--encoder", "kdspd",
              "--topics", str(root / "topics.en.tsv"), "--output", str(work / f"{kind}.txt"), "--hits", "100"],
             kdspd_env)
    faiss, flat, hnsw = (io.read_run(work / f"{n}.txt") for n in ("faiss", "flat", "hnsw"))
    assert set(faiss) == set(qids) and all(len(d) == 100 for d in faiss.values())
    assert_same_ranking(flat, faiss, tol=1e-4)
    m_faiss, m_flat, m_hnsw = (evaluate(r, root / "qrels.txt")["map"] for r in (faiss, flat, hnsw))
    assert round(m_flat, 3) == round(m_faiss, 3)
    assert abs(m_hnsw - m_flat) <= 0.005


@pytest.mark.slow
def test_sharded_encoding_equals_one_encode(python, lareqa_slice, slice_index, kdspd_env, tmp_path):
    """Stock --shard-id/--shard-num with --encoder kdspd, merged by Pyserini's merge_faiss_indexes: the same
    docids in the same order, the same vectors (fp32) and the same TREC run as one unsharded encode."""
    from pyserini_kdspd.search.dense import search

    root, _ = lareqa_slice
    _, faiss_dir, faiss_run, model = slice_index
    for shard in (0, 1):
        _encode(python, root / "corpus", tmp_path / f"shard{shard}", kdspd_env, shard=(shard, 2))
    _run([python, "-m", "pyserini.index.merge_faiss_indexes", "--prefix", str(tmp_path / "shard"),
          "--shard-num", "2", "--dimension", "384"], kdspd_env)
    one, merged = V.read_faiss(faiss_dir), V.read_faiss(tmp_path / "shardfull")
    assert 0 < len(V.read_faiss(tmp_path / "shard0")) < len(one)
    assert merged.docids == one.docids
    np.testing.assert_allclose(merged.vectors, one.vectors, atol=1e-5)
    run = search(model, tmp_path / "shardfull", root / "topics.en.tsv", tmp_path / "sharded.txt", hits=100,
                 threads=1)
    assert_same_ranking(io.read_run(run), io.read_run(faiss_run), tol=1e-5)
