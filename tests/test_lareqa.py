"""LAReQA XQuAD-R collection: counts against the data set's README, strict input, Pyserini round trip."""
import functools
import http.server
import json
import random
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from pyserini_kdspd import io
from pyserini_kdspd.data import LANGUAGES, PREPARERS, load_lareqa, prepare_lareqa
from pyserini_kdspd.data.lareqa import find_source
from pyserini_kdspd.io import FormatError

# From ../shared/data/README.md (LAReQA XQuAD-R).
EXPECTED = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244, "ru": 1219,
            "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}
N_QUESTIONS = 1190


@pytest.fixture(scope="module")
def built(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("lareqa-out")
    return prepare_lareqa(shared_data, root), root


@pytest.fixture(scope="module")
def data(shared_data):
    return load_lareqa(shared_data)


@pytest.fixture(scope="module")
def corpus(built):
    paths, _ = built
    return {r["id"]: r for r in io.read_jsonl(paths.corpus / "corpus.jsonl")}


def _source(shared_data):
    return shared_data / "lareqa" / "xquad-r"


def test_registered_for_cli():
    assert "lareqa" in PREPARERS and PREPARERS["lareqa"].prepare is prepare_lareqa


def test_counts_per_language(built, corpus):
    paths, _ = built
    assert len(corpus) == sum(EXPECTED.values()) == 13014
    for lang, n in EXPECTED.items():
        recs = list(io.read_jsonl(paths.by_lang[lang] / "corpus.jsonl"))
        assert len(recs) == n, lang
        assert all(r["lang"] == lang and corpus[r["id"]] == r for r in recs)
    assert sorted(p.name for p in paths.corpus.iterdir()) == ["corpus.jsonl"]  # Pyserini reads every file there
    stats = json.loads(paths.stats.read_text())
    assert stats["sentences"] == EXPECTED and stats["total_sentences"] == 13014


def test_records_are_pyserini_json(corpus):
    for docid, r in corpus.items():
        assert set(r) == {"id", "contents", "text", "lang"}
        assert r["contents"] == r["text"] and r["text"].strip() == r["text"] and r["text"]
        assert docid.startswith(r["lang"] + "-a")


def test_ids_unique_and_stable(built, shared_data, tmp_path):
    paths, _ = built
    lines = (paths.corpus / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids))
    again = prepare_lareqa(shared_data, tmp_path, force=True)
    assert (again.corpus / "corpus.jsonl").read_bytes() == (paths.corpus / "corpus.jsonl").read_bytes()
    assert again.qrels.read_bytes() == paths.qrels.read_bytes()
    assert "de-a000-p00-s00" in ids and ids[0] == "ar-a000-p00-s00"


def test_idempotent(built, shared_data):
    paths, root = built
    before = {p: p.stat().st_mtime_ns for p in [paths.corpus / "corpus.jsonl", paths.qrels, paths.stats]}
    prepare_lareqa(shared_data, root)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # an incomplete output (truncated topics) is detected and rebuilt
    paths.topics["de"].write_text("x\ty\n")
    prepare_lareqa(shared_data, root)
    assert len(io.read_topics(paths.topics["de"])) == N_QUESTIONS


def test_topics(built):
    paths, _ = built
    en = io.read_topics(paths.topics["en"])
    assert len(en) == N_QUESTIONS
    for lang in LANGUAGES:
        topics = io.read_topics(paths.topics[lang])
        assert list(topics) == list(en), lang  # same qids, same order
    assert en["56beb4343aeaaa14008c925b"] == "How many points did the Panthers defense surrender?"  # en.json's first


def test_qrels(built, corpus):
    paths, _ = built
    qrels = io.read_qrels(paths.qrels)
    assert len(qrels) == N_QUESTIONS
    assert set(qrels) == set(io.read_topics(paths.topics["en"]))
    for qid, docs in qrels.items():
        assert len(docs) == len(LANGUAGES) and set(docs.values()) == {1}, qid
        assert sorted(corpus[d]["lang"] for d in docs) == sorted(LANGUAGES), qid
    stats = json.loads(paths.stats.read_text())
    assert stats["relevant_per_query"] == {str(len(LANGUAGES)): N_QUESTIONS}
    for lang in LANGUAGES:  # the real data needs no fallback
        assert stats["answer_located_by"][lang] == {"offset": N_QUESTIONS, "text": 0, "unlocated": 0, "absent": 0}


