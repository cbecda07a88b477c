"""``python -m pyserini_kdspd.train`` as a user meets it: flags and paths checked before any model
loads, a rerun that reuses a folder only when every weight-changing setting matches, SIGTERM that
stops with a checkpoint ``--resume`` continues, and a training process that never starts a JVM.

Tiny real trainings (MiniLM as teacher and backbone, one decoder layer, l = 4) on a real bitext slice.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from pyserini_kdspd.distill import is_complete, latest_checkpoint
from pyserini_kdspd.train import LEARNING_RATES, main

# Runs train.main(argv) for each argv of a JSON list, then says which heavy modules the process imported.
RUN_MAIN = """
import contextlib, io, json, sys
from pyserini_kdspd.train import LEARNING_RATES, main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
    results.append([status, err.getvalue()])
print(json.dumps({"results": results, "modules": sorted(
    m for m in sys.modules if m.split(".")[0] in ("transformers", "pyserini", "jnius", "jnius_config"))}))
"""


def tiny(bitext, out, cache) -> list[str]:
    return ["--student", "spd", "--encoder", "all-MiniLM-L6-v2", "--teacher", "all-MiniLM-L6-v2",
            "--bitext", str(bitext), "--output", str(out), "--batch-per-language", "2", "--decoder-layers", "1",
            "--prompt-length", "4", "--max-length", "32", "--no-dev", "--cache-dir", str(cache), "--threads", "1",
            "--quiet"]


def run_main(python, *argvs, cwd=None, timeout=300) -> dict:
    proc = subprocess.run([python, "-c", RUN_MAIN, json.dumps(argvs)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def trained(python, bitext_dir, tmp_path_factory):
    """A complete 2-step folder and the flags that made it."""
    root = tmp_path_factory.mktemp("trained")
    argv = tiny(bitext_dir, root / "student", root / "cache") + ["--max-steps", "2"]
    proc = subprocess.run([python, "-m", "pyserini_kdspd.train", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "student", argv


def test_flags_and_paths_fail_in_a_sentence_before_any_model_loads(python, bitext_dir, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    qa = tmp_path / "qa.tsv"
    qa.write_text("what is a cat?\tA small mammal.\nwhat is a dog?\n", encoding="utf-8")
    base = tiny(bitext_dir, tmp_path / "out", tmp_path / "cache") + ["--max-steps", "2"]
    with_dev = [a for a in base if a != "--no-dev"]
    cases = [
        ("argument --max-steps: must be > 0, got 0", base + ["--max-steps", "0"]),
        ("argument --max-minutes: must be > 0, got 0", base + ["--max-minutes", "0"]),
        ("argument --batch-per-language: must be > 0, got 0", base + ["--batch-per-language", "0"]),
        (f"--output {afile}: {afile} is a file", base + ["--output", str(afile)]),
        (f"--output {afile / 'sub'}: {afile} is a file", base + ["--output", str(afile / "sub")]),
        # a --data-dir that does not exist is an error, even where --bitext and --no-dev leave it unused
        ("data folder /nonexistent (from --data-dir) does not exist", base + ["--data-dir", "/nonexistent"]),
        ("data folder /nonexistent (from --data-dir) does not exist",
         [a for a in base if a not in ("--bitext", str(bitext_dir))] + ["--data-dir", "/nonexistent"]),
        ("no en-XX.tsv for language(s) xx", base + ["--languages", "de", "xx"]),
        ("/nonexistent: no FLORES-200 devtest folder", with_dev + ["--flores", "/nonexistent"]),
        ("argument --loss: unknown objective 'foo'", base + ["--loss", "mse+foo"]),
        ("argument --loss: cl-rekd-dq qa=/nonexistent.tsv: no such file",
         base + ["--loss", "mse+cl-rekd-dq:qa=/nonexistent.tsv"]),
        (f"{qa}:2: expected 'question<TAB>answer'", base + ["--loss", f"mse+cl-rekd-dq:qa={qa}"]),
    ]
    got = run_main(python, *(argv for _, argv in cases))
    for (expected, _), (status, stderr) in zip(cases, got["results"]):
        assert status == 2 and expected in stderr and "Traceback" not in stderr, (expected, stderr)
    assert not (tmp_path / "out").exists()
    assert got["modules"] == []  # refused before transformers (hence any model) was imported


def test_rerun_reuses_only_a_run_with_the_same_settings(trained, bitext_dir, tmp_path, capsys):
    out, argv = trained
    log = out / "training_log.json"
    before = log.stat().st_mtime_ns
    assert main(argv) == 0 and "reusing it" in capsys.readouterr().out

    def refused(*changes, drop=()):
        status = main([a for a in argv if a not in drop] + list(changes))
        return status, capsys.readouterr().err

    for changes, expected in [
        (["--student", "mean"], ["--student: spd -> mean", "--loss: mse -> kd-encoder"]),
        (["--languages", "de"], ["--languages: de fr -> de"]),
        (["--max-pairs-per-language", "10"], ["bitext: content or sampled pairs of en-de.tsv, en-fr.tsv"]),
        (["--lr", "3e-4", "--seed", "7"], [f"--lr: {LEARNING_RATES['spd']['lr']:g} -> 0.0003", "--seed: 42 -> 7"]),
        (["--precision", "fp32"], ["--precision: auto -> fp32"]),
        (["--max-steps", "3"], ["--max-steps: 2 -> 3", "--resume extends it"]),
        (["--loss", "score-kd:0.5+mse"], ["--loss: mse -> score-kd:0.5+mse"]),
    ]:
        status, err = refused(*changes)
        assert status == 2, changes
        for line in expected:
            assert line in err, (changes, err)
        assert "--force" in err and "another --output" in err
    # another bitext folder with other content
    other = tmp_path / "bitext"
    other.mkdir()
    lines = (bitext_dir / "en-de.tsv").read_text(encoding="utf-8").splitlines()
    (other / "en-de.tsv").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    (other / "en-fr.tsv").write_text((bitext_dir / "en-fr.tsv").read_text(encoding="utf-8"), encoding="utf-8")
    status, err = refused("--bitext", str(other))
    assert status == 2 and "en-de.tsv" in err and "en-fr.tsv" not in err
    # --resume with a budget the run already reached reuses it; nothing above touched the folder
    assert main(argv + ["--resume", "--max-steps", "1"]) == 0 and "reusing it" in capsys.readouterr().out
    assert is_complete(out) and log.stat().st_mtime_ns == before
    # a run whose teacher targets were batched another way (before runtime.EXACT_ROWS) is not this run
    recorded = json.loads(log.read_text(encoding="utf-8"))
    del recorded["settings"]["teacher_batches"]
    log.write_text(json.dumps(recorded), encoding="utf-8")
    status, err = refused()
    assert status == 2 and "--teacher-batches: (not set) -> 8 rows of one length each" in err, err


def test_a_minutes_run_is_never_taken_for_a_steps_budget(bitext_dir, tmp_path, capsys):
    argv = tiny(bitext_dir, tmp_path / "student", tmp_path / "cache")
    assert main(argv + ["--max-steps", "1", "--max-minutes", "5"]) == 0
    capsys.readouterr()
    status = main(argv + ["--max-steps", "1", "--resume"])
    err = capsys.readouterr().err
    assert status == 2 and "wall-clock budget" in err and "--force" in err
    assert main(argv + ["--max-steps", "1", "--max-minutes", "5"]) == 0 and "reusing it" in capsys.readouterr().out


def test_targets_only_caches_every_target_the_budget_needs(bitext_dir, tmp_path, capsys):
    argv = tiny(bitext_dir, tmp_path / "student", tmp_path / "cache") + ["--max-steps", "3"]
    assert main(argv + ["--targets-only"]) == 0
    assert "cached" in capsys.readouterr().out and not (tmp_path / "student").exists()
    assert main(argv + ["--no-precompute-targets"]) == 0
    log = json.loads((tmp_path / "student" / "training_log.json").read_text())
    assert log["steps"] == 3 and log["targets_computed"] == 0


@pytest.mark.slow
def test_sigterm_stops_after_a_step_with_a_checkpoint_and_resume_finishes_without_a_jvm(
        python, bitext_dir, tmp_path):
    out = tmp_path / "student"
    argv = tiny(bitext_dir, out, tmp_path / "cache") + ["--checkpoint-every", "2"]
    proc = subprocess.Popen([python, "-m", "pyserini_kdspd.train", *argv, "--max-steps", "500"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(out) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it was signalled"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM after step" in stderr and "--resume continues it" in stderr
    assert "Traceback" not in stderr
    assert not list(tmp_path.glob("hs_err_pid*.log"))
    assert not is_complete(out) and not (out / "kdspd_config.json").exists()
    step = int(latest_checkpoint(out).name.split("-")[1])
    log = json.loads((out / "training_log.json").read_text())
    assert step >= 2 and not log["complete"] and len(log["losses"]) == step

    # a plain rerun refuses to start over; --resume continues, in a process that imports neither Pyserini nor jnius
    got = run_main(python, argv + ["--max-steps", "500"], argv + ["--max-steps", str(step + 2), "--resume"],
                   cwd=tmp_path)
    (refused, err), (resumed, resumed_err) = got["results"]
    assert refused == 2 and "holds an interrupted run" in err and "--resume continues it" in err
    assert resumed == 0, resumed_err[-3000:]
    assert not [m for m in got["modules"] if not m.startswith("transformers")], got["modules"]
    log = json.loads((out / "training_log.json").read_text())
    assert is_complete(out) and log["steps"] == step + 2 and log["resumed_from"] == [step]
    assert [s for s, _ in log["losses"]] == list(range(1, step + 3))


def test_a_full_prompt_needs_a_student_with_prompts(tmp_path, capsys):
    """``--prompt-kind full`` (the decomposition ablation) on KD-Encoder, which has no prompts: refused at parsing."""
    out = tmp_path / "student"
    with pytest.raises(SystemExit) as err:
        main(["--student", "mean", "--prompt-kind", "full", "--output", str(out), "--max-steps", "1"])
    assert err.value.code == 2 and "--prompt-kind full: --student mean (KD-Encoder) has no prompts" in \
        capsys.readouterr().err
    assert not out.exists()


def test_run_jobs_shows_each_progress_line_once_and_names_the_failed_log(tmp_path, capsys):
    """The drivers' side-by-side runner: a quiet job whose last line does not change is not repeated every
    poll, every job's output lands in its own log, and a failure raises with that log's path."""
    import sys

    from pyserini_kdspd._cli import run_jobs
    quiet = [sys.executable, "-c", "import time; print('dev @ step 0', flush=True); time.sleep(2.5)"]
    jobs = [("a", quiet, tmp_path / "a.log"), ("b", [sys.executable, "-c", "print('x'); raise SystemExit(3)"],
                                               tmp_path / "b.log")]
    with pytest.raises(RuntimeError, match=r"b \(exit 3; see .*b\.log\)"):
        run_jobs(jobs, width=2, tag="t", every=0.2)
    out = capsys.readouterr().out
    assert out.count("[t] a: dev @ step 0") == 1
    assert "dev @ step 0" in (tmp_path / "a.log").read_text() and "x" in (tmp_path / "b.log").read_text()
