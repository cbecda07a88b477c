"""`kdspd` in stock Pyserini: a trained folder serves both sides through the unmodified CLIs.

A tiny student (conftest's ``tiny_student``: two real training steps) lives in a folder
deliberately named ``kdspd-ance``: "kdspd" comes first in Pyserini's maps, so the name
reaches the plugin and not ANCE; a folder named ``my-student`` needs ``--encoder-class kdspd``.
"""
import os
import shutil
import subprocess

import faiss
import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.encoders import KdspdDocumentEncoder, KdspdQueryEncoder, resolve_kdspd_model


@pytest.fixture(scope="module")
def student_dir(tiny_student):
    return tiny_student


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("corpus")
    en = (shared_data / "flores200/devtest/eng_Latn.devtest").read_text(encoding="utf-8").splitlines()[:20]
    de = (shared_data / "flores200/devtest/deu_Latn.devtest").read_text(encoding="utf-8").splitlines()[:20]
    recs = [{"id": f"en{i}", "contents": t, "text": t, "lang": "en"} for i, t in enumerate(en)]
    recs += [{"id": f"de{i}", "contents": t, "text": t, "lang": "de"} for i, t in enumerate(de)]
    # German text tagged en: language ID would pick the German prompt, so the index shows whether the tag arrived.
    recs.append({"id": "de0-tagged-en", "contents": de[0], "text": de[0], "lang": "en"})
    io.write_jsonl(root / "c" / "docs.jsonl", recs)
    io.write_topics(root / "topics.tsv", {f"q{i}": en[i] for i in range(5)})
    return root, recs


@pytest.mark.slow
def test_stock_encode_and_search_route_to_kdspd(student_dir, corpus, python, tmp_path):
    root, recs = corpus
    run = subprocess.run
    enc = run([python, "-m", "pyserini.encode", "input", "--corpus", str(root / "c"), "--fields", "text", "lang",
               "output", "--embeddings", str(tmp_path / "idx"), "--to-faiss",
               "encoder", "--encoder", str(student_dir), "--fields", "text", "lang", "--dimension", "384",
               "--device", "cpu", "--batch-size", "16"], capture_output=True, text=True, timeout=900)
    assert enc.returncode == 0, enc.stderr[-3000:]
    # The index holds exactly what the student computes for each document under its own tag, given the
    # same batches as pyserini.encode (file order, 16 at a time): under bf16 autocast another batch
    # composition pads differently and moves values by ~1e-3, so the batches must match to compare closely.
    index = faiss.read_index(str(tmp_path / "idx" / "index"))
    docids = (tmp_path / "idx" / "docid").read_text().split()
    assert docids == [r["id"] for r in recs]
    stored = index.reconstruct_n(0, index.ntotal)
    encoder = KdspdDocumentEncoder(str(student_dir))
    batches = [recs[i:i + 16] for i in range(0, len(recs), 16)]
    direct = np.concatenate([encoder.encode([r["text"] for r in b], langs=[r["lang"] for r in b]) for b in batches])
    np.testing.assert_allclose(stored, direct, atol=1e-6)

    srch = run([python, "-m", "pyserini.search.faiss", "--index", str(tmp_path / "idx"), "--topics",
                str(root / "topics.tsv"), "--encoder", str(student_dir), "--device", "cpu",
                "--output", str(tmp_path / "run.txt"), "--hits", "5"], capture_output=True, text=True, timeout=900)
    assert srch.returncode == 0, srch.stderr[-3000:]
    results = io.read_run(tmp_path / "run.txt")
    assert set(results) == {f"q{i}" for i in range(5)} and all(len(v) == 5 for v in results.values())


def test_query_side_is_the_teacher(student_dir):
    from pyserini.encode import AutoQueryEncoder
    from pyserini_kdspd.models import resolve_model

    q = KdspdQueryEncoder(str(student_dir)).encode("how much protein per day")
    teacher = AutoQueryEncoder(encoder_dir=resolve_model("all-MiniLM-L6-v2"), pooling="mean", l2_norm=True)
    np.testing.assert_allclose(q, teacher.encode("how much protein per day"), atol=1e-5)
    assert q.shape == (384,) and q.dtype == np.float32


def test_language_tag_selects_the_prompt(student_dir, shared_data):
    """The prompt is per language: a German sentence tagged ``en`` gets the English prompt, not the German one.

    Language ID would call the sentence German, so an encoder that drops ``langs`` gives the same vector
    under both tags.
    """
    german = (shared_data / "flores200/devtest/deu_Latn.devtest").read_text(encoding="utf-8").splitlines()[0]
    encoder = KdspdDocumentEncoder(str(student_dir), precision="fp32")
    as_de, as_en, untagged = encoder.encode([german] * 3, langs=["de", "en", None])
    np.testing.assert_allclose(untagged, as_de, atol=1e-6)  # language ID calls it German
    # Rows of one fp32 batch agree to rounding (~1e-7); this 2-step student's de and en prompts are ~2e-2 apart.
    assert np.linalg.norm(as_de - as_en) > 1e-3, np.linalg.norm(as_de - as_en)


