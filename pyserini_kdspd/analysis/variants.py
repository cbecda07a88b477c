"""Student variants trained like the Table 2 driver's KD-SPD and compared on LAReQA: the machinery behind
``python -m pyserini_kdspd.ablations`` (the paper's Table 4 and the architecture ablations) and
``python -m pyserini_kdspd.objectives`` (distillation objectives side by side).

A :class:`Variant` is a row label and the ``python -m pyserini_kdspd.train`` flags that make it differ
from KD-SPD. Every variant is trained with the driver's own command (:func:`train_command`: backbone,
teacher, bitext, seed, step budget; batches and precision are train's defaults, as the driver leaves
them), two at a time with one thread each after the teacher's targets are cached once (the driver's
cache, shared), then encoded, searched and scored exactly as the driver's dense rows are: stock
``pyserini.encode`` into a FAISS index and ``pyserini.search.faiss`` (:mod:`..search.dense`), the
project's :func:`~pyserini_kdspd.evaluate.evaluate` at the driver's depth, and, from a depth-1000 run,
the language-bias statistic of :mod:`.bias`.

What is reused: ``train`` itself reuses a folder holding a complete run with the same settings and
budget (and refuses one with other settings). A variant marked ``driver`` *is* one of the driver's
students (``models/kdspd``, ``models/kd-encoder``): it is never retrained nor extended here (a folder of
another budget, or an unfinished one, stops the command before anything runs); only when it is absent
is it trained, with the driver's command, where the driver will find it. Other variants live in
``models/variants/<slug>``, their indexes in ``indexes/<collection>/variants/`` and their runs in
``runs/<collection>/variants/``; the table goes to ``runs/<collection>/<table>.{md,json}``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .. import io

if TYPE_CHECKING:
    from ..evaluate import Evaluation

METRICS = ("map", "ndcg_cut_10", "recip_rank", "recall_100")
LABELS = {"map": "MAP", "ndcg_cut_10": "nDCG@10", "recip_rank": "MRR", "recall_100": "R@100"}
BIAS_DEPTH = 1000  # as analysis.bias: the top-100 cut would truncate the rank distances
CROSS_LINGUAL_COLUMNS = (("x-en", "P_1", "X→En P@1"), ("x-all", "map", "X→All MAP"))  # setting, metric, label
ENCODE_NOTE = "encode.json"  # beside a variant's index: the wall time of the pyserini.encode that built it


@dataclass(frozen=True)
class Variant:
    """One row: its label, a file-name slug, and its ``train`` flags beyond the driver's common ones."""

    name: str
    slug: str
    train_args: tuple[str, ...] = ()
    driver: str | None = None   # the driver's folder under models/ that is this variant (reused, never retrained)

    def folder(self, root: Path) -> Path:
        return root / "models" / (self.driver or Path("variants") / self.slug)

    def loss(self) -> str | None:
        args = list(self.train_args)
        return args[args.index("--loss") + 1] if "--loss" in args else None


def train_command(s, extra: Sequence[str] = ()) -> list[str]:
    """The driver's ``python -m pyserini_kdspd.train`` flags (table2.train_students) for settings ``s``,
    then ``extra`` (flags every run gets, e.g. ``--bitext``)."""
    cmd = [sys.executable, "-m", "pyserini_kdspd.train", "--encoder", s.encoder, "--teacher", s.teacher,
           "--max-steps", str(s.train_steps), "--seed", str(s.seed)]
    cmd += (["--bitext", str(s.bitext)] if s.bitext else []) + (["--data-dir", str(s.data)] if s.data else [])
    return cmd + list(extra)


def _log(folder: Path) -> dict | None:
    from ..distill.trainer import LOG_NAME

    path = folder / LOG_NAME
    return io.read_json(path) if path.is_file() else None


