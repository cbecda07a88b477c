"""Language bias (paper section 5.3, Figure 4): the statistics by hand, the report files, and the deep runs
made from a driver-layout LAReQA slice with stock Pyserini."""
import json

import pytest

from pyserini_kdspd import io
from pyserini_kdspd.analysis.bias import (bias_report, languages_of, main, measure,
                                          write_report)
from pyserini_kdspd.fusion import fuse

# Three languages; q1's answer is in all three, q2's found in one only, q3 has two German answers.
LANG = {"en-1": "en", "de-1": "de", "fr-1": "fr", "en-2": "en", "de-2": "de", "en-3": "en", "de-3": "de",
        "de-3b": "de", "x-en": "en", "x-fr": "fr"}  # collection: en 4, de 4, fr 2
QRELS = {"q1": {"en-1": 1, "de-1": 1, "fr-1": 1, "x-en": 0}, "q2": {"en-2": 1, "de-2": 1},
         "q3": {"en-3": 1, "de-3": 1, "de-3b": 1}, "q4": {"en-1": 0}}
RUN = {"q1": {"en-1": 0.9, "x-en": 0.8, "de-1": 0.7, "x-fr": 0.6, "fr-1": 0.5},
       "q2": {"x-en": 0.9, "de-2": 0.8, "x-fr": 0.7},
       "q3": {"de-3b": 0.9, "en-3": 0.85, "de-3": 0.8},
       "q4": {"x-fr": 1.0, "en-1": 0.5}}


def test_ranks_distances_and_shares_by_hand():
    b = measure("sys", RUN, QRELS, LANG, depth=5, cutoffs=(2, 5))
    assert set(b.found) == {"q1", "q2", "q3"}  # q4 has no relevant document
    assert b.found["q1"] == {"en": (1, 0.9), "de": (3, 0.7), "fr": (5, 0.5)}
    assert b.found["q2"] == {"de": (2, 0.8)}  # one language found: no spread
    assert b.found["q3"] == {"de": (1, 0.9), "en": (2, 0.85)}  # each language's best-ranked answer
    assert sorted(b.rank_distances) == [1, 4]
    assert sorted(b.score_differences) == pytest.approx([0.05, 0.4])
    m = b.summary()
    assert (m["queries"], m["measured"], m["languages_found"]) == (3, 2, 2.0)
    assert m["rank_distance_mean"] == 2.5 and m["score_difference_mean"] == pytest.approx(0.225)
    assert b.collection == {"de": 0.4, "en": 0.4, "fr": 0.2}
    # top 2: q1 en en, q2 en de, q3 de en; top 5: q1 en en de fr fr, q2 en de fr, q3 de en de
    assert b.shares[2] == pytest.approx({"de": 2 / 6, "en": 4 / 6, "fr": 0.0})
    assert b.shares[5] == pytest.approx({"de": 4 / 11, "en": 4 / 11, "fr": 3 / 11})
    assert b.share_gap(2) == pytest.approx((abs(2 / 6 - 0.4) + abs(4 / 6 - 0.4) + 0.2) / 2)

    shallow = measure("sys", RUN, QRELS, LANG, depth=4)  # fr-1 at rank 5 is beyond the depth
    assert shallow.found["q1"] == {"en": (1, 0.9), "de": (3, 0.7)}
    assert sorted(shallow.rank_distances) == [1, 2]

    rr = measure("rr", RUN, QRELS, LANG, depth=5, scores=None)  # synthetic scores: no score difference
    assert rr.score_differences is None and rr.summary()["score_difference_mean"] is None
    assert rr.rank_distances == b.rank_distances


