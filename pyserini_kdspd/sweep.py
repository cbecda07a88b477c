"""Learning-rate sweep for both students, scored on FLORES-200 dev only (never on a test collection).

    python -m pyserini_kdspd.sweep                  # the grid below, 150 steps per setting
    python -m pyserini_kdspd.sweep --steps 300 --spd-lr 2e-5 --spd-head-lr 1e-3 3e-3 --mean-lr 5e-5 1e-4
    python -m pyserini_kdspd.sweep --adam-eps 1e-8 1e-12      # AdamW's eps as a third axis, for both students

Issue 9's procedure, the same for KD-SPD and KD-Encoder: every setting trains for the same
number of steps on the same bitext, batches, teacher, seed and precision; each student is
scored on the FLORES-200 devtest sentences by embedding MSE to the teacher's English vector,
averaged over the training languages (Finnish, unseen, is reported but never selects), and
the setting with the lowest MSE is chosen (parallel-sentence P@1 breaks ties and is reported).
KD-SPD has fresh prompts and decoder beside a pretrained encoder, so its grid is lr x head-lr;
KD-Encoder has no fresh parameters, so its lr axis gets as many values as KD-SPD's grid has
settings. ``--adam-eps`` adds AdamW's eps as an axis shared by both students (the paper's MSE has gradients
near torch's default eps). Students go to ``models/sweep/<name>/`` (a rerun reuses finished ones);
the table goes to ``runs/sweep/sweep.md`` and ``sweep.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import io
from ._cli import NATURAL, POSITIVE, POSITIVE_INT, add_driver_flags, run_jobs, train_passthrough
from .distill.dev import SELECT_BY, dev_summary
from .train import TORCH_ADAM_EPS

# The grid of the last sweep (README), under the default teacher and document vector.
SPD_LR = (5e-5, 1e-4)
SPD_HEAD_LR = (3e-3,)
MEAN_LR = (1e-4, 2e-4)
ADAM_EPS = (TORCH_ADAM_EPS, 1e-12)


def grid(spd_lr, spd_head_lr, mean_lr, adam_eps) -> list[dict]:
    """One dict of train flags per setting, KD-SPD first."""
    out = [{"student": "spd", "lr": lr, "head_lr": h, "adam_eps": e}
           for e in adam_eps for lr in spd_lr for h in spd_head_lr]
    out += [{"student": "mean", "lr": lr, "head_lr": lr, "adam_eps": e}  # no fresh parameters: one lr
            for e in adam_eps for lr in mean_lr]
    return out


def name(setting: dict) -> str:
    """The setting's folder under --models (torch's eps unnamed: folders of sweeps before the eps axis match)."""
    base = f"{setting['student']}-lr{setting['lr']:g}"
    base += f"-head{setting['head_lr']:g}" if setting["student"] != "mean" else ""
    eps = setting.get("adam_eps", TORCH_ADAM_EPS)
    return base + (f"-eps{eps:g}" if eps != TORCH_ADAM_EPS else "")


def choose(rows: list[dict]) -> dict[str, dict]:
    """Per student kind, the row with the lowest dev MSE (higher en->xx P@1 breaks ties)."""
    best: dict[str, dict] = {}
    for row in rows:
        key = (row["mse"], -row["p1_en_xx"])
        kind = row["setting"]["student"]
        if kind not in best or key < (best[kind]["mse"], -best[kind]["p1_en_xx"]):
            best[kind] = row
    return best


def markdown(rows: list[dict], best: dict[str, dict], steps: int, dev_sentences: int) -> str:
    label = {"spd": "KD-SPD", "mean": "KD-Encoder"}
    lines = [f"FLORES-200 devtest (first {dev_sentences} sentences per language) after {steps} steps; "
             f"MSE and P@1 averaged over the 14 training languages; Finnish (zero-shot) beside them, never "
             f"used to select. **Bold**: chosen (lowest MSE).", "",
             "| student | lr | head-lr | Adam eps | MSE (x1e3) | P@1 en→xx | P@1 xx→en | fi MSE (x1e3) "
             "| fi P@1 en→xx |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        st = row["setting"]
        chosen = best[st["student"]] is row
        b = "**" if chosen else ""
        head = f"{st['head_lr']:g}" if st["student"] != "mean" else "–"
        fi = f"{row['mse_fi'] * 1e3:.3f}" if row["mse_fi"] is not None else "–"
        fi_p = f"{row['p1_en_xx_fi']:.3f}" if row["p1_en_xx_fi"] is not None else "–"
        eps = st.get("adam_eps", TORCH_ADAM_EPS)
        lines.append(f"| {b}{label[st['student']]}{b} | {b}{st['lr']:g}{b} | {b}{head}{b} | {b}{eps:g}{b} | "
                     f"{b}{row['mse'] * 1e3:.4f}{b} | {row['p1_en_xx']:.3f} | {row['p1_xx_en']:.3f} | {fi} | "
                     f"{fi_p} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from .models import DEFAULT_BACKBONE, DEFAULT_TEACHER
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=POSITIVE_INT, default=150, help="training steps per setting")
    p.add_argument("--spd-lr", type=POSITIVE, nargs="+", default=list(SPD_LR), help="KD-SPD encoder lr")
    p.add_argument("--spd-head-lr", type=POSITIVE, nargs="+", default=list(SPD_HEAD_LR),
                   help="KD-SPD prompts/decoder lr")
    p.add_argument("--mean-lr", type=POSITIVE, nargs="+", default=list(MEAN_LR), help="KD-Encoder lr")
    p.add_argument("--adam-eps", type=POSITIVE, nargs="+", default=list(ADAM_EPS), help="AdamW eps (both students)")
    p.add_argument("--encoder", default=DEFAULT_BACKBONE)
    p.add_argument("--teacher", default=DEFAULT_TEACHER)
    p.add_argument("--seed", type=int, default=0, help="the driver's")
    p.add_argument("--dev-sentences", type=POSITIVE_INT, default=300, help="first N FLORES devtest lines")
    p.add_argument("--data-dir", default=None, help="shared data folder (bitext/, flores200/)")
    p.add_argument("--models", type=Path, default=Path("models/sweep"), help="where the students go")
    p.add_argument("--output", type=Path, default=Path("runs/sweep"), help="where sweep.md / sweep.json go")
    p.add_argument("--threads", type=NATURAL, default=2, help="CPU cores: settings run this many at a time, "
                                                              "one thread each")
    add_driver_flags(p, "sweep", "--output's sweep.json / sweep.md")
    return p


def readme_block(folder: Path) -> str:
    """The README block: the command that made the sweep, its table, and what it chose."""
    meta = io.read_json(folder / "sweep.json")
    chosen = meta["chosen"]
    lines = ["<!-- written by `python -m pyserini_kdspd.sweep --readme` from runs/sweep/; edits here are "
             "overwritten -->", f"`{meta['command']}` (seed {meta['seed']}, teacher {meta['teacher']}, "
             f"student backbone {meta['encoder']}):", "", (folder / "sweep.md").read_text(encoding="utf-8").strip(),
             "", "Chosen, and made the defaults of `python -m pyserini_kdspd.train`: "
             + "; ".join(f"{'KD-SPD' if k == 'spd' else 'KD-Encoder'} `--lr {v['lr']:g}`"
                         + (f" `--head-lr {v['head_lr']:g}`" if k != "mean" else "")
                         + f" `--adam-eps {v.get('adam_eps', TORCH_ADAM_EPS):g}`" for k, v in chosen.items())
             + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.readme is not None:
        from ._cli import run_cli
        return run_cli(lambda: io.replace_marked_block(args.readme, "sweep", readme_block(args.output)))
    settings = grid(args.spd_lr, args.spd_head_lr, args.mean_lr, args.adam_eps)
    common = [sys.executable, "-m", "pyserini_kdspd.train", "--encoder", args.encoder, "--teacher", args.teacher,
              "--max-steps", str(args.steps), "--seed", str(args.seed), "--dev-sentences", str(args.dev_sentences),
              "--quiet"] + (["--data-dir", args.data_dir] if args.data_dir else []) \
        + train_passthrough(args)
    import subprocess
    subprocess.run(common + ["--output", str(args.models / "targets"), "--targets-only",
                             "--threads", str(max(1, args.threads))], check=True)
    jobs = []
    for st in settings:
        out = args.models / name(st)
        cmd = common + ["--student", st["student"], "--lr", f"{st['lr']:g}", "--head-lr", f"{st['head_lr']:g}",
                        "--adam-eps", f"{st['adam_eps']:g}",
                        "--output", str(out), "--threads", "1", "--resume"]
        jobs.append((name(st), cmd, out.parent / f"{out.name}.train.log"))
    run_jobs(jobs, width=max(1, args.threads), tag="sweep")
    rows = []
    for st in settings:
        log = io.read_json(args.models / name(st) / "training_log.json")
        rows.append({"setting": st, "name": name(st), **dev_summary(log)})
    best = choose(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    io.write_json(args.output / "sweep.json", {
        "command": "python -m pyserini_kdspd.sweep " + " ".join(argv if argv is not None else sys.argv[1:]),
        "steps": args.steps, "seed": args.seed, "dev_sentences": args.dev_sentences, "select_by": SELECT_BY,
        "encoder": args.encoder, "teacher": args.teacher, "rows": rows,
        "chosen": {kind: row["setting"] for kind, row in best.items()}})
    table = markdown(rows, best, args.steps, args.dev_sentences)
    (args.output / "sweep.md").write_text(table, encoding="utf-8")
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
