"""Two trainings with the same seed give bit-identical students and identical TREC runs (issue 9).

What the Table 2 driver relies on, on a short budget: the train CLI run twice into two folders
(MiniLM backbone and teacher, one decoder layer, three steps, separate teacher-target caches as
on two machines), every saved tensor compared with ``torch.equal``, then a small corpus encoded
by the plugin's ``KdspdDocumentEncoder``, searched with FAISS flat and written as TREC runs
whose bytes must match.
"""
import subprocess

import faiss
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pyserini_kdspd import io
from pyserini_kdspd.distill.trainer import LOG_NAME
from pyserini_kdspd.encoders import KdspdDocumentEncoder, KdspdQueryEncoder

pytestmark = pytest.mark.slow


def train(python, bitext_dir, out, *budget):
    proc = subprocess.run([python, "-m", "pyserini_kdspd.train", "--student", "spd", "--encoder", "all-MiniLM-L6-v2",
                           "--teacher", "all-MiniLM-L6-v2", "--bitext", str(bitext_dir), "--output", str(out / "kdspd"),
                           "--max-steps", "3", *budget, "--decoder-layers", "1", "--prompt-length", "4", "--seed", "7",
                           "--no-dev", "--cache-dir", str(out / "cache"), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "kdspd"


def tensors(folder):
    """Every tensor of every safetensors file in the folder (student and query encoder), by file and name."""
    return {(str(f.relative_to(folder)), name): t for f in sorted(folder.rglob("*.safetensors"))
            for name, t in load_file(f).items()}


def trec_run(folder, docs, topics, path):
    encoder = KdspdDocumentEncoder(str(folder))
    vectors = encoder.encode([d["text"] for d in docs], langs=[d["lang"] for d in docs])
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    query = KdspdQueryEncoder(str(folder))
    scores, ids = index.search(np.stack([query.encode(t) for t in topics.values()]), 5)
    io.write_run(path, {qid: {docs[i]["id"]: float(s) for s, i in zip(row_s, row_i)}
                        for qid, row_s, row_i in zip(topics, scores, ids)})
    return path


def test_same_seed_same_weights_and_runs(tmp_path, bitext_dir, shared_data, python):
    a = train(python, bitext_dir, tmp_path / "a")
    # The second run also has a wall-clock limit it never reaches: the same three steps, but its log must
    # call the budget "minutes" (nothing that feeds the table may have one).
    b = train(python, bitext_dir, tmp_path / "b", "--max-minutes", "600")
    logs = [io.read_json(folder / LOG_NAME) for folder in (a, b)]
    assert [(log["steps"], log["budget"]) for log in logs] == [(3, "steps"), (3, "minutes")]

    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and any(name.startswith("prompts.") for _, name in ta)  # the fresh, seeded part
    differing = [key for key in ta if not torch.equal(ta[key], tb[key])]
    assert not differing, differing[:5]

    flores = shared_data / "flores200/devtest"
    docs = [{"id": f"{lang}{i}", "text": t, "lang": lang}
            for lang, name in (("en", "eng_Latn"), ("de", "deu_Latn"), ("fr", "fra_Latn"))
            for i, t in enumerate((flores / f"{name}.devtest").read_text(encoding="utf-8").splitlines()[:15])]
    topics = {f"q{i}": d["text"] for i, d in enumerate(docs[:5])}
    run_a = trec_run(a, docs, topics, tmp_path / "a.txt")
    run_b = trec_run(b, docs, topics, tmp_path / "b.txt")
    assert len(io.read_run(run_a)) == 5
    assert run_a.read_bytes() == run_b.read_bytes()