def test_score_fusion_extends_the_row_fused_from_the_top_lists():
    """Normalised over each top 2 (a: 1, 0, -8; b: 1, 0, -0.125), merged, ties broken as fuse() breaks them:
    the top 4 is fuse()'s run of the top-2 lists. Normalised over the whole lists, a2 (0.889) would pass b2."""
    a = {"q": {"a1": 0.9, "a2": 0.8, "a3": 0.0}}
    b = {"q": {"b1": 0.9, "b2": 0.5, "b3": 0.45}}
    for seed in range(4):
        deep = fuse({"ar": a, "de": b}, "minmax", depth=6, seed=seed, norm_depth=2)["q"]
        order = [d for d, _ in io.ranked(deep)]
        assert set(order[:2]) == {"a1", "b1"} and set(order[2:4]) == {"a2", "b2"} and order[4:] == ["b3", "a3"]
        assert deep["b3"] == pytest.approx(-0.125) and deep["a3"] == pytest.approx(-8.0)
        top = {lang: {"q": dict(io.ranked(r["q"], 2))} for lang, r in (("ar", a), ("de", b))}
        assert dict(io.ranked(deep, 4)) == dict(io.ranked(fuse(top, "minmax", depth=4, seed=seed)["q"]))
    whole = fuse({"ar": a, "de": b}, "minmax", depth=6)["q"]
    assert [d for d, _ in io.ranked(whole)][2] == "a2"
    assert fuse({"ar": a, "de": b}, "minmax", depth=6, norm_depth=3) == fuse({"ar": a, "de": b}, "minmax", depth=6)
    for method, n in (("rr", 2), ("rrf", 2), ("minmax", 0)):
        with pytest.raises(ValueError, match="norm_depth"):
            fuse({"ar": a}, method, norm_depth=n)


def test_a_run_too_shallow_or_of_another_collection_is_refused():
    with pytest.raises(ValueError, match="fewer than the depth 1000"):
        measure("sys", RUN, QRELS, LANG, depth=1000)  # 5 documents at most, the collection has 10
    with pytest.raises(ValueError, match="'zz-9', which is in no language"):
        measure("sys", {"q1": {**RUN["q1"], "zz-9": 0.1}}, QRELS, LANG, depth=5)


def test_a_document_in_two_languages_is_refused(tmp_path):
    io.write_jsonl(tmp_path / "en" / "docs.jsonl", [{"id": "d1", "contents": "a"}])
    io.write_jsonl(tmp_path / "de" / "docs.jsonl", [{"id": "d2", "contents": "b"}])
    assert languages_of({"en": tmp_path / "en", "de": tmp_path / "de"}) == {"d1": "en", "d2": "de"}
    io.write_jsonl(tmp_path / "de" / "docs.jsonl", [{"id": "d1", "contents": "b"}])
    with pytest.raises(ValueError, match="'d1' is in both the de and the en"):
        languages_of({"en": tmp_path / "en", "de": tmp_path / "de"})


def test_report_table_json_and_figures(tmp_path):
    biases = [measure("mDPR", RUN, QRELS, LANG, depth=5), measure("mDPR + Round Robin", RUN, QRELS, LANG, depth=5,
                                                                  scores=None),
              measure("mDPR + Score", RUN, QRELS, LANG, depth=5, scores="min-max")]
    out = write_report(biases, tmp_path / "bias", title="toy", collection="toy")
    md = out["md"].read_text(encoding="utf-8")
    assert "| mDPR | 2 / 3 | 2.00 | 2.5 | 2.5 | 0.225 | 0.225 |" in md
    assert "| mDPR + Round Robin | 2 / 3 | 2.00 | 2.5 | 2.5 | n/a | n/a |" in md
    assert "| mDPR + Score | 2 / 3 | 2.00 | 2.5 | 2.5 | 0.225 § | 0.225 § |" in md
    assert "| collection | | 40.0 | 40.0 | 20.0 | |" in md
    report = json.loads(out["json"].read_text(encoding="utf-8"))
    assert report["depth"] == 5 and report["systems"]["mDPR + Round Robin"]["scores"] is None
    assert report["systems"]["mDPR"]["per_query"]["q1"] == {"en": [1, 0.9], "de": [3, 0.7], "fr": [5, 0.5]}
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out["png"].stat().st_size > 10_000
    pdf = out["pdf"].read_bytes()
    assert pdf[:5] == b"%PDF-"
    again = write_report(biases, tmp_path / "again", title="toy", collection="toy")
    assert again["pdf"].read_bytes() == pdf  # no timestamp in the PDF: same numbers, same file


