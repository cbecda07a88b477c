"""Per-language BM25 on real text with real Lucene (through Pyserini's indexer and searcher)."""
import json

import pytest

from pyserini_kdspd.io import FormatError, read_run
from pyserini_kdspd.search import bm25
from pyserini_kdspd.search.analyzers import SPECS, analyze, spec

FLORES = {"en": "eng_Latn", "de": "deu_Latn", "el": "ell_Grek", "th": "tha_Thai", "zh": "zho_Hans",
          "vi": "vie_Latn"}
N = 200


def flores(shared_data, lang, n=N):
    lines = (shared_data / "flores200" / "devtest" / f"{FLORES[lang]}.devtest").read_text(encoding="utf-8")
    return lines.splitlines()[:n]


def write_corpus(folder, sentences, lang):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, s in enumerate(sentences):
            f.write(json.dumps({"id": f"{lang}-{i}", "contents": s, "text": s, "lang": lang},
                               ensure_ascii=False) + "\n")
    return folder


# ------------------------------------------------------------------ analyzers
def test_greek_is_lowercased_unaccented_and_stemmed():
    # GreekLowerCaseFilter drops accents and folds final sigma; the stemmer conflates inflections.
    assert analyze("ΝΕΡΌ", "el") == analyze("νερό", "el") == analyze("νερού", "el")
    assert analyze("Οι άνθρωποι", "el") == analyze("ανθρώπους", "el")
    assert spec("el").pretokenized  # Anserini 1.7.1 would use its English analyzer for Greek


def test_vietnamese_not_english_stemmed_and_keeps_diacritics():
    assert analyze("Người dân uống nước houses running", "vi") == [
        "người", "dân", "uống", "nước", "houses", "running"]
    assert analyze("the a of", "vi") == ["the", "a", "of"]  # no English stopwords
    # Precomposed and combining-mark spellings of the same syllable are one term.
    assert analyze("Vie\u0323\u0302t", "vi") == analyze("Việt", "vi")


def test_thai_is_segmented_and_chinese_bigrammed():
    terms = analyze("ภาษาไทยเป็นภาษาที่สวยงาม", "th")
    assert len(terms) >= 4 and "ภาษา" in terms and all(len(t) < 10 for t in terms)
    assert analyze("北京是中国的首都", "zh")[:2] == ["北京", "京是"]


def test_english_and_german_use_anserini_analyzers():
    assert analyze("The houses are running", "en") == ["hous", "run"]
    assert analyze("Die Häuser", "de") == ["haus"]
    assert not spec("de").pretokenized and not spec("en").pretokenized


def test_unknown_language_is_an_error():
    with pytest.raises(ValueError, match="no analyzer for language 'xx'"):
        spec("xx")
    assert {"ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"} <= set(SPECS)


