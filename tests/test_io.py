"""Strict parsing names the file and line; writers are atomic and round-trip."""
import pytest

from pyserini_kdspd import io


def test_run_round_trip_sorted_and_depth(tmp_path):
    run = {"q1": {"a": 0.5, "b": 2.0, "c": 1.0}, "q2": {"x": 1.0}}
    io.write_run(tmp_path / "r.txt", run, tag="t", depth=2)
    lines = (tmp_path / "r.txt").read_text().splitlines()
    assert lines[0].split() == ["q1", "Q0", "b", "1", "2.000000", "t"]
    assert io.read_run(tmp_path / "r.txt") == {"q1": {"b": 2.0, "c": 1.0}, "q2": {"x": 1.0}}


@pytest.mark.parametrize("content,needle", [
    ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2\n", ":2:"),
    ("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", "ranked twice"),
    ("q1 Q0 d1 one 0.5 t\n", ":1:"),
])
def test_bad_runs_name_file_and_line(tmp_path, content, needle):
    p = tmp_path / "bad.txt"
    p.write_text(content)
    with pytest.raises(io.FormatError) as e:
        io.read_run(p)
    assert "bad.txt" in str(e.value) and needle in str(e.value)


def test_qrels_and_topics_strict(tmp_path):
    (tmp_path / "q.txt").write_text("1 0 d1 1\n1 0 d2 x\n")
    with pytest.raises(io.FormatError, match=r"q.txt:2"):
        io.read_qrels(tmp_path / "q.txt")
    (tmp_path / "t.tsv").write_text("1\thello\n2 no tab\n")
    with pytest.raises(io.FormatError, match=r"t.tsv:2"):
        io.read_topics(tmp_path / "t.tsv")
    io.write_topics(tmp_path / "ok.tsv", {"a": "multi\tword\nquery"})
    assert io.read_topics(tmp_path / "ok.tsv") == {"a": "multi word query"}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_write(target) as f:
            f.write("new")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_respects_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        with io.atomic_write(tmp_path / "f.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_ties_follow_trec_eval_order():
    import pytrec_eval
    assert [d for d, _ in io.ranked({"a": 1.0, "b": 1.0, "c": 1.0, "z": 2.0})] == ["z", "c", "b", "a"]
    ev = pytrec_eval.RelevanceEvaluator({"q": {"a": 1}}, {"recip_rank"}).evaluate({"q": {"a": 1.0, "b": 1.0, "c": 1.0}})
    assert ev["q"]["recip_rank"] == 1 / 3  # trec_eval ranks a last among ties, as io.ranked does