def check_driver_folders(variants: Sequence[Variant], s) -> None:
    """Refuse, before anything runs, a driver's student that this command would have to extend or continue."""
    from ..distill import is_complete

    for v in variants:
        folder = v.folder(s.root)
        if not v.driver or not folder.exists():
            continue
        log = _log(folder)
        if not is_complete(folder):
            raise ValueError(f"{folder} ({v.name}, the Table 2 driver's student) holds an unfinished run: finish it "
                             f"with `python -m pyserini_kdspd.table2` (which resumes it), or leave it out with "
                             f"--variants")
        steps = (log.get("args") or {}).get("max_steps")
        if steps != s.train_steps:
            raise ValueError(f"{folder} ({v.name}, the Table 2 driver's student) was trained for {steps} steps, this "
                             f"command asks for {s.train_steps}: it is never retrained nor extended here; pass "
                             f"--train-steps {steps}, or leave it out with --variants")


def _weights_stamp(folder: Path):
    from ..spd.student import WEIGHTS_NAME

    w = folder / WEIGHTS_NAME
    return w.stat().st_mtime_ns if w.is_file() else None


def train_variants(variants: Sequence[Variant], s, extra: Sequence[str] = (), tag: str = "variants") -> dict[str, bool]:
    """Train (or reuse) every variant; returns slug -> whether its weights were written by this call.

    The teacher's targets of the budget are cached first on all threads, once per kind of teacher vector
    the variants' objectives read; then the trainings run ``s.threads`` at a time, one thread each.
    """
    import subprocess

    from .._cli import run_jobs
    from ..distill import is_complete
    from ..distill.losses import loss_needs

    check_driver_folders(variants, s)
    common = train_command(s, extra)
    todo = [v for v in variants if not is_complete(v.folder(s.root))
            or (_log(v.folder(s.root)).get("args") or {}).get("max_steps") != s.train_steps]
    needs: dict[frozenset, Variant] = {}
    for v in todo:
        needs.setdefault(loss_needs(v.loss()) if v.loss() else frozenset(), v)
    for v in needs.values():  # what the driver's --targets-only does, for each kind of target the losses read
        subprocess.run(common + list(v.train_args) + ["--output", str(s.root / "models" / "variants" / "targets"),
                                                      "--targets-only", "--threads", str(s.threads), "--quiet"],
                       check=True)
    before = {v.slug: _weights_stamp(v.folder(s.root)) for v in variants}
    jobs = []
    for v in variants:
        folder = v.folder(s.root)
        # a complete driver student gets no --resume: a budget it has not reached is refused, never extended
        resume = [] if v.driver and is_complete(folder) else ["--resume"]
        # logs beside the variants' folders, the driver's students' too: their own logs stay the driver's
        jobs.append((v.name, common + list(v.train_args) + ["--output", str(folder), "--threads", "1"] + resume,
                     s.root / "models" / "variants" / f"{v.slug}.train.log"))
    run_jobs(jobs, width=2 if s.threads >= 2 else 1, tag=tag)
    return {v.slug: _weights_stamp(v.folder(s.root)) != before[v.slug] for v in variants}


def encode(v: Variant, col, s):
    """The variant's FAISS index of ``col`` by stock ``pyserini.encode`` (reused while its model is unchanged),
    and the encoding speed: documents / wall time of the run that built it (kept beside the index)."""
    from ..search.dense import DenseModel, encode_corpus

    model = DenseModel.from_name(v.slug, str(v.folder(s.root)))
    index_dir = s.root / "indexes" / col.name / "variants" / v.slug

    def built(force: bool = False) -> tuple[Path, float]:
        t0 = time.perf_counter()
        index = encode_corpus(model, col.corpus_dir, index_dir, force=force)
        return index, time.perf_counter() - t0

    def mtime() -> int | None:
        return (index_dir / "index").stat().st_mtime_ns if (index_dir / "index").is_file() else None

    before = mtime()
    index, seconds = built()
    note = io.read_json(index / ENCODE_NOTE) if (index / ENCODE_NOTE).is_file() else {}
    if note.get("index_mtime_ns") != mtime():
        if mtime() == before:  # reused, but no record of how long it took: encode again to measure it
            index, seconds = built(force=True)
        documents = sum(1 for line in (index / "docid").read_text(encoding="utf-8").splitlines() if line)
        note = {"documents": documents, "seconds": round(seconds, 2), "sentences_per_second": documents / seconds,
                "measured": "wall time of python -m pyserini.encode, start-up and model load included",
                "index_mtime_ns": mtime()}
        io.write_json(index / ENCODE_NOTE, note)
    return model, index, note


