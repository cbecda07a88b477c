"""Language bias of multilingual rankings: the KD-SPD paper's section 5.3 and Figure 4.

An English question of LAReQA has one relevant sentence per language, every one a translation of
the answer. A system without language bias ranks these parallel documents together, so per query:

* **maximum rank distance**: the last minus the first rank among them;
* **maximum score difference**: the highest minus the lowest score among them.

Each language is represented by its best-ranked relevant document (LAReQA has exactly one), so the
spread is across languages, never within one. Only documents within the top ``depth`` count: a
query with fewer than two languages found there has no spread and is left out of the averages (the
tables say how many remain), and a distance can be at most ``depth - 1``. The default depth, 1000, is
ten times the Table 2 runs' top-100 cut, which would truncate the statistic; :func:`deep_runs` makes
runs that deep from the indexes the Table 2 driver built.

Scores are comparable only within one scoring function: end-to-end dense runs carry the model's inner
product; "+ Score" runs carry per-language min-max normalised scores (every language's best is 1), shown
but not comparable; round robin's scores are ``depth - rank`` by construction, so its score difference
is reported as not applicable.

Beside it, each language's share of the top 10 and top 100 (pooled over queries) against its share of
the collection, and their total variation distance (half the sum of absolute differences: 0 when the
top k mixes languages as the collection does).

``python -m pyserini_kdspd.analysis.bias --collection lareqa [--root .]`` writes
``runs/lareqa/bias.{md,json,png,pdf}``; :func:`bias_report` does the same from the driver.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .. import io
from .._cli import POSITIVE_INT

DEPTH = 1000
CUTOFFS = (1, 10, 100)  # the top 1: which language a system puts first (its MRR comes from there)
# What a run's scores are: the model's own inner product (comparable across systems of one kind), min-max
# normalised per language list; None stands for round robin's synthetic depth - rank.
SCORE_KINDS = ("model", "min-max")


def score_kind(label: str) -> str | None:
    """The kind of scores a Table 2 row carries, from its label (the driver's row names)."""
    if label.endswith("+ Round Robin"):
        return None
    return "min-max" if label.endswith("+ Score") else "model"


def languages_of(by_lang: Mapping[str, Path]) -> dict[str, str]:
    """docid -> language, from per-language JsonCollections (the driver's ``Collection.by_lang``)."""
    lang_of: dict[str, str] = {}
    for lang, folder in sorted(by_lang.items()):
        for f in io.collection_files(folder):
            for rec in io.read_jsonl(f):
                docid = str(rec.get("id", rec.get("_id", rec.get("docid"))))
                if lang_of.setdefault(docid, lang) != lang:
                    raise ValueError(f"{f}: document {docid!r} is in both the {lang_of[docid]} and the {lang} "
                                     "collections; each document must have one language")
    if not lang_of:
        raise ValueError(f"no documents in the per-language collections {', '.join(map(str, by_lang.values()))}")
    return lang_of


@dataclass
class Bias:
    """One system's language bias: per judged query and language, the (rank, score) of that language's
    best-ranked relevant document within ``depth``, and each language's share of the top k."""

    system: str
    depth: int
    found: dict[str, dict[str, tuple[int, float]]]
    shares: dict[int, dict[str, float]]
    collection: dict[str, float]       # each language's share of the collection
    scores: str | None = "model"       # one of SCORE_KINDS; None: synthetic (round robin)
    run: str | None = None             # the run file it was measured on
    spread: dict[str, tuple[int, float]] = field(init=False)  # qid -> (max rank distance, max score difference)

    def __post_init__(self):
        self.spread = {q: (max(r for r, _ in f.values()) - min(r for r, _ in f.values()),
                           max(s for _, s in f.values()) - min(s for _, s in f.values()))
                       for q, f in self.found.items() if len(f) >= 2}

    @property
    def rank_distances(self) -> list[int]:
        return [d for d, _ in self.spread.values()]

    @property
    def score_differences(self) -> list[float] | None:
        return None if self.scores is None else [s for _, s in self.spread.values()]

    def share_gap(self, k: int) -> float:
        """Total variation distance between the languages of the top ``k`` and those of the collection."""
        return sum(abs(self.shares[k].get(lang, 0.0) - c) for lang, c in self.collection.items()) / 2

    def summary(self) -> dict:
        rd, sd = self.rank_distances, self.score_differences
        return {"queries": len(self.found), "measured": len(rd),
                "languages_found": statistics.fmean(len(f) for f in self.found.values()) if self.found else None,
                "rank_distance_mean": statistics.fmean(rd) if rd else None,
                "rank_distance_median": statistics.median(rd) if rd else None,
                "score_difference_mean": statistics.fmean(sd) if sd else None,
                "score_difference_median": statistics.median(sd) if sd else None,
                "share_gap": {str(k): self.share_gap(k) for k in self.shares}}


def measure(system: str, run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
            lang_of: Mapping[str, str], depth: int = DEPTH, cutoffs: Sequence[int] = CUTOFFS,
            scores: str | None = "model", relevance_level: int = 1, run_file=None) -> Bias:
    """The language bias of ``run`` (ranked as trec_eval ranks it) on the judged queries of ``qrels``.

    Raises ValueError when the run ranks a document of no language (a run of another collection) or
    holds fewer than ``depth`` documents per query where the collection has more: the rank distance
    would silently be cut at the run's depth (a Table 2 run at 100).
    """
    if scores is not None and scores not in SCORE_KINDS:
        raise ValueError(f"scores={scores!r}: expected one of {', '.join(SCORE_KINDS)} or None")
    relevant = {q: {d for d, g in docs.items() if g >= relevance_level} for q, docs in qrels.items()}
    relevant = {q: rel for q, rel in relevant.items() if rel}
    what = run_file or system
    for q, docs in run.items():
        for d in docs:
            if d not in lang_of:
                raise ValueError(f"{what}: query {q!r} ranks document {d!r}, which is in no language's collection; "
                                 "was the run made on another collection?")
    longest = max((len(docs) for docs in run.values()), default=0)
    if longest < min(depth, len(lang_of)):
        raise ValueError(f"{what}: at most {longest} documents per query, fewer than the depth {depth}: rank "
                         f"distances would be cut at {longest}; search deeper (deep_runs) or measure at depth "
                         f"{longest}")
    found: dict[str, dict[str, tuple[int, float]]] = {}
    tops: dict[int, Counter] = {k: Counter() for k in cutoffs}
    for q, rel in relevant.items():
        ranking = io.ranked(run.get(q, {}), depth)
        f = found[q] = {}
        for rank, (d, s) in enumerate(ranking, 1):
            if d in rel:
                f.setdefault(lang_of[d], (rank, s))
        for k, counts in tops.items():
            counts.update(lang_of[d] for d, _ in ranking[:k])
    counts = Counter(lang_of.values())
    langs = sorted(counts)
    return Bias(system, depth, found,
                shares={k: {lang: c[lang] / (sum(c.values()) or 1) for lang in langs} for k, c in tops.items()},
                collection={lang: counts[lang] / len(lang_of) for lang in langs}, scores=scores,
                run=str(run_file) if run_file else None)


# ---------------------------------------------------------------------------- report
def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def render_markdown(biases: Sequence[Bias], title: str) -> str:
    """The bias table and the language-share table, with the conventions under them."""
    if not biases:
        raise ValueError("no systems to report")
    depth = biases[0].depth
    lines = [f"## Language bias: {title} (depth {depth})", "",
             "| System | queries with ≥ 2 languages found | languages found (mean) | max rank distance: mean "
             "| median | max score difference: mean | median |", "|---|---:|---:|---:|---:|---:|---:|"]
    for b in biases:
        m = b.summary()
        mark = " §" if b.scores == "min-max" else ""
        lines.append(f"| {b.system} | {m['measured']} / {m['queries']} | {_num(m['languages_found'], '.2f')} "
                     f"| {_num(m['rank_distance_mean'], '.1f')} | {_num(m['rank_distance_median'], '.1f')} "
                     f"| {_num(m['score_difference_mean'], '.3f')}{mark} "
                     f"| {_num(m['score_difference_median'], '.3f')}{mark} |")
    lines += ["", f"Per query, each language's best-ranked relevant document within the top {depth}; spreads "
              f"over the queries with at least two languages found there (a distance is at most {depth - 1}). "
              "Scores: the model's inner product; n/a: round robin, whose scores are depth - rank by construction; "
              "§ min-max normalised per language list (each language's best is 1), not comparable with the "
              "inner products.", ""]
    langs = list(biases[0].collection)
    cutoffs = list(biases[0].shares)
    lines += ["Share of each language (%) in the top k, pooled over queries, against its share of the collection; "
              "gap: total variation distance (0: the same mix as the collection).", "",
              "| System | k | " + " | ".join(langs) + " | gap |", "|---|---:|" + "---:|" * (len(langs) + 1),
              "| collection | | " + " | ".join(f"{100 * biases[0].collection[x]:.1f}" for x in langs) + " | |"]
    for b in biases:
        for k in cutoffs:
            lines.append(f"| {b.system} | {k} | " + " | ".join(f"{100 * b.shares[k][x]:.1f}" for x in langs)
                         + f" | {b.share_gap(k):.3f} |")
    return "\n".join(lines) + "\n"


def report_json(biases: Sequence[Bias], collection: str, made_from: Mapping | None = None) -> dict:
    """Everything the table and the figure show, and per query the (rank, score) of each language;
    ``made_from``: the driver run whose models and indexes were measured (its ``table2.json``)."""
    return {"collection": collection, "depth": biases[0].depth if biases else None,
            "made_from": dict(made_from) if made_from else None,
            "collection_shares": biases[0].collection if biases else {},
            "systems": {b.system: {"run": b.run, "scores": b.scores, "summary": b.summary(),
                                   "shares": {str(k): v for k, v in b.shares.items()},
                                   "per_query": {q: {lang: [r, round(s, 6)] for lang, (r, s) in f.items()}
                                                 for q, f in b.found.items()}}
                        for b in biases}}


def plot(biases: Sequence[Bias], stem, title: str) -> list[Path]:
    """Figure 4's two panels, one box per system: max rank distance and (model scores only) max score
    difference. Written as ``stem.png`` and ``stem.pdf`` through matplotlib's Agg canvas (no pyplot state)."""
    from matplotlib.figure import Figure

    stem = Path(stem)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = [("max rank distance", [(b.system, b.rank_distances) for b in biases]),
              ("max score difference (model scores)",
               [(b.system, b.score_differences) for b in biases if b.scores == "model"])]
    for ax, (ylabel, series) in zip(axes, panels):
        series = [(name, values) for name, values in series if values]
        if series:
            ax.boxplot([v for _, v in series], tick_labels=[n for n, _ in series], showmeans=True,
                       flierprops={"markersize": 2, "alpha": 0.4})
            ax.tick_params(axis="x", labelrotation=20)
        else:
            ax.text(0.5, 0.5, "no system", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Language bias: {title}, parallel relevant documents within the top {biases[0].depth} "
                 "(box: quartiles, line: median, triangle: mean)")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=150)
    fig.savefig(out[1], metadata={"CreationDate": None})  # no timestamp: the same numbers give the same file
    return out


