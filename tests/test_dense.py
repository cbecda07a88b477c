"""Reuse rules of the dense stage: an index belongs to the weights that made it, a run to its index."""
import json
import os
import time

from pyserini_kdspd.io import newer
from pyserini_kdspd.search.dense import STAMP, DenseModel, _stamp_matches, model_fingerprint


def test_retrained_model_invalidates_its_index(tmp_path):
    model = tmp_path / "kdspd"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"x" * 10)
    (model / "checkpoints").mkdir()
    (model / "checkpoints" / "state.pt").write_bytes(b"y")
    index = tmp_path / "index"
    index.mkdir()
    m = DenseModel("kdspd", str(model), kind="kdspd")
    assert not _stamp_matches(index, m)  # no stamp: never trusted
    (index / STAMP).write_text(json.dumps(model_fingerprint(str(model))))
    assert _stamp_matches(index, m)
    (model / "checkpoints" / "state.pt").write_bytes(b"yy")  # checkpoints do not change the saved model
    assert _stamp_matches(index, m)
    time.sleep(0.01)
    (model / "model.safetensors").write_bytes(b"z" * 10)  # retrained in place: same size, new mtime
    assert not _stamp_matches(index, m)
    assert model_fingerprint("org/some-hub-model") == {"model": "org/some-hub-model"}


def test_run_older_than_its_index_is_stale(tmp_path):
    index, run = tmp_path / "index", tmp_path / "run.txt"
    assert not newer(run, index)
    index.write_bytes(b"i")
    run.write_text("q Q0 d 1 1.0 t\n")
    assert newer(run, index)
    st = run.stat()
    os.utime(index, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not newer(run, index)


def test_an_index_belongs_to_the_collection_it_was_encoded_from(tmp_path):
    """The same documents with their ``lang`` emptied (language ID) are another collection: an index of the
    gold-tagged one is never reused for them, nor after the collection is rewritten in place."""
    from pyserini_kdspd.io import write_jsonl
    from pyserini_kdspd.search.dense import CORPUS_STAMP, _corpus_matches, corpus_fingerprint

    docs = [{"id": "d1", "text": "Ein Satz.", "lang": "de"}, {"id": "d2", "text": "A sentence.", "lang": "en"}]
    gold, untagged, index = tmp_path / "gold", tmp_path / "untagged", tmp_path / "index"
    write_jsonl(gold / "docs.jsonl", docs)
    write_jsonl(untagged / "docs.jsonl", [{**d, "lang": ""} for d in docs])
    index.mkdir()
    assert not _corpus_matches(index, gold)  # no stamp: never trusted
    (index / CORPUS_STAMP).write_text(json.dumps(corpus_fingerprint(gold)))
    assert _corpus_matches(index, gold)
    assert not _corpus_matches(index, untagged)
    assert not _corpus_matches(index, tmp_path / "absent")
    time.sleep(0.01)
    write_jsonl(gold / "docs.jsonl", docs[:1] + [{**docs[1], "text": "A phrase."}])  # same size, new mtime
    assert not _corpus_matches(index, gold)
