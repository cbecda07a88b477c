"""Non-English queries: the X -> En / X -> All files from the real LAReQA data, the language tag reaching a
KD-SPD folder's query encoder through stock ``pyserini.search.faiss``, and the driver on a real slice.

The KD-SPD folder is an untrained student saved from the packaged multilingual-e5-small backbone (one decoder
layer, l = 4) with the MiniLM teacher's query side: its prompts start apart (u, v ~ 1 + N(0, 0.05^2)), so the
language a query is tagged with shows in its vector.
"""
import dataclasses
import os
import subprocess

import faiss
import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.data.lareqa import (
    LANGUAGES, cross_lingual, docid_lang, output_paths, prepare_cross_lingual, prepare_lareqa, query_id,
    split_query_id,
)
from pyserini_kdspd.runtime import ENV, resolve
from test_langid import mini_data  # noqa: F401  (fixture: three XQuAD-R paragraphs in every language)

SLICE_LANGS = ("en", "de", "zh")
N_QUESTIONS = 6


@pytest.fixture(autouse=True)
def _no_query_lang(monkeypatch):
    monkeypatch.delenv(ENV["query_lang"], raising=False)


@pytest.fixture(scope="module")
def full(shared_data, tmp_path_factory):
    return prepare_lareqa(shared_data, tmp_path_factory.mktemp("lareqa-full"))


@pytest.fixture(scope="module")
def xslice(full, tmp_path_factory):
    """6 real questions asked in en, de and zh; their answers in those languages, 30 other English and 10 other
    German / Chinese sentences, written where the data stage writes LAReQA; the cross-lingual files made by the
    data stage's own function."""
    qrels = io.read_qrels(full.qrels)
    qids = list(qrels)[:N_QUESTIONS]
    keep = {d for q in qids for d in qrels[q] if docid_lang(d) in SLICE_LANGS}
    docs = [r for r in io.read_jsonl(full.corpus / "corpus.jsonl") if r["id"] not in keep]
    others = [r for r in docs if r["lang"] == "en"][::40][:30] + [r for r in docs if r["lang"] in ("de", "zh")][::200][:10]
    root = tmp_path_factory.mktemp("xslice")
    base = output_paths(root)
    paths = dataclasses.replace(base, topics={lang: base.topics[lang] for lang in SLICE_LANGS})
    io.write_jsonl(paths.corpus / "corpus.jsonl",
                   [r for r in io.read_jsonl(full.corpus / "corpus.jsonl") if r["id"] in keep] + others)
    for lang in SLICE_LANGS:
        topics = io.read_topics(full.topics[lang])
        io.write_topics(paths.topics[lang], {q: topics[q] for q in qids})
    io.write_qrels(paths.qrels, {q: {d: 1 for d in qrels[q] if d in keep} for q in qids})
    prepare_cross_lingual(paths)
    return paths, root, qids


# ---------------------------------------------------------------- the files, against the real data
def test_cross_lingual_files_of_the_real_data(full, shared_data):
    tagged = io.read_tagged_topics(full.all_topics)
    x_en, x_all, qrels = io.read_qrels(full.x_en_qrels), io.read_qrels(full.x_all_qrels), io.read_qrels(full.qrels)
    assert len(tagged) == len(x_en) == len(x_all) == 1190 * 11 == 13090
    assert sum(len(d) for d in x_all.values()) == 13090 * 11
    per_lang = {lang: io.read_topics(full.topics[lang]) for lang in LANGUAGES}
    for x, (text, lang) in tagged.items():
        qid, lang_of_id = split_query_id(x)
        assert x == query_id(qid, lang) and lang_of_id == lang and text == per_lang[lang][qid], x
        english = [d for d in qrels[qid] if docid_lang(d) == "en"]
        assert len(english) == 1 and x_en[x] == {english[0]: 1}, x  # X -> En: the English answer only
        assert x_all[x] == qrels[qid], x  # X -> All: the answer in every language, whatever the query's
    # Pyserini reads the tagged file as plain topics (the third column is ignored): same ids, same texts
    from pyserini.query_iterator import DefaultQueryIterator
    assert {str(q): t for q, t in DefaultQueryIterator.from_topics(str(full.all_topics))} == \
        {x: text for x, (text, _) in tagged.items()}
    # three Greek "translations" are the English question: one text, two tags (the encoder settles it)
    texts = {}
    for x, (text, lang) in tagged.items():
        texts.setdefault(text, set()).add(lang)
    assert sorted(sorted(s) for s in texts.values() if len(s) > 1) == [["el", "en"]] * 3
    # idempotent: a second data stage leaves the derived files alone
    before = {p: p.stat().st_mtime_ns for p in (full.all_topics, full.x_en_qrels, full.x_all_qrels)}
    prepare_lareqa(shared_data, full.root.parent.parent)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_slice_counts_and_qid_scheme(xslice):
    paths, _, qids = xslice
    tagged = io.read_tagged_topics(paths.all_topics)
    assert sorted(tagged) == sorted(f"{q}-{lang}" for q in qids for lang in SLICE_LANGS)
    assert all(lang == x.rsplit("-", 1)[1] for x, (_, lang) in tagged.items())
    x_en, x_all = io.read_qrels(paths.x_en_qrels), io.read_qrels(paths.x_all_qrels)
    assert set(x_en) == set(x_all) == set(tagged)
    assert all(len(d) == 1 and docid_lang(next(iter(d))) == "en" for d in x_en.values())
    assert all(sorted(docid_lang(d) for d in docs) == sorted(SLICE_LANGS) for docs in x_all.values())
    # the same question shares its judgments in every language
    for q in qids:
        assert x_all[f"{q}-de"] == x_all[f"{q}-zh"] == x_all[f"{q}-en"] and x_en[f"{q}-zh"] == x_en[f"{q}-en"]
    assert cross_lingual({"de": {"q": "?"}}, {"q": {"de-a000-p00-s00": 1}}).x_en == {}  # no English answer


