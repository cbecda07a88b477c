"""Reproduce the paper's Table 2: ``python -m pyserini_kdspd.table2`` (what scripts/reproduce_table2.sh runs).

Every row is a TREC run under ``runs/<collection>/`` made by the stage that owns it
(data -> distill -> encode -> search -> fuse -> evaluate); this module only decides
what to run and in which order, reuses whatever already exists (``--force`` to
redo), times each stage, and prints the table with the paper's significance
marks (dagger over mDPR, double dagger over KD-Encoder, paired two-tailed t-test, p < 0.05).
A collection whose inputs are absent is skipped with one line naming the files it needs.

Nothing that feeds the table depends on wall-clock time: the students train for a fixed
number of steps, every random choice is drawn from ``--seed``, and what made the table
(command, seed, machine, hashes of every run, student and SMT table) is written next to
it as ``runs/<collection>/table2.json``, with the stage times in ``stages.json``.
``--readme`` renders these into README.md between ``<!-- table2:<collection>:start -->``
and ``<!-- table2:<collection>:end -->``, so the README's table is never typed by hand.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import import_module, metadata
from pathlib import Path

from . import io
from .io import newer
from ._cli import POSITIVE_INT, resolve_data_dir, run_jobs
from .models.registry import DEFAULT_BACKBONE, DEFAULT_TEACHER
from .search.translate.smt import ALIGNERS, DEFAULT_ALIGNER

log = logging.getLogger("pyserini_kdspd.table2")

ROW_ORDER = [
    "SMT + Round Robin", "SMT + Score",
    "NMT + Round Robin", "NMT + Score",
    "Human translation + Round Robin", "Human translation + Score",
    "mDPR + Round Robin", "mDPR + Score", "mDPR",
    "KD-Encoder", "KD-SPD",
]
MARKS = {"†": "mDPR", "‡": "KD-Encoder"}
SYSTEMS = ("bm25", "dense", "kd")
COLLECTIONS = ("lareqa", "mtrec", "clef")
ANALYSES = ("bias", "langid", "ablations", "zeroshot", "objectives")  # the paper's analyses the driver can run
TRAINING_ANALYSES = ANALYSES[2:]  # ... those that train students of their own (each also a command of its own)
# Optimizer steps per student: quick is sized for about an hour side by side on a 2-core CPU (README: Table 2).
TRAIN_STEPS = {"quick": 1200, "full": 4800}
STUDENTS = (("KD-SPD", "spd", "kdspd"), ("KD-Encoder", "mean", "kd-encoder"))  # label, train --student, folder


@dataclass
class Collection:
    """What every system needs from a test collection, whoever built it."""

    name: str
    corpus_dir: Path                   # the whole multilingual JsonCollection
    by_lang: dict[str, Path]           # per-language JsonCollections
    topics: Path                       # English queries (TSV)
    qrels: Path
    translations: dict[str, Path] = field(default_factory=dict)  # lang -> human-translated topics
    max_passage: bool = False          # documents split into passages `docid#k` (MaxP)
    relevance_level: int = 1           # minimum grade that counts as relevant (TREC DL: 2)
    parallel: bool = False             # each query's relevant documents are translations of each other (bias)


@dataclass
class Settings:
    mode: str = "quick"
    root: Path = Path(".")
    data: Path | None = None
    encoder: str = DEFAULT_BACKBONE            # the student's backbone (offline default)
    mdpr: str = DEFAULT_BACKBONE               # the multilingual dense baseline (online: castorini/mdpr-tied-pft-msmarco)
    teacher: str = DEFAULT_TEACHER             # the English teacher (online: an ANCE / sentence-transformers model)
    train_steps: int = TRAIN_STEPS["quick"]
    smt_aligner: str = DEFAULT_ALIGNER
    bitext: Path | None = None
    hits: int = 100
    seed: int = 0
    threads: int = 2
    force: bool = False
    latex: bool = False
    nmt: str | None = "human"                  # "human" (LAReQA's XQuAD translations), a translations file, or an HF MT model
    systems: tuple = SYSTEMS
    collections: tuple = COLLECTIONS
    analyses: tuple = ()                       # of ANALYSES, run after the table
    mmarco_dir: Path | None = None             # mTREC: the user's mMARCO translations
    clef_dir: Path | None = None               # CLEF 2000-2003: the user's licensed copy
    command: str = "python -m pyserini_kdspd.table2"  # as typed, recorded with the table


class Stages:
    """Prints each stage as it starts and ends, and keeps the wall times for the summary."""

    def __init__(self):
        self.times: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        print(f"[stage] {name} ...", flush=True)
        t0 = time.time()
        yield
        dt = time.time() - t0
        self.times.append((name, dt))
        print(f"[stage] {name}: done in {dt:.0f} s", flush=True)

    def summary(self) -> str:
        lines = ["| stage | wall time (s) |", "|---|---:|"]
        lines += [f"| {n} | {t:.0f} |" for n, t in self.times]
        return "\n".join(lines)


# ------------------------------------------------------------------ collections
def lareqa(s: Settings) -> Collection | None:
    from .data.lareqa import LANGUAGES, prepare_lareqa

    try:
        p = prepare_lareqa(data_dir=s.data, output_root=s.root)
    except FileNotFoundError as e:
        print(f"[skip] LAReQA XQuAD-R: {e}")
        return None
    return Collection(
        name="lareqa", corpus_dir=Path(p.corpus), by_lang={k: Path(v) for k, v in p.by_lang.items()},
        topics=Path(p.topics["en"]), qrels=Path(p.qrels),
        translations={lang: Path(p.topics[lang]) for lang in LANGUAGES if lang != "en"}, parallel=True)


def mtrec(s: Settings, variant: str = "even") -> Collection | None:
    from .data.mtrec import RELEVANT_GRADE, prepare_mtrec

    if s.mmarco_dir is None:
        print("[skip] mTREC: needs mMARCO's Arabic, Chinese, Russian and Indonesian collection files "
              "({arabic,chinese,russian,indonesian}_collection.tsv): give --mmarco-dir DIR")
        return None
    try:
        p = prepare_mtrec(data_dir=s.data, output_root=s.root, mmarco_dir=s.mmarco_dir, variant=variant,
                          seed=s.seed)
    except FileNotFoundError as e:
        print(f"[skip] mTREC: {e}")
        return None
    return Collection(name=p.name, corpus_dir=Path(p.corpus), by_lang={k: Path(v) for k, v in p.by_lang.items()},
                      topics=Path(p.topics), qrels=Path(p.qrels), relevance_level=RELEVANT_GRADE)


def clef(s: Settings) -> Collection | None:
    from .data.clef import prepare_clef

    if s.clef_dir is None:
        print("[skip] CLEF 2000-2003: needs the licensed CLEF ad hoc documents (de, fr, it), "
              "English topics C001-C200 and qrels: give --clef-dir DIR")
        return None
    try:
        # passages are 180 tokens of the tokenizer of the students' backbone, which encodes them
        p = prepare_clef(data_dir=s.data, output_root=s.root, clef_dir=s.clef_dir, tokenizer=s.encoder)
    except FileNotFoundError as e:
        print(f"[skip] CLEF 2000-2003: {e}")
        return None
    # BM25 ranks whole documents per language; dense models rank 180/90 passages, scored by their best (MaxP)
    return Collection(name=p.name, corpus_dir=Path(p.passages), by_lang={k: Path(v) for k, v in p.by_lang.items()},
                      topics=Path(p.topics), qrels=Path(p.qrels), max_passage=True)


# ------------------------------------------------------------------ systems
def _fuse_to(runs: dict, method: str, out: Path, seed: int, depth: int, tag: str) -> Path:
    from .fusion import fuse

    fused = fuse(runs, method=method, depth=depth, seed=seed)
    io.write_run(out, fused, tag=tag, depth=depth)
    return out


def training_log(folder: Path) -> dict | None:
    """The student folder's ``training_log.json``, or None when it has none."""
    from .distill.trainer import LOG_NAME

    path = Path(folder) / LOG_NAME
    return io.read_json(path) if path.is_file() else None


