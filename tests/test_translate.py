"""Query translation: IBM Model 1 tables from real bitext, file/human translators, the offline HF translator."""
import gzip

import pytest

from pyserini_kdspd.distill.bitext import read_bitext
from pyserini_kdspd.io import FormatError
from pyserini_kdspd.search import bm25
from pyserini_kdspd.search.analyzers import analyze
from pyserini_kdspd.search.translate import Translator, translate_topics
from pyserini_kdspd.search.translate.nmt import FileTranslator, HFTranslator, HumanTranslator, TranslatorUnavailable
from pyserini_kdspd.search.translate.smt import SMTTranslator, TranslationTable, train


@pytest.fixture(scope="module")
def table_el(shared_data, tmp_path_factory):
    table = train(read_bitext(shared_data / "bitext" / "en-el.tsv").pairs(), "el", aligner="ibm1")  # all 12.9k pairs
    path = tmp_path_factory.mktemp("smt") / "en-el.tsv.gz"
    table.save(path)
    return path


def top(table, word, lang="en", k=10):
    return [f for f, _ in table.translations(analyze(word, lang)[0], k)]


def assert_trained_on(meta, n_pairs):
    """Every pair read was trained on or counted as skipped (a side empty after analysis, or over max_len
    terms: 0.05-1% of these files)."""
    assert meta["pairs"] + meta["skipped_pairs"] == n_pairs
    assert meta["skipped_pairs"] <= 0.02 * n_pairs


def test_ibm1_learns_sensible_translations(table_el, shared_data):
    table = TranslationTable.load(table_el)
    assert table.meta["model"] == "ibm1" and table.meta["target_lang"] == "el"
    assert_trained_on(table.meta, len(read_bitext(shared_data / "bitext" / "en-el.tsv")))
    water, house = analyze("νερό", "el")[0], analyze("σπίτι", "el")[0]
    assert top(table, "water")[0] == water
    assert top(table, "house")[0] == house
    for e, options in table.table.items():
        probs = [p for _, p in options]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-3


def test_ibm1_german_subset(shared_data):
    table = train(read_bitext(shared_data / "bitext" / "en-de.tsv").pairs(8000), "de", aligner="ibm1")
    assert_trained_on(table.meta, 8000)
    assert "haus" in top(table, "house", k=3)
    assert "wass" in top(table, "water", k=3)  # GermanAnalyzer's stem of Wasser


def test_eflomal_aligner_learns_sensible_translations(shared_data):
    pytest.importorskip("eflomal")  # optional dependency (a C extension); IBM Model 1 needs nothing
    table = train(read_bitext(shared_data / "bitext" / "en-de.tsv").pairs(8000), "de", aligner="eflomal")
    assert table.meta["model"] == "eflomal"
    assert top(table, "house", k=1) == ["haus"]
    assert top(table, "water", k=1) == ["wass"]
    with pytest.raises(ValueError, match="aligner must be one of"):
        train([("a house", "ein Haus")], "de", aligner="giza")


def test_fastalign_prefers_the_diagonal_and_is_deterministic(shared_data):
    """Two English words that always appear together, in the same order as their translations: IBM Model 1
    cannot tell which is which (t = 1/2 each); fast_align's diagonal prior aligns first to first."""
    from pyserini_kdspd.search.translate.smt import ibm1

    src = [[0, 1, 2]] * 20  # NULL, "a", "b"
    tgt = [[0, 1]] * 20  # "x", "y"
    for tension, expect in ((None, 0.5), (4.0, None)):
        e, f, t = ibm1(src, tgt, 3, iterations=5, tension=tension)
        p = {(int(a), int(b)): float(v) for a, b, v in zip(e, f, t)}
        if expect is not None:
            assert p[1, 0] == pytest.approx(expect) and p[1, 1] == pytest.approx(expect)
        else:
            assert p[1, 0] > 0.9 and p[2, 1] > 0.9 and p[1, 1] < 0.1
    pairs = read_bitext(shared_data / "bitext" / "en-de.tsv").pairs(8000)
    a, b = (train(pairs, "de", aligner="fastalign") for _ in range(2))
    assert a.table == b.table and a.meta["model"] == "fastalign" and a.meta["tension"] == 4.0
    assert top(a, "house", k=1) == ["haus"] and top(a, "water", k=1) == ["wass"]
    for options in a.table.values():
        assert all(0 < p <= 1 for _, p in options)


