"""The Table 2 driver end to end on the CLEF fixtures (real layout): BM25 rows only, so it runs in a minute.

SMT trains on a few hundred real bitext pairs; Finnish has no bitext, so the SMT rows
are skipped with one line. The NMT rows use a translations file (qid, lang, text).
Every number printed must be recomputable from the TREC files by the evaluate CLI.
The README block (``--readme``) is rendered from what the driver records, here from real
TREC DL 2020 runs and qrels with no training, and the driver refuses students trained on
a wall-clock budget.
"""
import dataclasses
import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pyserini_kdspd import io
from pyserini_kdspd.distill.trainer import LOG_NAME
from pyserini_kdspd.search.translate.smt import entries_sha256
from pyserini_kdspd.table2 import Collection, Settings, Stages, main, record, table, train_students, translators

FIX = Path(__file__).parent / "fixtures" / "clef"


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


@pytest.mark.slow
def test_rows_and_skips(driven):
    root, out = driven
    assert "[skip] mTREC" in out and "--mmarco-dir" in out
    assert "[skip] SMT rows for clef" not in out  # the Table 2 languages de/fr/it all have bitext (fi is opt-in)
    table = (root / "runs/clef/table2.md").read_text(encoding="utf-8")
    names = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith(("| NMT", "| SMT"))]
    assert names == ["SMT + Round Robin", "SMT + Score", "NMT + Round Robin", "NMT + Score"]
    for name in ("bm25-smt+rr.txt", "bm25-smt+score.txt", "bm25-nmt+rr.txt", "bm25-nmt+score.txt"):
        run = io.read_run(root / "runs/clef" / name)
        assert run and all(len(docs) <= 10 for docs in run.values())
        langs = {d.split("-")[0] for docs in run.values() for d in docs}
        assert langs  # merged from the per-language lists


@pytest.mark.slow
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


@pytest.mark.slow
def test_every_figure_agrees_with_trec_eval(driven):
    """The driver runs stock `python -m pyserini.eval.trec_eval` on every row and says so under the table."""
    root, out = driven
    table = (root / "runs/clef/table2.md").read_text(encoding="utf-8")
    assert "Every figure agrees with `python -m pyserini.eval.trec_eval -c -l 1 -M 10`" in table
    assert "Every figure agrees with" in out


@pytest.mark.slow
def test_the_driver_records_what_made_the_table(driven):
    root, _ = driven
    meta = io.read_json(root / "runs/clef/table2.json")
    assert meta["seed"] == 0 and meta["command"].startswith("python -m pyserini_kdspd.table2 --collections clef,mtrec")
    assert meta["students"] == {} and meta["train_steps"] is None  # --systems bm25: nothing trained
    assert {label: run["sha256"] for label, run in meta["runs"].items()} == \
        {label: io.sha256_file(root / run["file"]) for label, run in meta["runs"].items()}
    assert set(meta["runs"]) == {"SMT + Round Robin", "SMT + Score", "NMT + Round Robin", "NMT + Score"}
    assert set(meta["smt"]["tables"]) == {"de", "fr", "it"}
    assert all(t["entries_sha256"] == entries_sha256(root / t["file"]) for t in meta["smt"]["tables"].values())
    assert meta["runs"]["NMT + Score"]["file"] == "runs/clef/bm25-nmt+score.txt"  # relative: the root can move
    stages = [name for name, _ in io.read_json(root / "runs/clef/stages.json")["runs"][0]["stages"]]
    assert stages[0] == "data: clef, mtrec" and "clef: evaluate" in stages