# ---------------------------------------------------------------- the language channel, without models
def test_query_lang_resolves_a_code_or_a_tagged_topics_file(tmp_path, monkeypatch):
    assert resolve().query_lang is None
    monkeypatch.setenv(ENV["query_lang"], "deu")
    assert resolve().query_lang == "de"
    assert resolve(query_lang="zh_Hans").query_lang == "zh"  # explicit beats the environment
    tsv = tmp_path / "t.tsv"
    tsv.write_text("q1\tWie alt?\tde\n")
    monkeypatch.setenv(ENV["query_lang"], str(tsv))
    assert resolve().query_lang == str(tsv)
    monkeypatch.setenv(ENV["query_lang"], str(tmp_path / "missing.tsv"))
    with pytest.raises(ValueError, match="PYSERINI_KDSPD_QUERY_LANG.*language code.*topics TSV"):
        resolve()


def test_tagged_topics_are_read_by_text_and_mixed_tags_settled_by_language_id(tmp_path):
    from pyserini_kdspd.encoders import QueryLanguages

    tsv = tmp_path / "t.tsv"
    io.write_topics(tsv, {"a-de": "Wie viele  Punkte?", "a-en": "How many points did they give up?",
                          "a-el": "How many points did they give up?", "b": "untagged"},
                    langs={"a-de": "de", "a-en": "en", "a-el": "el", "b": ""})
    assert io.read_topics(tsv)["a-de"] == "Wie viele Punkte?"  # Pyserini's view: two columns
    langs = QueryLanguages(str(tsv))
    assert langs("Wie viele Punkte?") == langs(" Wie viele   Punkte? ") == "de"
    assert langs("How many points did they give up?") == "en"  # tagged en and el: language ID says English
    assert langs("untagged") == "en"
    with pytest.raises(LookupError, match="not in .*t.tsv"):
        langs("a query from another file")
    assert QueryLanguages("de-DE")("anything") == "de" and QueryLanguages(None)("anything") is None


# ---------------------------------------------------------------- a KD-SPD folder's query side
@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """An untrained student on the packaged multilingual-e5-small backbone with MiniLM's query side, saved as
    the trainer saves one (named ``kdspd-...``, so the stock CLIs route it to the plugin)."""
    import torch

    from pyserini_kdspd.distill.teacher import Teacher
    from pyserini_kdspd.spd import Student, StudentConfig
    from pyserini_kdspd.spd.student import QUERY_ENCODER_DIR

    out = tmp_path_factory.mktemp("students") / "kdspd-untrained"
    teacher = Teacher("all-MiniLM-L6-v2")
    settings = dict(teacher.query_settings(), path=QUERY_ENCODER_DIR)
    torch.manual_seed(0)
    student = Student.build(StudentConfig(encoder="multilingual-e5-small", decoder_layers=1, prompt_length=4,
                                          languages=["en", "de", "zh"], passage_prefix="passage: ",
                                          normalize=True, teacher=settings))
    teacher.save_query_encoder(out / QUERY_ENCODER_DIR)
    student.save_pretrained(out)
    return out


