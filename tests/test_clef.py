"""CLEF 2000-2003 reader and builder on small fixtures in the distributed layout (tests/fixtures/clef/).

The fixtures mimic the real sources: Frankfurter Rundschau / Le Monde / La Stampa
(TITLE, TEXT; ISO-8859-1 or ASCII), Der Spiegel (LEAD, nested <P>, UTF-8), the SDA/ATS/AGZ
agencies (TI, LD, TX; gzipped, with KW/NO/DAT metadata), Aamulehti (TEXT inside RECORD);
CLEF 2000 topics (<E-title>, no closing tags) and 2001 topics (<EN-title> with closing
tags); qrels with ``C001`` and with bare ``41`` query ids and one English (LA Times) document.
"""
import gzip
import json
import subprocess
from pathlib import Path

import pytest

from pyserini_kdspd import io
from pyserini_kdspd.data import clef
from pyserini_kdspd.data.passages import (DEFAULT_TOKENIZER, docid_of, load_tokenizer, maxp_search_args,
                                          read_metadata, windows)

FIX = Path(__file__).parent / "fixtures" / "clef"


def test_documents_per_source_gz_and_encodings():
    docs = {d: t for f in clef.document_files(FIX / "de") for d, t in clef.iter_documents(f)}
    assert set(docs) == {"FR940104-000001", "FR940104-000002", "SDA.940105.0001", "SDA.940105.0002",
                         "SPIEGEL9495-000001"}
    # Latin-1 umlauts decoded, &amp; unescaped, TITLE before TEXT, DOCID/DATE left out
    assert docs["FR940104-000001"].startswith("Pestizide in Babynahrung gefunden Die Verbraucherzentrale")
    assert "Gläschen" in docs["FR940104-000001"] and "zurück & kündigen" in docs["FR940104-000001"]
    assert "940104" not in docs["FR940104-000001"]
    # SDA (gzipped): TI + LD + TX, not the KW/NO/DAT metadata
    assert docs["SDA.940105.0001"] == ("Hochwasser am Rhein Basel (sda) Der Rhein ist nach tagelangen Regenfällen "
                                       "über die Ufer getreten. Die Behörden in Basel haben die Schifffahrt "
                                       "eingestellt. Mehrere Keller wurden überflutet.")
    assert "WIR" not in docs["SDA.940105.0001"] and "05.01.1994" not in docs["SDA.940105.0001"]
    # Spiegel: UTF-8, LEAD, nested <P> stripped
    assert docs["SPIEGEL9495-000001"] == ("Giftige Gläschen Wie viel Pestizid darf in Babykost stecken? "
                                          "Kinderärzte fordern strengere Grenzwerte für Pestizide in Babynahrung. "
                                          "Die EU berät im Frühjahr.")
    fi = dict(clef.iter_documents(FIX / "fi" / "aamu940104"))
    assert fi == {"aamu19940104-000001": "Vauvanruoasta löytyi torjunta-ainejäämiä."}


def test_fallback_takes_all_but_metadata(tmp_path):
    f = tmp_path / "odd"
    f.write_text("<DOC><DOCNO>X1</DOCNO><DATE>1994</DATE><BODY>Body <B>bold</B> text</BODY>"
                 "<NOTE>note</NOTE></DOC>", encoding="utf-8")
    assert list(clef.iter_documents(f)) == [("X1", "Body bold text note")]


def test_bad_documents_name_file_and_line(tmp_path):
    f = tmp_path / "bad"
    f.write_text("<DOC>\n<DOCNO>A1</DOCNO><TEXT>a</TEXT>\n</DOC>\n<DOC>\n<TEXT>no id</TEXT>\n</DOC>\n", encoding="utf-8")
    with pytest.raises(io.FormatError, match=r"bad:4: <DOC> without a <DOCNO>"):
        list(clef.iter_documents(f))
    g = tmp_path / "notsgml.gz"
    g.write_bytes(gzip.compress(b"just some text\n"))
    with pytest.raises(io.FormatError, match="no <DOC>"):
        list(clef.iter_documents(g))
    h = tmp_path / "hash"
    h.write_text("<DOC><DOCNO>A#1</DOCNO><TEXT>x</TEXT></DOC>", encoding="utf-8")
    with pytest.raises(io.FormatError, match="delimiter"):
        list(clef.iter_documents(h))