def test_smt_query_is_weighted_bag_of_target_terms(table_el):
    table = TranslationTable.load(table_el)
    tr = SMTTranslator({"el": table})
    q = tr.translate_query("Where is the water of Zarquon's house 2024?", "el")
    water, house = analyze("νερό", "el")[0], analyze("σπίτι", "el")[0]
    assert q[water] > 0.5 and q[house] > 0.5
    # Out of vocabulary: the word itself, analysed as the Greek index would, with weight 1.
    assert q["2024"] == 1.0 and q["zarquon"] == 1.0
    assert "where" not in q and all(w > 0 for w in q.values())
    assert len([t for t in q if t not in ("2024", "zarquon")]) <= 3 * tr.k  # top k for each of where, water, hous
    # A topic's translation is the table's top k for its terms, with the table's probabilities as weights.
    assert translate_topics(tr, {"q1": "water"}, "el") == {"q1": dict(table.translations("water", tr.k))}


def test_smt_queries_search_a_greek_index(table_el, tmp_path):
    import json

    docs = ["Το νερό είναι κρύο.", "Το σπίτι είναι μεγάλο.", "Ο ήλιος λάμπει πάνω από τη θάλασσα."]
    c = tmp_path / "c"
    c.mkdir()
    (c / "d.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "contents": d}, ensure_ascii=False) + "\n"
                                       for i, d in enumerate(docs)), encoding="utf-8")
    idx = bm25.build_index(c, tmp_path / "idx", "el")
    tr = SMTTranslator({"el": TranslationTable.load(table_el)})
    run = bm25.search(idx, translate_topics(tr, {"w": "cold water", "h": "a big house", "s": "the sun"}, "el"),
                      "el", k=3)
    assert max(run["w"], key=run["w"].get) == "d0"
    assert max(run["h"], key=run["h"].get) == "d1"
    assert max(run["s"], key=run["s"].get) == "d2"