def score(v: Variant, model, index: Path, col, s, bias: bool = True, cross_lingual=None) -> dict:
    """The variant's run at the driver's depth, its figures, its language bias at depth 1000 and, given
    ``cross_lingual`` (the collection's :class:`~pyserini_kdspd.data.lareqa.LareqaPaths`), its X -> En and
    X -> All evaluations (:mod:`pyserini_kdspd.xlingual`'s runs and metrics)."""
    from ..evaluate import evaluate
    from ..search.dense import search
    from .bias import languages_of, measure

    runs_dir = s.root / "runs" / col.name / "variants"
    run = search(model, index, col.topics, runs_dir / f"{v.slug}.txt", hits=s.hits, threads=s.threads)
    ev = evaluate(run, col.qrels, depth=s.hits, metrics=METRICS, relevance_level=col.relevance_level, name=v.name)
    out = {"run": run, "evaluation": ev, "bias": None, "cross_lingual": None}
    if cross_lingual is not None:
        from ..xlingual import evaluate_runs, index_runs

        runs = index_runs(model, index, cross_lingual, runs_dir, hits=s.hits, threads=s.threads)
        out["cross_lingual"] = {"runs": runs, "evaluations": evaluate_runs({v.name: runs}, cross_lingual,
                                                                           s.hits)[v.name]}
    if bias and col.parallel:
        deep = search(model, index, col.topics, runs_dir / "deep" / f"{v.slug}.txt", hits=BIAS_DEPTH,
                      threads=s.threads)
        b = measure(v.name, io.read_run(deep), io.read_qrels(col.qrels), languages_of(col.by_lang),
                    depth=BIAS_DEPTH, relevance_level=col.relevance_level, run_file=deep)
        out["bias"] = {k: b.summary()[k] for k in ("measured", "rank_distance_mean", "score_difference_mean")}
        out["deep_run"] = deep
    return out


def _cross_lingual_means(scored: dict) -> dict[str, Evaluation]:
    """X -> En over the non-English query languages (English questions against English sentences are the
    teacher's, the same for every KD-SPD folder) and X -> All over every query: the two columns of a table."""
    from ..xlingual import MEAN, by_language

    evals = scored["evaluations"]
    return {"x-en": by_language(evals["x-en"])[MEAN], "x-all": evals["x-all"]}


def _cross_lingual_record(row: dict, ref: dict[str, Evaluation], root: Path, is_ref: bool) -> dict:
    """A row's X -> En / X -> All means (as :func:`_cross_lingual_means`), their paired p against the reference
    row's, and its run files."""
    from ..evaluate import ttest

    means = _cross_lingual_means(row["cross_lingual"])
    return {setting: {"mean": dict(ev.mean), "queries": ev.num_queries,
                      "p_vs_reference": None if is_ref else {m: ttest(ev, ref[setting], m)[1] for m in ev.metrics},
                      "run": str(Path(row["cross_lingual"]["runs"][setting]).relative_to(root))}
            for setting, ev in means.items()}


