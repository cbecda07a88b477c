"""A teacher's English-only ceiling (issue 9 section 4, the paper's Table 5): the teacher's own query and
document encoders, English questions against only the English sentences of LAReQA XQuAD-R (1,180).

A student distilled from a teacher is trained to put every language where the teacher puts English,
so this English-to-English figure bounds what the student can reach; it is the row printed beside
each teacher's students. It runs the same stock Pyserini route as the Table 2 rows
(``pyserini.encode`` + ``pyserini.search.faiss`` through :mod:`.search.dense`), scored by
:func:`.evaluate.evaluate` against the judgments of the searched sentences only::

    python -m pyserini_kdspd.ceiling --teacher all-MiniLM-L6-v2 multilingual-e5-small all-mpnet-base-v2 \\
        --threads 1

Indexes go to ``<output-root>/indexes/lareqa-en/<teacher>``, runs to ``<output-root>/runs/lareqa-en/``;
both are reused while the teacher's weights are unchanged.

Beside it, the same bound in Table 2's terms (:func:`perfect_student`): a student that put every translation
exactly where the teacher puts the English sentence would rank each English sentence's versions together, at its
English score, against all 13,014 sentences; its MAP is what distillation from that teacher can reach. The versions
are XQuAD-R's own alignment (:func:`~.data.lareqa.translations`: the sentences holding the same answer), not the
sentence position, which differs between languages for one answer in seven.

``--students kdspd kd-encoder`` adds how close Table 2's students are to that perfect student (:func:`closer`):
each sentence's distance from the teacher's vector of its English sentence, and the MAP a student would have
with its error scaled down (the vectors p + a (x - p)): what getting closer would buy, and whether two students
made the same mistakes (the correlation of their errors).

``--readme`` copies the last report (``runs/lareqa-en/ceiling.md``) into the README's ceiling block.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from .evaluate import Evaluation, evaluate, render_table
from .io import Qrels, collection_files, read_jsonl, read_qrels

METRICS = ("recip_rank", "map", "ndcg_cut_10", "recall_100")
NAME = "lareqa-en"
REPORT = f"runs/{NAME}/ceiling.md"  # under --output-root: what main writes and --readme copies


def restrict_qrels(qrels: Mapping[str, Mapping[str, int]], docids: Iterable[str]) -> Qrels:
    """The judgments of the documents in ``docids`` only (a query left without any is dropped)."""
    keep = set(docids)
    out = {q: {d: g for d, g in docs.items() if d in keep} for q, docs in qrels.items()}
    return {q: docs for q, docs in out.items() if docs}


def teacher_ceiling(teacher: str, corpus_dir, topics, qrels, index_dir, run_file, hits: int = 100,
                    threads: int = 1, force: bool = False) -> Evaluation:
    """``teacher`` (alias, Hugging Face id or folder) searching ``corpus_dir`` for ``topics`` with stock
    Pyserini, evaluated on the judgments of ``corpus_dir``'s documents only."""
    from .search.dense import DenseModel, encode_corpus, search

    model = DenseModel.from_name(slug(teacher), teacher)
    index = encode_corpus(model, corpus_dir, index_dir, force=force)
    run = search(model, index, topics, run_file, hits=hits, threads=threads, force=force)
    return evaluate(run, restrict_qrels(read_qrels(qrels), docids(corpus_dir)), depth=hits, metrics=METRICS,
                    name=teacher)


def docids(corpus_dir) -> list[str]:
    """The ids of a JsonCollection folder's documents."""
    return [r["id"] for f in collection_files(corpus_dir) for r in read_jsonl(f)]


def perfect_student(english_run: Mapping[str, Mapping[str, float]], versions: Mapping[str, Iterable[str]]) -> dict:
    """The run of a student that reproduces its teacher exactly: every English sentence's score given to each of its
    ``versions`` (English id -> ids in every language, :func:`~.data.lareqa.translations`); a sentence that is a
    version of several English sentences takes the highest of their scores. The versions of one sentence tie; the
    answers among them are all relevant, and a non-answer sentence placed there by its position ties with them in
    trec_eval's order (by docid)."""
    from .data.lareqa import QUERY_LANGUAGE, docid_lang

    out = {}
    for q, docs in english_run.items():
        scores: dict[str, float] = {}
        for docid, score in docs.items():
            if docid_lang(docid) != QUERY_LANGUAGE:
                raise ValueError(f"{docid}: the run must hold English sentences only")
            for v in versions.get(docid, (docid,)):
                if v not in scores or score > scores[v]:
                    scores[v] = score
        out[q] = scores
    return out