def write_report(biases: Sequence[Bias], stem, title: str, collection: str,
                 made_from: Mapping | None = None) -> dict[str, Path]:
    """``stem.md``, ``stem.json``, ``stem.png``, ``stem.pdf``."""
    stem = Path(stem)
    with io.atomic_write(stem.with_suffix(".md")) as f:
        f.write(render_markdown(biases, title))
    io.write_json(stem.with_suffix(".json"), report_json(biases, collection, made_from))
    png, pdf = plot(biases, stem, title)
    return {"md": stem.with_suffix(".md"), "json": stem.with_suffix(".json"), "png": png, "pdf": pdf}


# ---------------------------------------------------------------------------- runs from the driver's indexes
def deep_runs(col, s, students: Mapping[str, Path], depth: int = DEPTH) -> dict[str, Path]:
    """Depth-``depth`` runs of the driver's dense rows, from the indexes it built (``s`` is the driver's
    ``Settings``: root, mdpr, teacher, hits, seed, threads, force), under ``runs/<collection>/deep/``.

    Each is stock ``pyserini.search.faiss`` with the model the driver used (``DenseModel.from_name``, the
    same names); the mDPR + Round Robin / + Score rows search the per-language indexes at the same depth
    (with the query vectors the driver encoded) and fuse them: ``fusion.fuse(..., depth=depth)`` for round
    robin, whose top ``s.hits`` is the driver's row whatever the depth, and ``norm_depth=s.hits`` for
    "+ Score" (each language normalised over its top ``s.hits``, as the driver's row was), so that its top
    ``s.hits`` is too. A run is reused while it is newer than its index (a fused
    run: than its per-language runs). A row whose index is absent, or was encoded by other weights than its
    model folder now holds, is skipped with one line.
    """
    from ..data.passages import maxp_search_args
    from ..fusion import fuse
    from ..search.dense import STAMP, DenseModel, index_complete, model_fingerprint, search, search_by_language

    runs_dir, idx_dir = s.root / "runs" / col.name, s.root / "indexes" / col.name
    deep = runs_dir / "deep"
    extra = maxp_search_args(col.corpus_dir, depth) if col.max_passage else []
    rows: dict[str, Path] = {}
    models = [("mDPR", "mdpr", s.mdpr), ("Teacher (English only)", "teacher", s.teacher)]
    models += [(label, Path(p).name, str(p)) for label, p in students.items()]
    for label, name, source in models:
        index = idx_dir / name
        if not index_complete(index):
            print(f"[skip] {label}: no index {index} (the Table 2 driver builds it)")
            continue
        if label in students and not Path(source).is_dir():
            print(f"[skip] {label}: {index} exists but its model folder {source} does not")
            continue
        model = DenseModel.from_name(name, source)
        stamp = index / STAMP
        if not stamp.is_file() or io.read_json(stamp) != model_fingerprint(model.path):
            print(f"[skip] {label}: {index} was not encoded by {model.path} as it is now (see {stamp}); "
                  f"rerun the driver to re-encode it")
            continue
        rows[label] = search(model, index, col.topics, deep / f"{name}.txt", hits=depth, threads=s.threads,
                             force=s.force, extra_args=extra)
        if label != "mDPR":
            continue
        outs = search_by_language(model, index, next(Path(col.corpus_dir).glob("*.jsonl")), col.topics,
                                  deep / "by-lang", hits=depth, threads=s.threads, force=s.force, extra_args=extra)
        lang_runs = None
        fusions = (("mDPR + Round Robin", "rr", lambda runs: fuse(runs, method="rr", depth=depth, seed=s.seed)),
                   ("mDPR + Score", "score", lambda runs: fuse(runs, method="minmax", depth=depth, seed=s.seed,
                                                                norm_depth=s.hits)))
        for fused_label, slug, fused in fusions:
            out = deep / f"{name}+{slug}.txt"
            if s.force or not all(io.newer(out, o) for o in outs.values()):
                lang_runs = lang_runs or {lang: io.read_run(o) for lang, o in outs.items()}
                io.write_run(out, fused(lang_runs), tag=f"{name}-{slug}", depth=depth)
            rows[fused_label] = out
    return rows


