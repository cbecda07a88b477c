"""``python -m pyserini_kdspd.sweep``: every setting trained the same way, chosen on FLORES dev only."""
from __future__ import annotations

import json
import subprocess

import pytest

from pyserini_kdspd.sweep import choose, grid, name


def row(student, lr, mse, p1):
    return {"setting": {"student": student, "lr": lr, "head_lr": lr}, "mse": mse, "p1_en_xx": p1}


def test_grid_gives_each_student_its_own_axes():
    settings = grid([2e-5], [1e-3, 3e-3], [1e-5, 1e-4], [1e-8])
    assert [name(s) for s in settings] == ["spd-lr2e-05-head0.001", "spd-lr2e-05-head0.003", "mean-lr1e-05",
                                           "mean-lr0.0001"]
    assert all(s["head_lr"] == s["lr"] for s in settings if s["student"] == "mean")
    # AdamW's eps: one more axis for both students; torch's default keeps the folder names of earlier sweeps
    settings = grid([2e-5], [1e-3], [1e-4], [1e-8, 1e-12])
    assert [name(s) for s in settings] == ["spd-lr2e-05-head0.001", "spd-lr2e-05-head0.001-eps1e-12",
                                           "mean-lr0.0001", "mean-lr0.0001-eps1e-12"]


def test_choose_takes_the_lowest_dev_mse_per_student_and_p1_breaks_ties():
    rows = [row("spd", 1, 3.0, 0.9), row("spd", 2, 2.0, 0.5), row("spd", 3, 2.0, 0.6), row("mean", 4, 5.0, 0.1),
            row("mean", 5, 4.0, 0.0)]
    best = choose(rows)
    assert best["spd"] is rows[2] and best["mean"] is rows[4]


@pytest.mark.slow
def test_sweep_trains_every_setting_alike_and_reuses_them(python, bitext_dir, shared_data, tmp_path):
    cmd = [python, "-m", "pyserini_kdspd.sweep", "--steps", "2", "--spd-lr", "2e-5", "--spd-head-lr", "1e-3", "1e-2",
           "--mean-lr", "1e-4", "--adam-eps", "1e-12", "--encoder", "all-MiniLM-L6-v2", "--dev-sentences", "10",
           "--models", str(tmp_path / "models"), "--output", str(tmp_path / "runs"), "--",
           "--bitext", str(bitext_dir), "--decoder-layers", "1", "--prompt-length", "4", "--max-length", "32",
           "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    logs = {r["name"]: json.loads((tmp_path / "models" / r["name"] / "training_log.json").read_text())
            for r in result["rows"]}
    assert sorted(logs) == ["mean-lr0.0001-eps1e-12", "spd-lr2e-05-head0.001-eps1e-12",
                            "spd-lr2e-05-head0.01-eps1e-12"]
    for n, log in logs.items():  # the same budget, bitext, seed and dev set for every setting
        assert log["steps"] == 2 and log["settings"]["seed"] == 0 and log["dev"][-1]["step"] == 2
        # the sweep cached every target before the first setting started
        assert log["targets_precomputed"] == 0 and log["targets_computed"] == 0
        assert log["settings"]["lr"] == next(r for r in result["rows"] if r["name"] == n)["setting"]["lr"]
        assert log["settings"]["adam_eps"] == 1e-12  # recorded (only off torch's default)
    spd = {n: logs[n]["dev"][-1]["results"]["mean_seen"]["mse"] for n in logs if n.startswith("spd")}
    assert result["chosen"]["spd"]["head_lr"] == (1e-3 if spd["spd-lr2e-05-head0.001-eps1e-12"]
                                                  < spd["spd-lr2e-05-head0.01-eps1e-12"]
                                                  else 1e-2)
    table = (tmp_path / "runs" / "sweep.md").read_text()
    assert table.count("**KD-SPD**") == 1 and table.count("**KD-Encoder**") == 1
    stamps = {n: (tmp_path / "models" / n / "training_log.json").stat().st_mtime_ns for n in logs}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = tmp_path / "models" / "mean-lr0.0001-eps1e-12.train.log"
    assert again.returncode == 0 and "reusing it" in log.read_text()
    assert stamps == {n: (tmp_path / "models" / n / "training_log.json").stat().st_mtime_ns for n in logs}
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- sweep:start -->\nSTALE BLOCK\n<!-- sweep:end -->\ntail\n", encoding="utf-8")
    assert subprocess.run([python, "-m", "pyserini_kdspd.sweep", "--readme", str(readme), "--output",
                           str(tmp_path / "runs")], capture_output=True, text=True).returncode == 0
    text = readme.read_text(encoding="utf-8")
    assert "STALE BLOCK" not in text and text.endswith("<!-- sweep:end -->\ntail\n") and table.strip() in text
    assert f"KD-Encoder `--lr {result['chosen']['mean']['lr']:g}` `--adam-eps 1e-12`" in text