def test_topics_both_layouts():
    t00 = clef.read_topics(FIX / "topics" / "Top-en00.txt")
    t01 = clef.read_topics(FIX / "topics" / "Top-en01.txt")
    assert list(t00) == ["C001", "C002"] and list(t01) == ["C041", "C042"]
    assert t00["C001"].title == "Pesticides in Baby Food"
    assert t00["C001"].description == "Find reports on pesticides in baby food."
    assert t00["C001"].narrative.startswith("Relevant documents give")
    assert t01["C041"].query == "Rhine Flood Find reports on the flooding of the Rhine in January 1994."
    assert clef.topic_number("C041") == clef.topic_number("041") == clef.topic_number("41") == 41
    assert clef.topic_number("10.2452/41-AH") == 41


def test_qrels_ids_follow_the_topics():
    qrels = clef.read_qrels(sorted((FIX / "qrels").iterdir()), ["C001", "C002", "C041", "C042"])
    assert set(qrels) == {"C001", "C002", "C041", "C042"}
    assert qrels["C041"]["SDA.940105.0001"] == 1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The zero-shot build (Finnish too), in passages of 16 tokens of the default tokenizer, stride 8, so that
    the fixture's short documents get several passages each."""
    out = tmp_path_factory.mktemp("clef")
    docs = {lang: FIX / lang for lang in ("de", "fr", "it", "fi")}
    paths = clef.build_clef(docs, sorted((FIX / "topics").iterdir()), sorted((FIX / "qrels").iterdir()),
                            output_root=out, passage_length=16, stride=8)
    return out, paths


def test_collection_topics_and_qrels(built):
    out, paths = built
    corpus = {r["id"]: r for r in io.read_jsonl(paths.corpus / "corpus.jsonl")}
    assert len(corpus) == 12  # the fixture files hold de 5, fr 3, it 3, fi 1 documents
    assert {r["lang"] for r in corpus.values()} == {"de", "fr", "it", "fi"}
    for lang in ("de", "fr", "it", "fi"):
        sub = list(io.read_jsonl(paths.by_lang[lang] / "corpus.jsonl"))
        assert sub and all(r["lang"] == lang and corpus[r["id"]] == r for r in sub)
    # C042 has relevant documents only in German: dropped; C001, C002, C041 have de, fr and it
    topics = io.read_topics(paths.topics)
    assert list(topics) == ["C001", "C002", "C041"]
    assert topics["C002"] == "Italian Elections 1994 Find documents on the Italian parliamentary elections of March 1994."
    qrels = io.read_qrels(paths.qrels)
    assert set(qrels) == set(topics)
    assert all(d in corpus for docs in qrels.values() for d in docs)  # the LA Times judgment is dropped
    assert "LA010194-0001" not in qrels["C001"] and len(qrels["C001"]) == 5  # qrels_2000 judges 6 for C001
    stats = json.loads(paths.stats.read_text())
    assert stats["dropped"] == {"judgments_outside_collection": 1,
                                "topics_without_relevant_in_every_required_language": 1}
    assert stats["documents"] == {"de": 5, "fr": 3, "it": 3, "fi": 1}


def test_passages_are_spans_of_the_backbones_tokens(built):
    _, paths = built
    tok = load_tokenizer(DEFAULT_TOKENIZER)
    corpus = {r["id"]: r for r in io.read_jsonl(paths.corpus / "corpus.jsonl")}
    passages = list(io.read_jsonl(paths.passages / "corpus.jsonl"))
    by_doc = {}
    for p in passages:
        by_doc.setdefault(docid_of(p["id"]), []).append(p)
        assert p["contents"] == p["text"] and p["lang"] == corpus[docid_of(p["id"])]["lang"]
    assert set(by_doc) == set(corpus)
    for docid, ps in by_doc.items():
        text = corpus[docid]["text"]
        spans = tok.spans(text)
        assert [p["id"] for p in ps] == [f"{docid}#{k}" for k in range(len(ps))]
        assert len(ps) == len(windows(len(spans), 16, 8))
        for p, (s, e) in zip(ps, windows(len(spans), 16, 8)):
            assert p["text"] == text[spans[s][0]:spans[e - 1][1]].strip()  # the original text, not pieces
    assert max(len(ps) for ps in by_doc.values()) == 5  # 47 tokens: 0-16, 8-24, 16-32, 24-40, 32-47
    meta = read_metadata(paths.passages)
    assert meta["tokenizer"] == tok.fingerprint() and meta["tokenizer"]["name"] == DEFAULT_TOKENIZER
    assert (meta["passage_length"], meta["stride"], meta["passages"]) == (16, 8, len(passages))
    stats = json.loads(paths.stats.read_text())
    assert stats["build"]["tokenizer"] == meta["tokenizer"] and stats["passages"] == {
        lang: sum(p["lang"] == lang for p in passages) for lang in ("de", "fr", "it", "fi")}