ROW_ORDER = ("Teacher (English only)", "mDPR + Round Robin", "mDPR + Score", "mDPR", "KD-Encoder", "KD-SPD")


def bias_report(col, s, students: Mapping[str, Path], depth: int = DEPTH) -> dict[str, Path]:
    """The language-bias analysis of the driver's dense rows on ``col`` (a ``table2.Collection``), written
    as ``runs/<collection>/bias.{md,json,png,pdf}`` under ``s.root``; returns those paths."""
    rows = deep_runs(col, s, students, depth)
    if not rows:
        raise FileNotFoundError(f"no dense index of the Table 2 driver under {s.root / 'indexes' / col.name}: run "
                                f"`python -m pyserini_kdspd.table2 --collections {col.name} --output-root {s.root}` "
                                "first")
    qrels, lang_of = io.read_qrels(col.qrels), languages_of(col.by_lang)
    ordered = sorted(rows, key=lambda r: ROW_ORDER.index(r) if r in ROW_ORDER else len(ROW_ORDER))
    biases = [measure(label, io.read_run(rows[label]), qrels, lang_of, depth=depth, scores=score_kind(label),
                      relevance_level=col.relevance_level, run_file=rows[label]) for label in ordered]
    driver = s.root / "runs" / col.name / "table2.json"
    made_from = ({k: v for k, v in io.read_json(driver).items() if k in ("command", "finished", "seed", "train_steps")}
                 if driver.is_file() else None)
    return write_report(biases, s.root / "runs" / col.name / "bias", title=col.name, collection=col.name,
                        made_from=made_from)


