"""The Table 2 driver end to end on the CLEF fixtures (real layout): BM25 rows only, so it runs in a minute.

SMT trains on a few hundred real bitext pairs; Finnish has no bitext, so the SMT rows
are skipped with one line. The NMT rows use a translations file (qid, lang, text).
Every number printed must be recomputable from the TREC files by the evaluate CLI.
"""
import re
import subprocess
from pathlib import Path

import pytest

from pyserini_kdspd import io

FIX = Path(__file__).parent / "fixtures" / "clef"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def driven(tmp_path_factory, shared_data, python):
    root = tmp_path_factory.mktemp("t2")
    bitext = root / "bitext"
    bitext.mkdir()
    for lang in ("de", "fr", "it"):
        lines = (shared_data / f"bitext/en-{lang}.tsv").read_text(encoding="utf-8").splitlines()[:300]
        (bitext / f"en-{lang}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    from pyserini_kdspd.data.clef import read_topics
    topics = {}
    for f in sorted((FIX / "topics").iterdir()):
        topics.update(read_topics(f))
    with open(root / "nmt.tsv", "w", encoding="utf-8") as f:
        for t in topics.values():
            for lang in ("de", "fr", "it", "fi"):
                f.write(f"{t.qid}\t{lang}\t{t.title}\n")
    proc = subprocess.run([python, "-m", "pyserini_kdspd.table2", "--collections", "clef,mtrec",
                           "--clef-dir", str(FIX), "--systems", "bm25", "--bitext", str(bitext),
                           "--nmt", str(root / "nmt.tsv"), "--output-root", str(root), "--hits", "10"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return root, proc.stdout


def test_rows_and_skips(driven):
    root, out = driven
    assert "[skip] mTREC" in out and "--mmarco-dir" in out
    assert re.search(r"\[skip\] SMT rows for clef: no translation into 'fi'", out)
    table = (root / "runs/clef/table2.md").read_text(encoding="utf-8")
    names = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| NMT")]
    assert names == ["NMT + Round Robin", "NMT + Score"]
    for name in ("bm25-nmt+rr.txt", "bm25-nmt+score.txt"):
        run = io.read_run(root / "runs/clef" / name)
        assert run and all(len(docs) <= 10 for docs in run.values())
        langs = {d.split("-")[0] for docs in run.values() for d in docs}
        assert langs  # merged from the per-language lists


def test_numbers_recompute_from_trec_files(driven, python):
    root, _ = driven
    table = (root / "runs/clef/table2.md").read_text(encoding="utf-8")
    proc = subprocess.run([python, "-m", "pyserini_kdspd.evaluate", "--qrels", str(root / "qrels/clef.txt"),
                           "--depth", "10", "--runs", f"NMT + Round Robin={root / 'runs/clef/bm25-nmt+rr.txt'}",
                           f"NMT + Score={root / 'runs/clef/bm25-nmt+score.txt'}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    def rows(text):
        return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                for line in text.splitlines() if line.startswith("| NMT")}

    assert rows(proc.stdout) == rows(table)


def test_every_figure_agrees_with_trec_eval(driven):
    """The driver runs stock `python -m pyserini.eval.trec_eval` on every row and says so under the table."""
    root, out = driven
    table = (root / "runs/clef/table2.md").read_text(encoding="utf-8")
    assert "Every figure agrees with `python -m pyserini.eval.trec_eval -c -l 1 -M 10`" in table
    assert "Every figure agrees with" in out