def test_smt_training_reads_bitext_strictly(tmp_path):
    """SMT reads bitext with distillation's reader: a malformed line stops training, naming file and line."""
    (tmp_path / "en-el.tsv").write_text("a house\tένα σπίτι\tsrc\nno tab here\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"en-el.tsv:2: expected 'english<TAB>el\[<TAB>source\]'"):
        SMTTranslator.for_language("el", model_dir=tmp_path / "models", bitext_dir=tmp_path, aligner="ibm1")
    assert not (tmp_path / "models").exists()


def test_table_parsing_is_strict(tmp_path):
    t = tmp_path / "t.tsv.gz"
    with gzip.open(t, "wt", encoding="utf-8") as f:
        f.write("hous\tσπιτ\t0.9\nhous\tοικ\tmuch\n")
    with pytest.raises(FormatError, match=r"t.tsv.gz:2: probability 'much' is not a number"):
        TranslationTable.load(t)
    with gzip.open(t, "wt", encoding="utf-8") as f:
        f.write("hous\tσπιτ\t1.5\n")
    with pytest.raises(FormatError, match=r"not in \(0, 1\]"):
        TranslationTable.load(t)
    with pytest.raises(ValueError, match="no en-de translation table"):
        SMTTranslator({}).translate_query("house", "de")


def test_for_language_trains_once_then_loads(shared_data, tmp_path):
    bitext = tmp_path / "bitext"
    bitext.mkdir()
    lines = (shared_data / "bitext" / "en-th.tsv").read_text(encoding="utf-8").splitlines()[:1500]
    (bitext / "en-th.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tr = SMTTranslator.for_language("th", model_dir=tmp_path / "models", bitext_dir=bitext, aligner="ibm1")
    assert (tmp_path / "models" / "en-th.tsv.gz").is_file()
    assert_trained_on(tr.tables["th"].meta, len(lines))
    (bitext / "en-th.tsv").unlink()  # a second call must not need the bitext
    again = SMTTranslator.for_language("th", model_dir=tmp_path / "models", bitext_dir=bitext, aligner="ibm1")
    # the first call translates with the table as saved (probabilities to 6 significant digits), so the query
    # weights, and the run, of the call that trained it are those of every later call, exactly
    trained, loaded = tr.tables["th"].table, again.tables["th"].table
    assert {(e, f): p for e in loaded for f, p in loaded[e]} == {(e, f): p for e in trained for f, p in trained[e]}
    topic = "how many people live in the city"
    assert tr.translate_query(topic, "th") == again.translate_query(topic, "th")
    # a table another aligner made is not silently reused: it is trained again (the bitext is needed again)
    with pytest.raises(FileNotFoundError, match="en-th.tsv"):
        SMTTranslator.for_language("th", model_dir=tmp_path / "models", bitext_dir=bitext)  # the default: fastalign
    (bitext / "en-th.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fast = SMTTranslator.for_language("th", model_dir=tmp_path / "models", bitext_dir=bitext, aligner="fastalign")
    assert fast.tables["th"].meta["model"] == "fastalign" and fast.tables["th"].table != loaded
    assert TranslationTable.load(tmp_path / "models" / "en-th.tsv.gz").meta["model"] == "fastalign"


# ------------------------------------------------------------- nmt / file / human
def test_file_translator_multilingual_tsv(tmp_path):
    f = tmp_path / "tr.tsv"
    f.write_text("q1\tde\tWo ist das Haus?\nq1\tel\tΠού είναι το σπίτι;\nq2\tde\tWasser\n", encoding="utf-8")
    topics = {"q1": "Where is the house?", "q2": "water"}
    tr = FileTranslator(f, source_topics=topics)
    assert isinstance(tr, Translator)
    assert translate_topics(tr, topics, "de") == {"q1": "Wo ist das Haus?", "q2": "Wasser"}
    assert tr.translate(["water", "Where is the house?"], "de") == ["Wasser", "Wo ist das Haus?"]
    with pytest.raises(KeyError, match="no el translation for 1 of 2 queries"):
        translate_topics(tr, topics, "el")
    with pytest.raises(KeyError, match="no translations into 'ru'"):
        translate_topics(tr, topics, "ru")
    f.write_text("q1\tde\tWo ist das Haus?\nq1\tde\tnochmal\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"tr.tsv:2: duplicate translation of 'q1' into 'de'"):
        FileTranslator(f)
    f.write_text("q1\tWo ist das Haus?\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"tr.tsv:1: expected 'qid<TAB>lang<TAB>text'"):
        FileTranslator(f)


def test_human_translator_reads_per_language_topics(tmp_path, shared_data):
    """XQuAD-R questions: the same question ids in every language (LAReQA's human translations)."""
    import json

    topics = {}
    for lang in ("en", "el"):
        data = json.loads((shared_data / "lareqa" / "xquad-r" / f"{lang}.json").read_text(encoding="utf-8"))
        qas = [qa for art in data["data"][:1] for p in art["paragraphs"][:3] for qa in p["qas"]]
        topics[lang] = {qa["id"]: qa["question"] for qa in qas}
        (tmp_path / f"lareqa.{lang}.tsv").write_text(
            "".join(f"{q}\t{t}\n" for q, t in topics[lang].items()), encoding="utf-8")
    tr = HumanTranslator(str(tmp_path / "lareqa.{lang}.tsv"), source_topics=topics["en"])
    assert tr.name == "human translation"
    assert translate_topics(tr, topics["en"], "el") == topics["el"]
    with pytest.raises(FileNotFoundError, match="lareqa.de.tsv"):
        translate_topics(tr, topics["en"], "de")
    with pytest.raises(ValueError, match=r"needs a path pattern with \{lang\}"):
        HumanTranslator(str(tmp_path / "lareqa.el.tsv"))


def test_hf_translator_is_lazy_and_fails_clearly_offline(tmp_path, monkeypatch):
    tr = HFTranslator()  # constructing never touches the network
    assert tr.model == "facebook/nllb-200-distilled-600M"
    assert tr._codes("el") == ("eng_Latn", "ell_Grek")
    with pytest.raises(ValueError, match="no language code for 'xx'"):
        tr._codes("xx")
    # A model that is not there (a missing local folder, like an unreachable hub) gives a clear error.
    missing = HFTranslator(str(tmp_path / "no-such-model"))
    with pytest.raises(TranslatorUnavailable, match="cannot load the MT model"):
        missing.translate(["Where is the house?"], "de")
