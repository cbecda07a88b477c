"""The regression matrix (``python -m pyserini_kdspd.reproduce``) against a driver root made by the driver's own
functions on a real LAReQA slice (German and English; BM25 with SMT and human query translation, fused, and
the default teacher (multilingual-e5-small, its `query: ` side) as a dense row), checked with the packaged matrix's own conditions.

Expected scores come from ``--write-expected`` (the driver's runs), never from the test; remaking the runs
must then give [OK] everywhere and byte-identical run files, a score moved beyond its tolerance [FAIL] and
exit 1, a missing index the driver command that makes it, and ``--dry-run`` nothing at all.
"""
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pyserini_kdspd import io, matrix
from pyserini_kdspd.reproduce import main

CHEAP = ["bm25-human-rr", "bm25-human-score", "teacher"]  # one BM25 + fusion pair and one dense row


def verdicts(out: str) -> list[str]:
    """The [OK] / [FAIL] of every metric line (not of the summary, which counts them)."""
    return re.findall(r"(?m)^    \S+\s*: \d\.\d{4} \[(OK|FAIL)\]", out)


def slice_matrix(folder: Path, languages=("de", "en")) -> Path:
    """The packaged matrix, unchanged but for its languages (the slice has German and English only)."""
    text = matrix.default_yaml().read_text(encoding="utf-8")
    text = re.sub(r"(?m)^languages: .*$", f"languages: [{', '.join(languages)}]", text)
    out = folder / "lareqa.yaml"
    out.write_text(text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory, lareqa_slice, bitext_dir):
    """An output root as the Table 2 driver leaves it, made by the driver's own stages (bm25_rows; the dense
    rows' encode_corpus + search; record), in its layout: collections/, topics/, qrels/, indexes/, runs/."""
    from pyserini_kdspd.search.dense import DenseModel, encode_corpus, search
    from pyserini_kdspd.table2 import Collection, Settings, Stages, bm25_rows, record

    src, _ = lareqa_slice
    root = tmp_path_factory.mktemp("driver")
    recs = list(io.read_jsonl(src / "corpus" / "docs.jsonl"))
    io.write_jsonl(root / "collections/lareqa/corpus/corpus.jsonl", recs)
    by_lang = {}
    for lang in ("de", "en"):
        by_lang[lang] = root / f"collections/lareqa/by-lang/{lang}"
        io.write_jsonl(by_lang[lang] / "corpus.jsonl", (r for r in recs if r["lang"] == lang))
        (root / "topics").mkdir(exist_ok=True)
        shutil.copy(src / f"topics.{lang}.tsv", root / f"topics/lareqa.{lang}.tsv")
    (root / "qrels").mkdir()
    shutil.copy(src / "qrels.txt", root / "qrels/lareqa.txt")
    col = Collection(name="lareqa", corpus_dir=root / "collections/lareqa/corpus", by_lang=by_lang,
                     topics=root / "topics/lareqa.en.tsv", qrels=root / "qrels/lareqa.txt",
                     translations={"de": root / "topics/lareqa.de.tsv"}, parallel=True)
    s = Settings(root=root, bitext=bitext_dir, threads=1, command="python -m pyserini_kdspd.table2 (test slice)")
    st = Stages()
    rows = bm25_rows(col, s, st)
    teacher = DenseModel.from_name("teacher", s.teacher)
    index = encode_corpus(teacher, col.corpus_dir, root / "indexes/lareqa" / teacher.name)
    rows["Teacher (English only)"] = search(teacher, index, col.topics, root / "runs/lareqa/teacher.txt",
                                            hits=s.hits, threads=s.threads)
    record(col, s, rows, {}, st, others=[])
    return root


@pytest.fixture(scope="module")
def written(driver_root, tmp_path_factory):
    """The slice's matrix after ``--write-expected`` (the original kept beside it)."""
    folder = tmp_path_factory.mktemp("matrix")
    path = slice_matrix(folder)
    shutil.copy(path, folder / "before.yaml")
    assert main(["--yaml", str(path), "--root", str(driver_root), "--write-expected"]) == 0
    return path


@pytest.mark.slow
def test_write_expected_takes_the_driver_runs_scores_and_keeps_the_rest(driver_root, written):
    from pyserini_kdspd.evaluate import evaluate

    m = matrix.load(written)
    record = io.read_json(driver_root / "runs/lareqa/table2.json")
    for c in m.conditions:
        entry = record["runs"].get(c.source_row)
        if entry is None:  # no mDPR, students nor NMT on this root: nothing to expect
            assert c.expected is None, c.name
            continue
        ev = evaluate(str(driver_root / entry["file"]), str(driver_root / "qrels/lareqa.txt"), depth=100)
        assert c.expected == {k: round(ev[k], 4) for k in m.metrics}, c.name
    assert {"bm25-smt-rr", "bm25-human-score", "teacher"} <= {c.name for c in m.conditions if c.expected}
    assert m.driver["command"] == record["command"] and m.driver["seed"] == 0 and m.driver["threads"] == 1
    assert m.machine == record["cpu"]
    before = (written.parent / "before.yaml").read_text(encoding="utf-8").splitlines()
    after = written.read_text(encoding="utf-8").splitlines()
    changed = [b for b, a in zip(before, after, strict=True) if a != b]  # same number of lines
    assert changed and all(re.match(r"^(driver|machine):|^\s+expected:", line) for line in changed)