def test_readme_block_says_who_is_lowest_and_shows_the_figure(tmp_path):
    """KD-SPD here ranks q1's answers 1 to 3 (distance 2), mDPR 1 to 5 (4); both rank q3's 1 apart: the generated sentence
    names KD-SPD lowest, the figure is copied beside the README, the table replaces the old block."""
    spd_run = {**RUN, "q1": {"en-1": 0.9, "de-1": 0.85, "fr-1": 0.8, "x-en": 0.7, "x-fr": 0.6}}
    biases = [measure("mDPR", RUN, QRELS, LANG, depth=5), measure("KD-SPD", spd_run, QRELS, LANG, depth=5),
              measure("mDPR + Round Robin", RUN, QRELS, LANG, depth=5, scores=None)]
    made = {"command": "python -m pyserini_kdspd.table2", "finished": "2026-12-01 12:00:00", "seed": 0,
            "train_steps": 1200}
    write_report(biases, tmp_path / "runs" / "lareqa" / "bias", title="lareqa", collection="lareqa", made_from=made)
    readme = tmp_path / "doc" / "README.md"
    readme.parent.mkdir()
    readme.write_text("# x\n<!-- bias:lareqa:start -->\nold\n<!-- bias:lareqa:end -->\ntail\n", encoding="utf-8")
    assert main(["--readme", str(readme), "--root", str(tmp_path)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and text.endswith("<!-- bias:lareqa:end -->\ntail\n")
    assert ("Mean maximum rank distance of the end-to-end dense systems: KD-SPD 1.5, mDPR 2.5 (lowest: KD-SPD); "
            "of the per-language runs merged after retrieval: mDPR + Round Robin 2.5.") in text
    assert "Language of the rank-1 document, most frequent (share of queries): mDPR 67% en, KD-SPD 67% en" in text
    assert "seed 0, 1200 training steps per student, finished 2026-12-01 12:00:00" in text
    assert "![Language bias on lareqa" in text and "(docs/figures/bias-lareqa.png)" in text
    assert "| KD-SPD | 2 / 3 |" in text and "## Language bias" not in text
    assert (readme.parent / "docs" / "figures" / "bias-lareqa.png").read_bytes() == \
        (tmp_path / "runs" / "lareqa" / "bias.png").read_bytes()
    assert main(["--readme", str(tmp_path / "nothing.md"), "--root", str(tmp_path)]) == 2


def test_cli_skips_every_absent_row_and_says_what_to_run(tmp_path, shared_data, capsys):
    assert main(["--root", str(tmp_path), "--data-dir", str(shared_data), "--threads", "1"]) == 2
    out, err = capsys.readouterr()
    for label in ("mDPR", "Teacher (English only)", "KD-SPD", "KD-Encoder"):
        assert f"[skip] {label}: no index {tmp_path}/indexes/lareqa/" in out
    assert "python -m pyserini_kdspd.table2 --collections lareqa" in err


@pytest.fixture(scope="module")
def lareqa_slice(tmp_path_factory, shared_data):
    """12 LAReQA questions with their answers in en, de and ar and 90 other sentences, in the driver's layout,
    with an mDPR index (all-MiniLM-L6-v2 stands in for e5-small: same calls, a third of the encoding time)."""
    from pyserini_kdspd.data.lareqa import prepare_lareqa
    from pyserini_kdspd.search.dense import DenseModel, encode_corpus
    from pyserini_kdspd.table2 import Collection, Settings

    full = prepare_lareqa(shared_data, tmp_path_factory.mktemp("lareqa-full"))
    langs = ("ar", "de", "en")
    qrels = io.read_qrels(full.qrels)
    qids = sorted(qrels)[:12]
    docs = [r for r in io.read_jsonl(full.corpus / "corpus.jsonl") if r["lang"] in langs]
    keep = {d for q in qids for d in qrels[q]}
    recs = [r for r in docs if r["id"] in keep] + [r for r in docs if r["id"] not in keep][::100][:90]
    root = tmp_path_factory.mktemp("driver-root")
    col_dir = root / "collections" / "slice"
    io.write_jsonl(col_dir / "corpus" / "corpus.jsonl", recs)
    for lang in langs:
        io.write_jsonl(col_dir / "by-lang" / lang / "corpus.jsonl", (r for r in recs if r["lang"] == lang))
    topics = io.read_topics(full.topics["en"])
    io.write_topics(root / "topics" / "slice.en.tsv", {q: topics[q] for q in qids})
    io.write_qrels(root / "qrels" / "slice.txt", {q: {d: g for d, g in qrels[q].items() if d[:2] in langs}
                                                  for q in qids})
    col = Collection(name="slice", corpus_dir=col_dir / "corpus",
                     by_lang={lang: col_dir / "by-lang" / lang for lang in langs},
                     topics=root / "topics" / "slice.en.tsv", qrels=root / "qrels" / "slice.txt", parallel=True)
    s = Settings(root=root, mdpr="all-MiniLM-L6-v2", threads=1, hits=10)  # a driver run at --hits 10
    encode_corpus(DenseModel.from_name("mdpr", s.mdpr), col.corpus_dir, root / "indexes" / "slice" / "mdpr")
    return col, s, len(recs), qids


@pytest.mark.slow
def test_deep_runs_of_the_driver_rows_on_a_lareqa_slice(lareqa_slice, capsys, tmp_path):
    from pyserini_kdspd.search.dense import DenseModel, search

    from pyserini_kdspd.table2 import Settings, run_analyses

    col, s, n_docs, qids = lareqa_slice
    run_analyses(Settings(root=s.root, mdpr=s.mdpr, threads=1, hits=s.hits, analyses=("bias",)), [col], {})
    printed = capsys.readouterr().out  # the driver's --analyses bias: the table printed, the files written
    assert "[skip] Teacher (English only): no index" in printed and "| mDPR + Score | 12 / 12 |" in printed
    out = {k: s.root / "runs" / "slice" / f"bias.{k}" for k in ("md", "json", "png", "pdf")}
    report = json.loads(out["json"].read_text(encoding="utf-8"))
    assert list(report["systems"]) == ["mDPR + Round Robin", "mDPR + Score", "mDPR"]
    deep = s.root / "runs" / "slice" / "deep"
    for label, f in (("mDPR", "mdpr.txt"), ("mDPR + Round Robin", "mdpr+rr.txt"), ("mDPR + Score", "mdpr+score.txt")):
        run = io.read_run(deep / f)
        assert set(run) == set(qids) and all(len(d) == n_docs for d in run.values())  # the whole slice: nothing cut
        m = report["systems"][label]["summary"]
        assert m["measured"] == m["queries"] == 12 and m["languages_found"] == 3.0
        assert 0 < m["rank_distance_mean"] < n_docs
        assert sum(report["systems"][label]["shares"]["10"].values()) == pytest.approx(1.0)
    assert report["systems"]["mDPR + Round Robin"]["summary"]["score_difference_mean"] is None
    assert 0 < report["systems"]["mDPR"]["summary"]["score_difference_mean"] < 1  # cosines of unit vectors
    assert all(out[k].stat().st_size > 0 for k in ("md", "png", "pdf"))

    # The deep run is the driver's row, only deeper: its top 100 is the driver's top-100 run.
    model = DenseModel.from_name("mdpr", s.mdpr)
    top100 = io.read_run(search(model, s.root / "indexes" / "slice" / "mdpr", col.topics,
                                s.root / "runs" / "slice" / "mdpr.txt", hits=100, threads=1))
    deep_run = io.read_run(deep / "mdpr.txt")
    for q in qids:
        assert [d for d, _ in io.ranked(deep_run[q], 100)] == [d for d, _ in io.ranked(top100[q])]

    # The fused deep rows extend the driver's: their top 10 is the run it fuses from the per-language top 10s
    # and writes (6 decimals, which also round away ranx's float32 error: a list's best comes out as 0.999999).
    top = {lang: {q: dict(io.ranked(docs, s.hits)) for q, docs in io.read_run(f).items()}
           for lang, f in ((f.name.split(".")[1], f) for f in (deep / "by-lang").glob("mdpr.*.txt"))}
    assert sorted(top) == ["ar", "de", "en"]
    for f, method in (("mdpr+rr.txt", "rr"), ("mdpr+score.txt", "minmax")):
        io.write_run(tmp_path / f, fuse(top, method, depth=s.hits, seed=s.seed), depth=s.hits)
        driver, extended = io.read_run(tmp_path / f), io.read_run(deep / f)
        for q in qids:
            assert [d for d, _ in io.ranked(extended[q], s.hits)] == [d for d, _ in io.ranked(driver[q])], (f, q)

    before = {p: p.stat().st_mtime_ns for p in deep.rglob("*.txt")}
    bias_report(col, s, students={}, depth=1000)  # reused: nothing searched or fused again
    assert {p: p.stat().st_mtime_ns for p in deep.rglob("*.txt")} == before
