"""The paper's Table 5 on this machine: KD-SPD and KD-Encoder distilled from each English teacher.

    python -m pyserini_kdspd.teachers                  # the three offline teachers, 300 steps per student
    python -m pyserini_kdspd.teachers --teacher all-MiniLM-L6-v2 multilingual-e5-small --train-steps 1200

For every teacher: its English-only ceiling (:mod:`.ceiling`); the students (KD-Encoder, KD-SPD, and KD-SPD
with the other document vector of ``train --residual``) trained for the same
steps with the same seed, bitext, backbone and the swept learning rates (side by side, the
teacher's targets computed once); their FLORES-200 dev figures (the training log's last
evaluation); and their LAReQA XQuAD-R figures (stock ``pyserini.encode`` + ``pyserini.search.faiss``,
English questions against all 13,014 sentences, top 100). The default teacher is the one whose
KD-SPD has the best FLORES dev pooled MAP (the teacher's English sentences, through its query encoder, as
queries against the student's vectors of English and every training language in one pool: the task, on dev
data); the
dev MSE is not comparable across teachers (each has its own space), P@1 within one language is
blind to one language sitting closer to the teacher than another, and LAReQA never chooses. Students go to
``models/teachers/<teacher>/``, runs and indexes under ``runs/teachers/`` and ``indexes/teachers/``,
the table to ``runs/teachers/table5.md`` and ``table5.json`` (``--readme`` copies it into the README).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import io
from ._cli import NATURAL, POSITIVE_INT, add_driver_flags, run_jobs, train_passthrough
from .ceiling import slug
from .distill.dev import dev_summary
from .distill.trainer import LOG_NAME
from .train import RESIDUAL, other_vector

TEACHERS = ("all-MiniLM-L6-v2", "multilingual-e5-small", "all-mpnet-base-v2")
# label, train --student, folder, extra train flags. KD-SPD is train's default (train.RESIDUAL); the third row is
# KD-SPD with the other document vector, so the table shows what the residual path does under every teacher.
_OTHER = other_vector("spd")
STUDENTS = (("KD-Encoder", "mean", "kd-encoder", ()), ("KD-SPD", "spd", "kdspd", ()),
            (f"KD-SPD, {_OTHER[0]}", "spd", f"kdspd-{_OTHER[1]}", (_OTHER[2],)))
METRICS = ("map", "ndcg_cut_10", "recip_rank", "recall_100")
# What picks the default teacher: KD-SPD's FLORES dev pooled MAP with the teacher's query encoder on the English side
# (the search's own pairing: e5's `query: ` side against the student's passage vectors).
CHOOSE_BY = "pooled_query_map"


def train_students(teacher: str, args) -> dict[str, Path]:
    """The students of ``teacher``, two at a time side by side, after its targets are cached once."""
    import subprocess

    root = args.output_root / "models" / "teachers" / slug(teacher)
    common = [sys.executable, "-m", "pyserini_kdspd.train", "--encoder", args.encoder, "--teacher", teacher,
              "--max-steps", str(args.train_steps), "--seed", str(args.seed), "--quiet"]
    common += (["--data-dir", str(args.data_dir)] if args.data_dir else []) + train_passthrough(args)
    subprocess.run(common + ["--output", str(root / "targets"), "--targets-only", "--threads", str(args.threads)],
                   check=True)
    folders = {label: root / folder for label, _, folder, _ in STUDENTS}
    run_jobs([(label, common + ["--student", kind, *extra, "--output", str(folders[label]), "--threads", "1",
                                "--resume"], root / f"{folder}.train.log") for label, kind, folder, extra in STUDENTS],
             width=2 if args.threads >= 2 else 1, tag=slug(teacher))
    return folders


def dev_figures(folder: Path, data_dir: Path | None = None) -> dict:
    """A student's FLORES dev summary (:func:`~.distill.dev.dev_summary`); a student trained before the pooled MAPs
    existed is evaluated again from its folder, the same way (its other figures come out as logged)."""
    from .distill.dev import evaluate_saved, flores_dir

    log = io.read_json(folder / LOG_NAME)
    if dev_summary(log)[CHOOSE_BY] is None:
        log["dev"][-1]["results"] = evaluate_saved(folder, flores=flores_dir(data=data_dir))
    return dev_summary(log)


def lareqa_figures(label: str, folder: Path, paths, args) -> dict:
    """A student's LAReQA XQuAD-R figures, through stock Pyserini."""
    from .evaluate import evaluate
    from .search.dense import DenseModel, encode_corpus, search

    name = f"{folder.parent.name}.{folder.name}"
    model = DenseModel.from_name(name, str(folder))
    index = encode_corpus(model, paths.corpus, args.output_root / "indexes" / "teachers" / name)
    run = search(model, index, paths.topics["en"], args.output_root / "runs" / "teachers" / f"{name}.txt",
                 threads=args.threads)
    return evaluate(run, paths.qrels, depth=100, metrics=METRICS, name=label).mean


def residual(label: str) -> bool:
    """Whether the row ``label`` of :data:`STUDENTS` trains with ``train --residual``."""
    kind, extra = next((kind, extra) for l, kind, _, extra in STUDENTS if l == label)
    return "--residual" in extra or ("--no-residual" not in extra and RESIDUAL[kind])


