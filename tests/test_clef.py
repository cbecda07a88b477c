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
from pyserini_kdspd.data.passages import docid_of

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
    out = tmp_path_factory.mktemp("clef")
    docs = {lang: FIX / lang for lang in ("de", "fr", "it", "fi")}
    paths = clef.build_clef(docs, sorted((FIX / "topics").iterdir()), sorted((FIX / "qrels").iterdir()),
                            output_root=out, passage_length=8, stride=4)
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


def test_passages_cover_documents(built):
    _, paths = built
    corpus = {r["id"]: r for r in io.read_jsonl(paths.corpus / "corpus.jsonl")}
    passages = list(io.read_jsonl(paths.passages / "corpus.jsonl"))
    by_doc = {}
    for p in passages:
        by_doc.setdefault(docid_of(p["id"]), []).append(p)
        assert p["contents"] == p["text"] and p["lang"] == corpus[docid_of(p["id"])]["lang"]
    assert set(by_doc) == set(corpus)
    for docid, ps in by_doc.items():
        words = corpus[docid]["text"].split()
        assert [p["id"] for p in ps] == [f"{docid}#{k}" for k in range(len(ps))]
        for k, p in enumerate(ps):
            assert p["text"] in corpus[docid]["text"]
            assert p["text"].split() == words[4 * k: 4 * k + 8]
        assert len(ps) == (1 if len(words) <= 8 else 1 + -(-(len(words) - 8) // 4))
    assert any(len(ps) > 1 for ps in by_doc.values())


def test_cli_with_clef_dir(tmp_path, python):
    r = subprocess.run([python, "-m", "pyserini_kdspd.data", "clef", "--clef-dir", str(FIX),
                        "--output-root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert io.read_topics(tmp_path / "topics/clef.en.tsv").keys() == {"C001", "C002", "C041"}
    passages = list(io.read_jsonl(tmp_path / "collections/clef/passages/corpus.jsonl"))
    assert len(passages) == 12  # every fixture document is shorter than 180 words: one passage each
    r = subprocess.run([python, "-m", "pyserini_kdspd.data", "clef", "--clef-dir", str(tmp_path / "nowhere"),
                        "--output-root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "licensed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