def dl20_run(hits, reverse=False):
    """A real BM25 run (TREC DL 2020, top 20 of the first 8 queries); ``reverse`` ranks it upside down."""
    run = {}
    for q in hits[:8]:
        docs = q["hits"][:20]
        run[str(docs[0]["qid"])] = {h["docid"]: (-h["score"] if reverse else h["score"]) for h in docs}
    return run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, shared_data):
    """An output root as the driver leaves it (run files, table2.md, table2.json, stages.json, a student's
    folder with its training log), built from real TREC DL 2020 runs and qrels without training anything."""
    root = tmp_path_factory.mktemp("recorded")
    dl20 = shared_data / "trec-dl20"
    hits = json.loads((dl20 / "retrieve_results_dl20.json").read_text(encoding="utf-8"))
    runs_dir = root / "runs" / "lareqa"
    rows = {"mDPR": runs_dir / "mdpr.txt", "KD-SPD": runs_dir / "kdspd.txt"}
    io.write_run(rows["mDPR"], dl20_run(hits), tag="mdpr")
    io.write_run(rows["KD-SPD"], dl20_run(hits, reverse=True), tag="kdspd")
    col = Collection(name="lareqa", corpus_dir=root, by_lang={}, topics=dl20 / "topics.dl20.txt",
                     qrels=dl20 / "qrels.dl20-passage.txt")
    with io.atomic_write(runs_dir / "table2.md") as f:
        f.write(table(col, rows, hits=20) + "\n")
    student = root / "models" / "kdspd"
    student.mkdir(parents=True)
    save_file({"prompts.shared": torch.zeros(2, 3), "gate": torch.tensor([0.001, -0.02, 0.0])},
              str(student / "model.safetensors"))
    io.write_json(student / LOG_NAME, {"complete": True, "budget": "steps", "steps": 1200, "elapsed_seconds": 3300.0,
                                       "seconds_per_step_median": 2.5, "args": {"seed": 3, "max_minutes": None},
                                       "precision": "bf16", "threads": 1, "peak_rss_mb": 7372.8,
                                       "settings": {"student": "spd", "encoder": "multilingual-e5-small",
                                                    "teacher": "multilingual-e5-small", "loss": "mse", "lr": 1e-4,
                                                    "head_lr": 1e-3, "prompt_length": 30, "residual": True},
                                       "dev": [{"step": 0, "results": {}}, {"step": 1200, "results": {
                                           "mean_seen": {"mse": 0.0018294, "p1_en_xx": 0.985, "p1_xx_en": 0.974},
                                           "fi": {"mse": 0.002085, "p1_en_xx": 0.95, "p1_xx_en": 0.925},
                                           "pooled": {"map": 0.9871, "query_map": 0.9634}}}]})
    settings = Settings(root=root, seed=3, train_steps=1200, command="python -m pyserini_kdspd.table2 --seed 3")
    st = Stages()
    for name in ("data: lareqa, clef", "lareqa: evaluate", "clef: evaluate"):
        with st(name):
            pass
    record(col, settings, rows, {"KD-SPD": student}, st, others=["clef"])
    return root, col, rows, settings


README = "# Title\n\nText before.\n\n<!-- table2:lareqa:start -->\n| old | table |\n<!-- table2:lareqa:end -->\n\nAfter.\n"


def test_readme_block_is_rewritten_from_the_records(recorded, tmp_path):
    root = recorded[0]
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    assert main(["--readme", str(readme), "--output-root", str(root)]) == 0  # mtrec, clef: no table, left alone
    text = readme.read_text(encoding="utf-8")
    before, rest = text.split("<!-- table2:lareqa:start -->\n")
    block, after = rest.split("<!-- table2:lareqa:end -->\n")
    assert before == README.split("<!-- table2:lareqa:start -->")[0] and after == "\nAfter.\n"
    assert "| old | table |" not in block
    assert (root / "runs/lareqa/table2.md").read_text(encoding="utf-8").strip() in block
    assert "`python -m pyserini_kdspd.table2 --seed 3` (seed 3, 1200 training steps per student)" in block
    # FLORES dev after training: the training languages' mean, then Finnish (zero-shot), then pooled MAP
    assert ("| KD-SPD | steps | 1200 | 2.75 | 2.50 | 3 | bf16 | 1 | 7.2 | 1.829 | 0.985 | 0.974 | 0.950 "
            "| 0.987 / 0.963 |") in block
    assert ("Trained as: KD-SPD: backbone multilingual-e5-small, teacher multilingual-e5-small, loss `mse`, "
            "lr 0.0001, head-lr 0.001, Adam eps 1e-08, l = 30, document vector: mean pooling + gated decoder output "
            "(residual) "
            "(its gate after training: mean |g| 0.007, largest 0.02).") \
        in block
    assert "| lareqa: evaluate |" in block and "clef: evaluate" not in block
    meta = io.read_json(root / "runs/lareqa/table2.json")
    assert meta["runs"]["KD-SPD"] == {"file": "runs/lareqa/kdspd.txt",
                                      "sha256": io.sha256_file(root / "runs/lareqa/kdspd.txt")}
    assert main(["--readme", str(readme), "--output-root", str(root)]) == 0
    assert readme.read_text(encoding="utf-8") == text  # a second rendering changes nothing