def _answers_past_their_sentence(path: Path) -> set[str]:
    """Question ids of a raw XQuAD-R file whose answer span ends after the sentence break holding its start."""
    crossing = set()
    for art in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for p in art["paragraphs"]:
            for qa in p["qas"]:
                start, answer = qa["answers"][0]["answer_start"], qa["answers"][0]["text"]
                end = next(e for s, e in p["sentence_breaks"] if s <= start < e)
                if start + len(answer) > end:
                    crossing.add(qa["id"])
    return crossing


def test_english_answer_sentence_holds_answer(data, shared_data):
    en = data.questions["en"]
    text = {s.docid: s.text for s in data.sentences}
    crossing = set()
    for qid, q in en.items():
        sent = text[data.answers["en"][qid]]
        if q.answer in sent:
            continue
        # the answer runs past the sentence break: the sentence must end with the answer's beginning
        crossing.add(qid)
        assert max(k for k in range(len(q.answer)) if sent.endswith(q.answer[:k])) >= 4, qid
    # three in en.json: two sentences split after an abbreviation ("E.I. du Pont"), one two-sentence answer
    assert crossing == _answers_past_their_sentence(_source(shared_data) / "en.json")
    assert data.answer_crosses_break["en"] == len(crossing)


# ---------------------------------------------------------------- strict input
def _dataset(tmp_path, shared_data, broken: dict[str, str | None]) -> Path:
    """A data folder linking the real files, except ``broken`` (lang -> text, None: file missing)."""
    folder = tmp_path / "data" / "lareqa" / "xquad-r"
    folder.mkdir(parents=True)
    for lang in LANGUAGES:
        if lang in broken:
            if broken[lang] is not None:
                (folder / f"{lang}.json").write_text(broken[lang], encoding="utf-8")
        else:
            (folder / f"{lang}.json").symlink_to(_source(shared_data) / f"{lang}.json")
    return tmp_path / "data"


def _para(**over):
    p = {"context": "One two. Three four.", "sentences": ["One two.", "Three four."],
         "sentence_breaks": [[0, 8], [9, 20]],
         "qas": [{"id": "q1", "question": "What?", "answers": [{"text": "four", "answer_start": 15}]}]}
    p.update(over)
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [p]}]})


@pytest.mark.parametrize("text, message", [
    ('{"data": [', "not valid JSON"),
    (_para(sentence_breaks=None), "sentence_breaks"),
    (_para(sentences=None), "sentences"),
    (_para(sentence_breaks=[[0, 8]]), "as many 'sentence_breaks' as 'sentences'"),
    (_para(sentence_breaks=[[0, 8], [9, 99]]), "context length"),
    (json.dumps({"version": "1.1"}), "'data'"),
])
def test_malformed_input_names_file(tmp_path, shared_data, text, message):
    root = _dataset(tmp_path, shared_data, {"el": text})
    with pytest.raises(FormatError, match=message) as e:
        prepare_lareqa(root, tmp_path / "out")
    assert str(root / "lareqa" / "xquad-r" / "el.json") in str(e.value)
    assert not (tmp_path / "out" / "collections" / "lareqa" / "stats.json").exists()


def test_missing_language_file(tmp_path, shared_data):
    root = _dataset(tmp_path, shared_data, {"th": None})
    with pytest.raises(FileNotFoundError, match=r"th\.json"):
        load_lareqa(root)