# ---------------------------------------------------------------------------- the README's block
FIGURE_DIR = Path("docs") / "figures"  # beside the README: a figure under runs/ (not committed) would not show
END_TO_END = ("KD-SPD", "KD-Encoder", "mDPR", "Teacher (English only)")


def _verdict(systems: Mapping[str, dict]) -> list[str]:
    """What the table says, in words computed from it: who has the lowest mean rank distance, and which
    language each system puts first."""
    mean = {name: m["summary"]["rank_distance_mean"] for name, m in systems.items()
            if m["summary"]["rank_distance_mean"] is not None}
    dense = sorted((n for n in mean if n in END_TO_END), key=mean.get)
    merged = sorted((n for n in mean if n not in END_TO_END), key=mean.get)
    out = []
    if dense:
        out.append("Mean maximum rank distance of the end-to-end dense systems: "
                   + ", ".join(f"{n} {mean[n]:.1f}" for n in dense) + f" (lowest: {dense[0]})"
                   + (("; of the per-language runs merged after retrieval: "
                       + ", ".join(f"{n} {mean[n]:.1f}" for n in merged)) if merged else "") + ".")
    firsts = []
    for name, m in systems.items():
        top1 = m["shares"].get("1")
        if top1:
            lang = max(sorted(top1), key=top1.get)
            firsts.append(f"{name} {100 * top1[lang]:.0f}% {lang}")
    if firsts:
        out.append("Language of the rank-1 document, most frequent (share of queries): " + ", ".join(firsts) + ".")
    return out