@pytest.mark.slow
def test_tagged_queries_take_the_student_and_english_the_teacher(student_dir):
    from pyserini_kdspd.encoders import KdspdDocumentEncoder, KdspdQueryEncoder

    q = "Wie viele Punkte gab die Verteidigung der Panthers ab?"
    encoder = KdspdQueryEncoder(str(student_dir), query_lang="de")
    documents = KdspdDocumentEncoder(str(student_dir))
    as_de = documents.encode([q], langs=["de"])[0]
    np.testing.assert_array_equal(encoder.encode(q), as_de)  # query_lang: the student, as a German document
    np.testing.assert_array_equal(encoder.encode(q, lang="zh"), documents.encode([q], langs=["zh"])[0])
    assert np.linalg.norm(as_de - encoder.encode(q, lang="zh")) > 1e-3  # the prompt, not just the tower
    teacher = KdspdQueryEncoder(str(student_dir))  # untagged: the teacher, as before tags existed
    np.testing.assert_array_equal(teacher.encode(q), encoder.encode(q, lang="en"))
    np.testing.assert_array_equal(teacher.encode(q), np.asarray(teacher.inner.encode(q), dtype=np.float32))
    assert teacher._student is None  # English queries never load the student


# ---------------------------------------------------------------- the driver on the slice, through stock Pyserini
@pytest.fixture(scope="module")
def xruns(xslice, student_dir):
    from pyserini_kdspd.search.dense import DenseModel
    from pyserini_kdspd.xlingual import evaluate_runs, system_runs

    paths, root, _ = xslice
    models = {"KD-SPD": DenseModel.from_name(student_dir.name, str(student_dir))}
    runs = {label: system_runs(m, paths, root, hits=100, threads=1) for label, m in models.items()}
    return runs, evaluate_runs(runs, paths, hits=100), models


