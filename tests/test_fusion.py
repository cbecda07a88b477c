"""pyserini_kdspd.fusion with real ranx.

ranx compiles its numba kernels on first use: ~50 s in a fresh environment, ~4-10 s
per process once numba's cache (in ranx's __pycache__) exists. Only the minmax/rrf
tests pay it, once per session.
"""
import random
import subprocess
from collections import Counter

import pytest
import pytrec_eval

from pyserini_kdspd.evaluate import evaluate
from pyserini_kdspd.fusion import fuse, main, round_robin
from pyserini_kdspd.io import ranked, read_run, write_run

LANGS = ("ar", "de", "fi", "ru", "zh")
LAREQA_LANGS = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")


def per_language_runs(n_queries=12, n_docs=15, seed=1, drop=True):
    """Disjoint per-language lists with random scores; some languages lack some queries."""
    rng = random.Random(seed)
    runs = {}
    for lang in LANGS:
        run = {}
        for q in range(n_queries):
            if drop and rng.random() < 0.2:
                continue  # this language retrieved nothing for this query
            run[f"q{q}"] = {f"{lang}-{q}-{d}": rng.uniform(-5, 50) for d in range(rng.randint(1, n_docs))}
        runs[lang] = run
    return runs


def lareqa_shaped_runs(n_queries=120, n_docs=20, seed=2):
    """Per-language BM25-like lists shaped like LAReQA's: 11 languages, ids ``{lang}-a000-p00-s00``, scores with
    4 decimals. After min-max every language's top document scores 1.0 (RRF: 1/61), and docid order puts zh first."""
    rng = random.Random(seed)
    return {lang: {f"q{q:03d}": {f"{lang}-a{rng.randrange(48):03d}-p{d:02d}-s{rng.randrange(9):02d}":
                                 round(rng.uniform(0, 30), 4) for d in range(n_docs)}
                   for q in range(n_queries)}
            for lang in LAREQA_LANGS}


def lang_at_rank_1(fused):
    """The language of each query's first document as trec_eval orders the run (score, then docid, descending)."""
    return {q: ranked(docs)[0][0].split("-")[0] for q, docs in fused.items()}


def all_queries(runs):
    """Every query some language retrieved for: fusion keeps each, whichever lists lack it."""
    return {q for run in runs.values() for q in run}


def direct_minmax(runs):
    """The paper's score merging written out: min-max per list and query, union."""
    out = {}
    for run in runs.values():
        for q, docs in run.items():
            lo, hi = min(docs.values()), max(docs.values())
            den = max(hi - lo, 1e-9)  # ranx's guard: a constant list normalises to 0
            for d, s in docs.items():
                out.setdefault(q, {})[d] = (s - lo) / den
    return out


def assert_ranks_as(got, want, depth):
    """``got`` is ``want``'s ranking cut at ``depth``, ties (to the 6 decimals of a run file) in any order.

    Its scores strictly decrease (nothing left for trec_eval to order by docid) and stay within a few
    millionths of ``want``'s, no document passes one with a higher score, and everything scored above
    the cut is kept.
    """
    assert set(got) == set(want)
    for q, docs in got.items():
        order = [d for d, _ in ranked(docs)]
        assert order == list(docs)  # returned in rank order
        scores = [docs[d] for d in order]
        assert all(a > b for a, b in zip(scores, scores[1:]))
        truth = [round(want[q][d], 6) for d in order]
        assert truth == sorted(truth, reverse=True)
        assert len(order) == min(depth or len(want[q]), len(want[q]))
        assert {d for d, s in want[q].items() if round(s, 6) > truth[-1]} <= set(order)
        assert docs == pytest.approx({d: want[q][d] for d in order}, abs=2e-5)  # a tie of 11 lowered by 10e-6


# ------------------------------------------------------------------ round robin
def test_rr_alternates_languages_per_round():
    runs = per_language_runs(drop=False, n_docs=30)
    fused = fuse(runs, "rr", depth=None)
    assert set(fused) == all_queries(runs)
    for q, docs in fused.items():
        lists = {lang: [d for d, _ in ranked(runs[lang][q])] for lang in LANGS}
        order = [d for d, _ in ranked(docs)]
        assert sorted(order) == sorted(d for l in lists.values() for d in l)
        langs = [d.split("-")[0] for d in order]
        rounds = min(map(len, lists.values()))
        for r in range(rounds):  # while no list is exhausted, each round has each language once
            assert sorted(langs[r * len(LANGS):(r + 1) * len(LANGS)]) == sorted(LANGS)
        for lang, l in lists.items():  # each language's documents keep their own order
            assert [d for d in order if d.startswith(lang + "-")] == l
        scores = [s for _, s in ranked(docs)]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)


