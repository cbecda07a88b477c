"""What language identification costs KD-SPD (analysis.langid), on a real three-paragraph LAReQA slice.

The student is untrained (multilingual-e5-small backbone, fresh prompts, one decoder layer): language ID
depends only on its trained languages, and the mechanics (which prompt each document gets, two indexes,
two runs) do not need a trained model.
"""
import json
import shutil

import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.analysis import langid
from pyserini_kdspd.data.lareqa import LANGUAGES

# (original article, paragraph) of XQuAD-R kept in the slice: 199 sentences in 11 languages, 15 questions.
PARAGRAPHS = ((10, 2), (20, 1), (34, 4))
# Counted by hand from py3langid's answers on those sentences (restricted to the 15 trained languages):
# every other sentence is identified as its gold language.
MISIDENTIFIED = {
    ("ar", "1455–1536)."): langid.AVERAGE,  # no letters: the average prompt
    ("es", "1455-1536)."): langid.AVERAGE,
    ("ru", "1455–1536)."): langid.AVERAGE,
    ("es", "pestis Y."): "fr",
    ("es", "p. orientalis e Y."): "pt",
    ("de", "In den frühen 1970ern spielte Trevor Martin die Rolle in Doctor Who and the Daleks in the Seven "
           "Keys to Doomsday."): "en",
    ("hi", "citation needed]"): "en",
    ("tr", "Mezhebin I."): "de",
}


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory, shared_data):
    """A data folder holding XQuAD-R in its published format, cut to :data:`PARAGRAPHS` in every language."""
    root = tmp_path_factory.mktemp("data")
    for lang in LANGUAGES:
        doc = io.read_json(shared_data / "lareqa" / "xquad-r" / f"{lang}.json")
        doc["data"] = [{"title": doc["data"][a]["title"], "paragraphs": [doc["data"][a]["paragraphs"][p]]}
                       for a, p in PARAGRAPHS]
        io.write_json(root / "lareqa" / "xquad-r" / f"{lang}.json", doc)
    return root


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory, mini_data):
    """The Table 2 driver's layout: the slice prepared under collections/, an untrained KD-SPD in models/kdspd
    with the teacher's query side (as `train` saves it)."""
    import torch

    from pyserini_kdspd.data.lareqa import prepare_lareqa
    from pyserini_kdspd.distill import Teacher
    from pyserini_kdspd.spd import Student, StudentConfig
    from pyserini_kdspd.spd.student import QUERY_ENCODER_DIR

    root = tmp_path_factory.mktemp("root")
    prepare_lareqa(mini_data, output_root=root)
    teacher = Teacher("all-MiniLM-L6-v2", precision="fp32")
    torch.manual_seed(0)
    student = Student.build(StudentConfig(encoder="multilingual-e5-small", decoder_layers=1, prompt_length=4,
                                          normalize=True, passage_prefix="passage: ",
                                          teacher={**teacher.query_settings(), "path": QUERY_ENCODER_DIR}))
    folder = root / "models" / "kdspd"
    teacher.save_query_encoder(folder / QUERY_ENCODER_DIR)
    student.save_pretrained(folder)
    return root


def corpus(root):
    return root / "collections" / "lareqa" / "corpus"


def expected_accuracy(mini_data) -> dict:
    """The accuracy table from the source files and the hand count above, independently of the code."""
    out = {}
    for lang in LANGUAGES:
        doc = io.read_json(mini_data / "lareqa" / "xquad-r" / f"{lang}.json")
        n = sum(len(p["sentences"]) for a in doc["data"] for p in a["paragraphs"])
        wrong = {}
        for (g, _), found in MISIDENTIFIED.items():
            if g == lang:
                wrong[found] = wrong.get(found, 0) + 1
        out[lang] = {"documents": n, "correct": n - sum(wrong.values()),
                     "accuracy": (n - sum(wrong.values())) / n, "wrong": wrong}
    total = sum(a["documents"] for a in out.values())
    out["all"] = {"documents": total, "correct": total - len(MISIDENTIFIED),
                  "accuracy": (total - len(MISIDENTIFIED)) / total, "wrong": {}}
    return out


def test_accuracy_table_against_a_hand_count(driver_root, mini_data):
    from pyserini_kdspd.spd import Student

    labels = langid.identify(Student.from_pretrained(driver_root / "models" / "kdspd"), corpus(driver_root))
    assert len(labels) == 199
    text_of = {r["id"]: r["text"] for r in io.read_jsonl(corpus(driver_root) / "corpus.jsonl")}
    wrong = {(gold, text_of[d]): found for d, gold, found in labels if found != gold}
    assert wrong == MISIDENTIFIED
    table = langid.accuracy(labels)
    assert table == expected_accuracy(mini_data)
    assert list(table) == sorted(LANGUAGES) + ["all"]
    assert table["es"]["wrong"] == {langid.AVERAGE: 1, "fr": 1, "pt": 1}  # ties: by name
    assert table["all"]["correct"] == 191


