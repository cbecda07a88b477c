"""Careless inputs a new user gives (issue 13, section 5): each is a clear error naming the file
(and line) or the flag, or a documented behaviour, never a silently different result."""
import codecs
import gzip
import json

import pytest

from pyserini_kdspd import evaluate, fusion, io, paths, table2
from pyserini_kdspd.data import clef, lareqa, mtrec
from pyserini_kdspd.distill.dev import read_flores
from pyserini_kdspd.io import FormatError
from pyserini_kdspd.search import bm25, dense
from pyserini_kdspd.search.translate.smt import TranslationTable

QRELS = "1 0 a 1\n1 0 b 1\n2 0 c 1\n"
RUN = "1 Q0 a 1 3 t\n1 Q0 x 2 2 t\n1 Q0 b 3 1 t\n2 Q0 y 1 2 t\n2 Q0 c 2 1 t\n"
BOM = "\ufeff"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "qrels.txt").write_text(QRELS, encoding="utf-8")
    (tmp_path / "run.txt").write_text(RUN, encoding="utf-8")
    return tmp_path


def corpus(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def eval_cli(capsys, *argv):
    code = evaluate.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# 1 ------------------------------------------------------------------------------------------------
def test_byte_order_mark_is_ignored_in_runs_qrels_topics_and_jsonl(files):
    """A BOM (Windows editors write one) used to glue itself to the first id: MAP 0.667 -> 0.375 / 0.278."""
    (files / "run.bom.txt").write_text(BOM + RUN, encoding="utf-8")
    (files / "qrels.bom.txt").write_text(BOM + QRELS, encoding="utf-8")
    plain = evaluate.evaluate(files / "run.txt", files / "qrels.txt")["map"]
    assert plain == pytest.approx(2 / 3)
    assert evaluate.evaluate(files / "run.bom.txt", files / "qrels.txt")["map"] == plain
    assert evaluate.evaluate(files / "run.txt", files / "qrels.bom.txt")["map"] == plain
    (files / "t.tsv").write_text(BOM + "1\thello\n", encoding="utf-8")
    assert io.read_topics(files / "t.tsv") == {"1": "hello"}
    (files / "c.jsonl").write_text(BOM + '{"id": "a"}\n', encoding="utf-8")
    assert list(io.read_jsonl(files / "c.jsonl")) == [{"id": "a"}]


# 2 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("score", ["nan", "inf", "-inf"])
def test_non_finite_score_in_a_run_names_file_and_line(files, capsys, score):
    bad = files / "bad.txt"
    bad.write_text(f"1 Q0 b 1 2 t\n1 Q0 a 2 {score} t\n", encoding="utf-8")
    code, out, err = eval_cli(capsys, "--qrels", str(files / "qrels.txt"), "--runs", str(bad))
    assert code == 2 and out == ""
    assert err == f"error: {bad}:2: score {score!r} is not a finite number\n"


# 3 ------------------------------------------------------------------------------------------------
def test_fusion_rejects_non_finite_scores_and_a_non_positive_rrf_k(files, capsys):
    with pytest.raises(ValueError, match=r"run 'a': query '1', document 'x' has score nan"):
        fusion.fuse({"a": {"1": {"x": float("nan"), "y": 1.0}}, "b": {"1": {"z": 2.0}}}, "minmax")
    with pytest.raises(ValueError, match="rrf_k must be positive"):
        fusion.fuse({"a": {"1": {"x": 1.0}}}, "rrf", rrf_k=-1)
    out = files / "fused.txt"
    for k in ("-1", "0", "x"):
        with pytest.raises(SystemExit) as e:
            fusion.main(["--runs", str(files / "run.txt"), "--method", "rrf", "--rrf-k", k, "--output", str(out)])
        assert e.value.code == 2
        assert f"argument --rrf-k: expected a positive integer, got {k!r}" in capsys.readouterr().err
    assert not out.exists()


# 4 ------------------------------------------------------------------------------------------------
def test_empty_topics_file_is_an_error_not_an_empty_run(tmp_path, capsys):
    idx = bm25.build_index(corpus(tmp_path / "c", [{"id": "a", "contents": "hello world"}]), tmp_path / "idx", "en")
    empty = tmp_path / "topics.tsv"
    empty.write_text("\n", encoding="utf-8")
    out = tmp_path / "run.txt"
    for index, topics, error in ((idx, empty, f"{empty}: no topics: the file is empty"),
                                 (idx, tmp_path / "absent.tsv", f"{tmp_path / 'absent.tsv'}: no such file"),
                                 (tmp_path / "no-idx", empty, f"{tmp_path / 'no-idx'}: no such index")):
        code = bm25.main(["search", "--index", str(index), "--language", "en", "--topics", str(topics),
                          "--output", str(out)])
        assert (code, capsys.readouterr().err) == (2, f"error: {error}\n")  # one line, no traceback
    assert not out.exists()


# 5 ------------------------------------------------------------------------------------------------
def test_duplicate_docids_in_a_run_or_a_collection(files, capsys, tmp_path):
    dup = files / "dup.txt"
    dup.write_text("1 Q0 a 1 3 t\n1 Q0 b 2 2 t\n1 Q0 a 3 1 t\n", encoding="utf-8")
    code, _, err = eval_cli(capsys, "--qrels", str(files / "qrels.txt"), "--runs", str(dup))
    assert code == 2 and err == f"error: {dup}:3: document 'a' ranked twice for query '1'\n"

    c = corpus(tmp_path / "c", [{"id": "a", "contents": "hello", "text": "hello", "lang": "en"},
                                {"id": "b", "contents": "world", "text": "world", "lang": "en"},
                                {"id": "a", "contents": "again", "text": "again", "lang": "de"}])
    want = f"^{c / 'corpus.jsonl'}:3: document id 'a' occurs twice in {c}; ids must be unique$"
    with pytest.raises(FormatError, match=want):
        bm25.build_index(c, tmp_path / "bm25", "en")
    with pytest.raises(FormatError, match=want):
        dense.encode_corpus(dense.DenseModel("m", "unused"), c, tmp_path / "dense")
    assert not (tmp_path / "bm25").exists() and not (tmp_path / "dense.partial").exists()


# 6 ------------------------------------------------------------------------------------------------
def test_empty_collection_builds_no_index(tmp_path):
    c = corpus(tmp_path / "c", [])
    for build in (lambda: bm25.build_index(c, tmp_path / "bm25", "en"),
                  lambda: bm25.build_index(c, tmp_path / "bm25", "el"),  # the pre-tokenised path
                  lambda: dense.encode_corpus(dense.DenseModel("m", "unused"), c, tmp_path / "dense")):
        with pytest.raises(FormatError, match=f"^{c}: the collection is empty: nothing to index$"):
            build()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# 7 ------------------------------------------------------------------------------------------------
def test_output_flag_naming_a_folder_fails_before_any_work(files, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--qrels", str(files / "qrels.txt"), "--runs", str(files / "run.txt"),
                       "--per-query", str(files)])
    out = capsys.readouterr()
    assert e.value.code == 2 and out.out == ""  # no table printed: refused at parsing
    assert f"argument --per-query: {files} is a folder; give the path of a file to write" in out.err
    with pytest.raises(SystemExit) as e:
        fusion.main(["--runs", str(files / "run.txt"), "--output", str(files)])
    assert e.value.code == 2
    assert f"argument --output: {files} is a folder" in capsys.readouterr().err


