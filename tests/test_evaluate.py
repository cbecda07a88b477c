"""pyserini_kdspd.evaluate against real pytrec_eval and scipy, on hand-written runs and qrels."""
import math
import subprocess

import pytest
from scipy.stats import ttest_rel

from pyserini_kdspd.evaluate import (collect_runs, cut, evaluate, main, render_table,
                                     significantly_better, ttest)
from pyserini_kdspd.io import FormatError, write_qrels, write_run

QRELS = {
    "q1": {"d1": 2, "d3": 1, "d5": 0, "d9": 1},
    "q2": {"x": 0},              # no relevant document: excluded
    "q3": {"d7": 1},             # relevant document, but the run has no q3: counts as 0
}
RUN = {
    "q1": {"d2": 0.9, "d1": 0.8, "d5": 0.7, "d3": 0.6},
    "q2": {"x": 1.0},
    "q99": {"d1": 1.0},           # not judged: ignored
}


def test_hand_computed_values():
    ev = evaluate(RUN, QRELS)
    assert set(ev.per_query) == {"q1", "q3"}
    assert ev.missing == ("q3",)
    q1 = ev.per_query["q1"]
    # relevant d1 (rank 2), d3 (rank 4), d9 (not retrieved)
    assert q1["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert q1["recip_rank"] == pytest.approx(1 / 2)
    assert q1["P_10"] == pytest.approx(2 / 10)
    assert q1["recall_100"] == pytest.approx(2 / 3)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert q1["ndcg_cut_10"] == pytest.approx(dcg / idcg)
    assert ev.per_query["q3"] == {m: 0.0 for m in ev.metrics}
    assert ev["map"] == pytest.approx(q1["map"] / 2)  # averaged over q1 and the missing q3
    assert ev.num_queries == 2


def test_relevance_level():
    ev = evaluate(RUN, QRELS, relevance_level=2)  # only d1 relevant for q1; q3 has none -> excluded
    assert set(ev.per_query) == {"q1"}
    assert ev.per_query["q1"]["map"] == pytest.approx(1 / 2)


def test_depth_cut_and_trec_eval_tie_order():
    qrels = {"q": {"c": 1}}
    run = {"q": {"a": 5.0, "b": 4.0, "c": 3.0}}
    assert evaluate(run, qrels, depth=None)["map"] == pytest.approx(1 / 3)
    assert evaluate(run, qrels, depth=2)["map"] == 0.0
    # ties: trec_eval ranks equal scores by docid descending, so the cut keeps "c" first
    tied = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
    assert list(cut(tied, 1)["q"]) == ["c"]
    assert evaluate(tied, {"q": {"a": 1}}, depth=None)["recip_rank"] == pytest.approx(1 / 3)
    assert evaluate(tied, {"q": {"c": 1}}, depth=1)["recip_rank"] == 1.0
    with pytest.raises(ValueError, match="depth"):
        evaluate(run, qrels, depth=0)


def test_files_and_strict_errors(tmp_path):
    write_qrels(tmp_path / "qrels.txt", QRELS)
    write_run(tmp_path / "run.txt", RUN)
    from_files = evaluate(tmp_path / "run.txt", tmp_path / "qrels.txt")
    assert from_files.per_query == evaluate(RUN, QRELS).per_query

    bad = tmp_path / "bad.txt"
    bad.write_text("q1 Q0 d1 1 1.0 tag\nq1 Q0 d2 2 tag\n")
    with pytest.raises(FormatError, match=rf"{bad}:2"):
        evaluate(bad, tmp_path / "qrels.txt")
    with pytest.raises(ValueError, match="shares no query id"):
        evaluate({"other": {"d1": 1.0}}, QRELS)
    with pytest.raises(ValueError, match="no query has a document"):
        evaluate(RUN, {"q": {"d": 0}})
    # an empty run is legal: every judged query scores 0
    assert evaluate({}, QRELS)["map"] == 0.0


def _rank_run(positions, rel="rel"):
    """One query per entry; the relevant document is put at the given 1-based rank."""
    run = {}
    for i, pos in enumerate(positions):
        docs = {f"n{j}": 100.0 - j for j in range(10)}
        docs.pop(f"n{pos - 1}")
        docs[rel] = 100.0 - (pos - 1)
        run[f"q{i}"] = docs
    return run


TABLE_QRELS = {f"q{i}": {"rel": 1} for i in range(8)}
MDPR = _rank_run([3, 4, 5, 6, 3, 4, 5, 6])
KDENC = _rank_run([2, 1, 2, 2, 2, 1, 2, 2])
KDSPD = _rank_run([1, 1, 1, 1, 1, 1, 1, 1])


def test_ttest_matches_scipy():
    a, b = evaluate(KDSPD, TABLE_QRELS), evaluate(MDPR, TABLE_QRELS)
    t, p = ttest(a, b, "recip_rank")
    ref = ttest_rel([a.per_query[q]["recip_rank"] for q in TABLE_QRELS],
                    [b.per_query[q]["recip_rank"] for q in TABLE_QRELS])
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert t > 0 and p < 0.05
    assert significantly_better(a, b, "recip_rank") and not significantly_better(b, a, "recip_rank")
    assert ttest(a, a, "map") == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        ttest(evaluate(RUN, {"q1": QRELS["q1"]}), evaluate(RUN, {"q1": QRELS["q1"]}), "map")


def test_table_marks_bold_and_missing():
    rows = {"mDPR": evaluate(MDPR, TABLE_QRELS), "KD-Encoder": evaluate(KDENC, TABLE_QRELS),
            "KD-SPD": evaluate(KDSPD, TABLE_QRELS), "BM25 + RR": None}
    md = render_table(rows, metrics=("map", "recip_rank"))
    lines = {l.split(" | ")[0].lstrip("| "): l for l in md.splitlines() if l.startswith("| ")}
    assert "\u2020" not in lines["mDPR"] and "\u2021" not in lines["mDPR"]
    assert "\u2020" in lines["KD-Encoder"] and "\u2021" not in lines["KD-Encoder"]
    assert "| **1.000**\u2020\u2021 |" in lines["KD-SPD"]
    assert lines["BM25 + RR"].count("\u2013") == 2
    assert "run not available" in md and "p < 0.05" in md

    tex = render_table(rows, metrics=("map", "recip_rank"), fmt="latex")
    assert r"\textbf{1.000}\textsuperscript{\dag\ddag}" in tex
    assert r"\begin{tabular}{lcc}" in tex and "BM25 + RR & -- & --" in tex

    # explicit marks; a named baseline must be a row
    only = render_table(rows, metrics=("map",), marks={"*": "KD-Encoder"})
    assert "\u2020" not in only and "**1.000***" in only
    with pytest.raises(ValueError, match="not rows"):
        render_table(rows, marks={"\u2020": "mBERT"})


def test_table_column_groups():
    ev = {name: evaluate(run, TABLE_QRELS) for name, run in [("mDPR", MDPR), ("KD-SPD", KDSPD)]}
    rows = {"mDPR": {"CLEF": ev["mDPR"], "mTREC": ev["mDPR"]}, "KD-SPD": {"mTREC": ev["KD-SPD"]}}
    md = render_table(rows, metrics=("map",))
    assert md.splitlines()[0] == "| System | CLEF MAP | mTREC MAP |"
    assert "| KD-SPD | \u2013 | **1.000**\u2020 |" in md
    tex = render_table(rows, metrics=("map", "P_10"), fmt="latex")
    assert r"\multicolumn{2}{c}{CLEF} & \multicolumn{2}{c}{mTREC}" in tex
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-5}" in tex


