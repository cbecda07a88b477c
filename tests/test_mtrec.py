"""mTREC construction on the real TREC DL 2020 qrels with a stand-in translation of real MS MARCO passages.

mMARCO itself is not available offline, so each language's "translation" is the
English passage tagged ``[ar] ...`` (the BM25 top-100 texts of retrieve_results_dl20.json;
judged passages outside that top-100 get a placeholder text). The assignment logic,
counts and spread checked here do not depend on the text.
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


def _pid_lang(corpus):
    out = {}
    for docid, rec in corpus.items():
        lang, _, pid = docid.partition("-")
        assert lang == rec["lang"] and pid not in out, docid
        out[pid] = lang
    return out


def test_even_collection_counts_and_files(even, dl20, standin):
    paths, corpus = even
    n_passages = len(standin["ar"])
    assert len(corpus) == n_passages  # every passage exactly once, in one language
    pid_lang = _pid_lang(corpus)
    assert set(pid_lang) == set(standin["ar"])
    for docid, rec in corpus.items():
        lang, _, pid = docid.partition("-")
        assert rec["contents"] == rec["text"] == standin[lang][pid]
    judged = {pid for docs in dl20["qrels_dict"].values() for pid in docs}
    unjudged = Counter(lang for pid, lang in pid_lang.items() if pid not in judged)
    assert max(unjudged.values()) - min(unjudged.values()) <= 1  # the passages nobody judged: exact round robin
    per_lang = Counter(pid_lang.values())
    for lang in LANGS:
        sub = list(io.read_jsonl(paths.by_lang[lang] / "corpus.jsonl"))
        assert len(sub) == per_lang[lang] and all(r["lang"] == lang for r in sub)
    topics = io.read_topics(paths.topics)
    all_topics = io.read_topics(dl20["topics"])
    assert len(topics) == 54 and set(topics) == set(dl20["qrels_dict"])  # the data README: 54 judged queries
    assert all(topics[q] == all_topics[q] for q in topics)
    qrels = io.read_qrels(paths.qrels)
    assert sum(len(d) for d in qrels.values()) == 11386  # and 11,386 judgments
    assert all(d in corpus for docs in qrels.values() for d in docs)  # qrels docids exist in the collection
    for qid, docs in dl20["qrels_dict"].items():  # same judgments, renamed to {lang}-{pid}
        assert {d.partition("-")[2]: g for d, g in qrels[qid].items()} == docs


def test_even_spread_per_query_and_grade(even, dl20):
    _, corpus = even
    pid_lang = _pid_lang(corpus)
    shared = Counter(p for docs in dl20["qrels_dict"].values() for p in docs)
    checked = 0
    for qid, docs in dl20["qrels_dict"].items():
        groups = defaultdict(list)
        for pid, g in docs.items():
            groups[g].append(pid)
        for g, pids in groups.items():
            counts = Counter(pid_lang[p] for p in pids)
            spread = max(counts[lg] for lg in LANGS) - min(counts[lg] for lg in LANGS)
            if all(shared[p] == 1 for p in pids):
                assert spread <= 1, (qid, g, counts)
                checked += 1
            else:  # a passage judged for an earlier query keeps its language; the rest balance around it
                assert spread <= 1 + sum(shared[p] > 1 for p in pids), (qid, g, counts)
    assert checked == 151  # of the 200 (query, grade) groups in qrels.dl20-passage.txt, 151 hold no shared passage


def test_biased_primary_language_gets_60_percent(biased, dl20):
    paths, corpus = biased
    pid_lang = _pid_lang(corpus)
    stats = json.loads(paths.stats.read_text())
    primary = stats["primary_language"]
    assert set(primary) == set(dl20["qrels_dict"]) and set(primary.values()) <= set(LANGS)
    assert len(set(primary.values())) > 1  # random per query, not one language for all
    first_owner = {}
    for qid in sorted(dl20["qrels_dict"]):
        for pid in dl20["qrels_dict"][qid]:
            first_owner.setdefault(pid, qid)
    exact = 0
    for qid, docs in dl20["qrels_dict"].items():
        relevant = [p for p, g in docs.items() if g >= mtrec.MIN_GRADE]
        if not relevant:
            continue
        counts = Counter(pid_lang[p] for p in relevant)
        target = math.floor(0.6 * len(relevant) + 0.5)
        inherited = sum(first_owner[p] != qid for p in relevant)
        assert abs(counts[primary[qid]] - target) <= inherited, (qid, counts, target)
        if not inherited:
            exact += 1
            others = [counts[lg] for lg in LANGS if lg != primary[qid]]
            assert max(others) - min(others) <= 1
            # the primary language holds the highest grades first
            top = max(docs[p] for p in relevant)
            n_top = sum(docs[p] == top for p in relevant)
            assert sum(pid_lang[p] == primary[qid] for p in relevant if docs[p] == top) == min(n_top, target)
    assert exact == 53  # of the 54 queries, one has a relevant passage judged for an earlier qid
    # non-relevant judged passages stay evenly spread: each query's within one, bar those an earlier query placed
    for qid, docs in dl20["qrels_dict"].items():
        zero = [p for p, g in docs.items() if g == 0]
        counts = Counter(pid_lang[p] for p in zero)
        spread = max(counts[lg] for lg in LANGS) - min(counts[lg] for lg in LANGS)
        assert spread <= 1 + sum(first_owner[p] != qid for p in zero), (qid, counts)
    qrels = io.read_qrels(paths.qrels)
    assert all(d in corpus for docs in qrels.values() for d in docs)
    assert paths.name == "mtrec-biased" and paths.topics.name == "mtrec-biased.en.tsv"


def test_seed_determinism(tmp_path_factory, even, dl20, standin):
    _, corpus0 = even
    _, again = _build(tmp_path_factory, dl20, standin, "even", 0)
    assert again == corpus0
    _, other = _build(tmp_path_factory, dl20, standin, "even", 1)
    a, b = _pid_lang(corpus0), _pid_lang(other)
    assert set(a) == set(b)
    changed = sum(a[p] != b[p] for p in a)
    # another seed keeps a passage's language by chance only (p = 1/4): within 5 binomial standard deviations
    keep = 1 / len(LANGS)
    assert changed == pytest.approx((1 - keep) * len(a), abs=5 * math.sqrt(len(a) * keep * (1 - keep)))


def test_missing_judged_passages(tmp_path, dl20):
    """Only the 5,396 BM25 passages have text: strict by default, 'drop' builds on what is there."""
    partial = {lang: {pid: f"[{lang}] {t}" for pid, t in dl20["english"].items()} for lang in LANGS}
    with pytest.raises(ValueError, match="not in the passage collection"):
        mtrec.build_mtrec(dl20["topics"], dl20["qrels"], partial, output_root=tmp_path)
    paths = mtrec.build_mtrec(dl20["topics"], dl20["qrels"], partial, output_root=tmp_path, missing="drop")
    qrels = io.read_qrels(paths.qrels)
    corpus = {r["id"] for r in io.read_jsonl(paths.corpus / "corpus.jsonl")}
    assert len(corpus) == len(dl20["english"])
    assert all(d in corpus for docs in qrels.values() for d in docs)
    judged = {p for docs in dl20["qrels_dict"].values() for p in docs if p in dl20["english"]}
    assert {d.partition("-")[2] for docs in qrels.values() for d in docs} == judged


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