def readme_block(root: Path, collection: str, readme: Path) -> str:
    """The README block of ``runs/<collection>/bias.{json,md,png}``; copies the figure under the README's
    folder (``docs/figures/``) so that it shows wherever the README is read."""
    stem = root / "runs" / collection / "bias"
    for suffix in (".json", ".md", ".png"):
        if not stem.with_suffix(suffix).is_file():
            raise FileNotFoundError(f"{stem.with_suffix(suffix)}: missing; run `python -m pyserini_kdspd.analysis.bias "
                                    f"--collection {collection} --root {root}` (after the Table 2 driver) first")
    report = io.read_json(stem.with_suffix(".json"))
    figure = FIGURE_DIR / f"bias-{collection}.png"
    (readme.parent / figure).parent.mkdir(parents=True, exist_ok=True)
    (readme.parent / figure).write_bytes(stem.with_suffix(".png").read_bytes())
    made = report.get("made_from")
    source = (f"the models and indexes of `{made['command']}` (seed {made['seed']}, {made['train_steps']} training "
              f"steps per student, finished {made['finished']})" if made else "the driver's models and indexes")
    table = stem.with_suffix(".md").read_text(encoding="utf-8").strip().splitlines()
    if table and table[0].startswith("#"):
        table = table[1:]  # the README has its own heading
    return "\n".join([f"<!-- written by `python -m pyserini_kdspd.analysis.bias --readme` from runs/{collection}/bias.* ; "
                      "edits here are overwritten -->",
                      f"Measured at depth {report['depth']} on {source}.", "", *_verdict(report["systems"]), "",
                      f"![Language bias on {collection}: maximum rank distance and score difference per system]"
                      f"({figure.as_posix()})", *table])


def main(argv=None) -> int:
    from .._cli import configure_logging, resolve_data_dir, rewrite_readme_block, run_cli
    from ..table2 import STUDENTS, Settings, lareqa

    d = Settings()
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.analysis.bias",
                                description="Language bias of the Table 2 driver's dense rows (paper section 5.3, "
                                            "Figure 4): runs/<collection>/bias.{md,json,png,pdf}.")
    p.add_argument("--collection", choices=["lareqa"], default="lareqa",
                   help="a collection whose relevant documents are parallel across languages")
    p.add_argument("--root", type=Path, default=Path("."), help="the driver's --output-root (default .)")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--depth", type=POSITIVE_INT, default=DEPTH,
                   help=f"search depth of the runs measured (default {DEPTH}; the driver's top-100 would cut "
                        "the rank distances)")
    p.add_argument("--mdpr", default=d.mdpr, help=f"as given to the driver (default {d.mdpr})")
    p.add_argument("--teacher", default=d.teacher, help=f"as given to the driver (default {d.teacher})")
    p.add_argument("--hits", type=POSITIVE_INT, default=d.hits,
                   help=f"the driver's --hits (default {d.hits}): + Score is normalised over each language's top hits")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of round robin and of + Score's tie breaking, as given to the driver (default 0)")
    p.add_argument("--threads", type=POSITIVE_INT, default=d.threads)
    p.add_argument("--force", action="store_true", help="search again instead of reusing runs/<collection>/deep/")
    p.add_argument("--readme", type=Path, nargs="?", const=Path("README.md"), default=None, metavar="README",
                   help="run nothing: rewrite README's block between <!-- bias:<collection>:start --> and "
                        "<!-- bias:<collection>:end --> from runs/<collection>/bias.*, the figure copied to "
                        f"{FIGURE_DIR.as_posix()}/ beside it")
    a = p.parse_args(argv)
    if a.readme is not None:
        return rewrite_readme_block(a.readme, f"bias:{a.collection}",
                                    lambda: readme_block(a.root, a.collection, a.readme),
                                    f"language-bias block of {a.collection}")
    data = resolve_data_dir(p, a.data_dir)
    configure_logging()
    s = Settings(root=a.root, data=data, mdpr=a.mdpr, teacher=a.teacher, hits=a.hits, seed=a.seed,
                 threads=a.threads, force=a.force)

    def work() -> int:
        col = lareqa(s)
        if col is None:
            return 2
        students = {label: s.root / "models" / folder for label, _, folder in STUDENTS}
        out = bias_report(col, s, students, depth=a.depth)
        print(out["md"].read_text(encoding="utf-8"))
        print("wrote " + ", ".join(str(p) for p in out.values()))
        return 0
    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