def compare(variants: Sequence[Variant], col, s, table: str, note: str = "", extra: Sequence[str] = (),
            bias: bool = True, command: str = "", cross_lingual=None) -> dict[str, Path]:
    """Train, encode, search and score ``variants`` on ``col`` with the driver's settings ``s``; write
    ``runs/<collection>/<table>.{md,json}``. The first variant is the reference of the significance marks.
    ``cross_lingual``: the LAReQA paths whose tagged questions in every language add X -> En / X -> All."""
    from ..distill.dev import dev_summary, flores_dir, prompt_swap
    from ..evaluate import ttest
    from ..runtime import cpu_info
    from ..spd.student import WEIGHTS_NAME

    trained = train_variants(variants, s, extra, tag=table)
    rows = []
    for v in variants:
        folder = v.folder(s.root)
        log = _log(folder)
        model, index, speed = encode(v, col, s)
        scored = score(v, model, index, col, s, bias=bias, cross_lingual=cross_lingual)
        rows.append({"variant": v, "log": log, "speed": speed, **scored})
    ref = rows[0]["evaluation"]
    ref_x = _cross_lingual_means(rows[0]["cross_lingual"]) if cross_lingual is not None else None
    records = []
    for r in rows:
        v, log, ev = r["variant"], r["log"], r["evaluation"]
        records.append({
            "name": v.name, "slug": v.slug, "train_args": list(v.train_args), "driver": v.driver,
            "folder": str(Path(v.folder(s.root)).relative_to(s.root)), "trained_now": trained[v.slug],
            "weights_sha256": io.sha256_file(v.folder(s.root) / WEIGHTS_NAME),
            "loss": log.get("loss"), "lr": log["args"]["lr"], "head_lr": log["args"]["head_lr"],
            "steps": log["steps"], "seconds_per_step": log["elapsed_seconds"] / log["steps"],
            "seconds_per_step_median": log["seconds_per_step_median"], "precision": log["precision"],
            "trainable_parameters": log["trainable_parameters"],
            "dev": dev_summary(log) if log.get("dev") else None,
            "prompt_swap": (prompt_swap(v.folder(s.root), flores_dir(data=s.data)) or {}).get("mean"),
            "encode": r["speed"], "lareqa": dict(ev.mean),
            "p_vs_reference": {m: ttest(ev, ref, m)[1] for m in METRICS} if r is not rows[0] else None,
            "bias": r["bias"], "run": {"file": str(Path(r["run"]).relative_to(s.root)),
                                       "sha256": io.sha256_file(r["run"])},
            "cross_lingual": None if ref_x is None else _cross_lingual_record(r, ref_x, s.root, r is rows[0])})
    out_dir = s.root / "runs" / col.name
    meta = {"command": command, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "collection": col.name,
            "train_steps": s.train_steps, "seed": s.seed, "encoder": s.encoder, "teacher": s.teacher,
            "hits": s.hits, "bias_depth": BIAS_DEPTH if bias else None, "cpu": cpu_info(), "note": note,
            "reference": variants[0].name, "rows": records}
    io.write_json(out_dir / f"{table}.json", meta)
    with io.atomic_write(out_dir / f"{table}.md") as f:
        f.write(markdown(meta) + "\n")
    return {"md": out_dir / f"{table}.md", "json": out_dir / f"{table}.json"}


def _f(x, fmt: str = ".3f") -> str:
    return "–" if x is None else format(x, fmt)


def _marked(value: float, p: float | None) -> str:
    """A figure, with * when it differs from the reference row's (paired p < 0.05)."""
    return f"{value:.3f}" + ("*" if p is not None and p < 0.05 else "")