# ---------------------------------------------------------- index and search
@pytest.mark.parametrize("lang", ["de", "el", "th", "zh", "vi"])
def test_parallel_sentence_round_trip(tmp_path, shared_data, lang):
    """Docs: 200 FLORES sentences in ``lang``; queries: the same sentences (human translations of English)."""
    sents = flores(shared_data, lang)
    idx = bm25.build_index(write_corpus(tmp_path / "c", sents, lang), tmp_path / "idx", lang)
    assert bm25.index_language(idx) == lang
    queries = {f"q{i}": s[: max(20, len(s) // 3)] for i, s in enumerate(sents)}  # a third of the sentence
    run = bm25.search(idx, queries, lang, k=10)
    hit10 = sum(f"{lang}-{q[1:]}" in docs for q, docs in run.items()) / len(run)
    assert hit10 >= 0.9, hit10
    assert all(len(d) <= 10 for d in run.values())


def test_greek_index_is_pretokenized_with_greek_analysis(tmp_path, shared_data):
    sents = flores(shared_data, "el", 50)
    idx = bm25.build_index(write_corpus(tmp_path / "c", sents, "el"), tmp_path / "idx", "el")
    from pyserini.index.lucene import LuceneIndexReader

    reader = LuceneIndexReader(str(idx))
    terms = reader.get_document_vector("el-0")
    assert set(terms) == set(analyze(sents[0], "el"))
    raw = json.loads(reader.doc_raw("el-0"))
    assert raw["text"] == sents[0]  # original text kept beside the analysed contents


def test_weighted_query_ranking(tmp_path):
    docs = ["Το νερό είναι κρύο.", "Το σπίτι είναι μεγάλο.", "Το σπίτι έχει νερό και φως.", "Ο ήλιος λάμπει."]
    idx = bm25.build_index(write_corpus(tmp_path / "c", docs, "el"), tmp_path / "idx", "el")
    water, house = analyze("νερό", "el")[0], analyze("σπίτι", "el")[0]
    run = bm25.search(idx, {"w": {water: 1.0, house: 0.1}, "h": {water: 0.1, house: 1.0}}, "el", k=4)
    by = {q: sorted(d, key=lambda x: -d[x]) for q, d in run.items()}
    assert set(by["w"][:2]) == {"el-0", "el-2"}  # the two with water
    assert by["w"].index("el-0") < by["w"].index("el-1")
    assert by["h"].index("el-1") < by["h"].index("el-0")
    assert "el-3" not in run["w"]
    # Scores are linear in the boosts: doubling every weight doubles every score.
    run2 = bm25.search(idx, {"w": {water: 2.0, house: 0.2}}, "el", k=4)
    for d, s in run["w"].items():
        assert run2["w"][d] == pytest.approx(2 * s, abs=2e-4)  # Anserini rounds scores to 4 decimals
    # A text query equals its bag of words with unit weights.
    text = bm25.search(idx, {"t": "νερό σπίτι"}, "el", k=4)["t"]
    bag = bm25.search(idx, {"t": {water: 1.0, house: 1.0}}, "el", k=4)["t"]
    assert text.keys() == bag.keys() == {"el-0", "el-1", "el-2"}  # every document with water or house
    assert all(text[d] == pytest.approx(bag[d], abs=1e-4) for d in text)


def test_bad_inputs(tmp_path):
    idx = bm25.build_index(write_corpus(tmp_path / "c", ["Das Haus am Wasser."], "de"), tmp_path / "idx", "de")
    with pytest.raises(ValueError, match="indexed with the 'de' analyzer, not 'el'"):
        bm25.search(idx, {"q": "Haus"}, "el")
    with pytest.raises(ValueError, match="must be one analysed"):
        bm25.search(idx, {"q": {"zwei worte": 1.0}}, "de")
    with pytest.raises(ValueError, match="weights must be positive"):
        bm25.search(idx, {"q": {"haus": -1.0}}, "de")
    with pytest.raises(FileExistsError):
        bm25.build_index(tmp_path / "c", idx, "de")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corpus.jsonl").write_text('{"id": "a", "contents": "x"}\nnot json\n')
    with pytest.raises(FormatError, match=r"corpus.jsonl:2: not valid JSON"):
        bm25.build_index(bad, tmp_path / "idx2", "el")
    assert bm25.search(idx, {"q": "der die das"}, "de")["q"] == {}  # stopwords only: empty ranking


def test_documents_without_terms_are_reported_not_lost_silently(tmp_path, caplog):
    docs = ["Το νερό είναι κρύο.", "Και το;", "Το σπίτι."]  # the second is all Greek stopwords
    idx = bm25.build_index(write_corpus(tmp_path / "c", docs, "el"), tmp_path / "idx", "el")
    meta = json.loads((idx / bm25.META).read_text())
    assert meta["documents"] == 2 and meta["records"] == 3 and meta["without_terms"] == ["el-1"]
    assert "1 of 3 documents have no el terms" in caplog.text


@pytest.mark.slow
def test_cli_index_and_search_with_human_translation(tmp_path, shared_data, python):
    import subprocess

    de, en = flores(shared_data, "de", 100), flores(shared_data, "en", 100)
    corpus = write_corpus(tmp_path / "c", de, "de")
    (tmp_path / "t.en.tsv").write_text("".join(f"q{i}\t{s}\n" for i, s in enumerate(en)), encoding="utf-8")
    (tmp_path / "t.de.tsv").write_text("".join(f"q{i}\t{s}\n" for i, s in enumerate(de)), encoding="utf-8")
    m = "pyserini_kdspd.search.bm25"
    subprocess.run([python, "-m", m, "index", "--corpus", str(corpus), "--index", str(tmp_path / "idx"),
                    "--language", "de"], check=True, capture_output=True)
    out = tmp_path / "run.txt"
    subprocess.run([python, "-m", m, "search", "--index", str(tmp_path / "idx"), "--topics",
                    str(tmp_path / "t.en.tsv"), "--translation", "human", "--output", str(out), "--hits", "10"],
                   check=True, capture_output=True)
    run = read_run(out)
    assert len(run) == 100
    assert sum(max(d, key=d.get) == f"de-{q[1:]}" for q, d in run.items()) >= 95
    assert out.read_text().split("\n")[0].endswith("bm25-human-de")


def test_reuse_keeps_a_current_index_and_rebuilds_a_stale_or_unfinished_one(tmp_path):
    corpus = write_corpus(tmp_path / "c", ["Das Haus am Wasser.", "Ein Baum im Garten."], "de")
    idx = bm25.build_index(corpus, tmp_path / "idx", "de")
    meta = idx / bm25.META
    built = meta.stat().st_mtime_ns
    assert bm25.index_current(idx, corpus, "de") and not bm25.index_current(idx, corpus, "el")
    assert bm25.build_index(corpus, idx, "de", reuse=True) == idx and meta.stat().st_mtime_ns == built
    write_corpus(corpus, ["Das Haus am Wasser.", "Ein Baum im Garten.", "Der Hund im Haus."], "de")
    assert not bm25.index_current(idx, corpus, "de")  # the corpus changed after the index was built
    bm25.build_index(corpus, idx, "de", reuse=True)
    assert set(bm25.search(idx, {"q": "Hund"}, "de")["q"]) == {"de-2"}
    meta.unlink()  # an index whose build never finished
    bm25.build_index(corpus, idx, "de", reuse=True)
    assert bm25.index_current(idx, corpus, "de")
