"""mTREC construction on the real TREC DL 2020 qrels with a stand-in translation of real MS MARCO passages.

mMARCO itself is not available offline, so each language's "translation" is the
English passage tagged ``[ar] ...`` (the BM25 top-100 texts of retrieve_results_dl20.json;
judged passages outside that top-100 get a placeholder text), written in mMARCO's
published layout and naming for the CLI test. The layout (every passage in four
languages, each relevant one in one), the relevance counts, the even and the 60/40
spreads checked here do not depend on the text.
"""
import json
import math
import subprocess
from collections import Counter, defaultdict

import pytest

from pyserini_kdspd import io
from pyserini_kdspd.data import mtrec

LANGS = mtrec.LANGUAGES


@pytest.fixture(scope="module")
def dl20(shared_data):
    d = shared_data / "trec-dl20"
    hits = json.loads((d / "retrieve_results_dl20.json").read_text(encoding="utf-8"))
    english = {h["docid"]: h["content"] for entry in hits for h in entry["hits"]}
    return {"topics": d / "topics.dl20.txt", "qrels": d / "qrels.dl20-passage.txt",
            "qrels_dict": io.read_qrels(d / "qrels.dl20-passage.txt"), "english": english}


@pytest.fixture(scope="module")
def standin(dl20):
    texts = dict(dl20["english"])
    for docs in dl20["qrels_dict"].values():
        for pid in docs:
            texts.setdefault(pid, f"MS MARCO passage {pid}")
    return {lang: {pid: f"[{lang}] {t}" for pid, t in texts.items()} for lang in LANGS}


def _build(tmp_path_factory, dl20, standin, variant, seed):
    root = tmp_path_factory.mktemp(f"{variant}{seed}")
    paths = mtrec.build_mtrec(dl20["topics"], dl20["qrels"], standin, variant=variant, seed=seed, output_root=root)
    corpus = {r["id"]: r for r in io.read_jsonl(paths.corpus / "corpus.jsonl")}
    return paths, corpus


@pytest.fixture(scope="module")
def even(tmp_path_factory, dl20, standin):
    return _build(tmp_path_factory, dl20, standin, "even", 0)


@pytest.fixture(scope="module")
def biased(tmp_path_factory, dl20, standin):
    return _build(tmp_path_factory, dl20, standin, "biased", 0)


def _languages(corpus):
    """pid -> the languages it is in, checking that ids and ``lang`` fields agree."""
    out = defaultdict(set)
    for docid, rec in corpus.items():
        lang, _, pid = docid.partition("-")
        assert lang == rec["lang"] and lang not in out[pid], docid
        out[pid].add(lang)
    return out


def _relevant(qrels_dict):
    return {q: {p: g for p, g in docs.items() if g >= mtrec.RELEVANT_GRADE} for q, docs in qrels_dict.items()}


def test_every_passage_in_four_languages_relevant_ones_in_one(even, dl20, standin):
    paths, corpus = even
    langs_of = _languages(corpus)
    relevant = {p for docs in _relevant(dl20["qrels_dict"]).values() for p in docs}
    assert len(relevant) == 3606  # DL20: 3,606 judgments of grade >= 1, no passage relevant to two queries
    assert set(langs_of) == set(standin["ar"])
    assert all(len(langs_of[p]) == 1 for p in relevant)
    assert all(langs_of[p] == set(LANGS) for p in langs_of if p not in relevant)
    assert len(corpus) == 4 * len(standin["ar"]) - 3 * len(relevant)  # MS MARCO: 4 x 8.8M = 35.2M, less 3 x R
    for docid, rec in corpus.items():
        lang, _, pid = docid.partition("-")
        assert rec["contents"] == rec["text"] == standin[lang][pid]
    per_lang = Counter(rec["lang"] for rec in corpus.values())
    for lang in LANGS:
        sub = list(io.read_jsonl(paths.by_lang[lang] / "corpus.jsonl"))
        assert len(sub) == per_lang[lang] and all(r["lang"] == lang for r in sub)


def test_topics_and_qrels_count_relevance_as_the_paper(even, dl20):
    paths, corpus = even
    topics, all_topics = io.read_topics(paths.topics), io.read_topics(dl20["topics"])
    assert len(topics) == 54 and set(topics) == set(dl20["qrels_dict"])  # the data README: 54 judged queries
    assert all(topics[q] == all_topics[q] for q in topics)
    qrels = io.read_qrels(paths.qrels)
    assert all(d in corpus for docs in qrels.values() for d in docs)  # qrels docids exist in the collection
    relevant = sum(g >= mtrec.RELEVANT_GRADE for docs in qrels.values() for g in docs.values())
    assert relevant == 3606 and round(relevant / len(qrels), 1) == 66.8  # the paper's relevant per query
    assert json.loads(paths.stats.read_text())["relevant_per_query"] == 66.78
    for qid, docs in dl20["qrels_dict"].items():  # same grades; a relevant passage once, any other in each language
        ours = defaultdict(dict)
        for d, g in qrels[qid].items():
            lang, _, pid = d.partition("-")
            ours[pid][lang] = g
        assert set(ours) == set(docs)
        for pid, g in docs.items():
            assert set(ours[pid].values()) == {g}
            assert len(ours[pid]) == 1 or (len(ours[pid]) == 4 and max(dl20["qrels_dict"][q].get(pid, 0)
                                                                       for q in dl20["qrels_dict"]) == 0)


