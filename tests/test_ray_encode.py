"""Ray Data encoding (``python -m pyserini_kdspd.scale.ray_encode``) on a LAReQA slice with 2 actors of 1 thread.

Its Parquet vectors must be the single-process encoder's (the very classes ``pyserini.encode`` runs:
``KdspdDocumentEncoder`` for a KD-SPD folder, Pyserini's ``AutoDocumentEncoder`` for a packaged model)
for every document, once each, also when an actor process dies in the middle of the run; and the
package must work, and the command explain itself, where Ray is not installed.
"""
import os
import re
import subprocess

import numpy as np
import pytest

from pyserini_kdspd import io
from pyserini_kdspd.scale.ray_encode import STAMP, EncodeBatches

pytestmark = pytest.mark.slow
ACTORS = dict(actors=2, threads=1, batch_size=24)


@pytest.fixture(scope="module")
def lareqa_slice(tmp_path_factory, shared_data):
    """Every 40th LAReQA sentence (all 11 languages, ~330 documents) in two JSON-lines files, and the same records
    as a Parquet file. One document has its ``lang`` left empty (language ID must tag it) and every 25th is
    tagged ``hi`` whatever its language: the tag, not language ID, must choose its prompt."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pyserini_kdspd.data.lareqa import prepare_lareqa

    full = prepare_lareqa(shared_data, tmp_path_factory.mktemp("lareqa"))
    recs = list(io.read_jsonl(full.corpus / "corpus.jsonl"))[::40]
    recs = [{**r, "lang": "hi"} if i % 25 == 3 else r for i, r in enumerate(recs)]
    recs[5] = {**recs[5], "lang": ""}
    root = tmp_path_factory.mktemp("slice")
    io.write_jsonl(root / "corpus" / "a.jsonl", recs[:150])
    io.write_jsonl(root / "corpus" / "b.jsonl", recs[150:])
    pq.write_table(pa.table({k: [r[k] for r in recs] for k in ("id", "text", "lang")}), root / "corpus.parquet")
    return root, recs


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """An untrained KD-SPD student on the packaged multilingual backbone (e5-small, its passage prefix), its
    language factors drawn wide so that a document under another language's prompt gets another vector
    (cosine ~0.97; at initialisation they would differ by less than 1e-4)."""
    import torch

    from pyserini_kdspd.spd import Student, StudentConfig

    torch.manual_seed(0)
    student = Student.build(StudentConfig(encoder="multilingual-e5-small", passage_prefix="passage: ",
                                          decoder_layers=2, prompt_length=8))
    with torch.no_grad():
        student.prompts.lang_u.normal_(0, 1.0)
        student.prompts.lang_v.normal_(0, 1.0)
    return student.save_pretrained(tmp_path_factory.mktemp("models") / "kdspd-untrained")


def in_fresh_python(python, script: str, *args) -> str:
    """Run ``script`` in its own interpreter, which starts its own local Ray as the command does: Ray is never
    started inside the test process, which other tests share with a JVM, FAISS and torch."""
    proc = subprocess.run([python, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def reference(student_dir, recs):
    """What ``pyserini.encode --encoder kdspd --fields text lang`` computes: the plugin's Pyserini encoder."""
    from pyserini_kdspd.encoders import KdspdDocumentEncoder

    return KdspdDocumentEncoder(str(student_dir)).encode([r["text"] for r in recs], langs=[r["lang"] for r in recs])