def markdown(meta: dict) -> str:
    """The table of a ``compare`` record, with what every column means under it."""
    from ..distill.dev import PROMPT_SWAP_SENTENCES

    bias = meta["bias_depth"] is not None
    cross = meta["rows"][0].get("cross_lingual") is not None
    head = ["variant", "train flags", "lr / head-lr", "trainable (M)", "s/step", "encode (sent/s)",
            "FLORES P@1 en→xx", "P@1 xx→en", "MSE (x1e3)", "pooled MAP", "prompt swap",
            *(LABELS[m] for m in METRICS)]
    head += ["max rank distance"] if bias else []
    head += [label for _, _, label in CROSS_LINGUAL_COLUMNS] if cross else []
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in meta["rows"]:
        dev = r["dev"] or {}
        p = r["p_vs_reference"] or {}
        cells = [r["name"], f"`{shlex.join(r['train_args'])}`" if r["train_args"] else "–",
                 f"{r['lr']:g} / {r['head_lr']:g}", f"{r['trainable_parameters'] / 1e6:.2f}",
                 f"{r['seconds_per_step']:.2f}", f"{r['encode']['sentences_per_second']:.1f}",
                 _f(dev.get("p1_en_xx")), _f(dev.get("p1_xx_en")),
                 _f(dev["mse"] * 1e3 if dev.get("mse") is not None else None), _f(dev.get("pooled_query_map"), ".4f"),
                 _f(r.get("prompt_swap"), ".1e")]
        cells += [_marked(r["lareqa"][m], p.get(m)) for m in METRICS]
        if bias:
            cells.append(_f((r["bias"] or {}).get("rank_distance_mean"), ".0f"))
        for setting, metric, _ in CROSS_LINGUAL_COLUMNS if cross else ():
            x = r["cross_lingual"][setting]
            cells.append(_marked(x["mean"][metric], (x["p_vs_reference"] or {}).get(metric)))
        lines.append("| " + " | ".join(cells) + " |")
    docs = {r["encode"]["documents"] for r in meta["rows"]}
    notes = [
        f"{meta['train_steps']} training steps per variant, seed {meta['seed']}, backbone {meta['encoder']}, teacher "
        f"{meta['teacher']}: the bitext, batches, precision and teacher targets of the Table 2 driver's KD-SPD. "
        + meta["note"],
        f"LAReQA XQuAD-R ({meta['collection']}): English questions against {', '.join(map(str, sorted(docs)))} "
        f"sentences, top {meta['hits']}, through stock `pyserini.encode` / `pyserini.search.faiss`; * differs from "
        f"{meta['reference']} (two-tailed paired t-test, p < 0.05). FLORES-200 devtest after training: the mean "
        "over the training languages (what every learning rate was chosen by); pooled MAP: LAReQA's task on "
        "FLORES dev, the English sentences through the teacher's query encoder against the training languages' "
        "sentences by the student, all in one pool, every translation relevant (what objectives are compared by: "
        "MSE favours the MSE objective by construction). prompt swap: 1 - cosine between a FLORES dev sentence's "
        "vector under its language's prompt and under another trained language's, averaged over "
        f"{PROMPT_SWAP_SENTENCES} sentences of each (`distill.dev.prompt_swap`); 0: the language prompts change "
        "nothing.",
        "s/step: the training log's wall time over its steps (rows reused from the driver: its run). encode: "
        "documents over the wall time of the `pyserini.encode` that built the variant's index (process start-up "
        "and model load included; one at a time, after the trainings).",
    ]
    if bias:
        notes.append(f"max rank distance: per question, the last minus the first rank among its answer's "
                     f"translations in the top {meta['bias_depth']}, averaged over questions with two found "
                     "(`pyserini_kdspd.analysis.bias`); lower is less language bias.")
    if cross:
        x = meta["rows"][0]["cross_lingual"]
        notes.append(f"X→En P@1: the {x['x-en']['queries']} non-English questions (each question in each language "
                     "but English) against the English sentences, the English answer relevant (English questions "
                     "go to the teacher's query encoder in every row, so they are left out); X→All MAP: all "
                     f"{x['x-all']['queries']} questions in every language against every sentence, the answer's "
                     "translations relevant. A KD-SPD folder encodes a non-English question with its student under "
                     "the question's language prompt (`python -m pyserini_kdspd.xlingual`, which makes the same runs "
                     "for the Table 2 rows); * as above.")
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)


def readme_block(root: Path, collection: str, table: str, prog: str) -> str:
    src = root / "runs" / collection / f"{table}.json"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: missing; run `{prog}` (its --output-root) first")
    meta = io.read_json(src)
    cpu = meta["cpu"]
    return "\n".join([f"<!-- written by `{prog} --readme` from runs/{collection}/{table}.json; edits here are "
                      "overwritten -->",
                      f"`{meta['command']}` finished {meta['finished']} on {cpu['model']} ({cpu['cores']} cores).", "",
                      (root / "runs" / collection / f"{table}.md").read_text(encoding="utf-8").strip()])