def test_fallbacks_are_counted(tmp_path):
    """answer_start in no break range -> text match; a question missing in a language -> fewer judgments."""
    folder = tmp_path / "lareqa" / "xquad-r"
    folder.mkdir(parents=True)
    two = [{"id": "q1", "question": "What?", "answers": [{"text": "four", "answer_start": 15}]},
           {"id": "q2", "question": "Which?", "answers": [{"text": "One", "answer_start": 0}]}]
    for lang in LANGUAGES:
        qas = json.loads(json.dumps(two))
        if lang == "de":
            qas[0]["answers"][0]["answer_start"] = 8  # the space between the two breaks
        if lang == "zh":
            qas = qas[1:]
        (folder / f"{lang}.json").write_text(_para(qas=qas))
    paths = prepare_lareqa(tmp_path, tmp_path / "out")
    stats = json.loads(paths.stats.read_text())
    assert stats["answer_located_by"]["de"] == {"offset": 1, "text": 1, "unlocated": 0, "absent": 0}
    assert stats["answer_located_by"]["zh"] == {"offset": 1, "text": 0, "unlocated": 0, "absent": 1}
    qrels = io.read_qrels(paths.qrels)
    n = len(LANGUAGES)  # q2 is judged in every language, q1 in all but zh
    assert "de-a000-p00-s01" in qrels["q1"] and len(qrels["q1"]) == n - 1 and len(qrels["q2"]) == n
    assert stats["relevant_per_query"] == {str(n - 1): 1, str(n): 1}
    assert list(io.read_topics(paths.topics["zh"])) == ["q2"]


# -------------------------------------------------------------------- download
@pytest.fixture
def http_server(shared_data):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data / "lareqa"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_when_absent(tmp_path, monkeypatch, shared_data, http_server):
    monkeypatch.setenv("PYSERINI_KDSPD_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    src = find_source(empty, url_template=http_server + "/xquad-r/{lang}.json")
    assert src == tmp_path / "cache" / "lareqa" / "xquad-r"
    for lang in LANGUAGES:
        assert (src / f"{lang}.json").read_bytes() == (_source(shared_data) / f"{lang}.json").read_bytes()
    assert find_source(empty, download=False) == src  # cached: no second download


def test_no_network_is_a_clear_error(tmp_path, monkeypatch, http_server):
    monkeypatch.setenv("PYSERINI_KDSPD_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="downloading .* failed.*--data-dir"):
        find_source(empty, url_template=http_server + "/nowhere/{lang}.json")
    with socket.socket() as sock:  # a port nobody listens on: connection refused, as without a network
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(FileNotFoundError, match="downloading .* failed"):
        find_source(empty, url_template=f"http://127.0.0.1:{closed}/xquad-r/{{lang}}.json")
    assert not (tmp_path / "cache" / "lareqa" / "xquad-r" / "ar.json").exists()
    with pytest.raises(FileNotFoundError, match="not found"):
        find_source(empty, download=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_source(tmp_path / "no-such-folder")


# ------------------------------------------------------------------------- CLI
def test_cli(tmp_path, python, shared_data):
    cmd = [python, "-m", "pyserini_kdspd.data", "lareqa", "--data-dir", str(shared_data),
           "--output-root", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "qrels: " in out.stdout and (tmp_path / "qrels" / "lareqa.txt").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "complete" in again.stderr
    bad = _dataset(tmp_path / "bad", shared_data, {"en": '{"data": ['})
    fail = subprocess.run([python, "-m", "pyserini_kdspd.data", "lareqa", "--data-dir", str(bad),
                           "--output-root", str(tmp_path / "o")], capture_output=True, text=True)
    assert fail.returncode == 2 and "en.json" in fail.stderr and "Traceback" not in fail.stderr


# ---------------------------------------------------------- stock Pyserini
def test_pyserini_bm25_round_trip(built, tmp_path, python):
    paths, _ = built
    index = tmp_path / "index"
    subprocess.run([python, "-m", "pyserini.index.lucene", "--collection", "JsonCollection",
                    "--input", str(paths.by_lang["en"]), "--index", str(index),
                    "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1", "--storeRaw"],
                   check=True, capture_output=True)
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))
    assert searcher.num_docs == EXPECTED["en"]
    topics = io.read_topics(paths.topics["en"])
    qrels = io.read_qrels(paths.qrels)
    sample = random.Random(0).sample(sorted(topics), 40)
    found = 0
    for qid in sample:
        (answer,) = [d for d in qrels[qid] if d.startswith("en-")]
        hits = [h.docid for h in searcher.search(topics[qid], k=10)]
        found += answer in hits
    # BM25 R@10 over all 1190 English questions is 0.939 with this index (1117 found; 35 of this sample):
    # the floor is ~4 binomial standard deviations below that for 40 questions; broken text or ids fall far under.
    assert found >= 0.8 * len(sample)
    raw = json.loads(searcher.doc(answer).raw())
    assert raw["lang"] == "en" and raw["contents"]