def test_the_documented_routes_reach_kdspd_through_pyserinis_own_selection(student_dir, tmp_path, monkeypatch):
    """``--encoder kdspd``, a path containing "kdspd" (even "kdspd-ance") and ``--encoder-class kdspd`` reach
    the plugin through Pyserini's unmodified ``init_encoder`` / ``init_query_encoder``; any other name
    gets exactly what Pyserini alone would give it."""
    from pyserini.encode.__main__ import init_encoder
    from pyserini.search.faiss.__main__ import init_query_encoder

    def doc(name, cls=None):
        return init_encoder(name, cls, "cpu", "cls", False, None, False, False)

    def query(name, cls=None):
        return init_query_encoder(name, cls, None, None, None, "cpu", 64, "cls", False, None)

    plain = tmp_path / "my-student"
    shutil.copytree(student_dir, plain)
    monkeypatch.setenv("PYSERINI_KDSPD_MODEL", str(plain))
    for name, cls in (("kdspd", None), (str(student_dir), None), (str(plain), "kdspd")):
        assert isinstance(doc(name, cls), KdspdDocumentEncoder), (name, cls)
        assert isinstance(query(name, cls), KdspdQueryEncoder), (name, cls)
    # No "kdspd" in the name and no class: Pyserini's own AutoDocumentEncoder takes it (and, the folder
    # being no plain Hugging Face model, fails as it would without the plugin).
    with pytest.raises(ValueError, match="model_type"):
        doc(str(plain))
    with pytest.raises(FileNotFoundError, match="--encoder-class"):
        doc(str(tmp_path / "kdspd-not-a-folder"))


def test_bare_kdspd_and_bad_folders(tmp_path, monkeypatch, student_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYSERINI_KDSPD_MODEL", raising=False)
    with pytest.raises(FileNotFoundError, match="python -m pyserini_kdspd.train"):
        resolve_kdspd_model("kdspd")
    monkeypatch.setenv("PYSERINI_KDSPD_MODEL", str(student_dir))
    assert resolve_kdspd_model("kdspd") == student_dir
    broken = tmp_path / "broken"
    shutil.copytree(student_dir, broken)
    shutil.rmtree(broken / "query_encoder")
    with pytest.raises(FileNotFoundError, match="query_encoder"):
        KdspdQueryEncoder(str(broken))


def test_driver_reads_the_dimension_of_a_student_without_projection(student_dir):
    from pyserini_kdspd.search.dense import DenseModel
    from pyserini_kdspd.spd import StudentConfig

    assert StudentConfig.load(student_dir).output_dim is None  # teacher and encoder are both 384-d
    model = DenseModel.from_name("kdspd", str(student_dir))
    assert model.kind == "kdspd" and model.dimension == 384


@pytest.mark.slow
def test_untagged_and_empty_documents_through_stock_encode(student_dir, shared_data, python, tmp_path):
    """The README's rules: `--fields text` encodes an untagged corpus (language ID), an empty `lang` means
    language ID, an empty `text` is encoded as the empty string; a contents-only document whose text
    spans lines (Pyserini then splits it into text and lang) is a clear error, not a wrong prompt."""
    de = (shared_data / "flores200/devtest/deu_Latn.devtest").read_text(encoding="utf-8").splitlines()[:3]
    enc = KdspdDocumentEncoder(str(student_dir), precision="fp32")  # fp32 on both sides: differences are rounding
    env = dict(os.environ, PYSERINI_KDSPD_PRECISION="fp32")

    def encode(corpus, fields, name):
        io.write_jsonl(tmp_path / name / "docs.jsonl", corpus)
        return subprocess.run([python, "-m", "pyserini.encode", "input", "--corpus", str(tmp_path / name),
                               "--fields", *fields, "output", "--embeddings", str(tmp_path / f"{name}-out"),
                               "encoder", "--encoder", str(student_dir), "--fields", *fields,
                               "--dimension", "384", "--device", "cpu", "--batch-size", "8"],
                              capture_output=True, text=True, timeout=600, env=env)

    def vectors(name):
        return {r["id"]: np.asarray(r["vector"]) for r in io.read_jsonl(tmp_path / f"{name}-out" / "embeddings.jsonl")}

    proc = encode([{"id": f"d{i}", "contents": t} for i, t in enumerate(de)], ["text"], "untagged")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = vectors("untagged")
    want = enc.encode(de, langs=["de"] * 3)  # language ID must find German: the same prompt as the tag
    as_en = enc.encode(de, langs=["en"] * 3)
    assert np.abs(want - as_en).max() > 1e-3  # the tag matters far more than the tolerance below
    for i in range(3):
        np.testing.assert_allclose(got[f"d{i}"], want[i], atol=1e-5)

    proc = encode([{"id": "a", "text": de[0], "lang": ""}, {"id": "b", "text": "", "lang": "de"}],
                  ["text", "lang"], "empty")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = vectors("empty")
    np.testing.assert_allclose(got["a"], want[0], atol=1e-5)
    np.testing.assert_allclose(got["b"], enc.encode([""], langs=["de"])[0], atol=1e-5)

    proc = encode([{"id": "x", "contents": de[0] + "\n" + de[1]}], ["text", "lang"], "split")
    assert proc.returncode != 0 and "is not a language code" in proc.stderr, proc.stderr[-2000:]
