"""Evaluation of TREC runs with pytrec_eval, paired t-tests and the paper's Table 2.

Every number in the results table is recomputed from the TREC run files, so the
table can be audited: ``python -m pyserini_kdspd.evaluate --qrels Q --runs runs/``.

Conventions (stated once, applied everywhere):

* Runs are cut to their top ``depth`` (default 100) documents per query before
  evaluation, ordered as trec_eval orders them (score descending, ties broken by
  docid *descending*), so the cut keeps exactly what trec_eval would rank first.
* Queries whose judgments hold no relevant document (grade >= ``relevance_level``)
  are excluded, as trec_eval does for averages.
* Judged queries that a run does not contain score 0 on every metric and count in
  the average. trec_eval (without ``-c``) would silently drop them, which flatters
  a multilingual system that returns nothing for some queries; with ``-c`` it does
  what we do. Queries in the run but not in the qrels are ignored.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ._cli import output_file, run_cli
from .io import Qrels, Run, atomic_write, check_scores, ranked, read_qrels, read_run

DEFAULT_METRICS = ("map", "ndcg_cut_10", "P_10", "recip_rank", "recall_100")
METRIC_LABELS = {
    "map": "MAP", "ndcg_cut_10": "nDCG@10", "P_10": "P@10", "recip_rank": "MRR",
    "recall_100": "R@100", "ndcg_cut_20": "nDCG@20", "recall_1000": "R@1000", "P_20": "P@20",
    "ndcg": "nDCG", "Rprec": "R-Prec", "P_1": "P@1", "recall_10": "R@10",
}
# Table 2 of the paper: dagger = better than mDPR, double dagger = better than KD-Encoder.
PAPER_MARKS = {"\u2020": "mDPR", "\u2021": "KD-Encoder"}
MISSING = "\u2013"  # en dash, the cell of a run that is not available


@dataclass
class Evaluation:
    """Per-query metric values of one run on one set of judgments.

    ``per_query[qid][metric]`` covers every evaluated query (judged queries absent
    from the run are present with zeros and listed in ``missing``).
    """

    per_query: dict[str, dict[str, float]]
    metrics: tuple[str, ...]
    depth: int | None = 100
    missing: tuple[str, ...] = ()
    name: str | None = None
    mean: dict[str, float] = field(init=False)

    def __post_init__(self):
        n = len(self.per_query)
        self.mean = {m: (sum(v[m] for v in self.per_query.values()) / n if n else float("nan"))
                     for m in self.metrics}

    def __getitem__(self, metric: str) -> float:
        return self.mean[metric]

    @property
    def num_queries(self) -> int:
        return len(self.per_query)


def cut(run: Mapping[str, Mapping[str, float]], depth: int | None) -> Run:
    """Each query's top ``depth`` documents in trec_eval's order (:func:`~pyserini_kdspd.io.ranked`; None: all)."""
    return {qid: {d: float(s) for d, s in ranked(docs, depth)} for qid, docs in run.items()}


def _load_run(run, what="run") -> tuple[Run, str]:
    if isinstance(run, Mapping):
        run = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items()}
        check_scores(run, what)  # as read_run checks a file's: NaN sorts arbitrarily, inf always first
        return run, what
    return read_run(run), str(run)


def _load_qrels(qrels) -> tuple[Qrels, str]:
    if isinstance(qrels, Mapping):
        return {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}, "qrels"
    return read_qrels(qrels), str(qrels)


def evaluate(run, qrels, depth: int | None = 100, metrics: Sequence[str] = DEFAULT_METRICS,
             relevance_level: int = 1, name: str | None = None) -> Evaluation:
    """Evaluate ``run`` (dict or TREC file) against ``qrels`` (dict or TREC qrels file).

    Errors name the files given as paths (and the system ``name`` for a dict run); a score
    that is not finite is one. Judged queries missing from the run count as 0 on every metric: in multilingual
    retrieval a system that returns nothing for a query must be penalised, not
    excused, so the average is over all judged queries with at least one relevant
    document (queries without one are excluded, as trec_eval does).
    ``relevance_level`` is the minimum grade that counts as relevant for the binary
    metrics (trec_eval's ``-l``; TREC DL passage uses 2).
    """
    import pytrec_eval

    if depth is not None and depth < 1:
        raise ValueError(f"depth must be a positive integer or None, got {depth}")
    run_d, run_src = _load_run(run, "run" if name is None else f"run {name!r}")
    qrels_d, qrels_src = _load_qrels(qrels)
    judged = {q: docs for q, docs in qrels_d.items() if any(g >= relevance_level for g in docs.values())}
    if not judged:
        raise ValueError(f"{qrels_src}: no query has a document with relevance >= {relevance_level}")
    present = [q for q in judged if run_d.get(q)]
    if run_d and not present:
        raise ValueError(f"{run_src}: shares no query id with {qrels_src} "
                         f"(run ids e.g. {sorted(run_d)[:3]}, qrels ids e.g. {sorted(judged)[:3]})")
    evaluator = pytrec_eval.RelevanceEvaluator(judged, set(metrics), relevance_level=relevance_level)
    scores = evaluator.evaluate(cut({q: run_d[q] for q in present}, depth)) if present else {}
    per_query: dict[str, dict[str, float]] = {}
    missing = []
    for q in judged:  # qrels order, so per-query files are stable
        if q in scores:
            per_query[q] = {m: float(scores[q][m]) for m in metrics}
        else:
            per_query[q] = {m: 0.0 for m in metrics}
            missing.append(q)
    unknown = [m for m in metrics if present and m not in next(iter(scores.values()))]
    if unknown:
        raise ValueError(f"pytrec_eval does not know the measure(s) {unknown}")
    return Evaluation(per_query, tuple(metrics), depth, tuple(missing), name)


def ttest(eval_a: Evaluation, eval_b: Evaluation, metric: str) -> tuple[float, float]:
    """Two-tailed paired t-test (scipy.stats.ttest_rel) of ``a`` vs ``b`` over their common queries.

    ``t > 0`` means ``a`` is better. Identical per-query values give ``(0.0, 1.0)``
    (scipy would return NaN: no evidence of a difference is the honest reading).
    """
    from scipy.stats import ttest_rel

    common = [q for q in eval_a.per_query if q in eval_b.per_query]
    if len(common) < 2:
        raise ValueError(f"a paired t-test needs at least 2 common queries, got {len(common)}")
    a = [eval_a.per_query[q][metric] for q in common]
    b = [eval_b.per_query[q][metric] for q in common]
    if all(x == y for x, y in zip(a, b)):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant non-zero differences: t = +-inf
        res = ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def significantly_better(a: Evaluation, b: Evaluation, metric: str, alpha: float = 0.05) -> bool:
    t, p = ttest(a, b, metric)
    return t > 0 and p < alpha


# ---------------------------------------------------------------------- table
def _normalise_rows(rows) -> tuple[list[str | None], dict[str, dict[str | None, Evaluation | None]]]:
    items = list(rows.items()) if isinstance(rows, Mapping) else list(rows)
    table: dict[str, dict] = {}
    collections: list[str | None] = []
    grouped = any(isinstance(v, Mapping) for _, v in items)
    for name, value in items:
        if name in table:
            raise ValueError(f"row {name!r} given twice")
        if grouped:
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"row {name!r}: expected {{collection: Evaluation}} like the other rows")
            table[name] = dict(value or {})
            for c in table[name]:
                if c not in collections:
                    collections.append(c)
        else:
            if value is not None and not isinstance(value, Evaluation):
                raise TypeError(f"row {name!r}: expected an Evaluation or None, got {type(value).__name__}")
            table[name] = {None: value}
    if not grouped:
        collections = [None]
    return collections, table


def _latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        s = s.replace(a, b)
    return s


_LATEX_MARKS = {"\u2020": r"\dag", "\u2021": r"\ddag", "*": "*"}


def render_table(rows, metrics: Sequence[str] = DEFAULT_METRICS, marks: Mapping[str, str] | None = None,
                 fmt: str = "markdown", alpha: float = 0.05, decimals: int = 3) -> str:
    """Render Table 2: one row per system, one column per metric (grouped per collection).

    ``rows`` maps a system name to an :class:`Evaluation` (one collection) or to
    ``{collection: Evaluation}`` (column groups); ``None`` stands for a run that is
    not available and is shown as "–". ``marks`` maps a mark to a baseline row
    name; a value gets the mark when its row is significantly better than that
    baseline (two-tailed paired t-test, p < ``alpha``) on that metric and
    collection. Default: the paper's marks for the baselines present among the
    rows; explicitly named baselines must be rows. Best value per column in bold.
    """
    if fmt not in ("markdown", "latex"):
        raise ValueError(f"fmt must be 'markdown' or 'latex', got {fmt!r}")
    collections, table = _normalise_rows(rows)
    if not table:
        raise ValueError("no rows to render")
    if marks is None:
        marks = {m: b for m, b in PAPER_MARKS.items() if b in table}
    else:
        absent = [b for b in marks.values() if b not in table]
        if absent:
            raise ValueError(f"significance baseline(s) {absent} are not rows of the table (rows: {list(table)})")

    cells: dict[str, list[tuple[str, bool, str]]] = {name: [] for name in table}  # (value, bold, marks)
    any_missing = False
    depths = set()
    for coll in collections:
        for metric in metrics:
            shown = {}
            for name, per_coll in table.items():
                ev = per_coll.get(coll)
                if ev is not None:
                    if metric not in ev.mean:
                        raise ValueError(f"row {name!r} was not evaluated on {metric!r}")
                    shown[name] = round(ev.mean[metric], decimals)
                    depths.add(ev.depth)
            best = max(shown.values()) if shown else None
            for name, per_coll in table.items():
                ev = per_coll.get(coll)
                if ev is None:
                    any_missing = True
                    cells[name].append((MISSING, False, ""))
                    continue
                got = ""
                for mark, base in marks.items():
                    bev = table[base].get(coll)
                    if base != name and bev is not None and significantly_better(ev, bev, metric, alpha):
                        got += mark
                value = f"{ev.mean[metric]:.{decimals}f}"
                cells[name].append((value, shown[name] == best and len(shown) > 1, got))

    notes = []
    if marks:
        notes.append("; ".join(f"{m} significantly better than {b}" for m, b in marks.items())
                     + f" (two-tailed paired t-test, p < {alpha:g}).")
    notes.append("Best value per column in bold. "
                 + (f"Runs cut at depth {depths.pop()}; " if len(depths) == 1 else "")
                 + "judged queries missing from a run count as 0.")
    if any_missing:
        notes.append(f"{MISSING}: run not available.")

    labels = [METRIC_LABELS.get(m, m) for m in metrics]
    if fmt == "markdown":
        header = ["System"] + [f"{c} {l}" if c is not None else l for c in collections for l in labels]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
        for name, row in cells.items():
            out = [f"**{v}**{m}" if b else f"{v}{m}" for v, b, m in row]
            lines.append("| " + " | ".join([name.replace("|", "\\|")] + out) + " |")
        return "\n".join(lines + [""] + notes) + "\n"

    ncols = 1 + len(collections) * len(metrics)
    lines = [r"\begin{tabular}{l" + "c" * (ncols - 1) + "}", r"\toprule"]
    if collections != [None]:
        lines.append(" & ".join([""] + [rf"\multicolumn{{{len(metrics)}}}{{c}}{{{_latex_escape(str(c))}}}"
                                        for c in collections]) + r" \\")
        lines.append(" ".join(rf"\cmidrule(lr){{{2 + i * len(metrics)}-{1 + (i + 1) * len(metrics)}}}"
                              for i in range(len(collections))))
    lines.append(" & ".join(["System"] + [_latex_escape(l) for _ in collections for l in labels]) + r" \\")
    lines.append(r"\midrule")
    for name, row in cells.items():
        out = []
        for v, b, m in row:
            v = "--" if v == MISSING else (rf"\textbf{{{v}}}" if b else v)
            if m:
                v += r"\textsuperscript{" + "".join(_LATEX_MARKS.get(c, _latex_escape(c)) for c in m) + "}"
            out.append(v)
        lines.append(" & ".join([_latex_escape(name)] + out) + r" \\")
    lines.append(r"\bottomrule")
    for n in notes:
        n = _latex_escape(n).replace(MISSING, "--").replace("<", "$<$")
        for mark, tex in _LATEX_MARKS.items():
            n = n.replace(mark, f"${'^' + tex if mark != '*' else '^*'}$")
        lines.append(rf"\multicolumn{{{ncols}}}{{l}}{{\footnotesize {n}}} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def write_per_query(path, evaluations: Mapping[str, Mapping[str | None, Evaluation | None]],
                    metrics: Sequence[str]) -> None:
    """TSV ``system [collection] qid metric...``: the numbers behind every mean, for re-testing."""
    grouped = any(c is not None for per in evaluations.values() for c in per)
    with atomic_write(path) as f:
        f.write("\t".join(["system"] + (["collection"] if grouped else []) + ["qid"] + list(metrics)) + "\n")
        for name, per in evaluations.items():
            for coll, ev in per.items():
                if ev is None:
                    continue
                for qid, vals in ev.per_query.items():
                    f.write("\t".join([name] + ([str(coll)] if grouped else []) + [qid]
                                      + [f"{vals[m]:.6f}" for m in metrics]) + "\n")


# ------------------------------------------------------------------------ CLI
RUN_SUFFIXES = (".txt", ".trec")


def _runs_in(directory: Path) -> list[tuple[str, Path]]:
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in RUN_SUFFIXES)
    return [(p.stem, p) for p in files]


def _split_assign(item: str) -> tuple[str | None, str]:
    # "name=path" unless the part before "=" looks like a path (holds a separator).
    if "=" in item:
        left, right = item.split("=", 1)
        if left and "/" not in left and right:
            return left, right
    return None, item


def collect_runs(items: Iterable[str], collections: Sequence[str | None]) -> dict[str, dict[str | None, Path]]:
    """Resolve ``--runs`` items to ``{system: {collection: path}}`` in the order given.

    Items: ``name=path``, a path (name = stem), or a directory of ``*.txt``/``*.trec``
    runs; with several collections ``COLL:name=path``, or a directory holding one
    sub-folder per collection.
    """
    grouped = collections != [None]
    out: dict[str, dict[str | None, Path]] = {}

    def add(name, coll, path):
        if coll not in collections:
            raise ValueError(f"run {path}: unknown collection {coll!r} (qrels given for {collections})")
        if coll in out.setdefault(name, {}):
            raise ValueError(f"two runs for system {name!r}" + (f" on {coll}" if grouped else "") +
                             f": {out[name][coll]} and {path}")
        out[name][coll] = path

    for item in items:
        name, p = _split_assign(item)
        path = Path(p)
        if name is None and path.is_dir():
            if grouped:
                found = False
                for coll in collections:
                    if (path / coll).is_dir():
                        for stem, f in _runs_in(path / coll):
                            add(stem, coll, f)
                            found = True
                if not found:
                    raise ValueError(f"{path}: no run files under {path}/<collection>/ for {collections}")
            else:
                found = _runs_in(path)
                if not found:
                    raise ValueError(f"{path}: no *.txt or *.trec run files")
                for stem, f in found:
                    add(stem, None, f)
            continue
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such run file or directory")
        coll = None
        if name is None:
            name = path.stem
        if grouped:
            if name is None or ":" not in name:
                raise ValueError(f"{item!r}: with several collections give runs as COLL:name=path")
            coll, name = name.split(":", 1)
        add(name, coll, path)
    return out


def _parse_qrels(items: Sequence[str]) -> dict[str | None, str]:
    if len(items) == 1 and _split_assign(items[0])[0] is None:
        return {None: items[0]}
    out = {}
    for item in items:
        coll, p = _split_assign(item)
        if coll is None:
            raise ValueError(f"{item!r}: with several qrels give each as COLL=path")
        if coll in out:
            raise ValueError(f"qrels for collection {coll!r} given twice")
        out[coll] = p
    return out


def _parse_marks(items: Sequence[str] | None) -> dict[str, str] | None:
    if items is None:
        return None
    out = {}
    for item in items:
        mark, sep, base = item.partition("=")
        if not sep or not mark or not base:
            raise ValueError(f"--marks {item!r}: expected MARK=baseline, e.g. '\u2020=mDPR'")
        out[mark] = base
    return out


# trec_eval's names for pytrec_eval's measures (its -m takes "ndcg_cut.10", it prints "ndcg_cut_10")
def _trec_eval_measure(metric: str) -> str:
    base, _, k = metric.rpartition("_")
    return f"{base}.{k}" if base and k.isdigit() else metric


def trec_eval(run, qrels, depth: int | None = 100, metrics: Sequence[str] = DEFAULT_METRICS,
              relevance_level: int = 1) -> dict[str, float]:
    """Means of ``metrics`` by stock ``python -m pyserini.eval.trec_eval -c -M depth -l level``: the
    cross-check that our figures are the ones Pyserini's users get from the command they know."""
    import subprocess

    from ._java import java_env

    cmd = [sys.executable, "-m", "pyserini.eval.trec_eval", "-c", "-l", str(relevance_level)]
    cmd += ["-M", str(depth)] if depth else []
    for m in metrics:
        cmd += ["-m", _trec_eval_measure(m)]
    proc = subprocess.run(cmd + [str(qrels), str(run)], capture_output=True, text=True, env=java_env())
    got = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "all" and parts[0] in metrics:
            got[parts[0]] = float(parts[2])
    if proc.returncode != 0 or set(got) != set(metrics):
        raise RuntimeError(f"trec_eval on {run} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stderr[-2000:]}")
    return got


def trec_eval_disagreements(run, qrels, depth: int | None = 100, metrics: Sequence[str] = DEFAULT_METRICS,
                            relevance_level: int = 1, ours: Evaluation | None = None) -> dict[str, tuple[float, float]]:
    """``{metric: (ours, trec_eval's)}`` where the two differ by more than trec_eval's printed rounding;
    ``ours``: the :func:`evaluate` of the same run with the same arguments, when the caller has it."""
    ours = ours or evaluate(run, qrels, depth=depth, metrics=metrics, relevance_level=relevance_level)
    theirs = trec_eval(run, qrels, depth=depth, metrics=metrics, relevance_level=relevance_level)
    return {m: (ours[m], theirs[m]) for m in metrics if abs(ours[m] - theirs[m]) > 5e-5 + 1e-9}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pyserini_kdspd.evaluate",
        description="Evaluate TREC runs (pytrec_eval) and print the Table 2 layout with significance marks.")
    ap.add_argument("--qrels", nargs="+", required=True,
                    help="a qrels file, or COLL=path per collection (column groups)")
    ap.add_argument("--runs", nargs="+", required=True,
                    help="name=path, path (name = file stem), or a directory of *.txt/*.trec runs; "
                         "with several collections COLL:name=path or a directory of per-collection folders")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    ap.add_argument("-l", "--relevance-level", type=int, default=1,
                    help="minimum grade counted as relevant (trec_eval -l)")
    ap.add_argument("--format", choices=("markdown", "latex"), default="markdown")
    ap.add_argument("--marks", nargs="*", default=None,
                    help="MARK=baseline pairs, e.g. '\u2020=mDPR' '\u2021=KD-Encoder' "
                         "(default: the paper's marks for baselines among the runs; give none to disable)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--per-query", type=output_file, help="write per-query values to this TSV")
    args = ap.parse_args(argv)
    return run_cli(lambda: _main(args))


def _main(args) -> None:
    """Evaluate the runs named by ``args`` and print the table."""
    qrels_paths = _parse_qrels(args.qrels)
    collections = list(qrels_paths)
    runs = collect_runs(args.runs, collections)
    # paths, not parsed dicts: each error then names the qrels file (a re-read costs milliseconds)
    evals = {name: {c: (evaluate(per[c], qrels_paths[c], args.depth, args.metrics, args.relevance_level, name)
                        if c in per else None) for c in collections}
             for name, per in runs.items()}
    rows = evals if collections != [None] else {n: per[None] for n, per in evals.items()}
    print(render_table(rows, args.metrics, _parse_marks(args.marks), args.format, args.alpha), end="")
    for name, per in evals.items():
        for c, ev in per.items():
            if ev is not None and ev.missing:
                print(f"note: {name}{'' if c is None else ' on ' + c}: {len(ev.missing)} judged "
                      f"queries absent from the run, counted as 0", file=sys.stderr)
    if args.per_query:
        write_per_query(args.per_query, evals, args.metrics)


if __name__ == "__main__":
    sys.exit(main())