def test_cli(tmp_path, capsys):
    write_qrels(tmp_path / "qrels.txt", TABLE_QRELS)
    runs = tmp_path / "runs"
    write_run(runs / "mDPR.txt", MDPR)
    write_run(runs / "KD-SPD.trec", KDSPD)
    (runs / "notes.md").write_text("not a run\n")
    rc = main(["--qrels", str(tmp_path / "qrels.txt"), "--runs", str(runs),
               "--per-query", str(tmp_path / "pq.tsv")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| KD-SPD | **1.000**\u2020 |" in out
    pq = (tmp_path / "pq.tsv").read_text().splitlines()
    assert pq[0] == "system\tqid\tmap\tndcg_cut_10\tP_10\trecip_rank\trecall_100"
    assert len(pq) == 1 + 2 * len(TABLE_QRELS)  # header, then each run's judged queries

    # several collections: COLL=qrels, COLL:name=path
    rc = main(["--qrels", f"A={tmp_path / 'qrels.txt'}", f"B={tmp_path / 'qrels.txt'}",
               "--runs", f"A:mDPR={runs / 'mDPR.txt'}", f"B:mDPR={runs / 'mDPR.txt'}",
               f"B:KD-SPD={runs / 'KD-SPD.trec'}", "--format", "latex", "--marks"])
    out = capsys.readouterr().out
    assert rc == 0 and r"\multicolumn{5}{c}{A}" in out and r"\dag" not in out

    bad = tmp_path / "bad.txt"
    bad.write_text("q0 Q0 rel 1 1.0 t\nq0 Q0 rel\n")
    rc = main(["--qrels", str(tmp_path / "qrels.txt"), "--runs", f"bad={bad}"])
    assert rc == 2 and f"{bad}:2" in capsys.readouterr().err


def test_collect_runs_errors(tmp_path):
    write_run(tmp_path / "a.txt", MDPR)
    with pytest.raises(ValueError, match="COLL:name=path"):
        collect_runs([str(tmp_path / "a.txt")], ["A", "B"])
    with pytest.raises(ValueError, match="two runs"):
        collect_runs([str(tmp_path / "a.txt"), f"a={tmp_path / 'a.txt'}"], [None])
    with pytest.raises(FileNotFoundError):
        collect_runs([str(tmp_path / "nope.txt")], [None])


def test_module_entry_point(tmp_path, python):
    write_qrels(tmp_path / "qrels.txt", TABLE_QRELS)
    write_run(tmp_path / "mDPR.txt", MDPR)
    res = subprocess.run([python, "-m", "pyserini_kdspd.evaluate", "--qrels", str(tmp_path / "qrels.txt"),
                          "--runs", str(tmp_path / "mDPR.txt")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "| System | MAP | nDCG@10 | P@10 | MRR | R@100 |"


def test_figures_equal_stock_trec_eval_on_ties_cuts_and_missing_queries(tmp_path):
    """Where trec_eval's conventions matter: ties at the depth cut (score descending, then docid descending),
    a judged query absent from the run (-c: it counts as 0), an unjudged document."""
    from pyserini_kdspd import io
    from pyserini_kdspd.evaluate import trec_eval, trec_eval_disagreements

    io.write_qrels(tmp_path / "qrels.txt", {"q1": {"d2": 1, "d9": 0}, "q2": {"d5": 1}, "q3": {"d1": 1}})
    (tmp_path / "run.txt").write_text("q1 Q0 d0 1 1.0 x\nq1 Q0 d1 2 1.0 x\nq1 Q0 d2 3 1.0 x\nq1 Q0 d3 4 0.5 x\n"
                                      "q3 Q0 d4 1 3.0 x\nq3 Q0 d1 2 2.0 x\n", encoding="utf-8")
    theirs = trec_eval(tmp_path / "run.txt", tmp_path / "qrels.txt", depth=2)
    assert theirs["recip_rank"] == pytest.approx((1 + 0 + 0.5) / 3, abs=1e-4)  # d2 wins the three-way tie
    assert trec_eval_disagreements(tmp_path / "run.txt", tmp_path / "qrels.txt", depth=2) == {}