def test_even_spread_per_query_and_grade(even, dl20):
    _, corpus = even
    langs_of = _languages(corpus)
    groups = 0
    for qid, docs in _relevant(dl20["qrels_dict"]).items():
        for g in set(docs.values()):
            counts = Counter(next(iter(langs_of[p])) for p, grade in docs.items() if grade == g)
            assert max(counts[lg] for lg in LANGS) - min(counts[lg] for lg in LANGS) <= 1, (qid, g, counts)
            groups += 1
        total = Counter(next(iter(langs_of[p])) for p in docs)
        assert max(total[lg] for lg in LANGS) - min(total[lg] for lg in LANGS) <= 1, (qid, total)
    assert groups == 146  # (query, grade >= 1) groups of qrels.dl20-passage.txt


def test_biased_relevant_passages_60_40(biased, even, dl20):
    paths, corpus = biased
    langs_of = _languages(corpus)
    assert set(corpus) != set(even[1]) and len(corpus) == len(even[1])  # the same passages, other languages
    assert set(langs_of) == set(_languages(even[1]))
    primary = json.loads(paths.stats.read_text())["primary_language"]
    assert set(primary) == set(dl20["qrels_dict"]) and set(primary.values()) == set(LANGS)  # drawn per query
    shares = []
    for qid, docs in _relevant(dl20["qrels_dict"]).items():
        counts = Counter(next(iter(langs_of[p])) for p in docs)
        assert counts[primary[qid]] == math.floor(0.6 * len(docs) + 0.5), (qid, counts)  # 60% ...
        others = [counts[lg] for lg in LANGS if lg != primary[qid]]
        assert max(others) - min(others) <= 1, (qid, counts)  # ... and 40% spread over the other three
        top = max(docs.values())  # the primary language holds the highest grades first
        n_top = sum(g == top for g in docs.values())
        assert sum(langs_of[p] == {primary[qid]} for p, g in docs.items() if g == top) == \
            min(n_top, counts[primary[qid]])
        shares.append(counts[primary[qid]] / len(docs))
    assert sum(shares) / len(shares) == pytest.approx(0.6, abs=0.01)
    qrels = io.read_qrels(paths.qrels)
    assert all(d in corpus for docs in qrels.values() for d in docs)
    assert paths.name == "mtrec-biased" and paths.topics.name == "mtrec-biased.en.tsv"


def test_seed_determinism(tmp_path_factory, even, dl20, standin):
    _, corpus0 = even
    _, again = _build(tmp_path_factory, dl20, standin, "even", 0)
    assert again == corpus0
    _, other = _build(tmp_path_factory, dl20, standin, "even", 1)
    relevant = {p for docs in _relevant(dl20["qrels_dict"]).values() for p in docs}
    a, b = _languages(corpus0), _languages(other)
    changed = sum(a[p] != b[p] for p in relevant)
    # another seed keeps a relevant passage's language by chance only (p = 1/4): within 5 binomial standard deviations
    keep = 1 / len(LANGS)
    assert changed == pytest.approx((1 - keep) * len(relevant), abs=5 * math.sqrt(len(relevant) * keep * (1 - keep)))


def test_missing_judged_passages(tmp_path, dl20):
    """Only the 5,396 BM25 passages have text: strict by default, 'drop' builds on what is there."""
    partial = {lang: {pid: f"[{lang}] {t}" for pid, t in dl20["english"].items()} for lang in LANGS}
    with pytest.raises(ValueError, match="not in the passage collection"):
        mtrec.build_mtrec(dl20["topics"], dl20["qrels"], partial, output_root=tmp_path)
    paths = mtrec.build_mtrec(dl20["topics"], dl20["qrels"], partial, output_root=tmp_path, missing="drop")
    qrels = io.read_qrels(paths.qrels)
    corpus = {r["id"] for r in io.read_jsonl(paths.corpus / "corpus.jsonl")}
    relevant = {p for docs in _relevant(dl20["qrels_dict"]).values() for p in docs if p in dl20["english"]}
    assert len(corpus) == 4 * len(dl20["english"]) - 3 * len(relevant)
    assert all(d in corpus for docs in qrels.values() for d in docs)
    judged = {p for docs in dl20["qrels_dict"].values() for p in docs if p in dl20["english"]}
    assert {d.partition("-")[2] for docs in qrels.values() for d in docs} == judged