def test_stage_times_keep_the_first_run_until_force(recorded, tmp_path):
    original, col, rows, settings = recorded
    root = shutil.copytree(original, tmp_path / "root")
    rows = {label: root / path.relative_to(original) for label, path in rows.items()}
    settings = dataclasses.replace(settings, root=root)
    stages_file = root / "runs/lareqa/stages.json"
    st = Stages()
    with st("lareqa: evaluate"):
        pass
    record(col, settings, rows, {}, st, others=[])  # a later run, reusing everything
    assert len(io.read_json(stages_file)["runs"]) == 2
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    assert main(["--readme", str(readme), "--output-root", str(root), "--collections", "lareqa"]) == 0
    assert "| stage | first run (s) | latest run (s) |" in readme.read_text(encoding="utf-8")
    record(col, dataclasses.replace(settings, force=True), rows, {}, st, others=[])
    assert len(io.read_json(stages_file)["runs"]) == 1


@pytest.mark.parametrize("readme, message", [
    ("# no markers\n", "has no line <!-- table2:lareqa:start -->"),
    ("<!-- table2:lareqa:start -->\nx\n<!-- table2:lareqa:start -->\n<!-- table2:lareqa:end -->\n",
     "has 2 lines (lines 1, 3) <!-- table2:lareqa:start -->"),
    ("<!-- table2:lareqa:end -->\n<!-- table2:lareqa:start -->\n", ":1: <!-- table2:lareqa:end --> comes before"),
])
def test_readme_without_its_markers_is_an_error(recorded, tmp_path, capsys, readme, message):
    path = tmp_path / "README.md"
    path.write_text(readme, encoding="utf-8")
    assert main(["--readme", str(path), "--output-root", str(recorded[0])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}") and message in err
    assert path.read_text(encoding="utf-8") == readme


def test_readme_needs_the_driver_records(tmp_path, capsys):
    (tmp_path / "runs/lareqa").mkdir(parents=True)
    (tmp_path / "runs/lareqa/table2.md").write_text("| System |\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    assert main(["--readme", str(tmp_path / "README.md"), "--output-root", str(tmp_path)]) == 2
    assert f"error: {tmp_path / 'runs/lareqa/table2.json'}: missing; the driver writes it" in capsys.readouterr().err


@pytest.mark.parametrize("log", [{"args": {"max_minutes": 60.0, "max_steps": None}},  # written before "budget"
                                 {"budget": "minutes", "args": {"max_minutes": 600.0, "max_steps": 3}}])
def test_students_trained_on_minutes_are_refused(tmp_path, log):
    io.write_json(tmp_path / "models/kd-encoder" / LOG_NAME, log)
    with pytest.raises(ValueError, match=r"kd-encoder: its training_log.json records a wall-clock budget .* "
                                         r"pass --force to retrain it with --train-steps 1200"):
        # a missing bitext: should the guard ever let the trainings start, they stop at once with an error
        train_students(Settings(root=tmp_path, bitext=tmp_path / "no-bitext"), Stages())
    assert not list((tmp_path / "models").glob("*.train.log"))  # refused before either training started


def test_default_smt_tables_are_the_same_in_two_fresh_roots(tmp_path, shared_data):
    """eflomal takes no seed; the default aligner (fast_align's model) gives the same table from the same bitext
    every time, and a table another aligner left in the folder is trained again, not reused."""
    from pyserini_kdspd.distill.bitext import read_bitext
    from pyserini_kdspd.search.translate.smt import train

    hashes = []
    bitext = tmp_path / "bitext"
    bitext.mkdir()
    lines = (shared_data / "bitext/en-de.tsv").read_text(encoding="utf-8").splitlines()[:300]
    (bitext / "en-de.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    col = Collection(name="clef", corpus_dir=tmp_path, by_lang={}, topics=tmp_path, qrels=tmp_path)
    tables = []
    for root in (tmp_path / "a", tmp_path / "b"):
        [(_, _, make, source)] = translators(col, Settings(root=root, bitext=bitext, nmt=None))
        if root.name == "b":  # an IBM Model 1 table where the default's belongs
            ibm1 = train(read_bitext(bitext / "en-de.tsv").pairs(), "de", aligner="ibm1")
            ibm1.save(root / "models/smt/en-de.tsv.gz")
        make("de")
        assert source("de") == root / "models/smt/en-de.tsv.gz"
        with gzip.open(source("de"), "rt", encoding="utf-8") as f:
            header, *table_lines = f.read().splitlines()
        assert json.loads(header[2:])["model"] == "fastalign"
        tables.append(table_lines)  # the header also holds the seconds it took
        hashes.append(entries_sha256(source("de")))
    assert len(tables[0]) > 100 and tables[0] == tables[1] and hashes[0] == hashes[1]
    changed = tmp_path / "changed.tsv.gz"
    with gzip.open(changed, "wt", encoding="utf-8") as f:
        f.write("\n".join([header, *tables[0][:-1], "x\ty\t0.5"]) + "\n")
    assert entries_sha256(changed) != hashes[0]
    with gzip.open(changed, "wt", encoding="utf-8") as f:  # the same entries under another header (other seconds)
        f.write("\n".join(['# {"train_seconds": 12345}', *tables[0]]) + "\n")
    assert entries_sha256(changed) == hashes[0]


def test_smt_runs_are_redone_when_their_table_changes(tmp_path, lareqa_slice, bitext_dir):
    """The driver reuses a per-language SMT run only while it is newer than its table: a table that another
    aligner had left, trained again, redoes the run; another aligner's runs are other files."""
    from pyserini_kdspd.distill.bitext import read_bitext
    from pyserini_kdspd.search.translate.smt import train
    from pyserini_kdspd.table2 import bm25_rows

    src, _ = lareqa_slice
    recs = list(io.read_jsonl(src / "corpus/docs.jsonl"))
    by_lang = {}
    for lang in ("de", "en"):
        by_lang[lang] = tmp_path / f"collections/lareqa/by-lang/{lang}"
        io.write_jsonl(by_lang[lang] / "corpus.jsonl", (r for r in recs if r["lang"] == lang))
    col = Collection(name="lareqa", corpus_dir=src / "corpus", by_lang=by_lang, topics=src / "topics.en.tsv",
                     qrels=src / "qrels.txt")
    s = Settings(root=tmp_path, bitext=bitext_dir, threads=1, nmt=None)
    assert set(bm25_rows(col, s, Stages())) == {"SMT + Round Robin", "SMT + Score"}
    run = tmp_path / "runs/lareqa/by-lang/bm25-smt.de.txt"
    made = run.stat().st_mtime_ns
    bm25_rows(col, s, Stages())
    assert run.stat().st_mtime_ns == made  # nothing changed: reused
    table = tmp_path / "models/smt/en-de.tsv.gz"
    train(read_bitext(bitext_dir / "en-de.tsv").pairs(), "de", aligner="ibm1").save(table)
    os.utime(table, ns=(made - 10**9, made - 10**9))  # another aligner's table, older than the run
    bm25_rows(col, s, Stages())
    assert run.stat().st_mtime_ns > made and json.loads(gzip.open(table, "rt").readline()[2:])["model"] == "fastalign"
    rows = bm25_rows(col, dataclasses.replace(s, smt_aligner="ibm1"), Stages())
    assert rows["SMT + Score"] == tmp_path / "runs/lareqa/bm25-smt-ibm1+score.txt"
    assert (tmp_path / "models/smt-ibm1/en-de.tsv.gz").is_file()
    assert (tmp_path / "runs/lareqa/by-lang/bm25-smt-ibm1.de.txt").is_file()


def test_a_model_that_encodes_documents_alike_reuses_the_index(tmp_path, capsys):
    """The offline default's teacher is mDPR's model with the same prefixes: one encoding serves both rows
    (a link, so the 2CR matrix still finds indexes/<collection>/teacher); any difference encodes anew."""
    from pyserini_kdspd.search.dense import DenseModel
    from pyserini_kdspd.table2 import shared_index

    mdpr = DenseModel.from_name("mdpr", "multilingual-e5-small")
    index = tmp_path / "indexes" / "mdpr"
    index.mkdir(parents=True)
    (index / "docid").write_text("d1\n", encoding="utf-8")
    encoded = {index: mdpr}
    stale = tmp_path / "indexes" / "teacher"
    stale.mkdir()  # an earlier run's own teacher index
    teacher = DenseModel.from_name("teacher", "multilingual-e5-small")
    for _ in range(2):  # and again: the link is kept
        assert shared_index(teacher, encoded, stale) == stale
        assert stale.is_symlink() and (stale / "docid").read_text(encoding="utf-8") == "d1\n"
        assert os.readlink(stale) == "mdpr"  # relative: the output root can move
    assert "teacher encodes documents exactly as mdpr" in capsys.readouterr().out
    assert shared_index(DenseModel.from_name("teacher", "all-MiniLM-L6-v2"), encoded, tmp_path / "t2") is None
    other_prefix = dataclasses.replace(teacher, passage_prefix=None)
    assert shared_index(other_prefix, encoded, tmp_path / "t3") is None and not (tmp_path / "t3").exists()
