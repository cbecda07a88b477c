"""The offline English teachers behind ``--teacher``: all-MiniLM-L6-v2 (tested in test_train_cli), all-mpnet-base-v2
and multilingual-e5-small with its ``passage: `` / ``query: `` prefixes, and their English-only ceilings."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.ceiling import NAME as CEILING
from pyserini_kdspd.ceiling import main as ceiling_main
from pyserini_kdspd.ceiling import perfect_student, restrict_qrels, teacher_ceiling
from pyserini_kdspd.data.lareqa import in_language, make_docid, translations
from pyserini_kdspd.distill import Teacher
from pyserini_kdspd.distill.dev import evaluate_saved
from pyserini_kdspd.evaluate import evaluate
from pyserini_kdspd.models import encode_folder, resolve_model
from pyserini_kdspd import teachers
from pyserini_kdspd.teachers import STUDENTS, dev_figures
from pyserini_kdspd.train import RESIDUAL
from test_langid import mini_data  # noqa: F401  (fixtures: three XQuAD-R paragraphs; bitext and FLORES cuts)
from test_train_cli import tiny
from test_variants import small_data  # noqa: F401

TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
QUERY = "how much protein should a female eat per day"


def test_mpnet_teacher_gives_768d_unit_vectors():
    teacher = Teacher("all-mpnet-base-v2", precision="fp32")
    emb = teacher.encode_documents(TEXTS)
    assert teacher.dim == 768 and emb.shape == (3, 768) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3
    np.testing.assert_allclose(emb, encode_folder(teacher.path, TEXTS), atol=1e-5)
    assert teacher.query_settings() | {"path": None} == {
        "name": "all-mpnet-base-v2", "path": None, "encoder_class": "AutoQueryEncoder", "pooling": "mean",
        "l2_norm": True, "query_prefix": ""}


def test_e5_teacher_encodes_passages_and_saves_its_query_prefix():
    teacher = Teacher("multilingual-e5-small", precision="fp32")
    emb = teacher.encode_documents(TEXTS)
    np.testing.assert_allclose(emb, encode_folder(teacher.path, TEXTS, prefix="passage: "), atol=1e-5)
    assert not np.allclose(emb, encode_folder(teacher.path, TEXTS), atol=1e-3)
    assert teacher.query_settings()["query_prefix"] == "query: "


def test_student_of_the_e5_teacher_encodes_queries_the_teachers_way(python, bitext_dir, tmp_path):
    """A 2-step student's folder serves ``query: ``-prefixed teacher vectors through Pyserini's own query
    encoder selection (what ``python -m pyserini.search.faiss --encoder <folder>`` runs)."""
    from pyserini.search.faiss.__main__ import init_query_encoder

    out = tmp_path / "kdspd-e5-teacher"
    argv = tiny(bitext_dir, out, tmp_path / "cache") + [
        "--teacher", "multilingual-e5-small", "--max-steps", "2", "--max-pairs-per-language", "20",
        "--languages", "de"]
    proc = subprocess.run([python, "-m", "pyserini_kdspd.train", *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    encoder = init_query_encoder(str(out), None, None, None, None, "cpu", 64, "cls", False, None)
    got = encoder.encode(QUERY)
    e5 = resolve_model("multilingual-e5-small")
    want, bare = encode_folder(e5, [QUERY], prefix="query: ")[0], encode_folder(e5, [QUERY])[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.linalg.norm(got - bare) > 1e-2  # the prefix changes the vector: its absence would show


def test_restrict_qrels_keeps_only_the_searched_documents():
    qrels = {"q1": {"en-1": 1, "de-1": 1}, "q2": {"de-2": 1}}
    assert restrict_qrels(qrels, ["en-1", "en-2"]) == {"q1": {"en-1": 1}}


def _ids(lang, *sentences):
    return [make_docid(lang, 0, 0, i) for i in sentences]


# One paragraph: English has three sentences; German splits the first in two (its answer in the second half), Thai
# merges the last two (one sentence holding two questions' answers).
PARAGRAPH = _ids("en", 0, 1, 2) + _ids("de", 0, 1, 2, 3) + _ids("th", 0, 1)
ANSWERS = {"q1": _ids("en", 0) + _ids("de", 1) + _ids("th", 0),
           "q2": _ids("en", 1) + _ids("de", 2) + _ids("th", 1),
           "q3": _ids("en", 2) + _ids("de", 3) + _ids("th", 1)}


def test_translations_follow_the_answers_not_the_positions():
    versions = translations({q: dict.fromkeys(d, 1) for q, d in ANSWERS.items()}, PARAGRAPH)
    en = _ids("en", 0, 1, 2)
    assert [v[0] for v in map(versions.get, en)] == en
    assert {e: set(v) for e, v in versions.items()} == {
        en[0]: {en[0], *_ids("de", 0, 1), *_ids("th", 0)},  # de s00 has no answer: its position's
        en[1]: {en[1], *_ids("de", 2), *_ids("th", 1)},
        en[2]: {en[2], *_ids("de", 3), *_ids("th", 1)}}


def test_translations_of_xquad_r_hold_every_answer_of_the_question(shared_data):
    """On the real XQuAD-R: every question's 11 answers are versions of its English answer, and every sentence is
    a version of some English sentence. Sentence positions alone would miss answers in every language but English
    (Thai most: it has 852 sentences against English's 1,180)."""
    from pyserini_kdspd.data.lareqa import LANGUAGES, docid_lang, load_lareqa

    data = load_lareqa(shared_data, download=False)
    docids = [s.docid for s in data.sentences]
    versions = translations(data.qrels, docids)
    assert {d for v in versions.values() for d in v} == set(docids)
    by_position = {e: [in_language(e, lang) for lang in LANGUAGES] for e in versions}
    for positional, expect_all in ((False, True), (True, False)):
        table = by_position if positional else versions
        held = [set(d) <= set(table[next(e for e in d if docid_lang(e) == "en")]) for d in data.qrels.values()]
        assert all(held) is expect_all
    assert len(data.qrels) == 1190


def test_a_perfect_student_gives_each_version_its_english_sentences_best_score(tmp_path):
    """The English run ranks q2's answer (s01) second, under s00; Thai's merged sentence is a version of s01 and
    s02 and takes the higher score. So the four versions of s00 (German's first half by position) come first, all
    not relevant to q2, and q2's three answers fill ranks 5-7."""
    from pyserini_kdspd.evaluate import evaluate

    versions = translations({q: dict.fromkeys(d, 1) for q, d in ANSWERS.items()}, PARAGRAPH)
    english = {"q2": dict(zip(_ids("en", 0, 1, 2), (0.9, 0.8, 0.7)))}
    run = perfect_student(english, versions)
    assert run["q2"] == {**dict.fromkeys(_ids("en", 0) + _ids("de", 0, 1) + _ids("th", 0), 0.9),
                         **dict.fromkeys(_ids("en", 1) + _ids("de", 2) + _ids("th", 1), 0.8),
                         **dict.fromkeys(_ids("en", 2) + _ids("de", 3), 0.7)}
    io.write_run(tmp_path / "run.txt", run)
    io.write_qrels(tmp_path / "qrels.txt", {"q2": dict.fromkeys(ANSWERS["q2"], 1)})
    ev = evaluate(tmp_path / "run.txt", tmp_path / "qrels.txt", metrics=("map",))
    assert ev.per_query["q2"]["map"] == pytest.approx((1 / 5 + 2 / 6 + 3 / 7) / 3)
    with pytest.raises(ValueError, match="English sentences only"):
        perfect_student({"q1": {make_docid("de", 0, 0, 0): 1.0}}, versions)


@pytest.mark.slow
def test_ceiling_of_a_teacher_through_stock_pyserini(shared_data, tmp_path):
    """40 real English LAReQA sentences and their questions; the qrels hold every language's answer,
    and only the English ones may count."""
    from pyserini_kdspd.data.lareqa import load_lareqa

    data = load_lareqa(shared_data, download=False)
    english = data.sentences_of("en")[:40]
    ids = {s.docid for s in english}
    topics = {q: t for q, t in data.topics("en").items() if ids & set(data.qrels[q])}
    io.write_jsonl(tmp_path / "corpus" / "docs.jsonl",
                   ({"id": s.docid, "contents": s.text, "text": s.text, "lang": "en"} for s in english))
    io.write_topics(tmp_path / "topics.tsv", topics)
    io.write_qrels(tmp_path / "qrels.txt", {q: data.qrels[q] for q in topics})
    ev = teacher_ceiling("all-MiniLM-L6-v2", tmp_path / "corpus", tmp_path / "topics.tsv", tmp_path / "qrels.txt",
                         tmp_path / "index", tmp_path / "run.txt", hits=10)
    assert ev.num_queries == len(topics) >= 20 and not ev.missing
    assert ev["recip_rank"] > 0.7  # MiniLM answers English questions on English sentences well
    assert ev["map"] == pytest.approx(ev["recip_rank"])  # one English answer per question: AP is its RR
    run = io.read_run(tmp_path / "run.txt")
    assert {d for docs in run.values() for d in docs} <= ids


def test_closer_measures_a_students_distance_from_its_perfect_student():
    """Two English sentences and their German versions; the question's answer is sentence 0. The student
    leaves English where the teacher puts it and shifts German by a fixed error that sinks German's answer under
    English's non-answer: MAP 0.833 as trained (ranks 1 and 3), 1 as the perfect student and already at a = 0.2
    (not yet at 0.6);
    the reported error is the shift's length, 0 for English; the same error twice correlates at 1, its opposite
    at -1; the report shows the table and the correlation."""
    from pyserini_kdspd.ceiling import closer, error_correlation, report

    ids = _ids("en", 0, 1) + _ids("de", 0, 1)
    t = np.array([[1, 0, 0], [0.8, 0.6, 0], [0.9, 0, 0.436], [0, 1, 0]], dtype=np.float32)  # de: the teacher's own
    shift = np.array([-0.5, 0, 0.3], dtype=np.float32)
    x = np.array([t[0], t[1], t[0] + shift, t[1] + shift])
    qrels = {"q": {ids[0]: 1, ids[2]: 1}}
    versions = {ids[0]: [ids[0], ids[2]], ids[1]: [ids[1], ids[3]]}
    got = closer((ids, x), (ids, t), (["q"], np.array([[1, 0, 0]], dtype=np.float32)), qrels, versions, hits=4)
    assert got["error"] == pytest.approx({"en": 0.0, "de": float(np.linalg.norm(shift))})
    assert got["map"][1.0] == pytest.approx((1 + 2 / 3) / 2) and got["recip_rank"][1.0] == 1.0
    assert got["map"][0.0] == 1.0 and got["map"][0.2] == 1.0 and got["map"][0.6] == got["map"][1.0]
    assert error_correlation(got["errors"], got["errors"], ids) == pytest.approx(1.0)
    assert error_correlation(got["errors"], -got["errors"], ids) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same sentences"):
        closer((ids[::-1], x), (ids, t), (["q"], t[:1]), qrels, versions, hits=4)
    got["correlation"] = {"other": 0.98765}
    text = report({}, {}, "python -m pyserini_kdspd.ceiling --students s other", 4, {"en": 2, "de": 2},
                  {"s": got, "other": {**got, "correlation": {"s": 0.98765}}})
    assert "| s | 0.000 | 0.583 | 0.833 | " in text and "| 1.000 |" in text
    assert "MAP a = 1 (as trained)" in text and "MAP a = 0 (perfect)" in text
    assert "The errors of s and other" in text and "r = 0.988" in text


def test_ceiling_cli_refuses_bad_flags_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as err:
        ceiling_main(["--teacher", "all-MiniLM-L6-v2", "--hits", "0", "--output-root", str(tmp_path)])
    assert err.value.code == 2 and "--hits: must be > 0, got 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    # --students needs the Table 2 driver's indexes and student folders: it names them and stops before any work
    assert ceiling_main(["--students", "kdspd", "--output-root", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path}/indexes/lareqa/teacher/index" in err and f"{tmp_path}/models/kdspd" in err
    assert "run python -m pyserini_kdspd.table2 first" in err and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_ceiling_cli_writes_the_ceiling_and_the_perfect_student_and_the_readme_block(table5_data, tmp_path):
    """``python -m pyserini_kdspd.ceiling`` on three XQuAD-R paragraphs with MiniLM: the perfect student's run
    gives every answer the English answer's score, the report's figures are those of the run files, and
    ``--readme`` copies the report between the markers."""
    from pyserini_kdspd.ceiling import report_path

    root = tmp_path / "out"
    assert ceiling_main(["--teacher", "all-MiniLM-L6-v2", "--data-dir", str(table5_data),
                         "--output-root", str(root)]) == 0
    english = io.read_run(root / "runs" / CEILING / "all-MiniLM-L6-v2.txt")
    perfect = io.read_run(root / "runs" / CEILING / "all-MiniLM-L6-v2.perfect-student.txt")
    qrels = io.read_qrels(root / "qrels" / "lareqa.txt")
    for q, judged in qrels.items():
        en = next(d for d in judged if d.startswith("en-"))
        assert perfect[q][en] == english[q][en]  # a merged sentence may score higher: the best of its English ones
        assert all(perfect[q][d] >= english[q][en] for d in judged) and len(judged) == 11
    ev = evaluate(root / "runs" / CEILING / "all-MiniLM-L6-v2.perfect-student.txt", root / "qrels" / "lareqa.txt",
                  metrics=("map",))
    text = report_path(root).read_text()
    assert text.startswith("`python -m pyserini_kdspd.ceiling --teacher all-MiniLM-L6-v2")
    assert "the 15 English questions against the 17 English sentences" in text and "all 199 sentences" in text
    assert text.count("| all-MiniLM-L6-v2 |") == 2 and f"{ev.mean['map']:.3f}" in text.split("perfect student")[1]
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- ceiling:start -->\nSTALE\n<!-- ceiling:end -->\nafter\n")
    assert ceiling_main(["--readme", str(readme), "--output-root", str(root)]) == 0
    got = readme.read_text()
    assert "STALE" not in got and text.strip() in got and got.endswith("<!-- ceiling:end -->\nafter\n")


@pytest.fixture
def table5_data(mini_data, small_data, tmp_path):  # noqa: F811
    """A data folder in the shared layout: XQuAD-R cut to three paragraphs in every language (199 sentences, 15
    questions), 40 pairs of en-de, en-el and en-fr, FLORES cut to 10 lines."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "lareqa").symlink_to(mini_data / "lareqa")
    for part in ("bitext", "flores200"):
        (data / part).symlink_to(small_data / part)
    return data


@pytest.mark.slow
def test_table5_trains_both_students_per_teacher_and_scores_them_on_lareqa(python, table5_data, tmp_path,
                                                                           monkeypatch):
    """``python -m pyserini_kdspd.teachers`` end to end with one packaged teacher and tiny students."""
    monkeypatch.setenv("PYSERINI_KDSPD_CACHE", str(tmp_path / "cache"))  # the teacher targets: this test's own
    cmd = [python, "-m", "pyserini_kdspd.teachers", "--teacher", "all-MiniLM-L6-v2", "--train-steps", "2",
           "--encoder", "all-MiniLM-L6-v2", "--data-dir", str(table5_data), "--output-root", str(tmp_path), "--",
           "--decoder-layers", "1", "--prompt-length", "4", "--max-length", "32", "--dev-sentences", "10"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = io.read_json(tmp_path / "runs" / "teachers" / "table5.json")
    assert meta["chosen"] == "all-MiniLM-L6-v2" and meta["train_steps"] == 2
    (row,) = meta["rows"]
    qrels = tmp_path / "qrels" / "lareqa.txt"
    assert len(io.read_qrels(qrels)) == 15
    residual = {}
    for label, _, _, _ in STUDENTS:
        log = io.read_json(tmp_path / "models" / "teachers" / "all-MiniLM-L6-v2" / log_folder(label) /
                           "training_log.json")
        residual[label] = log["settings"].get("residual", False)
        assert log["steps"] == 2 and log["settings"]["teacher"] == "all-MiniLM-L6-v2"
        assert log["settings"]["languages"] == ["de", "el", "fr"]
        assert row["students"][label]["dev"]["p1_en_xx"] == log["dev"][-1]["results"]["mean_seen"]["p1_en_xx"]
        run = tmp_path / "runs" / "teachers" / f"all-MiniLM-L6-v2.{log_folder(label)}.txt"
        assert len({d for docs in io.read_run(run).values() for d in docs}) > 100  # every language was searched
        assert row["students"][label]["lareqa"]["map"] == pytest.approx(
            evaluate(run, qrels, metrics=("map",)).mean["map"])
    # the teacher alone on the English sentences, scored on their English answers only
    english = tmp_path / "collections" / "lareqa" / "by-lang" / "en"
    docids = [r["id"] for r in io.read_jsonl(next(english.glob("*.jsonl")))]
    only_en = tmp_path / "qrels.en.txt"
    io.write_qrels(only_en, restrict_qrels(io.read_qrels(qrels), docids))
    assert row["ceiling"] == pytest.approx(evaluate(tmp_path / "runs" / CEILING / "all-MiniLM-L6-v2.txt", only_en,
                                                    metrics=("recip_rank",)).mean["recip_rank"])
    assert row["ceiling"] > 0.5  # MiniLM answers English questions well (0.64 here; chance on ~18 sentences: 0.19)
    table = (tmp_path / "runs" / "teachers" / "table5.md").read_text()
    # KD-SPD is train's default; the third row has the other document vector
    assert residual["KD-SPD"] is RESIDUAL["spd"] and residual[STUDENTS[2][0]] is not RESIDUAL["spd"]
    assert not residual["KD-Encoder"]
    assert residual == {label: teachers.residual(label) for label in residual}
    assert meta["chosen_residual"] == residual[meta["chosen_student"]]
    assert f"| **all-MiniLM-L6-v2** | {row['ceiling']:.3f}" in table
    assert table.count("| KD-SPD |") + table.count("| **KD-SPD** |") == 1
    assert f"| **{meta['chosen_student']}** |" in table  # the chosen KD-SPD row
    assert f"{STUDENTS[2][0]}" in table
    assert "all 199 sentences" in table  # the slice's size, not the full collection's
    dev = row["students"]["KD-SPD"]["dev"]
    assert f"KD-SPD{'**' if meta['chosen_student'] == 'KD-SPD' else ''} | {dev['pooled_map']:.3f} | " \
           f"{dev['pooled_query_map']:.3f} |" in table  # the second chooses

    # a student trained before the pooled MAP existed is evaluated again from its folder, as its training would have
    folder = tmp_path / "models" / "teachers" / "all-MiniLM-L6-v2" / "kdspd"
    log = io.read_json(folder / "training_log.json")
    flores = table5_data / "flores200" / "devtest"
    assert evaluate_saved(folder, flores=flores) == log["dev"][-1]["results"]
    del log["dev"][-1]["results"]["pooled"]
    io.write_json(folder / "training_log.json", log)
    assert dev_figures(folder, table5_data) == row["students"]["KD-SPD"]["dev"]


def test_the_teacher_and_kdspds_document_vector_are_chosen_together_on_dev():
    def row(teacher, *figures):  # the dev figure of each student of STUDENTS
        return {"teacher": teacher, "students": {label: {"dev": {teachers.CHOOSE_BY: f}}
                                                 for (label, _, _, _), f in zip(STUDENTS, figures)}}
    other = STUDENTS[2][0]
    # the best KD-SPD cell wins, whichever document vector it has; KD-Encoder never chooses
    assert teachers.choose([row("a", 0.99, 0.6, 0.9), row("b", 0.5, 0.8, 0.1)]) == ("a", other)
    assert teachers.choose([row("a", 0.99, 0.6, 0.7), row("b", 0.5, 0.8, 0.1)]) == ("b", "KD-SPD")


def log_folder(label: str) -> str:
    return {label: folder for label, _, folder, _ in STUDENTS}[label]