def _faiss(python, env, encoder, index, topics, out):
    """Stock ``pyserini.search.faiss`` as :func:`pyserini_kdspd.search.dense.search` calls it (same batching)."""
    proc = subprocess.run([python, "-m", "pyserini.search.faiss", "--index", str(index), "--topics", str(topics),
                           "--encoder", str(encoder), "--device", "cpu", "--hits", "100", "--batch-size", "64",
                           "--threads", "1", "--output", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return io.read_run(out)


@pytest.mark.slow
def test_language_tag_reaches_the_student_through_stock_faiss_search(xslice, xruns, student_dir, python, tmp_path):
    """Stock ``pyserini.search.faiss --encoder <KD-SPD folder>`` on the slice's FAISS index. The driver's X -> All
    run names the tagged topics file in PYSERINI_KDSPD_QUERY_LANG: each German question is searched with the
    student's German vector (its scores are those of that vector searched directly, not of the Chinese one),
    and ``=de`` on a German topics file gives the same; every English question gets exactly the run it gets
    with no tag at all (the teacher's)."""
    from pyserini_kdspd.encoders import KdspdDocumentEncoder

    paths, root, qids = xslice
    runs, _, _ = xruns
    index = root / "indexes" / "lareqa" / student_dir.name
    tagged = io.read_tagged_topics(paths.all_topics)
    io.write_topics(tmp_path / "de.tsv", {x: text for x, (text, lang) in tagged.items() if lang == "de"})
    env = {k: v for k, v in os.environ.items() if k != ENV["query_lang"]}
    env.update(TOKENIZERS_PARALLELISM="false", PYSERINI_KDSPD_THREADS="1")
    by_file = io.read_run(runs["KD-SPD"]["x-all"])
    untagged = _faiss(python, env, student_dir, index, paths.all_topics, tmp_path / "untagged.txt")
    by_code = _faiss(python, dict(env, **{ENV["query_lang"]: "de"}), student_dir, index, tmp_path / "de.tsv",
                     tmp_path / "by-code.txt")

    assert set(by_file) == set(untagged) == set(tagged)
    faiss_index = faiss.read_index(str(index / "index"))
    docids = (index / "docid").read_text().split()
    documents = KdspdDocumentEncoder(str(student_dir))
    for x, (text, lang) in tagged.items():
        if lang == "en":
            assert by_file[x] == untagged[x], x  # English: the teacher, bit for bit as without tags
            continue
        assert by_file[x] != untagged[x], x
        if lang != "de":
            continue
        assert by_code[x] == by_file[x], x
        for prompt, same in (("de", True), ("zh", False)):
            scores, rows = faiss_index.search(documents.encode([text], langs=[prompt]), len(docids))
            direct = {docids[i]: float(v) for v, i in zip(scores[0], rows[0])}
            assert all(abs(direct[d] - v) <= 2e-6 for d, v in by_file[x].items()) == same, (x, prompt)


@pytest.mark.slow
def test_x_to_english_end_to_end_on_the_slice(xslice, xruns):
    from pyserini_kdspd.evaluate import evaluate
    from pyserini_kdspd.xlingual import MEAN, by_language, render, trec_eval_note

    paths, root, qids = xslice
    runs, evals, _ = xruns
    x_en_qrels = io.read_qrels(paths.x_en_qrels)
    for label, per in runs.items():
        run = io.read_run(per["x-en"])
        assert set(run) == set(x_en_qrels), label
        assert all(docid_lang(d) == "en" for docs in run.values() for d in docs), label  # English sentences only
        assert len(io.read_run(per["x-all"])["%s-de" % qids[0]]) == sum(1 for _ in io.read_jsonl(
            paths.corpus / "corpus.jsonl"))  # X -> All: the whole slice
        split = by_language(evals[label]["x-en"])
        assert list(split) == [lang for lang in LANGUAGES if lang in SLICE_LANGS] + [MEAN]
        assert split["de"].num_queries == N_QUESTIONS
        for lang in SLICE_LANGS:  # P@1 of the project's evaluator = answers ranked first, counted by hand
            top = [io.ranked(run[f"{q}-{lang}"])[0][0] for q in qids]
            hand = sum(d in x_en_qrels[f"{q}-{lang}"] for q, d in zip(qids, top)) / N_QUESTIONS
            assert split[lang]["P_1"] == pytest.approx(hand), (label, lang)
        assert split[MEAN]["P_1"] == pytest.approx((split["de"]["P_1"] + split["zh"]["P_1"]) / 2)
        assert evaluate(per["x-en"], paths.x_en_qrels, metrics=("P_1",))["P_1"] == pytest.approx(
            evals[label]["x-en"]["P_1"])
    # German questions take the (untrained) student, whose space is its documents' (the same backbone): it finds
    # their English answers; English questions take the teacher, whose space has nothing to do with the untrained
    # student's documents. A German question sent to the teacher would score like an English one.
    kd = by_language(evals["KD-SPD"]["x-en"])
    assert kd["de"]["recip_rank"] > 0.5 > 0.2 > kd["en"]["recip_rank"], {k: v.mean for k, v in kd.items()}
    text = render(evals)
    assert "| KD-SPD |" in text and "de P@1" in text and "mean P@1" in text and "X → All" in text
    assert trec_eval_note(runs, evals, paths).startswith("Every mean")


@pytest.mark.slow
def test_the_command_runs_a_teacher_that_is_mdprs_model_once(mini_data, tmp_path, capsys):
    """``python -m pyserini_kdspd.xlingual`` with the teacher the same model as mDPR (the offline default: e5-small
    with the same prefixes): one index, one query encoding and one run per setting, shown in both rows."""
    from pyserini_kdspd import xlingual

    argv = ["--data-dir", str(mini_data), "--output-root", str(tmp_path), "--mdpr", "all-MiniLM-L6-v2", "--teacher",
            "all-MiniLM-L6-v2", "--muse", "none", "--students", "--threads", "1"]
    assert xlingual.main(argv) == 0
    assert "[reuse] Teacher (English) encodes queries and documents exactly as mDPR" in capsys.readouterr().out
    for setting in xlingual.SETTINGS:
        assert sorted(p.name for p in (tmp_path / "runs" / "lareqa" / setting).glob("*.txt")) == ["mdpr.txt"]
    assert not (tmp_path / "indexes" / "lareqa" / "teacher").exists()
    systems = io.read_json(tmp_path / "runs" / "lareqa" / "xlingual.json")["systems"]
    assert set(systems) == {"mDPR", "Teacher (English)"} and systems["mDPR"] == systems["Teacher (English)"]

    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- xlingual:start -->\nstale block\n<!-- xlingual:end -->\n", encoding="utf-8")
    assert xlingual.main(["--readme", str(readme), "--output-root", str(tmp_path)]) == 0
    text = readme.read_text(encoding="utf-8")
    table = (tmp_path / "runs" / "lareqa" / "xlingual.md").read_text(encoding="utf-8").strip()
    assert "stale block" not in text and table in text and "| Teacher (English) |" in text