def _cli(python, *args):
    return subprocess.run([python, "-m", "pyserini_kdspd.data", "clef", *args], capture_output=True, text=True)


def test_cli_table2_languages_by_default_finnish_on_request(tmp_path, python):
    r = _cli(python, "--clef-dir", str(FIX), "--output-root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert io.read_topics(tmp_path / "topics/clef.en.tsv").keys() == {"C001", "C002", "C041"}
    stats = json.loads((tmp_path / "collections/clef/stats.json").read_text())
    assert stats["languages"] == ["de", "fr", "it"] and stats["documents"] == {"de": 5, "fr": 3, "it": 3}
    passages = list(io.read_jsonl(tmp_path / "collections/clef/passages/corpus.jsonl"))
    assert len(passages) == 11  # every fixture document is shorter than 180 tokens: one passage each
    assert stats["build"]["tokenizer"]["name"] == DEFAULT_TOKENIZER
    r = _cli(python, "--clef-dir", str(FIX), "--output-root", str(tmp_path / "zs"), "--languages", "de", "fr", "it",
             "fi")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "zs/collections/clef/stats.json").read_text())["documents"]["fi"] == 1
    r = _cli(python, "--clef-dir", str(FIX), "--output-root", str(tmp_path / "x"), "--languages", "de", "fr", "it",
             "es")
    assert r.returncode == 2 and "expected {de,fr,it,es}/" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli(python, "--clef-dir", str(tmp_path / "nowhere"), "--output-root", str(tmp_path))
    assert r.returncode == 2 and "licensed" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_build_is_reused_only_with_the_same_tokenizer(tmp_path):
    kwargs = dict(output_root=tmp_path, clef_dir=FIX, passage_length=16, stride=8)
    paths = clef.prepare_clef(**kwargs)
    passages = paths.passages / "corpus.jsonl"
    first = passages.stat().st_mtime_ns
    assert clef.prepare_clef(**kwargs) == paths and passages.stat().st_mtime_ns == first  # reused
    clef.prepare_clef(**kwargs, tokenizer="whitespace")  # another tokenizer: rebuilt, and recorded
    assert passages.stat().st_mtime_ns != first
    assert read_metadata(paths.passages)["tokenizer"] == {"name": "whitespace"}
    assert json.loads(paths.stats.read_text())["build"]["tokenizer"] == {"name": "whitespace"}
    assert len(list(io.read_jsonl(passages))) == sum(len(windows(len(r["text"].split()), 16, 8))
                                                     for r in io.read_jsonl(paths.corpus / "corpus.jsonl"))
    again = passages.stat().st_mtime_ns
    clef.prepare_clef(**kwargs)  # back to the default tokenizer: rebuilt again
    assert passages.stat().st_mtime_ns != again and read_metadata(paths.passages)["tokenizer"]["name"] == \
        DEFAULT_TOKENIZER


@pytest.mark.slow  # stock pyserini.encode and two pyserini.search.faiss runs: about a minute
def test_dense_maxp_run_keeps_the_documents_asked_for(built, tmp_path):
    """A dense run over the passages, through the driver's flags: min(hits, #documents) distinct documents per
    query after Pyserini's --max-passage, though documents have up to five passages each."""
    from pyserini_kdspd.search.dense import DenseModel, encode_corpus, search

    out, paths = built
    model = DenseModel.from_name("teacher", "all-MiniLM-L6-v2")
    index = encode_corpus(model, paths.passages, tmp_path / "index")
    n_docs = read_metadata(paths.passages)["documents"]
    assert n_docs == 12
    for hits in (5, 100):
        run = io.read_run(search(model, index, paths.topics, tmp_path / f"run{hits}.txt", hits=hits, threads=1,
                                 extra_args=maxp_search_args(paths.passages, hits)))
        assert set(run) == set(io.read_topics(paths.topics))
        for qid, docs in run.items():
            assert not any("#" in d for d in docs)  # documents, not passages
            assert len(docs) == min(hits, n_docs), (hits, qid, sorted(docs))