ALPHAS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)  # 1: the student as trained; 0: the perfect student


def read_query_vectors(encoded_queries):
    """(query ids, vectors) of Pyserini's ``--encoded-queries`` folder (``embedding.pkl``)."""
    import numpy as np
    import pandas as pd

    table = pd.read_pickle(Path(encoded_queries) / "embedding.pkl")
    return [str(q) for q in table["id"]], np.stack(table["embedding"].to_numpy()).astype(np.float32)


def closer(student, teacher, queries, qrels, versions: Mapping[str, Iterable[str]], alphas=ALPHAS,
           hits: int = 100) -> dict:
    """How far a distilled student is from its perfect counterpart, and what getting closer would buy.

    ``student`` and ``teacher``: (docids, vectors) of the same sentences, the student's and the teacher's own
    document vectors; ``queries``: (ids, vectors) of the student's query side (its teacher's query encoder). The
    perfect student puts every sentence at the teacher's vector of the English sentence it translates (its first,
    when it merges two: ``versions``); the student's error is its distance from there. Returns the mean error per
    language, each sentence's error vector (``errors``, to compare students) and the MAP / MRR of the vectors
    p + alpha (x - p) for every ``alpha`` (1: the student, 0: the perfect student), top ``hits`` by inner
    product, scored as Table 2's rows are."""
    import numpy as np

    from .data.lareqa import docid_lang

    ids, x = student
    t_ids, t = teacher
    if list(ids) != list(t_ids):
        raise ValueError("the student's and the teacher's indexes must hold the same sentences in the same order")
    row = {d: i for i, d in enumerate(t_ids)}
    source = {}
    for en, vs in versions.items():
        for v in vs:
            source.setdefault(v, en)
    p = t[[row[source.get(d, d)] for d in ids]]
    err = x - p
    langs = np.array([docid_lang(d) for d in ids])
    norms = np.linalg.norm(err, axis=1)
    error = {lang: float(norms[langs == lang].mean()) for lang in sorted(set(langs.tolist()))}
    qids, q = queries
    out = {"error": error, "errors": err, "map": {}, "recip_rank": {}}
    for a in alphas:
        scores = q @ (p + a * err).T
        top = np.argpartition(-scores, hits - 1, axis=1)[:, :hits]
        run = {qid: {ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
        ev = evaluate(run, qrels, depth=hits, metrics=("map", "recip_rank"))
        out["map"][a], out["recip_rank"][a] = ev["map"], ev["recip_rank"]
    return out


def error_correlation(a, b, ids) -> float:
    """Pearson correlation of two students' error vectors over the non-English sentences (``ids``: their
    docids): near 1, the two made the same mistakes."""
    import numpy as np

    from .data.lareqa import QUERY_LANGUAGE, docid_lang

    keep = np.array([docid_lang(d) != QUERY_LANGUAGE for d in ids])
    return float(np.corrcoef(a[keep].ravel(), b[keep].ravel())[0, 1])


def lareqa_closer(students: Iterable[str], output_root=".", data_dir=None, hits: int = 100) -> dict:
    """:func:`closer` for Table 2's students (index folder names under ``indexes/lareqa``, e.g. ``kdspd``), against
    the teacher row's index (``indexes/lareqa/teacher``), with each student's own query vectors."""
    from .data.lareqa import NAME as LAREQA, prepare_lareqa, translations
    from .index.vectors import read_faiss
    from .search.dense import DenseModel, encode_queries

    root, students = Path(output_root), list(students)
    indexes = root / "indexes" / LAREQA
    missing = [str(p) for name in students for p in (indexes / name / "index", root / "models" / name)
               if not p.exists()]
    if students and not (indexes / "teacher" / "index").is_file():
        missing.insert(0, str(indexes / "teacher" / "index"))
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: run python -m pyserini_kdspd.table2 first (--output-root "
                                f"names its root)")
    paths = prepare_lareqa(data_dir, root)
    qrels = read_qrels(paths.qrels)
    t = read_faiss(indexes / "teacher")
    teacher = (t.docids, t.vectors)
    versions = translations(qrels, t.docids)
    out = {}
    for name in students:
        model = DenseModel.from_name(name, str(root / "models" / name))
        queries = encode_queries(model, paths.topics["en"], indexes / f"{name}.teacher-queries",
                                 source=indexes / name / "index")
        x = read_faiss(indexes / name)
        out[name] = closer((x.docids, x.vectors), teacher, read_query_vectors(queries), qrels, versions, hits=hits)
    for a in out:  # the pairs' error correlations, then the error vectors can go
        out[a]["correlation"] = {b: error_correlation(out[a]["errors"], out[b]["errors"], t.docids)
                                 for b in out if b != a}
    for c in out.values():
        del c["errors"]
    return out


def lareqa_perfect_student(teacher: str, output_root=".", data_dir=None, hits: int = 100) -> Evaluation:
    """:func:`perfect_student` of ``teacher``'s English-only LAReQA run (:func:`lareqa_ceiling` makes it), scored
    as Table 2's rows are: all 13,014 sentences' judgments, top ``hits``."""
    from .data.lareqa import prepare_lareqa, translations
    from .io import read_run, write_run

    paths = prepare_lareqa(data_dir, output_root)
    qrels = read_qrels(paths.qrels)
    versions = translations(qrels, docids(paths.corpus))
    english = ceiling_run(output_root, teacher)
    out = english.with_name(f"{english.stem}.perfect-student.txt")
    write_run(out, perfect_student(read_run(english), versions))
    return evaluate(out, paths.qrels, depth=hits, metrics=METRICS, name=teacher)


def lareqa_ceiling(teacher: str, output_root=".", data_dir=None, **kwargs) -> Evaluation:
    """:func:`teacher_ceiling` on LAReQA XQuAD-R in English (prepared under ``output_root`` if needed)."""
    from .data.lareqa import QUERY_LANGUAGE, prepare_lareqa

    root, lang = Path(output_root), QUERY_LANGUAGE
    paths = prepare_lareqa(data_dir, root)
    return teacher_ceiling(teacher, paths.by_lang[lang], paths.topics[lang], paths.qrels,
                           root / "indexes" / NAME / slug(teacher), ceiling_run(root, teacher), **kwargs)


def ceiling_run(output_root, teacher: str) -> Path:
    """Where :func:`lareqa_ceiling` writes ``teacher``'s English-only run (and :func:`lareqa_perfect_student`
    reads it)."""
    return Path(output_root) / "runs" / NAME / f"{slug(teacher)}.txt"


def slug(name: str) -> str:
    """A file name for a model name: the last part of a Hugging Face id or path."""
    return Path(str(name).rstrip("/")).name


def report_path(output_root) -> Path:
    """Where :func:`main` writes its tables (``--readme`` copies them into the README)."""
    return Path(output_root) / REPORT


def report(rows: Mapping[str, Evaluation], perfect: Mapping[str, Evaluation], command: str, hits: int,
           sentences: Mapping[str, int], students: Mapping[str, dict] | None = None) -> str:
    """The tables of :func:`main` in Markdown, under the command that made them; ``sentences``: language ->
    sentences in the collection; ``students``: :func:`lareqa_closer`'s results, if any."""
    parts = [f"`{command}`:\n"]
    if rows:
        n = ", ".join(map(str, sorted({ev.num_queries for ev in rows.values()})))
        parts += [f"English-only ceiling: LAReQA XQuAD-R, the {n} English questions against the {sentences['en']:,} "
                  f"English sentences (MAP equals MRR: one answer each), top {hits}.\n",
                  render_table(rows, metrics=METRICS, marks={}).strip() + "\n",
                  f"A perfect student of each teacher: every sentence where the teacher puts the English sentence it "
                  f"translates (XQuAD-R's alignment), against all {sum(sentences.values()):,} sentences of the "
                  f"{len(sentences)} languages, each question's answers in every language relevant (Table 2's task), "
                  f"top {hits}.\n",
                  render_table(perfect, metrics=METRICS, marks={}).strip() + "\n"]
    if students:
        alphas = list(next(iter(students.values()))["map"])
        cols = [f"MAP a = {a:g}" + (" (as trained)" if a == 1 else " (perfect)" if a == 0 else "") for a in alphas]
        lines = [f"How close Table 2's students are to their perfect student (its teacher's index): the error of a "
                 f"sentence is the distance of its vector from the teacher's vector of the English sentence it "
                 f"translates (mean per sentence; the vectors have norm 1), and the MAP columns score the vectors "
                 f"p + a (x - p) for a from 1 (the student) to 0 (the perfect student), by inner product with the "
                 f"student's own query vectors, top {hits}. (At a = 0 a sentence that merges two English "
                 f"sentences sits at the first one's vector; the perfect student above takes the better of their "
                 f"two scores.)", "",
                 "| student | error, English | error, other languages (mean) | " + " | ".join(cols) + " |",
                 "|---|---:|---:|" + "---:|" * len(alphas)]
        for name, c in students.items():
            others = [v for lang, v in c["error"].items() if lang != "en"]
            lines.append(f"| {name} | {c['error'].get('en', float('nan')):.3f} | {sum(others) / len(others):.3f} | "
                         + " | ".join(f"{c['map'][a]:.3f}" for a in alphas) + " |")
        names = list(students)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                lines.append(f"\nThe errors of {a} and {b} (every coordinate of every non-English sentence) "
                             f"correlate at r = {students[a]['correlation'][b]:.3f}.")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    import shlex

    from ._cli import NATURAL, POSITIVE_INT, configure_logging, report_block, rewrite_readme_block, run_cli
    from .io import atomic_write

    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.ceiling", description=__doc__.split("\n\n")[0],
                                epilog=f"Writes runs/{NAME}/<teacher>.txt, <teacher>.perfect-student.txt and "
                                       f"ceiling.md under --output-root.")
    p.add_argument("--teacher", nargs="+", metavar="NAME",
                   help="teachers to score, one at a time (aliases, Hugging Face ids or folders)")
    p.add_argument("--students", nargs="+", metavar="NAME", default=[],
                   help="also measure how close Table 2's students are to their perfect student (their folders under "
                        "models/ and indexes under indexes/lareqa/, e.g. kdspd kd-encoder)")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--output-root", type=Path, default=Path("."))
    p.add_argument("--hits", type=POSITIVE_INT, default=100)
    p.add_argument("--threads", type=NATURAL, default=1,
                   help="torch and FAISS threads of the Pyserini processes (OMP_NUM_THREADS; 0: their default)")
    p.add_argument("--force", action="store_true", help="re-encode and re-search instead of reusing outputs")
    p.add_argument("--readme", type=Path, nargs="?", const=Path("README.md"), default=None, metavar="README",
                   help="run nothing: rewrite the block between <!-- ceiling:start --> and <!-- ceiling:end --> of "
                        f"README (default README.md) from runs/{NAME}/ceiling.md under --output-root")
    args = p.parse_args(argv)
    if args.readme is not None:
        return rewrite_readme_block(args.readme, "ceiling", lambda: report_block(
            args.output_root, REPORT, "python -m pyserini_kdspd.ceiling"), "ceiling block")
    if not args.teacher and not args.students:
        p.error("--teacher or --students is required (unless --readme)")
    command = shlex.join(["python", "-m", "pyserini_kdspd.ceiling", *(sys.argv[1:] if argv is None else argv)])
    configure_logging()
    if args.threads:  # the stock CLIs have no thread flag for torch; they inherit the environment
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    def work() -> None:
        # the students first: they need the Table 2 driver's outputs, and a missing one stops before any encoding
        students = lareqa_closer(args.students, args.output_root, args.data_dir, hits=args.hits) if args.students \
            else {}
        teachers = args.teacher or []
        rows = {name: lareqa_ceiling(name, args.output_root, args.data_dir, hits=args.hits,
                                     threads=max(1, args.threads), force=args.force) for name in teachers}
        perfect = {name: lareqa_perfect_student(name, args.output_root, args.data_dir, hits=args.hits)
                   for name in teachers}
        from .data.lareqa import docid_lang, prepare_lareqa

        paths = prepare_lareqa(args.data_dir, args.output_root)
        sentences = Counter(map(docid_lang, docids(paths.corpus)))
        text = report(rows, perfect, command, args.hits, sentences, students)
        with atomic_write(report_path(args.output_root)) as f:
            f.write(text)
        print("\n" + text)

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