# ---------------------------------------------------------------------------- the commands' CLI
def build_parser(prog: str, description: str, table: str) -> argparse.ArgumentParser:
    """The flags every variants command shares (the driver's settings, ``--readme`` and train's pass-through)."""
    from .._cli import POSITIVE_INT, add_driver_flags
    from ..table2 import TRAIN_STEPS, Settings

    d = Settings()
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-steps", type=POSITIVE_INT, default=TRAIN_STEPS["quick"],
                   help=f"optimizer steps per variant (default {TRAIN_STEPS['quick']}, the driver's quick budget; the "
                        "driver's students are reused only at their own budget)")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--output-root", type=Path, default=Path("."), help="the driver's --output-root")
    p.add_argument("--encoder", default=d.encoder, help=f"student backbone, as given to the driver ({d.encoder})")
    p.add_argument("--teacher", default=d.teacher, help=f"English teacher, as given to the driver ({d.teacher})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"as given to the driver ({d.seed})")
    p.add_argument("--threads", type=POSITIVE_INT, default=d.threads,
                   help="CPU cores: trainings run this many side by side, one thread each")
    add_driver_flags(p, table, f"runs/lareqa/{table}.md")
    return p


def settings(p: argparse.ArgumentParser, a: argparse.Namespace):
    """The driver's :class:`~pyserini_kdspd.table2.Settings` of parsed ``a`` (the data folder checked first)."""
    from .._cli import resolve_data_dir
    from ..table2 import Settings

    return Settings(root=a.output_root, data=resolve_data_dir(p, a.data_dir), encoder=a.encoder, teacher=a.teacher,
                    seed=a.seed, threads=a.threads, train_steps=a.train_steps)


def main(argv: Sequence[str] | None, prog: str, table: str, variants: Sequence[Variant], description: str,
         note: str, cross_lingual: bool = False) -> int:
    """``prog`` (``python -m pyserini_kdspd.<table>``) over ``variants``: parse, train, compare, print;
    ``cross_lingual``: with the X -> En / X -> All columns (LAReQA's questions in every language)."""
    from .._cli import train_passthrough

    slugs = [v.slug for v in variants]

    def chosen(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in items if x not in slugs]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"{'unknown ' + ', '.join(unknown) if unknown else 'empty'}; choose "
                                             f"from {', '.join(slugs)}")
        return items

    p = build_parser(prog, description, table)
    p.add_argument("--variants", type=chosen, default=slugs, help=f"comma list of {', '.join(slugs)} (default: all)")
    p.add_argument("--no-bias", action="store_true", help="skip the depth-1000 runs and the language-bias column")

    def make(a, s, col, command):
        return run_table([v for v in variants if v.slug in a.variants], col, s, table, note=note,
                         extra=train_passthrough(a), bias=not a.no_bias, command=command, cross_lingual=cross_lingual)
    return run_command(p, argv, prog, table, make)


def run_table(variants: Sequence[Variant], col, s, table: str, cross_lingual: bool = False, **kwargs) -> dict[str, Path]:
    """:func:`compare` on LAReQA, what a variants command runs and the driver's ``--analyses <table>`` too;
    ``cross_lingual``: with the LAReQA paths of the questions in every language (prepared as ``col`` was)."""
    from ..data.lareqa import prepare_lareqa

    paths = prepare_lareqa(data_dir=s.data, output_root=s.root) if cross_lingual else None
    return compare(variants, col, s, table, cross_lingual=paths, **kwargs)


def run_command(p: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str, table: str,
                make: Callable[[argparse.Namespace, object, object, str], dict[str, Path]]) -> int:
    """Parse ``argv`` with ``p`` (:func:`build_parser`'s), then either rewrite the README block (``--readme``) or
    run ``make(args, settings, LAReQA collection, command as typed)`` and print the table it wrote."""
    from .._cli import configure_logging, rewrite_readme_block, run_cli
    from ..table2 import lareqa

    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    if a.readme is not None:
        return rewrite_readme_block(a.readme, table, lambda: readme_block(a.output_root, "lareqa", table, prog),
                                    f"{table} block")
    s = settings(p, a)
    configure_logging()

    def work() -> int:
        col = lareqa(s)
        if col is None:
            return 2
        out = make(a, s, col, shlex.join(prog.split() + argv))
        print(out["md"].read_text(encoding="utf-8"))
        print("wrote " + ", ".join(map(str, out.values())))
        return 0
    return run_cli(work)