@pytest.mark.slow
def test_remade_runs_are_ok_and_identical(driver_root, written, capsys):
    args = ["--yaml", str(written), "--root", str(driver_root)]
    for name in CHEAP:
        args += ["--condition", name]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert verdicts(out) == ["OK"] * 4 * len(CHEAP) and "[FAIL]" not in out.replace("0 [FAIL]", "")
    assert out.count("[SAME]") == len(CHEAP)
    assert f"byte-identical to the driver's: {len(CHEAP)} of {len(CHEAP)}; failed conditions: none" in out
    for name in ("bm25-human+rr.txt", "bm25-human+score.txt", "teacher.txt", "by-lang/bm25-human/de.txt"):
        assert (driver_root / "runs/lareqa/2cr" / name).is_file()
    # the second time reuses every run (they are newer than the indexes) and still checks them
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "running:" not in out and out.count("reusing") == 7 and verdicts(out) == ["OK"] * 4 * len(CHEAP)


@pytest.mark.slow
def test_a_score_beyond_its_tolerance_fails(driver_root, written, tmp_path, capsys):
    main(["--yaml", str(written), "--root", str(driver_root), "--condition", "bm25-human-rr",
          "--condition", "teacher"])  # the runs exist after this whatever the test order
    capsys.readouterr()
    data = yaml.safe_load(written.read_text(encoding="utf-8"))
    expected = {c["name"]: c["expected"] for c in data["conditions"]}
    moved = dict(expected["bm25-human-rr"], map=round(expected["bm25-human-rr"]["map"] + 0.0001, 4))  # tolerance 0
    inside = dict(expected["teacher"], recip_rank=round(expected["teacher"]["recip_rank"] - 0.0005, 4))  # 0.001
    new = {"bm25-human-rr": moved, "teacher": inside}
    lines, current = written.read_text(encoding="utf-8").splitlines(keepends=True), None
    for i, line in enumerate(lines):  # the expected line of each of the two conditions, nothing else
        if line.startswith("  - name: "):
            current = line.split(":", 1)[1].strip()
        elif current in new and line.startswith("    expected: "):
            lines[i] = f"    expected: {matrix._flow(new.pop(current))}\n"
    assert not new
    altered = tmp_path / "altered.yaml"
    altered.write_text("".join(lines), encoding="utf-8")
    code = main(["--yaml", str(altered), "--root", str(driver_root), "--skip-run", "--condition", "bm25-human-rr",
                 "--condition", "teacher"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(rf"MAP\s*: {expected['bm25-human-rr']['map']:.4f} \[FAIL\] expected {moved['map']:.4f}, "
                     rf"tolerance 0\n", out)
    assert re.search(rf"MRR\s*: {expected['teacher']['recip_rank']:.4f} \[OK\] expected "
                     rf"{inside['recip_rank']:.4f}, tolerance 0.001\n", out)
    assert "failed conditions: bm25-human-rr (" in out


def test_a_missing_index_names_the_driver_command(tmp_path, capsys):
    code = main(["--root", str(tmp_path), "--condition", "teacher", "--condition", "bm25-smt-rr"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"\[FAIL\] missing indexes/lareqa/teacher, .*`python -m pyserini_kdspd.table2 --systems dense`",
                     out)
    assert "models/smt/en-ar.tsv.gz" in out and "models/smt/en-en.tsv.gz" not in out  # $target: not English
    assert "`python -m pyserini_kdspd.table2 --systems bm25`" in out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    path = slice_matrix(tmp_path / "m")
    root = tmp_path / "root"
    root.mkdir()
    assert main(["--yaml", str(path), "--root", str(root), "--all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert list(root.iterdir()) == []
    assert "--output runs/lareqa/2cr/by-lang/bm25-human/de.txt" in out and "--hits 100" in out
    assert "--runs runs/lareqa/2cr/by-lang/bm25-human/*.txt \\\n  --method minmax" in out
    assert out.count("python -m pyserini_kdspd.search.bm25 search") == 2 * 4  # 2 languages, 4 BM25 conditions
    assert "[OK]" not in out and "dry run: 13 conditions, nothing run" in out


def test_the_packaged_matrix_covers_the_driver_rows():
    from pyserini_kdspd.table2 import ROW_ORDER

    m = matrix.load(matrix.default_yaml())
    rows = {c.row for c in m.conditions if c.row}
    assert rows == {r for r in ROW_ORDER if not r.startswith("NMT")} | {"Teacher (English only)"}
    for c in m.conditions:  # every placeholder fills, every command says what it writes
        for cmd in matrix.commands(m, c):
            assert cmd.creates and "$" not in cmd.run.replace("$(python", "")
        assert matrix.output_of(m, c).startswith("runs/lareqa/2cr/")