def test_a_missing_translation_is_an_error_or_dropped(tmp_path):
    """mMARCO's pids are read from the first language's file: a passage absent from another file is caught
    when the collection is written, whether it is relevant (its one language) or not (every language)."""
    folder = tmp_path / "mmarco"
    folder.mkdir()
    for name in ("arabic", "chinese", "russian", "indonesian"):
        lines = [f"{pid}\t{name} {pid}" for pid in ("1", "2", "3") if not (name == "chinese" and pid == "2")]
        (folder / f"{name}_collection.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    topics, qrels = {"q1": "a query"}, {"q1": {"1": 2, "2": 0}}
    with pytest.raises(ValueError, match=r"1 judged passages lack a translation.*\('q1', '2', 'zh'\)"):
        mtrec.build_mtrec(topics, qrels, mtrec.MMarcoCollection(folder), output_root=tmp_path / "strict")
    paths = mtrec.build_mtrec(topics, qrels, mtrec.MMarcoCollection(folder), output_root=tmp_path / "out",
                              missing="drop")
    written = io.read_qrels(paths.qrels)["q1"]
    assert {d for d in written if d.endswith("-2")} == {"ar-2", "ru-2", "id-2"}  # zh-2 dropped
    assert sum(d.endswith("-1") for d in written) == 1 and len(written) == 4  # the relevant passage: one language
    assert json.loads(paths.stats.read_text())["dropped_judgments"] == 1
    assert len(list(io.read_jsonl(paths.corpus / "corpus.jsonl"))) == 4 * 3 - 3 - 1


def _write_mmarco(root, standin, sub="data/google/collections"):
    names = {"ar": "arabic", "zh": "chinese", "ru": "russian", "id": "indonesian"}
    folder = root / sub
    folder.mkdir(parents=True)
    for lang, passages in standin.items():
        with open(folder / f"{names[lang]}_collection.tsv", "w", encoding="utf-8") as f:
            for pid in sorted(passages, key=int):
                f.write(f"{pid}\t{passages[pid]}\n")


def test_cli_with_mmarco_layout(tmp_path, python, standin, even, shared_data):
    """``python -m pyserini_kdspd.data mtrec --mmarco-dir`` on files in mMARCO's own layout and naming."""
    _write_mmarco(tmp_path / "mmarco", standin)
    out = tmp_path / "out"
    r = subprocess.run([python, "-m", "pyserini_kdspd.data", "mtrec", "--mmarco-dir", str(tmp_path / "mmarco"),
                        "--data-dir", str(shared_data), "--output-root", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    corpus = {rec["id"]: rec for rec in io.read_jsonl(out / "collections/mtrec/corpus/corpus.jsonl")}
    assert corpus == even[1]  # streaming from files gives the same collection as the in-memory build
    assert (out / "qrels/mtrec.txt").read_text() == even[0].qrels.read_text()
    loaded = mtrec.load_mmarco(tmp_path / "mmarco", ["ru"], pids=["23849", "1034183"])
    assert set(loaded) == {"ru"} and set(loaded["ru"]) <= {"23849", "1034183"}
    # a complete build is reused; one recorded under the old layout (one language per passage) is rebuilt
    corpus_file = out / "collections/mtrec/corpus/corpus.jsonl"
    built = corpus_file.stat().st_mtime_ns
    kwargs = dict(data_dir=shared_data, output_root=out, mmarco_dir=tmp_path / "mmarco")
    mtrec.prepare_mtrec(**kwargs)
    assert corpus_file.stat().st_mtime_ns == built
    stats_file = out / "collections/mtrec/stats.json"
    stats = json.loads(stats_file.read_text())
    del stats["layout"]
    stats_file.write_text(json.dumps(stats))
    mtrec.prepare_mtrec(**kwargs)
    assert corpus_file.stat().st_mtime_ns != built and "layout" in json.loads(stats_file.read_text())


def test_missing_mmarco_is_one_clear_line(tmp_path, python):
    with pytest.raises(mtrec.MMarcoMissing, match="arabic_collection.tsv"):
        mtrec.MMarcoCollection(tmp_path)
    r = subprocess.run([python, "-m", "pyserini_kdspd.data", "mtrec", "--mmarco-dir", str(tmp_path),
                        "--output-root", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "indonesian_collection.tsv" in lines[0] and "unicamp-dl/mmarco" in lines[0]


def test_malformed_mmarco_line_names_file_and_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("arabic", "chinese", "russian", "indonesian"):
        (folder / f"{name}_collection.tsv").write_text("1\tok\nbroken line without tab\n", encoding="utf-8")
    with pytest.raises(io.FormatError, match=r"arabic_collection.tsv:2"):
        list(mtrec.MMarcoCollection(folder).pids())