def train_students(s: Settings, st: Stages) -> dict[str, Path]:
    """KD-SPD and KD-Encoder on the same bitext for the same number of steps (teacher targets are shared).

    The two runs go side by side, one thread each: on a 2-core CPU two 1-thread runs get
    more steps in the same wall time than two sequential 2-thread ones (README: training
    notes). Each run logs to ``models/<name>.train.log``. A folder trained on a minutes
    budget is refused (``train --resume`` would count its steps as this budget reached, or
    extend it): its weights depend on the machine's speed, not on the settings.
    """
    from .distill.trainer import budget_kind

    targets = {label: s.root / "models" / folder for label, _, folder in STUDENTS}
    if not s.force:
        for target in targets.values():
            if (log := training_log(target)) is not None and budget_kind(log) == "minutes":
                raise ValueError(f"{target}: its training_log.json records a wall-clock budget (train "
                                 f"--max-minutes), whose step count depends on the machine's speed; Table 2 takes "
                                 f"students trained for a number of steps: pass --force to retrain it with "
                                 f"--train-steps {s.train_steps}, or move {target} away")
    common = [sys.executable, "-m", "pyserini_kdspd.train", "--encoder", s.encoder, "--teacher", s.teacher,
              "--max-steps", str(s.train_steps), "--seed", str(s.seed)]
    if s.bitext:
        common += ["--bitext", str(s.bitext)]
    if s.data:
        common += ["--data-dir", str(s.data)]
    with st(f"teacher targets of {s.train_steps} steps (computed once, shared by both students)"):
        subprocess.run(common + ["--output", str(targets["KD-SPD"]), "--targets-only", "--threads", str(s.threads),
                                 "--quiet"], check=True)
    jobs = []
    for label, kind, _ in STUDENTS:
        cmd = common + ["--student", kind, "--output", str(targets[label]), "--threads", str(max(1, s.threads // 2)),
                        "--resume"] + (["--force"] if s.force else [])
        jobs.append((label, cmd, targets[label].parent / f"{targets[label].name}.train.log"))
    with st(f"train KD-SPD and KD-Encoder side by side ({s.train_steps} steps each)"):
        run_jobs(jobs, width=2 if s.threads >= 2 else 1)
    for label, _, log_file in jobs:
        text = log_file.read_text(encoding="utf-8", errors="replace")
        print(f"\n[train] {label}: FLORES-200 dev set\n" + "\n".join(
            line for line in text.splitlines() if line.startswith("|") or line.startswith("saved ")), flush=True)
    return targets


def dense_rows(col: Collection, s: Settings, st: Stages, students: dict[str, Path]) -> dict[str, Path]:
    from .data.passages import maxp_search_args
    from .search.dense import DenseModel, encode_corpus, search, search_by_language

    rows: dict[str, Path] = {}
    runs_dir, idx_dir = s.root / "runs" / col.name, s.root / "indexes" / col.name
    extra = maxp_search_args(col.corpus_dir, s.hits) if col.max_passage else []  # --hits: passages for s.hits docs
    models = [("mDPR", DenseModel.from_name("mdpr", s.mdpr)),
              ("Teacher (English only)", DenseModel.from_name("teacher", s.teacher))]
    models += [(label, DenseModel.from_name(Path(p).name, str(p))) for label, p in students.items()]
    corpus_file = next(Path(col.corpus_dir).glob("*.jsonl"))
    encoded: dict[Path, DenseModel] = {}
    for label, model in models:
        with st(f"{col.name}: encode + search {label} ({model.name})"):
            index = shared_index(model, encoded, idx_dir / model.name)
            if index is None:
                index = encode_corpus(model, col.corpus_dir, idx_dir / model.name, force=s.force)
            encoded[index] = model
            rows[label] = search(model, index, col.topics, runs_dir / f"{model.name}.txt", hits=s.hits,
                                 threads=s.threads, force=s.force, extra_args=extra)
        if label == "mDPR":
            with st(f"{col.name}: mDPR per language + round robin / score"):
                lang_runs = {lang: io.read_run(path) for lang, path in search_by_language(
                    model, index, corpus_file, col.topics, runs_dir / "by-lang", hits=s.hits, threads=s.threads,
                    force=s.force, extra_args=extra).items()}
                rows["mDPR + Round Robin"] = _fuse_to(lang_runs, "rr", runs_dir / "mdpr+rr.txt", s.seed, s.hits,
                                                      "mdpr-rr")
                rows["mDPR + Score"] = _fuse_to(lang_runs, "minmax", runs_dir / "mdpr+score.txt", s.seed, s.hits,
                                                "mdpr-score")
    return rows


def shared_index(model, encoded: dict, target: Path) -> Path | None:
    """When a model encodes documents exactly as one already encoded (the offline default's teacher is mDPR's
    multilingual-e5-small, with the same prefixes), ``target`` becomes a link to that index instead of a
    second 13k-sentence encoding; None when no such model was encoded."""
    same = next((index for index, done in encoded.items() if model.encodes_as(done)), None)
    if same is None:
        return None
    if not (target.is_symlink() and target.resolve() == same.resolve()):
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)  # an index of an earlier run, when the two models still differed
        target.symlink_to(os.path.relpath(same, target.parent), target_is_directory=True)  # the root can move
    print(f"[reuse] {model.name} encodes documents exactly as {encoded[same].name}: {target} links to {same.name}",
          flush=True)
    return target


def smt_dir(s: Settings) -> Path:
    """Where the SMT tables live: one folder per aligner, so that switching aligners never reuses the other's."""
    return s.root / "models" / ("smt" if s.smt_aligner == DEFAULT_ALIGNER else f"smt-{s.smt_aligner}")


def translators(col: Collection, s: Settings):
    """(row label, slug, factory lang -> translator, lang -> the file its translations come from or None) for the
    query-translation baselines available here: a run older than that file is redone."""
    from .search.translate.nmt import FileTranslator, HFTranslator, HumanTranslator
    from .search.translate.smt import SMTTranslator, model_path

    bitext = s.bitext or (s.data / "bitext" if s.data else None)
    tables = smt_dir(s)  # its name is the runs' slug: another aligner's runs are other files, as its tables are
    out = [("SMT", tables.name, lambda lang: SMTTranslator.for_language(lang, model_dir=tables, bitext_dir=bitext,
                                                                        aligner=s.smt_aligner),
            lambda lang: model_path(tables, lang))]
    if s.nmt == "human" and col.translations:
        pattern = str(next(iter(col.translations.values()))).replace(
            f".{next(iter(col.translations))}.", ".{lang}.")
        human = HumanTranslator(pattern)
        out.append(("Human translation", "human", lambda lang: human, lambda lang: None))
    elif s.nmt and s.nmt != "human":
        nmt = FileTranslator(s.nmt) if Path(s.nmt).exists() else HFTranslator(s.nmt)
        out.append(("NMT", "nmt", lambda lang: nmt, lambda lang: None))
    else:
        print(f"[skip] NMT rows for {col.name}: no translations (give --nmt FILE or a Hugging Face MT model)")
    return out


def bm25_rows(col: Collection, s: Settings, st: Stages) -> dict[str, Path]:
    """Per-language BM25 with translated queries, merged by round robin and by min-max score."""
    from .search import bm25
    from .search.translate import translate_topics

    rows: dict[str, Path] = {}
    runs_dir = s.root / "runs" / col.name
    english = io.read_topics(col.topics)
    with st(f"{col.name}: BM25 indexes (one per language, its own analyzer)"):
        indexes = {lang: bm25.build_index(d, s.root / "indexes" / col.name / "bm25" / lang, lang,
                                          threads=s.threads, overwrite=s.force, reuse=True)
                   for lang, d in sorted(col.by_lang.items())}
    for label, slug, make, source in translators(col, s):
        with st(f"{col.name}: BM25 per language ({len(indexes)}), queries: {label}"):
            lang_runs = {}
            for lang, index in indexes.items():
                out = runs_dir / "by-lang" / f"bm25-{slug}.{lang}.txt"
                try:  # first, so that a table missing or made by another aligner is (re)trained before the test
                    translator = None if lang == "en" else make(lang)
                except FileNotFoundError as e:  # e.g. no en-fi bitext for an SMT table
                    print(f"[skip] {label} rows for {col.name}: no translation into {lang!r}: {e}")
                    lang_runs = None
                    break
                made_from = None if lang == "en" else source(lang)
                if s.force or not newer(out, index / bm25.META) or (made_from and not newer(out, made_from)):
                    queries = english if lang == "en" else translate_topics(translator, english, lang)
                    io.write_run(out, bm25.search(index, queries, lang, k=s.hits, threads=s.threads),
                                 tag=f"bm25-{slug}-{lang}", depth=s.hits)
                lang_runs[lang] = io.read_run(out)
            if lang_runs is None:
                continue
            rows[f"{label} + Round Robin"] = _fuse_to(lang_runs, "rr", runs_dir / f"bm25-{slug}+rr.txt", s.seed,
                                                      s.hits, f"bm25-{slug}-rr")
            rows[f"{label} + Score"] = _fuse_to(lang_runs, "minmax", runs_dir / f"bm25-{slug}+score.txt", s.seed,
                                                s.hits, f"bm25-{slug}-score")
    return rows


def table(col: Collection, rows: dict[str, Path], latex: bool = False, hits: int = 100) -> str:
    """Evaluate every row's TREC file (what ``python -m pyserini_kdspd.evaluate`` recomputes) and render."""
    from .evaluate import evaluate, render_table

    ordered = {name: rows[name] for name in ROW_ORDER if name in rows}
    ordered.update({k: v for k, v in rows.items() if k not in ordered})
    evaluations = {name: evaluate(str(path), str(col.qrels), depth=hits, relevance_level=col.relevance_level)
                   for name, path in ordered.items()}
    marks = {m: b for m, b in MARKS.items() if b in evaluations}
    return render_table(evaluations, marks=marks, fmt="latex" if latex else "markdown") + "\n\n" + \
        trec_eval_note(col, ordered, evaluations, hits)


def trec_eval_note(col: Collection, rows: dict[str, Path], evaluations: dict, hits: int) -> str:
    """One line saying whether stock trec_eval gives every figure of the table (it runs once per row)."""
    from .evaluate import trec_eval_disagreements

    command = f"python -m pyserini.eval.trec_eval -c -l {col.relevance_level} -M {hits}"
    differ = {name: d for name, path in rows.items()
              if (d := trec_eval_disagreements(path, col.qrels, depth=hits, relevance_level=col.relevance_level,
                                               ours=evaluations[name]))}
    if not differ:
        return f"Every figure agrees with `{command}` on the same run files (checked row by row)."
    log.warning("figures that differ from trec_eval: %s", differ)
    return f"Figures that differ from `{command}` (ours, trec_eval's): " + "; ".join(
        f"{name}: " + ", ".join(f"{m} {a:.4f} vs {b:.4f}" for m, (a, b) in d.items()) for name, d in differ.items())


def run(s: Settings) -> int:
    st = Stages()
    builders = {"lareqa": lareqa, "mtrec": mtrec, "clef": clef}
    with st(f"data: {', '.join(s.collections)}"):
        collections = [c for c in (builders[name](s) for name in s.collections) if c is not None]
    students = train_students(s, st) if "kd" in s.systems else {}
    outputs = []
    for col in collections:
        rows: dict[str, Path] = {}
        if "bm25" in s.systems:
            rows.update(bm25_rows(col, s, st))
        if "dense" in s.systems or students:
            rows.update(dense_rows(col, s, st, students))
        with st(f"{col.name}: evaluate"):
            text = table(col, rows, latex=s.latex, hits=s.hits)
        out = s.root / "runs" / col.name / ("table2.tex" if s.latex else "table2.md")
        with io.atomic_write(out) as f:
            f.write(text + "\n")
        outputs.append((col, rows, text, out))
    for col, _, text, out in outputs:
        print(f"\n## Table 2: {col.name} (English queries, top {s.hits}; written to {out})\n")
        print(text)
    print("\n" + st.summary())
    for col, rows, _, _ in outputs:
        record(col, s, rows, students, st, others=[c.name for c in collections if c is not col])
    run_analyses(s, collections, students)
    return 0


def run_analyses(s: Settings, collections: list[Collection], students: dict[str, Path]) -> None:
    """``--analyses``: the paper's analyses on the models, indexes and runs this driver made, each writing its
    tables and figures under ``runs/<collection>/`` (README: Language bias)."""
    if "bias" in s.analyses:
        from .analysis.bias import bias_report

        for col in collections:
            if not col.parallel:  # the rank distance is between translations of one relevant document
                print(f"[skip] bias on {col.name}: its relevant documents are not translations of each other")
                continue
            out = bias_report(col, s, students)
            print("\n" + out["md"].read_text(encoding="utf-8") + "wrote " + ", ".join(map(str, out.values())))
    if "langid" in s.analyses:
        from .analysis.langid import langid_report, render_markdown

        for col in collections:
            if col.name != "lareqa" or "KD-SPD" not in students:  # needs gold tags and the trained KD-SPD
                print(f"[skip] langid on {col.name}: needs LAReQA's gold language tags and the driver's KD-SPD")
                continue
            print("\n" + render_markdown(langid_report(col, s, students["KD-SPD"])))
    for name in (a for a in TRAINING_ANALYSES if a in s.analyses):
        col = next((c for c in collections if c.name == "lareqa"), None)
        if col is None:
            print(f"[skip] {name}: it trains and scores its students on LAReQA XQuAD-R, which this run did not prepare")
            continue
        # the command's own entry (python -m pyserini_kdspd.<name>) at its defaults, on this run's settings
        out = import_module(f".{name}", __package__).run(s, col, command=s.command)
        print("\n" + out["md"].read_text(encoding="utf-8") + "wrote " + ", ".join(map(str, out.values())))


# ------------------------------------------------------------------ what made the table, and the README
def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "pyserini", "faiss-cpu", "eflomal"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def record(col: Collection, s: Settings, rows: dict[str, Path], students: dict[str, Path], st: Stages,
           others: list[str]) -> None:
    """Write what made ``runs/<collection>/table2.md`` next to it, for ``--readme`` and for checking a rerun.

    ``table2.json``: the command, the seed and what it drives, the machine, library versions, and the
    SHA-256 of every row's run file, of the student weights and of the SMT tables' entries (the same tables
    trained again hash the same; eflomal's, unseeded, are identified by it). ``stages.json``: this run's stage
    times (without the stages of the ``others`` collections), after those of the earlier runs since the last
    ``--force``.
    """
    from .runtime import cpu_info
    from .search.translate.smt import entries_sha256, model_path
    from .spd.student import WEIGHTS_NAME

    def rel(path: Path) -> str:
        return os.path.relpath(path, s.root)

    runs_dir = s.root / "runs" / col.name
    finished = time.strftime("%Y-%m-%d %H:%M:%S")
    seeded = ["round robin: the language order of every round, per query (seed, query id)"]
    if students:
        seeded.insert(0, "students (train --seed): initialisation, dropout, the order of the bitext batches")
    if col.name.startswith("mtrec"):
        seeded.append("mTREC: the language of every relevant passage (biased variant: each query's primary language)")
    meta = {"collection": col.name, "command": s.command, "finished": finished, "seed": s.seed, "seeded": seeded,
            "mode": s.mode, "train_steps": s.train_steps if students else None, "hits": s.hits,
            "threads": s.threads, "cpu": cpu_info(), "versions": _versions(),
            "students": {label: {"folder": rel(folder), "weights_sha256": io.sha256_file(folder / WEIGHTS_NAME)}
                         for label, folder in students.items()},
            "runs": {label: {"file": rel(path), "sha256": io.sha256_file(path)} for label, path in rows.items()}}
    if any(label.startswith("SMT ") for label in rows):
        tables = {lang: model_path(smt_dir(s), lang) for lang in sorted(col.by_lang) if lang != "en"}
        meta["smt"] = {"aligner": s.smt_aligner,
                       "tables": {lang: {"file": rel(p), "entries_sha256": entries_sha256(p)}
                                  for lang, p in tables.items() if p.is_file()}}
        if s.smt_aligner == "eflomal":
            meta["unseeded"] = ["SMT tables: eflomal seeds its samplers from /dev/urandom (no flag sets it); "
                                "a rerun reuses the tables under " + rel(smt_dir(s)) + " (hashes above), and "
                                f"--smt-aligner {DEFAULT_ALIGNER} (the default) trains deterministic ones"]
    io.write_json(runs_dir / "table2.json", meta)
    stages_file = runs_dir / "stages.json"
    history = [] if s.force or not stages_file.is_file() else io.read_json(stages_file)["runs"]
    history.append({"command": s.command, "finished": finished,
                    "stages": [[name, round(t, 1)] for name, t in st.times
                               if not any(name.startswith(f"{o}: ") for o in others)]})
    io.write_json(stages_file, {"runs": history})


def _students_table(root: Path, students: dict) -> list[str]:
    from .distill.dev import dev_summary
    from .distill.trainer import budget_kind

    made = []
    lines = ["| student | budget | steps | s/step (wall) | s/step (median step) | seed | precision | threads "
             "| peak RSS (GB) | FLORES dev MSE (x1e3) | P@1 en→xx | P@1 xx→en | fi P@1 en→xx "
             "| pooled MAP doc / query |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, entry in students.items():
        folder = root / entry["folder"]
        log = training_log(folder)
        if log is None or not log.get("complete"):
            raise FileNotFoundError(f"{folder}: no complete training_log.json; the table in runs/ was made with "
                                    f"this student: rerun the driver to retrain it")
        steps = log["steps"]
        dev = dev_summary(log) if log.get("dev") else None  # train --no-dev: no FLORES figures
        figures = ([dev["mse"] * 1e3, dev["p1_en_xx"], dev["p1_xx_en"], dev["p1_en_xx_fi"]] if dev
                   else [None] * 4)
        pooled = [dev.get("pooled_map"), dev.get("pooled_query_map")] if dev else [None, None]
        if log.get("settings"):
            made.append(f"{label}: {_student_settings(log['settings'])}{_gate(folder)}")
        lines.append(f"| {label} | {budget_kind(log)} | {steps} | {log['elapsed_seconds'] / steps:.2f} "
                     f"| {log['seconds_per_step_median']:.2f} | {log['args']['seed']} | {log['precision']} "
                     f"| {log['threads']} | {log['peak_rss_mb'] / 1024:.1f} | "
                     + " | ".join("–" if x is None else f"{x:.3f}" for x in figures) + " | "
                     + " / ".join("–" if x is None else f"{x:.3f}" for x in pooled) + " |")
    lines += ["", "FLORES-200 devtest after training: MSE and P@1 (what the learning rates were chosen by) are the "
              "mean over the 14 training languages, beside Finnish, never trained (zero-shot); pooled MAP puts the "
              "teacher's English sentences as queries against the student's vectors of English and every training "
              "language in one pool, with the teacher's document / query encoder on the query side (the query "
              "side chose the teacher and KD-SPD's document vector: [Teachers](#teachers))."]
    if made:
        lines += ["", "Trained as: " + "; ".join(made) + "."]
    return lines


def _gate(folder: Path) -> str:
    """How far a residual student's branch opened (the gate g, or the linear map W of ``--residual-branch linear``):
    near 0, its vector is still the encoder's mean pooling and the prompts barely matter."""
    from safetensors import safe_open

    from .spd.student import WEIGHTS_NAME
    with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
        if "branch.weight" in f.keys():  # residual_branch "linear": W's size against the identity's (sqrt d)
            w = f.get_tensor("branch.weight").float()
            return (f" (its linear branch after training: ‖W‖_F {w.norm().item():.2g}, "
                    f"identity's {w.shape[0] ** 0.5:.2g})")
        if "gate" not in f.keys():
            return ""
        g = f.get_tensor("gate").float().abs()
    return f" (its gate after training: mean |g| {g.mean().item():.2g}, largest {g.max().item():.2g})"


def _student_settings(settings: dict) -> str:
    """What a student was trained as, from its training log: backbone, teacher, loss, learning rates and,
    for KD-SPD, the document vector (the paper's decoder output, or the residual one of train --residual)."""
    from .train import TORCH_ADAM_EPS
    text = (f"backbone {settings['encoder']}, teacher {settings['teacher']}, loss `{settings['loss']}`, "
            f"lr {settings['lr']:g}")
    if settings["student"] != "mean":
        text += f", head-lr {settings['head_lr']:g}"
    text += f", Adam eps {settings.get('adam_eps', TORCH_ADAM_EPS):g}"  # recorded only off torch's default
    if settings["student"] != "mean":
        vector = "decoder output"
        if settings.get("residual"):
            vector = ("mean pooling + decoder output through a linear map from 0 (residual)"
                      if settings.get("residual_branch") == "linear"
                      else "mean pooling + gated decoder output (residual)")
        text += f", l = {settings['prompt_length']}, document vector: {vector}"
    return text


def _stages_table(history: list[dict]) -> list[str]:
    """The first run since the last ``--force`` (the one that built what the later runs reuse) and the latest."""
    shown = history[:1] if len(history) == 1 else [history[0], history[-1]]
    times = [dict(run["stages"]) for run in shown]
    names = list(dict.fromkeys(name for t in times for name in t))
    if len(shown) == 1:
        lines = [f"Stage wall times of `{shown[0]['command']}` ({shown[0]['finished']}):", "",
                 "| stage | s |", "|---|---:|"]
    else:
        lines = [f"Stage wall times of the first driver run since the last `--force` ({shown[0]['finished']}, "
                 f"`{shown[0]['command']}`) and of the latest ({shown[1]['finished']}, `{shown[1]['command']}`), "
                 f"which reuses what the runs before it made:", "",
                 "| stage | first run (s) | latest run (s) |", "|---|---:|---:|"]
    lines += [f"| {name} | " + " | ".join(f"{t[name]:.0f}" if name in t else "-" for t in times) + " |"
              for name in names]
    lines.append("| **total** | " + " | ".join(f"**{sum(t.values()):.0f} ({sum(t.values()) / 60:.0f} min)**"
                                               for t in times) + " |")
    return lines


def readme_block(root: Path, name: str) -> str:
    """The README block of one collection: how it was made, Table 2, the students, the stage times."""
    runs_dir = root / "runs" / name
    for f in ("table2.md", "table2.json", "stages.json"):
        if not (runs_dir / f).is_file():
            raise FileNotFoundError(f"{runs_dir / f}: missing; the driver writes it: run `python -m "
                                    f"pyserini_kdspd.table2 --collections {name}` (without --latex) first; it "
                                    f"reuses every output it finds")
    meta = io.read_json(runs_dir / "table2.json")
    cpu = meta["cpu"]
    steps = f", {meta['train_steps']} training steps per student" if meta["students"] else ""
    lines = [f"<!-- written by `python -m pyserini_kdspd.table2 --readme` from runs/{name}/ and the students' "
             f"training logs; edits here are overwritten -->",
             f"`{meta['command']}` (seed {meta['seed']}{steps}) finished {meta['finished']} on {cpu['model']} "
             f"({cpu['cores']} cores; {' '.join(cpu['flags']) or 'no AVX2'}; native bf16: "
             f"{'yes' if cpu['native_bf16'] else 'no'}), torch {meta['versions'].get('torch', '?')}.", "",
             (runs_dir / "table2.md").read_text(encoding="utf-8").strip()]
    if meta["students"]:
        lines += ["", *_students_table(root, meta["students"])]
    lines += ["", *_stages_table(io.read_json(runs_dir / "stages.json")["runs"])]
    return "\n".join(lines)


def rewrite_readme(readme: Path, root: Path, names: tuple[str, ...]) -> list[str]:
    """Replace the block of every collection in ``names`` that has a ``runs/<name>/table2.md``; returns them."""
    if not readme.is_file():
        raise FileNotFoundError(f"--readme {readme}: no such file")
    done = [name for name in names if (root / "runs" / name / "table2.md").is_file()]
    if not done:
        raise FileNotFoundError(f"no runs/<collection>/table2.md under {root} for {', '.join(names)}: run the "
                                f"driver first (--output-root names its folder)")
    for name in done:
        io.replace_marked_block(readme, f"table2:{name}", readme_block(root, name))
    return done


def _comma_list(allowed: tuple[str, ...]):
    """argparse type of a comma list drawn from ``allowed``: a typo fails at parsing, not after the data stage."""
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in value.split(",") if x.strip())
        unknown = [x for x in items if x not in allowed]
        if unknown or not items:
            got = f"unknown {', '.join(unknown)}" if unknown else "empty"
            raise argparse.ArgumentTypeError(f"{got}; choose from {', '.join(allowed)}")
        return items
    return parse


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.table2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=list(TRAIN_STEPS), default="quick",
                   help=f"quick: the offline default a new user runs ({TRAIN_STEPS['quick']} training steps per "
                        f"student); full: the paper's settings where this machine allows ({TRAIN_STEPS['full']})")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--output-root", type=Path, default=Path("."))
    p.add_argument("--encoder", default=None, help=f"student backbone (default {DEFAULT_BACKBONE}, packaged)")
    p.add_argument("--mdpr", default=None, help=f"multilingual dense baseline (default {DEFAULT_BACKBONE})")
    p.add_argument("--teacher", default=None, help=f"English teacher (default {DEFAULT_TEACHER}, packaged)")
    p.add_argument("--train-steps", type=POSITIVE_INT, default=None,
                   help="optimizer steps per student (default: by --mode); with the same --output-root a larger "
                        "number extends the finished students")
    p.add_argument("--smt-aligner", choices=ALIGNERS, default=DEFAULT_ALIGNER,
                   help="word aligner of the SMT tables (chosen on FLORES dev: python -m "
                        "pyserini_kdspd.search.translate.dev): fastalign (deterministic), eflomal (0.003 MRR better "
                        "on dev, but it takes no seed: its tables are recorded by hash and reused) or ibm1")
    p.add_argument("--bitext", type=Path, default=None)
    p.add_argument("--mmarco-dir", type=Path, default=None,
                   help="mMARCO's {arabic,chinese,russian,indonesian}_collection.tsv: adds the mTREC column")
    p.add_argument("--clef-dir", type=Path, default=None,
                   help="your CLEF 2000-2003 ad hoc copy (documents, topics, qrels): adds the CLEF column")
    p.add_argument("--systems", type=_comma_list(SYSTEMS), default="bm25,dense,kd",
                   help="comma list of bm25, dense, kd")
    p.add_argument("--collections", type=_comma_list(COLLECTIONS), default="lareqa,mtrec,clef",
                   help="comma list of lareqa, mtrec, clef (absent inputs are skipped with one line)")
    p.add_argument("--nmt", default="human",
                   help="whole-query translation for the NMT rows: 'human' (LAReQA: XQuAD's human translations, "
                        "labelled as such), a TSV file qid<TAB>lang<TAB>text, or a Hugging Face MT model "
                        "(e.g. facebook/nllb-200-distilled-600M; needs a network)")
    p.add_argument("--analyses", type=_comma_list(ANALYSES), default=(),
                   help="comma list of the paper's analyses to run after the table, written under "
                        "runs/<collection>/, all on LAReQA (bias: language bias, Figure 4; langid: KD-SPD with "
                        "language-ID tags against gold tags; ablations, zeroshot, objectives: the commands "
                        "python -m pyserini_kdspd.<name> at their defaults, training their students for this "
                        "run's steps and reusing its own)")
    p.add_argument("--hits", type=int, default=100)
    p.add_argument("--seed", type=int, default=0,
                   help="every random choice: the students' initialisation, dropout and batch order, round robin's "
                        "language order, mTREC's languages (recorded in runs/<collection>/table2.json)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="store_true", help="redo every stage instead of reusing outputs")
    p.add_argument("--latex", action="store_true")
    p.add_argument("--readme", type=Path, nargs="?", const=Path("README.md"), default=None, metavar="README",
                   help="run nothing: rewrite the Table 2 block of each collection in README (default README.md), "
                        "between <!-- table2:<collection>:start --> and <!-- table2:<collection>:end -->, from "
                        "what the driver wrote under --output-root")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = p.parse_args(argv)
    from ._cli import configure_logging, run_cli

    if a.readme is not None:
        def readme() -> None:
            done = rewrite_readme(a.readme, a.output_root, a.collections)
            print(f"{a.readme}: rewrote the Table 2 block of {', '.join(done)}")
        return run_cli(readme)
    data = resolve_data_dir(p, a.data_dir)
    configure_logging()
    s = Settings(mode=a.mode, root=a.output_root, data=data, hits=a.hits, seed=a.seed,
                 threads=a.threads, force=a.force, latex=a.latex, bitext=a.bitext, nmt=a.nmt,
                 mmarco_dir=a.mmarco_dir, clef_dir=a.clef_dir, systems=a.systems, collections=a.collections,
                 analyses=a.analyses,
                 train_steps=a.train_steps or TRAIN_STEPS[a.mode], smt_aligner=a.smt_aligner,
                 command=shlex.join(["python", "-m", "pyserini_kdspd.table2", *argv]))
    for k in ("encoder", "mdpr", "teacher"):
        if getattr(a, k):
            setattr(s, k, getattr(a, k))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run_cli(lambda: run(s))


if __name__ == "__main__":
    sys.exit(main())
