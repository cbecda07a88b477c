"""`kdspd` in stock Pyserini: a trained folder serves both sides through the unmodified CLIs.

A tiny student (MiniLM backbone, one decoder layer, two steps) is trained with the real
trainer CLI into a folder deliberately named ``kdspd-ance``: Pyserini's substring match
would hand that name to ANCE, and a folder named ``my-student`` would fall to the Auto
encoder; both must reach the KD-SPD encoders.
"""
import shutil
import subprocess

import faiss
import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.encoders import KdspdDocumentEncoder, KdspdQueryEncoder, resolve_kdspd_model


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, shared_data, python):
    root = tmp_path_factory.mktemp("enc")
    bitext = root / "bitext"
    bitext.mkdir()
    lines = (shared_data / "bitext/en-de.tsv").read_text(encoding="utf-8").splitlines()[:64]
    (bitext / "en-de.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "kdspd-ance"
    proc = subprocess.run([python, "-m", "pyserini_kdspd.train", "--student", "spd", "--encoder", "all-MiniLM-L6-v2",
                           "--teacher", "all-MiniLM-L6-v2", "--bitext", str(bitext), "--output", str(out),
                           "--max-steps", "2", "--decoder-layers", "1", "--prompt-length", "4", "--no-dev",
                           "--cache-dir", str(root / "cache"), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("corpus")
    en = (shared_data / "flores200/devtest/eng_Latn.devtest").read_text(encoding="utf-8").splitlines()[:20]
    de = (shared_data / "flores200/devtest/deu_Latn.devtest").read_text(encoding="utf-8").splitlines()[:20]
    recs = [{"id": f"en{i}", "contents": t, "text": t, "lang": "en"} for i, t in enumerate(en)]
    recs += [{"id": f"de{i}", "contents": t, "text": t, "lang": "de"} for i, t in enumerate(de)]
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
    # The index holds exactly what the student computes for each document in its own language, given the
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


def test_any_folder_name_and_any_class_reaches_kdspd(student_dir, tmp_path):
    import pyserini.encode as pe

    plain = tmp_path / "my-student"
    shutil.copytree(student_dir, plain)
    assert isinstance(pe.AutoDocumentEncoder(model_name=str(plain), device="cpu"), KdspdDocumentEncoder)
    assert isinstance(pe.document_encoder_class_map["ance"](model_name=str(student_dir)), KdspdDocumentEncoder)
    assert isinstance(pe.query_encoder_class_map["auto"](encoder_dir=str(plain)), KdspdQueryEncoder)
    # A name that merely contains "kdspd" but is no KD-SPD folder continues Pyserini's own matching.
    from pyserini_kdspd.models import resolve_model
    other = tmp_path / "not-kdspd-tct_colbert"
    shutil.copytree(resolve_model("all-MiniLM-L6-v2"), other)
    assert type(pe.document_encoder_class_map["kdspd"](model_name=str(other), device="cpu")).__name__ == \
        "TctColBertDocumentEncoder"


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


def test_index_of_another_dimension_is_a_clear_error(student_dir, tmp_path):
    from pyserini.search.faiss import FaissSearcher

    (tmp_path / "idx").mkdir()
    index = faiss.IndexFlatIP(8)
    index.add(np.random.default_rng(0).standard_normal((3, 8)).astype("float32"))
    faiss.write_index(index, str(tmp_path / "idx" / "index"))
    (tmp_path / "idx" / "docid").write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="dimension 8.*384"):
        FaissSearcher(str(tmp_path / "idx"), KdspdQueryEncoder(str(student_dir)))


def test_auto_encoder_fast_path_gives_pyserinis_vectors(shared_data):
    """The plugin's length-sorted, autograd-free Auto encoder equals Pyserini's own class."""
    import pyserini.encode as pe
    from pyserini_kdspd.models import resolve_model

    path = resolve_model("all-MiniLM-L6-v2")
    texts = []
    for code in ("eng_Latn", "deu_Latn", "ell_Grek"):
        texts += (shared_data / f"flores200/devtest/{code}.devtest").read_text(encoding="utf-8").splitlines()[:50]
    texts += ["short", "a much longer text " * 20]
    fast = pe.AutoDocumentEncoder(model_name=path, device="cpu", pooling="mean", l2_norm=True)
    stock = pe.AutoDocumentEncoder._kdspd_original(model_name=path, device="cpu", pooling="mean", l2_norm=True)
    assert type(fast).encode is not type(stock).encode
    got = fast.encode(texts, max_length=256)
    want = np.concatenate([stock.encode(texts[i:i + 16], max_length=256) for i in range(0, len(texts), 16)])
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_driver_reads_the_dimension_of_a_student_without_projection(student_dir):
    from pyserini_kdspd.search.dense import DenseModel
    from pyserini_kdspd.spd import StudentConfig

    assert StudentConfig.load(student_dir).output_dim is None  # teacher and encoder are both 384-d
    model = DenseModel.from_name("kdspd", str(student_dir))
    assert model.kind == "kdspd" and model.dimension == 384