# 8 ------------------------------------------------------------------------------------------------
def test_non_utf8_run_and_topics_name_file_and_line(files, capsys):
    run = files / "latin1.txt"
    run.write_bytes("1 Q0 a 1 3 t\n1 Q0 caf\u00e9 2 1 t\n".encode("latin-1"))
    code, _, err = eval_cli(capsys, "--qrels", str(files / "qrels.txt"), "--runs", str(run))
    assert code == 2 and err.startswith(f"error: {run}:2: not UTF-8 (byte 0xe9 at byte 9 of the line): convert")
    topics = files / "latin1.tsv"
    topics.write_bytes("1\tcaf\u00e9\n".encode("latin-1"))
    with pytest.raises(FormatError, match=f"^{topics}:1: not UTF-8 \\(byte 0xe9 at byte 6 "):
        io.read_topics(topics)


# 9 ------------------------------------------------------------------------------------------------
def test_empty_qrels_file_and_qrels_folder_name_the_path(files, capsys):
    empty = files / "empty.qrels"
    empty.write_text("", encoding="utf-8")
    code, _, err = eval_cli(capsys, "--qrels", str(empty), "--runs", str(files / "run.txt"))
    assert code == 2 and err == f"error: {empty}: no judgments: the file is empty\n"
    code, _, err = eval_cli(capsys, "--qrels", str(files), "--runs", str(files / "run.txt"))
    assert code == 2 and err == f"error: {files}: is a folder; expected a file\n"


# 10 -----------------------------------------------------------------------------------------------
def test_table2_systems_and_data_dir_are_checked_at_parsing(tmp_path, capsys, monkeypatch):
    # mTREC without --mmarco-dir is skipped at once, so should a check be missing, the driver still does no work
    cheap = ["--output-root", str(tmp_path), "--collections", "mtrec", "--systems", "bm25"]
    for argv, flag, message in (
            (["--systems", "bm25,foo"], "--systems", "unknown foo; choose from bm25, dense, kd"),
            (["--collections", ","], "--collections", "empty; choose from lareqa, mtrec, clef"),
            (["--data-dir", str(tmp_path / "absent")], None,
             f"data folder {tmp_path / 'absent'} (from --data-dir) does not exist")):
        with pytest.raises(SystemExit) as e:
            table2.main(cheap + argv)
        out = capsys.readouterr()
        assert e.value.code == 2 and "[stage]" not in out.out  # refused before the data stage
        assert (f"argument {flag}: {message}" if flag else f"error: {message}") in out.err
    monkeypatch.setenv("PYSERINI_KDSPD_DATA", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match=f"data folder {tmp_path / 'gone'} \\(from PYSERINI_KDSPD_DATA\\)"):
        paths.data_dir()  # never falls back to ../shared/data when told where to look


