import os
import shutil
import sys

# scripts/test.sh runs the suite on two pytest-xdist workers, whole files apiece (--dist loadfile): each worker and
# the CLIs it starts get one OpenMP thread, so that two workers share two cores instead of fighting over them.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# Pyserini 1.6.0 needs these before import; the package's start-up hook sets them, tests rely on it too.
import pyserini_kdspd  # noqa: F401,E402
from pyserini_kdspd.paths import data_dir  # noqa: E402


SESSION_PREFIX = "session-"


@pytest.fixture(scope="module", autouse=True)
def _free_module_disk(request, tmp_path_factory):
    """Delete the folders a test file made once all of its tests passed (a failing file keeps them to look at).

    Students, indexes and driver roots run to hundreds of MB each and the disk is shared with other work, so the
    suite holds one file's folders at a time (tmp_path of a passing test goes at once: setup.cfg's retention
    policy). Session fixtures name their folders with SESSION_PREFIX and stay to the end."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for path in set(base.iterdir()) - before:
        if path.is_dir() and not path.is_symlink() and not path.name.startswith(SESSION_PREFIX):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data():
    d = data_dir()
    if d is None:
        pytest.skip("../shared/data is not present")
    return d


@pytest.fixture(scope="session")
def python():
    """The interpreter of this environment, for running stock CLIs in a subprocess."""
    return sys.executable


@pytest.fixture(scope="session")
def bitext_dir(tmp_path_factory, shared_data):
    """Two small real bitext files (40 pairs each, every 2000th line: several sources)."""
    folder = tmp_path_factory.mktemp(SESSION_PREFIX + "bitext")
    for lang in ("de", "fr"):
        lines = (shared_data / "bitext" / f"en-{lang}.tsv").read_text(encoding="utf-8").splitlines()
        (folder / f"en-{lang}.tsv").write_text("\n".join(lines[::2000][:40]) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory, bitext_dir, python):
    """A KD-SPD folder trained for real by the trainer CLI in two steps (MiniLM backbone and teacher,
    one decoder layer, l = 4): cheap, and complete in every file a stock Pyserini CLI reads. Decoder only
    (``--no-residual``): after two steps a residual student's gate has barely opened, so its language prompt
    would hardly move a vector, and the tests of language tags need it to."""
    import subprocess

    root = tmp_path_factory.mktemp(SESSION_PREFIX + "student")
    out = root / "kdspd-ance"  # Pyserini's substring match alone would hand "ance" to ANCE
    proc = subprocess.run([python, "-m", "pyserini_kdspd.train", "--student", "spd", "--encoder", "all-MiniLM-L6-v2",
                           "--teacher", "all-MiniLM-L6-v2", "--bitext", str(bitext_dir), "--output", str(out),
                           "--max-steps", "2", "--decoder-layers", "1", "--prompt-length", "4", "--no-residual",
                           # pinned, not the swept defaults: a re-sweep must not move the vectors the tests compare
                           "--lr", "1e-4", "--head-lr", "1e-3", "--adam-eps", "1e-8",
                           "--no-dev", "--cache-dir", str(root / "cache"), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def lareqa_slice(tmp_path_factory, shared_data):
    """12 LAReQA questions, their answers in every language and 150 other sentences: a real multilingual slice
    (``corpus/``, ``de/``, ``topics.{en,de,zh}.tsv``, ``qrels.txt``), shared by the stock-CLI and index tests."""
    from pyserini_kdspd import io
    from pyserini_kdspd.data.lareqa import prepare_lareqa

    full = prepare_lareqa(shared_data, tmp_path_factory.mktemp(SESSION_PREFIX + "lareqa-full"))
    qrels = io.read_qrels(full.qrels)
    qids = sorted(qrels)[:12]
    keep = {d for q in qids for d in qrels[q]}
    docs = list(io.read_jsonl(full.corpus / "corpus.jsonl"))
    others = [r for r in docs if r["id"] not in keep][::80][:150]
    recs = [r for r in docs if r["id"] in keep] + others
    root = tmp_path_factory.mktemp(SESSION_PREFIX + "lareqa-slice")
    io.write_jsonl(root / "corpus" / "docs.jsonl", recs)
    io.write_jsonl(root / "de" / "docs.jsonl", (r for r in recs if r["lang"] == "de"))
    for lang in ("en", "de", "zh"):
        topics = io.read_topics(full.topics[lang])
        io.write_topics(root / f"topics.{lang}.tsv", {q: topics[q] for q in qids})
    io.write_qrels(root / "qrels.txt", {q: qrels[q] for q in qids})
    return root, qids


@pytest.fixture(scope="session", autouse=True)
def _threads():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
