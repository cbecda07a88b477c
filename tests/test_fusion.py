"""pyserini_kdspd.fusion with real ranx.

ranx compiles its numba kernels on first use: ~50 s in a fresh environment, ~4-10 s
per process once numba's cache (in ranx's __pycache__) exists. Only the minmax/rrf
tests pay it, once per session.
"""
import random
import subprocess

import pytest

from pyserini_kdspd.fusion import fuse, main, round_robin
from pyserini_kdspd.io import ranked, read_run, write_run

LANGS = ("ar", "de", "fi", "ru", "zh")


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


def all_queries(runs):
    """Every query some language retrieved for: fusion keeps each, whichever lists lack it."""
    return {q for run in runs.values() for q in run}


def direct_minmax(runs, depth):
    """The paper's score merging written out: min-max per list and query, union, sort."""
    out = {}
    for run in runs.values():
        for q, docs in run.items():
            lo, hi = min(docs.values()), max(docs.values())
            den = max(hi - lo, 1e-9)  # ranx's guard: a constant list normalises to 0
            for d, s in docs.items():
                out.setdefault(q, {})[d] = (s - lo) / den
    return {q: dict(ranked(docs, depth)) for q, docs in out.items()}


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
        got = fuse(runs, "minmax", depth=depth)
        want = direct_minmax(runs, depth)
        assert set(got) == set(want)
        for q in want:
            assert got[q] == pytest.approx(want[q], abs=1e-12)
            assert [d for d, _ in ranked(got[q])] == [d for d, _ in ranked(want[q])]


def test_minmax_missing_query_and_single_list():
    a = {"q1": {"a1": 4.0, "a2": 2.0, "a3": 0.0}}
    b = {"q1": {"b1": 1.0, "b2": 0.5}, "q2": {"b3": 3.0, "b4": 1.0}}
    empty = {"q1": {}}
    fused = fuse({"a": a, "b": b, "fi": empty}, "minmax")
    assert fused["q1"] == pytest.approx({"a1": 1.0, "a2": 0.5, "a3": 0.0, "b1": 1.0, "b2": 0.0})
    assert fused["q2"] == pytest.approx({"b3": 1.0, "b4": 0.0})  # q2 missing from a: b's documents kept
    assert fuse([a], "minmax")["q1"] == pytest.approx({"a1": 1.0, "a2": 0.5, "a3": 0.0})
    assert fuse([empty, {"q1": {}}], "minmax") == {}
    # ties at the depth boundary (every list's top normalises to 1.0) are cut like io.ranked cuts them
    runs = {"a": a, "b": b}
    for depth in (1, 2, 4):
        got, want = fuse(runs, "minmax", depth=depth), direct_minmax(runs, depth)
        assert set(got) == set(want) and all(got[q] == pytest.approx(want[q]) for q in want)
    assert list(fuse(runs, "minmax", depth=1)["q1"]) == ["b1"]  # a1 and b1 tie at 1.0: trec_eval order keeps b1


def test_rrf_through_ranx():
    runs = per_language_runs(n_queries=4)
    got = fuse(runs, "rrf", depth=None)
    assert set(got) == all_queries(runs)
    for q in got:
        want = {}
        for run in runs.values():
            for rank, (d, _) in enumerate(ranked(run.get(q, {})), 1):
                want[d] = want.get(d, 0.0) + 1 / (60 + rank)
        assert got[q] == pytest.approx(want)


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
    assert read_run(out)["q1"] == pytest.approx({"a1": 1.0, "b1": 1.0, "b2": 0.8, "a2": 0.0, "b3": 0.0})


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