# 11 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_in_memory_run_with_a_non_finite_score_names_query_and_document(score):
    """A file's NaN is refused by read_run; a dict handed to evaluate() must be held to the same rule."""
    with pytest.raises(ValueError, match=f"^run 'mDPR': query '1', document 'b' has score {score}; scores must"):
        evaluate.evaluate({"1": {"a": 2.0, "b": score}}, {"1": {"a": 1, "b": 1}}, name="mDPR")


def test_qrels_without_a_relevant_document_name_the_file(files, capsys):
    unjudged = files / "unjudged.qrels"
    unjudged.write_text("1 0 a 0\n2 0 c 0\n", encoding="utf-8")
    code, out, err = eval_cli(capsys, "--qrels", str(unjudged), "--runs", str(files / "run.txt"))
    assert (code, out, err) == (2, "", f"error: {unjudged}: no query has a document with relevance >= 1\n")
    code, _, err = eval_cli(capsys, "--qrels", str(files / "qrels.txt"), "--runs", str(files / "run.txt"), "-l", "2")
    assert err == f"error: {files / 'qrels.txt'}: no query has a document with relevance >= 2\n"


# 12 -----------------------------------------------------------------------------------------------
def test_lareqa_json_with_a_byte_order_mark_is_read_and_latin1_names_file_and_line(tmp_path):
    folder = tmp_path / "lareqa" / "xquad-r"
    folder.mkdir(parents=True)
    para = {"context": "One two. Three four.", "sentences": ["One two.", "Three four."],
            "sentence_breaks": [[0, 8], [9, 20]],
            "qas": [{"id": "q1", "question": "Qué?", "answers": [{"text": "four", "answer_start": 15}]}]}
    text = json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [para]}]}, ensure_ascii=False, indent=1)
    for lang in lareqa.LANGUAGES:
        (folder / f"{lang}.json").write_text(BOM + text if lang == "de" else text, encoding="utf-8")
    paths = lareqa.prepare_lareqa(tmp_path, tmp_path / "out", download=False)
    assert io.read_topics(paths.topics["de"]) == {"q1": "Qué?"}
    (folder / "el.json").write_bytes(text.encode("latin-1"))
    line = text[:text.index("Qué")].count("\n") + 1
    with pytest.raises(FormatError, match=f"^{folder / 'el.json'}:{line}: not UTF-8 \\(byte 0xe9"):
        lareqa.load_lareqa(tmp_path, download=False)


def test_clef_drops_a_byte_order_mark_and_still_reads_latin1(tmp_path):
    exported = tmp_path / "empty-export"  # an empty file saved by a Windows editor: no documents, as when empty
    exported.write_bytes(codecs.BOM_UTF8 + b"\r\n")
    assert list(clef.iter_documents(exported)) == []
    latin1 = tmp_path / "lemonde"
    latin1.write_bytes(codecs.BOM_UTF8 + "<DOC><DOCNO>LM-1</DOCNO><TEXT>Un été</TEXT></DOC>\n".encode("latin-1"))
    assert list(clef.iter_documents(latin1)) == [("LM-1", "Un été")]


@pytest.mark.parametrize("gz", [False, True])
def test_mmarco_file_with_a_byte_order_mark_or_latin1(tmp_path, gz):
    f = tmp_path / ("arabic_collection.tsv" + (".gz" if gz else ""))
    f.write_bytes((gzip.compress if gz else bytes)((BOM + "7\tمرحبا\n8\tعالم\n").encode("utf-8")))
    assert list(mtrec.MMarcoCollection(tmp_path, ["ar"]).passages("ar")) == [("7", "مرحبا"), ("8", "عالم")]
    f.write_bytes((gzip.compress if gz else bytes)("7\tok\n8\tcaf\u00e9\n".encode("latin-1")))
    with pytest.raises(FormatError, match=f"^{f}:2: not UTF-8"):
        list(mtrec.MMarcoCollection(tmp_path, ["ar"]).pids())


def test_flores_and_translation_table_with_a_byte_order_mark_or_latin1(tmp_path):
    (tmp_path / "eng_Latn.devtest").write_text(BOM + "Hello.\nYes.\n", encoding="utf-8")
    assert read_flores(tmp_path, "en") == ["Hello.", "Yes."]
    (tmp_path / "deu_Latn.devtest").write_bytes("Hallo.\nJa.\nGrüße.\n".encode("latin-1"))
    with pytest.raises(FormatError, match=f"^{tmp_path / 'deu_Latn.devtest'}:3: not UTF-8"):
        read_flores(tmp_path, "de")
    table = tmp_path / "en-de.tsv.gz"
    table.write_bytes(gzip.compress((BOM + '# {"aligner": "ibm1"}\nhouse\thaus\t0.5\n').encode("utf-8")))
    loaded = TranslationTable.load(table)
    assert loaded.meta == {"aligner": "ibm1"} and loaded.translations("house") == [("haus", 0.5)]
    table.write_bytes(gzip.compress("# {}\nstreet\tstraße\t0.5\n".encode("latin-1")))
    with pytest.raises(FormatError, match=f"^{table}:2: not UTF-8"):
        TranslationTable.load(table)