def test_rr_seeded_reproducible_and_order_independent():
    runs = per_language_runs()
    a = fuse(runs, "rr", seed=0)
    assert fuse(runs, "rr", seed=0) == a
    shuffled = dict(reversed(list(runs.items())))
    assert fuse(shuffled, "rr", seed=0) == a
    b = fuse(runs, "rr", seed=1)
    assert set(a) == set(b) == all_queries(runs)
    assert any(list(ranked(a[q])) != list(ranked(b[q])) for q in a)
    assert all(set(a[q]) == set(b[q]) for q in a)  # depth exceeds the lists: same documents


def test_rr_depth_missing_queries_and_duplicates():
    a = {"q1": {"a1": 3.0, "shared": 2.0, "a3": 1.0}}
    b = {"q1": {"shared": 9.0, "b2": 1.0}, "q2": {"b9": 1.0}}
    fused = fuse({"a": a, "b": b}, "rr", depth=3)
    assert len(fused["q1"]) == 3 and "shared" in fused["q1"]
    assert fused["q2"] == {"b9": 3.0}  # only in b: still fused
    full = fuse({"a": a, "b": b}, "rr", depth=None)
    assert sorted(full["q1"]) == ["a1", "a3", "b2", "shared"]  # "shared" once
    assert max(full["q1"].values()) == 4.0
    # first occurrence wins; the list that lost the duplicate moves to its next unseen document
    rng = random.Random(0)
    order = round_robin([{"x": 2.0, "y": 1.0}, {"x": 5.0, "z": 1.0}], rng, depth=None)
    assert order.count("x") == 1 and sorted(order) == ["x", "y", "z"]
    assert order[:2] in (["x", "z"], ["x", "y"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse({"a": {}}, "comb")
    with pytest.raises(ValueError, match="no runs"):
        fuse({}, "rr")
    with pytest.raises(ValueError, match="depth"):
        fuse({"a": {}}, "rr", depth=0)
    with pytest.raises(TypeError):
        fuse(["not a run"], "rr")


# ------------------------------------------------------------- ranx: minmax, rrf
def test_minmax_through_ranx_equals_direct_implementation():
    runs = per_language_runs()
    for depth in (None, 10):
        assert_ranks_as(fuse(runs, "minmax", depth=depth), direct_minmax(runs), depth)


def test_minmax_missing_query_and_single_list():
    a = {"q1": {"a1": 4.0, "a2": 2.0, "a3": 0.0}}
    b = {"q1": {"b1": 1.0, "b2": 0.5}, "q2": {"b3": 3.0, "b4": 1.0}}
    empty = {"q1": {}}
    fused = fuse({"a": a, "b": b, "fi": empty}, "minmax")
    assert fused["q1"] == pytest.approx({"a1": 1.0, "a2": 0.5, "a3": 0.0, "b1": 1.0, "b2": 0.0}, abs=2e-6)
    assert fused["q2"] == pytest.approx({"b3": 1.0, "b4": 0.0})  # q2 missing from a: b's documents kept
    assert fuse([a], "minmax")["q1"] == pytest.approx({"a1": 1.0, "a2": 0.5, "a3": 0.0})
    assert fuse([empty, {"q1": {}}], "minmax") == {}
    runs = {"a": a, "b": b}
    for depth in (1, 2, 4):
        assert_ranks_as(fuse(runs, "minmax", depth=depth), direct_minmax(runs), depth)
    # a1 and b1 tie at 1.0: which one a cut at 1 keeps is the seed's draw, not the docid's
    assert {next(iter(fuse(runs, "minmax", depth=1, seed=seed)["q1"])) for seed in range(10)} == {"a1", "b1"}


# ------------------------------------------------------------------------ ties
@pytest.mark.parametrize("method", ["minmax", "rrf"])
def test_ties_spread_rank_1_over_languages_reproducibly(method):
    runs = lareqa_shaped_runs()
    fused = fuse(runs, method, depth=20, seed=0)
    first = lang_at_rank_1(fused)
    counts = Counter(first.values())
    assert set(counts) == set(LAREQA_LANGS) and max(counts.values()) < len(first) / 4, counts  # docid order: 120 zh
    assert fuse(runs, method, depth=20, seed=0) == fused
    # neither the order nor the names of the lists matter
    assert fuse(dict(reversed(runs.items())), method, depth=20, seed=0) == fused
    assert fuse(list(reversed(runs.values())), method, depth=20, seed=0) == fused
    other = lang_at_rank_1(fuse(runs, method, depth=20, seed=1))
    assert sum(other[q] != first[q] for q in first) > len(first) / 2  # 10 in 11 expected


@pytest.mark.parametrize("method", ["minmax", "rrf"])
def test_broken_ties_survive_the_run_file_and_pytrec_eval(tmp_path, method):
    fused = fuse(lareqa_shaped_runs(), method, depth=20, seed=0)
    write_run(tmp_path / "fused.txt", fused, depth=20)
    assert read_run(tmp_path / "fused.txt") == fused
    # judge the document fused at rank k (1..11: inside the tie of every language's top), expect 1/k back
    want = {q: 1 + i % len(LAREQA_LANGS) for i, q in enumerate(fused)}
    qrels = {q: {list(fused[q])[k - 1]: 1} for q, k in want.items()}
    got = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(read_run(tmp_path / "fused.txt"))
    assert {q: got[q]["recip_rank"] for q in got} == pytest.approx({q: 1 / k for q, k in want.items()})
    mrr = sum(1 / k for k in want.values()) / len(want)
    assert evaluate(tmp_path / "fused.txt", qrels, metrics=["recip_rank"])["recip_rank"] == pytest.approx(mrr)


def test_a_tie_is_kept_together_and_a_deeper_cut_extends_a_shallower_one():
    """A tie of six at 0.5 (one only equal to 6 decimals) lowers its members to 0.499995: the next distinct
    score, 0.499998, is lowered below them rather than passed; a cut inside the tie keeps any of its members."""
    runs = {x: {"q": {f"{x}1": 1.0, f"{x}2": 0.5, f"{x}3": 0.0}} for x in "abcde"}
    runs["a"]["q"].update({"a-near": 0.4999996, "a-next": 0.499998})
    fused = fuse(runs, "minmax", depth=None)
    assert_ranks_as(fused, direct_minmax(runs), None)
    order = list(fused["q"])
    assert set(order[5:11]) == {"a2", "b2", "c2", "d2", "e2", "a-near"} and order[11] == "a-next"
    assert fused["q"]["a-next"] == pytest.approx(0.499994)
    for depth in (1, 6, 12):
        assert list(fuse(runs, "minmax", depth=depth)["q"]) == order[:depth]
    assert {list(fuse(runs, "minmax", depth=6, seed=seed)["q"])[5] for seed in range(50)} == set(order[5:11])


def test_rrf_through_ranx():
    runs = per_language_runs(n_queries=4)
    want = {}
    for run in runs.values():
        for q, docs in run.items():
            for rank, (d, _) in enumerate(ranked(docs), 1):
                want.setdefault(q, {})[d] = want.get(q, {}).get(d, 0.0) + 1 / (60 + rank)
    assert_ranks_as(fuse(runs, "rrf", depth=None), want, None)


# -------------------------------------------------------------------------- CLI
def test_cli_writes_trec_run(tmp_path, capsys):
    runs = per_language_runs(n_queries=3)
    paths = []
    for lang, run in runs.items():
        write_run(tmp_path / lang / "bm25.txt", run)  # same stem in every folder: name them
        paths.append(f"{lang}={tmp_path / lang / 'bm25.txt'}")
    out = tmp_path / "fused.txt"
    assert main(["--runs", *paths, "--method", "rr", "--depth", "5", "--output", str(out), "--tag", "bm25-rr"]) == 0
    fused = read_run(out)
    assert set(fused) == all_queries(runs) and all(len(d) == 5 for d in fused.values())
    assert out.read_text().split("\n")[0].endswith(" bm25-rr")
    # the written file reproduces the in-memory fusion of the (6-decimal) written runs
    written = {lang: read_run(tmp_path / lang / "bm25.txt") for lang in runs}
    assert fused == fuse(written, "rr", depth=5)

    assert main(["--runs", *[p.split("=", 1)[1] for p in paths], "--output", str(out)]) == 2
    assert "name them with name=path" in capsys.readouterr().err

    bad = tmp_path / "bad.txt"
    bad.write_text("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 two 0.5 t\n")
    assert main(["--runs", str(bad), paths[0], "--output", str(tmp_path / "x.txt")]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()


def test_cli_minmax(tmp_path):
    a, b = tmp_path / "ar.txt", tmp_path / "de.txt"
    write_run(a, {"q1": {"a1": 2.0, "a2": 1.0}})
    write_run(b, {"q1": {"b1": 5.0, "b2": 4.0, "b3": 0.0}})
    out = tmp_path / "fused.txt"
    assert main(["--runs", str(a), str(b), "--method", "minmax", "--output", str(out)]) == 0
    assert read_run(out)["q1"] == pytest.approx({"a1": 1.0, "b1": 1.0, "b2": 0.8, "a2": 0.0, "b3": 0.0}, abs=2e-6)


def test_module_entry_point(tmp_path, python):
    a, b = tmp_path / "ar.txt", tmp_path / "de.txt"
    write_run(a, {"q1": {"a1": 2.0, "a2": 1.0}})
    write_run(b, {"q1": {"b1": 5.0}, "q2": {"b2": 1.0}})
    out = tmp_path / "fused.txt"
    res = subprocess.run([python, "-m", "pyserini_kdspd.fusion", "--runs", str(a), str(b), "--method", "rr",
                          "--seed", "3", "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert read_run(out) == fuse({"ar": read_run(a), "de": read_run(b)}, "rr", seed=3)
    assert "2 queries, 4 documents" in res.stderr
