"""The SMT baseline's word aligner, chosen on FLORES-200 dev (issue 9: the baselines get the same care as the
students, and every source of randomness in Table 2 is seeded or removed).

The task: every English FLORES devtest sentence, translated term by term by a table
(:class:`~.smt.SMTTranslator`, exactly as Table 2's SMT rows translate questions), searches that language's
1012 FLORES sentences with BM25 under the language's own analyzer; the one relevant sentence is its
translation. MRR and P@1 per language, mean over the languages. Each aligner trains its tables ``--repeats``
times from the same bitext: eflomal seeds its Gibbs samplers from ``/dev/urandom`` (no flag sets the seed), so
its repeats show how far one training can move the figures; fast_align's model and IBM Model 1 are deterministic,
so their repeats must agree to the last digit::

    python -m pyserini_kdspd.search.translate.dev --repeats 2        # every aligner
    python -m pyserini_kdspd.search.translate.dev --readme      # the README's smt-dev block

Tables go to ``<output-root>/models/smt-dev/<aligner>-<repeat>/``, the FLORES BM25 indexes to
``indexes/flores-dev/<lang>``, runs and the report (``smt-dev.md``, ``smt-dev.json``) to ``runs/smt-dev/``.
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path
from typing import Mapping, Sequence

REPORT = "runs/smt-dev/smt-dev.md"  # under --output-root: what main writes and --readme copies
METRICS = ("recip_rank", "P_1")


def flores_index(flores, lang: str, root) -> Path:
    """A BM25 index of ``lang``'s FLORES devtest sentences (ids = line numbers from 0), built once."""
    from ...distill.dev import read_flores
    from ...io import write_jsonl
    from ..bm25 import build_index

    root = Path(root)
    corpus = root / "collections" / "flores-dev" / lang
    docs = corpus / "docs.jsonl"
    if not docs.is_file():
        corpus.mkdir(parents=True, exist_ok=True)
        write_jsonl(docs, ({"id": str(i), "contents": s} for i, s in enumerate(read_flores(flores, lang))))
    return build_index(corpus, root / "indexes" / "flores-dev" / lang, lang, threads=1, reuse=True)


def flores_retrieval(translator, lang: str, flores, root, run_file: Path) -> dict[str, float]:
    """MRR and P@1 of ``translator``'s English FLORES sentences searching ``lang``'s (top 100); the run is
    written to ``run_file``."""
    from ...distill.dev import read_flores
    from ...evaluate import evaluate
    from ...io import write_run
    from ..bm25 import search

    index = flores_index(flores, lang, root)
    english = read_flores(flores, "en")
    queries = {str(i): translator.translate_query(s, lang) for i, s in enumerate(english)}
    run = search(index, queries, lang, k=100)
    write_run(run_file, run, tag=run_file.parent.name)
    ev = evaluate(run, {q: {q: 1} for q in queries}, depth=100, metrics=METRICS)
    return {m: ev[m] for m in METRICS}


def compare(aligners: Sequence[str], languages: Sequence[str], repeats: int, root, flores=None,
            bitext_dir=None) -> dict:
    """``{aligner: [{lang: {metric: value}} per repeat]}``: each repeat trains fresh tables (into
    ``<root>/models/smt-dev/<aligner>-<repeat>``) and searches FLORES with them."""
    from ...distill.dev import flores_dir
    from .smt import SMTTranslator

    flores, root = flores_dir(flores), Path(root)
    out: dict[str, list] = {}
    for aligner in aligners:
        out[aligner] = []
        for r in range(1, repeats + 1):
            name = f"{aligner}-{r}"
            scores = {}
            for lang in languages:
                tr = SMTTranslator.for_language(lang, model_dir=root / "models" / "smt-dev" / name,
                                                bitext_dir=bitext_dir, aligner=aligner)
                scores[lang] = flores_retrieval(tr, lang, flores, root, root / "runs" / "smt-dev" / name
                                                / f"{lang}.txt")
            out[aligner].append(scores)
    return out


def mean_over(scores: Mapping[str, Mapping[str, float]], metric: str) -> float:
    return statistics.fmean(s[metric] for s in scores.values())


def report(results: Mapping[str, list], command: str) -> str:
    """The per-language MRR table (one row per aligner and repeat) and the summary (mean and range over the
    repeats), in Markdown under the command that made them."""
    langs = list(next(iter(results.values()))[0])
    lines = [f"`{command}`:", "",
             "FLORES-200 devtest, English sentences translated term by term (top 10 translations per term) "
             "searching each language's 1012 sentences with BM25; MRR per language.", "",
             "| tables | " + " | ".join(langs) + " | mean MRR | mean P@1 |",
             "|---|" + "---:|" * (len(langs) + 2)]
    for aligner, reps in results.items():
        for r, scores in enumerate(reps, 1):
            lines.append(f"| {aligner} #{r} | " + " | ".join(f"{scores[l]['recip_rank']:.3f}" for l in langs)
                         + f" | {mean_over(scores, 'recip_rank'):.4f} | {mean_over(scores, 'P_1'):.4f} |")
    lines += ["", "| aligner | repeats | mean MRR (min - max) | mean P@1 (min - max) |", "|---|---:|---|---|"]
    for aligner, reps in results.items():
        cells = []
        for m in METRICS:
            v = [mean_over(s, m) for s in reps]
            cells.append(f"{statistics.fmean(v):.4f} ({min(v):.4f} - {max(v):.4f})")
        lines.append(f"| {aligner} | {len(reps)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from ..._cli import POSITIVE_INT, configure_logging, report_block, rewrite_readme_block, run_cli
    from ...io import atomic_write, write_json
    from .smt import ALIGNERS

    prog = "python -m pyserini_kdspd.search.translate.dev"
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--aligners", nargs="+", choices=ALIGNERS, default=list(ALIGNERS))
    p.add_argument("--languages", nargs="+", default=None,
                   help="target languages (default: every bitext language with a FLORES devtest file)")
    p.add_argument("--repeats", type=POSITIVE_INT, default=3, help="fresh tables per aligner")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--bitext-dir", type=Path, default=None, help="folder of en-XX.tsv (default: <data>/bitext)")
    p.add_argument("--output-root", type=Path, default=Path("."))
    p.add_argument("--readme", type=Path, nargs="?", const=Path("README.md"), default=None, metavar="README",
                   help="run nothing: rewrite the block between <!-- smt-dev:start --> and <!-- smt-dev:end --> "
                        f"of README (default README.md) from {REPORT} under --output-root")
    args = p.parse_args(argv)
    if args.readme is not None:
        return rewrite_readme_block(args.readme, "smt-dev", lambda: report_block(args.output_root, REPORT, prog),
                                    "SMT dev block")
    command = shlex.join([*shlex.split(prog), *(sys.argv[1:] if argv is None else argv)])
    configure_logging()

    def work() -> None:
        from ...distill.bitext import find_bitext_files
        from ...distill.dev import ISO_TO_FLORES, flores_dir
        from ...paths import data_dir

        data = data_dir(args.data_dir, required=True)
        bitext = args.bitext_dir or data / "bitext"
        languages = args.languages or [l for l in find_bitext_files(bitext) if l in ISO_TO_FLORES and l != "en"]
        results = compare(args.aligners, languages, args.repeats, args.output_root,
                          flores_dir(None, data), bitext)
        text = report(results, command)
        out = args.output_root / REPORT
        write_json(out.with_suffix(".json"), {"command": command, "results": results})
        with atomic_write(out) as f:
            f.write(text)
        print("\n" + text)

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