def check(output, recs, expected):
    """Every document exactly once, with its language, and its vector the single-process one (cosine >= 0.9999)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pyserini_kdspd.index.vectors import read_vectors

    for part in sorted(output.glob("*.parquet")):
        schema = pq.read_schema(part)
        assert [(f.name, f.type) for f in schema] == [("docid", pa.string()), ("vector", pa.list_(pa.float32())),
                                                      ("lang", pa.string())]
    vectors = read_vectors(output)  # the index builders' reader: also refuses a docid written twice
    assert sorted(vectors.docids) == sorted(r["id"] for r in recs) and len(vectors.docids) == len(recs)
    row = {d: i for i, d in enumerate(vectors.docids)}
    got = vectors.vectors[[row[r["id"]] for r in recs]]
    cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cos.min() >= 0.9999, (cos.min(), recs[int(cos.argmin())]["id"])
    assert [vectors.langs[row[r["id"]]] for r in recs] == [r["lang"] or None for r in recs]
    return cos


@pytest.fixture
def ray_head(python):
    """A Ray cluster of 3 CPUs started by ``ray start --head`` (its own temp dir and port), as a user starts one
    before pointing the command at it; stopped by signalling its own process group, never ``ray stop`` (which would
    end every Ray on the machine)."""
    import signal
    import socket
    import tempfile
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths live under it
    # Ray 2.60 turns token authentication on for `ray start` whenever ~/.ray/auth_token exists (any local
    # ray.init writes one), and a client given an explicit address must then say so: the cluster and the
    # command share one token through RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH, as on a real cluster (README).
    token = os.path.join(temp, "auth_token")
    with open(token, "w") as f:
        f.write(os.urandom(32).hex())
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token}
    # workers at the tests' priority (Ray's default niceness 15 starves them beside another test worker)
    nice = {"RAY_worker_niceness": "0"}
    log = open(os.path.join(temp, "ray_start.log"), "w")
    head = subprocess.Popen([os.path.join(os.path.dirname(python), "ray"), "start", "--head", "--block",
                             "--num-cpus", "3", "--port", str(port), "--node-ip-address", "127.0.0.1",
                             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **auth, **nice, "TOKENIZERS_PARALLELISM": "false"})
    try:
        deadline = time.monotonic() + 600
        while not os.path.exists(os.path.join(temp, "ray_current_cluster")):  # written once the head is up
            # a head that timed out can hang in its own shutdown instead of exiting: read its log too
            failed = head.poll() is not None or "timed out during startup" in open(log.name).read()
            assert not failed and time.monotonic() < deadline, open(log.name).read()[-3000:]
            time.sleep(1)
        yield f"127.0.0.1:{port}", auth
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(head.pid, signal.SIGKILL)
        log.close()


def test_the_command_encodes_on_an_existing_cluster_given_its_address(lareqa_slice, student_dir, tmp_path, python,
                                                                      ray_head):
    address, auth = ray_head
    root, recs = lareqa_slice
    recs = recs[::5]  # ~66 documents in 3 batches: the cluster, not the encoding, is what this test is about
    io.write_jsonl(tmp_path / "corpus" / "docs.jsonl", recs)
    out = tmp_path / "vectors"
    proc = subprocess.run([python, "-m", "pyserini_kdspd.scale.ray_encode", "--address", address,
                           "--corpus", str(tmp_path / "corpus"), "--encoder", str(student_dir), "--output", str(out),
                           "--actors", "2", "--batch-size", "24"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **auth, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    port = address.rsplit(":", 1)[1]  # Ray names the head by this machine's address, not 127.0.0.1
    assert re.search(rf"Connecting to existing Ray cluster at address: \S+:{port}\b", proc.stderr), proc.stderr[-2000:]
    stamp = io.read_json(out / STAMP)
    assert (stamp["ray_address"], stamp["actors"], stamp["threads_per_actor"]) == (address, 2, 1)  # (3 - 1) / 2
    check(out, recs, reference(student_dir, recs))


class DiesOnce(EncodeBatches):
    """Ends its own process on its third batch, as a crash or the OOM killer would (no exception, no cleanup),
    once per run: the marker file it creates first keeps the restarted actor alive."""

    marker = None

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 3:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, f"{os.getpid()} {os.nice(0)}".encode())  # its pid and niceness
                os.close(fd)
                os._exit(1)
        return super().__call__(batch)


KILL_RUN = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import ray.cloudpickle
import test_ray_encode as t
from pyserini_kdspd.scale.ray_encode import encode_corpus
ray.cloudpickle.register_pickle_by_value(t)  # the actors cannot import a test module
t.DiesOnce.marker = sys.argv[2]
summary = encode_corpus(sys.argv[3], sys.argv[4], sys.argv[5], udf=t.DiesOnce, **t.ACTORS)
print(json.dumps({**summary, "env_niceness": os.environ.get("RAY_worker_niceness")}))
"""


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(lareqa_slice, student_dir, tmp_path, python):
    import json

    root, recs = lareqa_slice
    out = in_fresh_python(python, KILL_RUN, os.path.dirname(__file__), tmp_path / "died", root / "corpus", student_dir,
                          tmp_path / "vectors")
    summary = json.loads(out.strip().splitlines()[-1])
    dead, niceness = map(int, (tmp_path / "died").read_text().split())
    assert niceness == os.nice(0)  # the actors ran at the caller's priority, not Ray's default 15
    assert summary["env_niceness"] is None  # ... set for the Ray it started only, not left in the caller's environ
    with pytest.raises(ProcessLookupError):  # it really died: batches 3.. of its run went to a restarted actor
        os.kill(dead, 0)
    assert summary["documents"] == len(recs) and len(recs) / ACTORS["batch_size"] > 2 * 3  # mid-run: > 3 batches each
    check(tmp_path / "vectors", recs, reference(student_dir, recs))


def test_the_command_on_a_local_ray_encodes_a_packaged_model_from_parquet_as_pyserinis_auto_encoder(
        lareqa_slice, tmp_path, python):
    """The command with its defaults (a local Ray it starts and stops) on the mDPR row's model (e5-small: mean
    pooling, L2 norm, ``passage:`` prefix) read from Parquet. The KD-SPD student on a local Ray: the kill test."""
    import torch
    from pyserini.encode import AutoDocumentEncoder

    from pyserini_kdspd.models import model_settings, resolve_model

    root, recs = lareqa_slice
    out = tmp_path / "vectors"
    proc = subprocess.run([python, "-m", "pyserini_kdspd.scale.ray_encode", "--corpus", str(root / "corpus.parquet"),
                           "--encoder", "multilingual-e5-small", "--output", str(out), "--actors", "2",
                           "--threads", "1", "--batch-size", str(ACTORS["batch_size"])],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"{len(recs)} documents" in proc.stdout
    stamp = io.read_json(out / STAMP)
    assert (stamp["actors"], stamp["threads_per_actor"], stamp["documents"]) == (2, 1, len(recs))
    assert not (tmp_path / "vectors.partial").exists()
    s = model_settings("multilingual-e5-small")
    auto = AutoDocumentEncoder(resolve_model("multilingual-e5-small"), device="cpu", pooling=s["pooling"],
                               l2_norm=s["l2_norm"], prefix=s["passage_prefix"].rstrip())  # as DenseModel passes it
    with torch.inference_mode():
        expected = np.concatenate([auto.encode([r["text"] for r in recs[i:i + 32]]) for i in range(0, len(recs), 32)])
    check(out, recs, expected)


def test_without_ray_the_package_imports_and_the_command_names_the_extra(python, tmp_path):
    probe = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
             "import pyserini_kdspd, pyserini_kdspd.scale.ray_encode as m\n"
             "sys.exit(m.main(['--corpus', sys.argv[1], '--encoder', 'all-MiniLM-L6-v2', '--output', sys.argv[2]]))")
    proc = subprocess.run([python, "-c", probe, str(tmp_path), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "pip install 'pyserini_kdspd[ray]'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