def test_untagged_collection_has_the_same_documents_without_tags(driver_root, tmp_path):
    out = langid.untagged_corpus(corpus(driver_root), tmp_path / "untagged")
    gold = list(io.read_jsonl(corpus(driver_root) / "corpus.jsonl"))
    untagged = list(io.read_jsonl(out / "corpus.jsonl"))
    assert [r["id"] for r in untagged] == [r["id"] for r in gold]
    assert all(r["lang"] == "" for r in untagged) and any(r["lang"] for r in gold)
    assert [{**r, "lang": ""} for r in gold] == untagged  # nothing else changed
    before = (out / "corpus.jsonl").stat().st_mtime_ns
    langid.untagged_corpus(corpus(driver_root), out)  # same content: left alone (its index stays fresh)
    assert (out / "corpus.jsonl").stat().st_mtime_ns == before


@pytest.mark.slow
def test_cli_encodes_a_second_index_and_compares_the_runs(driver_root, mini_data, monkeypatch, capsys, tmp_path):
    import faiss

    from pyserini_kdspd.evaluate import evaluate
    from pyserini_kdspd.search.dense import DenseModel, _corpus_matches, encode_corpus

    monkeypatch.setenv("PYSERINI_KDSPD_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = driver_root
    args = ["--root", str(root), "--data-dir", str(mini_data), "--hits", "500", "--threads", "1"]
    assert langid.main(args) == 0
    assert "| **all** | 199 | 191 | 95.98% |" in capsys.readouterr().out
    report = json.loads((root / "runs" / "lareqa" / "langid.json").read_text(encoding="utf-8"))
    assert (root / "runs" / "lareqa" / "langid.md").is_file()
    assert report["accuracy"] == expected_accuracy(mini_data)
    changed = {d for d, _, _ in report["misidentified"]}
    assert len(changed) == len(MISIDENTIFIED)

    # Two indexes, one per tag mode; the gold one is the driver's, and neither is stamped with the other's corpus.
    gold_idx, lid_idx = root / "indexes" / "lareqa" / "kdspd", root / "indexes" / "lareqa" / "kdspd.untagged"
    untagged = root / "collections" / "lareqa" / "untagged"
    assert _corpus_matches(gold_idx, corpus(root)) and not _corpus_matches(gold_idx, untagged)
    assert _corpus_matches(lid_idx, untagged) and not _corpus_matches(lid_idx, corpus(root))
    ids = [(i / "docid").read_text().split() for i in (gold_idx, lid_idx)]
    assert ids[0] == ids[1] and len(ids[0]) == 199
    vec = [faiss.read_index(str(i / "index")).reconstruct_n(0, 199) for i in (gold_idx, lid_idx)]
    differs = {d for d, a, b in zip(ids[0], *vec) if not np.array_equal(a, b)}
    assert differs == changed  # another prompt exactly where language ID disagrees with the gold tag
    # The gold index, asked for the untagged collection, is encoded again (never reused): as the untagged one.
    stale = tmp_path / "gold-asked-for-untagged"
    shutil.copytree(gold_idx, stale)
    encode_corpus(DenseModel.from_name("kdspd", str(root / "models" / "kdspd")), untagged, stale)
    assert np.array_equal(faiss.read_index(str(stale / "index")).reconstruct_n(0, 199), vec[1])

    # The runs: every document of the slice in every ranking; scores move exactly where the vectors did.
    runs = {k: root / v for k, v in report["retrieval"]["runs"].items()}
    assert runs == {langid.GOLD: root / "runs" / "lareqa" / "kdspd.txt",
                    langid.IDENTIFIED: root / "runs" / "lareqa" / "langid" / "kdspd.txt"}
    gold, ident = (io.read_run(runs[k]) for k in (langid.GOLD, langid.IDENTIFIED))
    assert len(gold) == len(ident) == 15
    for q in gold:
        assert set(gold[q]) == set(ident[q]) == set(ids[0])
        assert {d for d in gold[q] if gold[q][d] != ident[q][d]} == changed, q
    qrels = io.read_qrels(root / "qrels" / "lareqa.txt")
    r = report["retrieval"]
    assert r["changed_documents"] == 8 and r["queries"] == 15
    assert r["queries_with_changed_relevant"] == sum(bool(set(qrels[q]) & changed) for q in qrels) == 3
    assert r["queries_changed"] == sum([d for d, _ in io.ranked(gold[q])] != [d for d, _ in io.ranked(ident[q])]
                                       for q in gold)
    for k in runs:
        assert r["mean"][k] == pytest.approx(evaluate(runs[k], qrels, depth=500, metrics=langid.METRICS).mean)
    assert all(0 <= t["p"] <= 1 for t in r["ttest"].values())

    # Run again: both indexes and runs are reused.
    stamps = {p: p.stat().st_mtime_ns for p in [gold_idx / "index", lid_idx / "index", *runs.values()]}
    assert langid.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # --readme rewrites the block between the markers from the files written, and only that block.
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n### Language identification\n<!-- langid:start -->\nold\n<!-- langid:end -->\nafter\n",
                      encoding="utf-8")
    assert langid.main(["--readme", str(readme), "--root", str(root)]) == 0
    text = readme.read_text(encoding="utf-8")
    block = text.split("<!-- langid:start -->\n")[1].split("<!-- langid:end -->")[0]
    assert "old" not in block.splitlines() and text.endswith("<!-- langid:end -->\nafter\n")
    assert "| **all** | 199 | 191 | 95.98% |  |" in block and "| es | 23 | 20 | 86.96% | (average prompt) (1) |" in block
    assert f"| Gold tags | {r['mean'][langid.GOLD]['map']:.4f} |" in block