def choose(rows: list[dict]) -> tuple[str, str]:
    """(teacher, KD-SPD row label) with the best FLORES dev :data:`CHOOSE_BY`: the teacher and KD-SPD's document
    vector (``train --residual`` or not) are chosen together, since which vector trains better depends on how far
    the teacher's space is from the backbone's."""
    spd = [label for label, kind, _, _ in STUDENTS if kind == "spd"]
    row, label = max(((r, l) for r in rows for l in spd), key=lambda p: p[0]["students"][p[1]]["dev"][CHOOSE_BY])
    return row["teacher"], label


def markdown(rows: list[dict], chosen: tuple[str, str], steps: int, stats: dict) -> str:
    """``chosen``: :func:`choose`'s pair; ``stats``: the collection's ``stats.json`` (its sentence counts, as
    prepared from the data folder)."""
    lines = [f"Every student trained {steps} steps per teacher (same seed, bitext, backbone, learning rates). "
             f"LAReQA XQuAD-R: English questions against all {stats['total_sentences']:,} sentences, top 100; "
             f"ceiling: the teacher alone, English questions against the {stats['sentences']['en']:,} English "
             f"sentences. FLORES-200 dev: the training languages; pooled MAP: the teacher's English sentences as "
             f"queries against the student's vectors of English and every training language in one pool (LAReQA's "
             f"task on dev data), with the teacher's document encoder (doc) and its query encoder (query: how searches "
             f"encode; e5's `query: ` side). **Bold**: the teacher and KD-SPD document vector chosen together by "
             f"KD-SPD's FLORES dev pooled MAP (query).", "",
             "| teacher | ceiling MRR | student | FLORES pooled MAP (doc) | FLORES pooled MAP (query) | "
             "FLORES P@1 en→xx | FLORES P@1 xx→en | MAP | nDCG@10 | MRR | R@100 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        b = "**" if row["teacher"] == chosen[0] else ""
        for k, (label, _, _, _) in enumerate(STUDENTS):
            s = row["students"][label]
            first = f"{b}{row['teacher']}{b} | {row['ceiling']:.3f}" if k == 0 else " | "
            name = f"**{label}**" if (row["teacher"], label) == chosen else label
            lines.append(f"| {first} | {name} | {s['dev']['pooled_map']:.3f} | {s['dev'][CHOOSE_BY]:.3f} | "
                         f"{s['dev']['p1_en_xx']:.3f} | {s['dev']['p1_xx_en']:.3f} | "
                         + " | ".join(f"{s['lareqa'][m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    from .models import DEFAULT_BACKBONE
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.teachers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", nargs="+", default=list(TEACHERS), help="English teachers (aliases, ids, folders)")
    p.add_argument("--train-steps", type=POSITIVE_INT, default=300)
    p.add_argument("--encoder", default=DEFAULT_BACKBONE, help="the students' multilingual backbone")
    p.add_argument("--seed", type=int, default=0, help="as the Table 2 driver's (0)")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--output-root", type=Path, default=Path("."))
    p.add_argument("--threads", type=NATURAL, default=2)
    add_driver_flags(p, "table5", "runs/teachers/table5.md")
    return p


def main(argv: list[str] | None = None) -> int:
    from ._cli import configure_logging, run_cli

    args = build_parser().parse_args(argv)
    out = args.output_root / "runs" / "teachers"
    if args.readme is not None:
        def readme() -> None:
            meta = io.read_json(out / "table5.json")
            block = (f"<!-- written by `python -m pyserini_kdspd.teachers --readme` from runs/teachers/ -->\n"
                     f"`{meta['command']}`:\n\n" + (out / "table5.md").read_text(encoding="utf-8"))
            io.replace_marked_block(args.readme, "table5", block)
        return run_cli(readme)
    configure_logging()

    def work() -> None:
        from .ceiling import lareqa_ceiling
        from .data.lareqa import prepare_lareqa

        paths = prepare_lareqa(args.data_dir, args.output_root)
        rows = []
        for teacher in args.teacher:
            folders = train_students(teacher, args)
            ceiling = lareqa_ceiling(teacher, args.output_root, args.data_dir, threads=max(1, args.threads))
            rows.append({"teacher": teacher, "ceiling": ceiling.mean["recip_rank"], "students": {
                label: {"folder": str(folders[label]), "dev": dev_figures(folders[label], args.data_dir),
                        "lareqa": lareqa_figures(label, folders[label], paths, args)}
                for label, _, _, _ in STUDENTS}})
        chosen = choose(rows)
        out.mkdir(parents=True, exist_ok=True)
        io.write_json(out / "table5.json", {
            "command": "python -m pyserini_kdspd.teachers " + " ".join(sys.argv[1:] if argv is None else argv),
            "train_steps": args.train_steps, "seed": args.seed, "chosen": chosen[0], "chosen_student": chosen[1],
            "chosen_residual": residual(chosen[1]), "rows": rows})
        table = markdown(rows, chosen, args.train_steps, io.read_json(paths.stats))
        (out / "table5.md").write_text(table, encoding="utf-8")
        print(table, flush=True)

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
