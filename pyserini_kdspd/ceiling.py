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
           sentences: Mapping[str, int]) -> str:
    """Both tables of :func:`main` in Markdown, under the command that made them; ``sentences``: language ->
    sentences in the collection."""
    n = ", ".join(map(str, sorted({ev.num_queries for ev in rows.values()})))
    return (f"`{command}`:\n\n"
            f"English-only ceiling: LAReQA XQuAD-R, the {n} English questions against the {sentences['en']:,} English "
            f"sentences (MAP equals MRR: one answer each), top {hits}.\n\n"
            + render_table(rows, metrics=METRICS, marks={}).strip() + "\n\n"
            f"A perfect student of each teacher: every sentence where the teacher puts the English sentence it "
            f"translates (XQuAD-R's alignment), against all {sum(sentences.values()):,} sentences of the "
            f"{len(sentences)} languages, each question's answers in every language relevant (Table 2's task), "
            f"top {hits}.\n\n"
            + render_table(perfect, metrics=METRICS, marks={}).strip() + "\n")


def main(argv=None) -> int:
    import shlex

    from ._cli import NATURAL, POSITIVE_INT, configure_logging, report_block, rewrite_readme_block, run_cli
    from .io import atomic_write

    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.ceiling", description=__doc__.split("\n\n")[0],
                                epilog=f"Writes runs/{NAME}/<teacher>.txt, <teacher>.perfect-student.txt and "
                                       f"ceiling.md under --output-root.")
    p.add_argument("--teacher", nargs="+", metavar="NAME",
                   help="teachers to score, one at a time (aliases, Hugging Face ids or folders)")
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
    if not args.teacher:
        p.error("--teacher is required (unless --readme)")
    command = shlex.join(["python", "-m", "pyserini_kdspd.ceiling", *(sys.argv[1:] if argv is None else argv)])
    configure_logging()
    if args.threads:  # the stock CLIs have no thread flag for torch; they inherit the environment
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    def work() -> None:
        rows = {name: lareqa_ceiling(name, args.output_root, args.data_dir, hits=args.hits,
                                     threads=max(1, args.threads), force=args.force) for name in args.teacher}
        perfect = {name: lareqa_perfect_student(name, args.output_root, args.data_dir, hits=args.hits)
                   for name in args.teacher}
        from .data.lareqa import docid_lang, prepare_lareqa

        paths = prepare_lareqa(args.data_dir, args.output_root)
        sentences = Counter(map(docid_lang, docids(paths.corpus)))
        text = report(rows, perfect, command, args.hits, sentences)
        with atomic_write(report_path(args.output_root)) as f:
            f.write(text)
        print("\n" + text)

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
