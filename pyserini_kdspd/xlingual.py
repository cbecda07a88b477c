"""Non-English queries on LAReQA, X -> En and X -> All: ``python -m pyserini_kdspd.xlingual``.

Table 2 asks the questions in English. XQuAD-R has every question in all 11 languages (XQuAD's
human translations), which gives the two "any language" settings of the CLIR and LAReQA papers:

* **X -> En**: every question in every language against the 1,180 English sentences, the English
  answer sentence relevant: P@1 and MRR per query language (CL-ReQA's and XOR's metric);
* **X -> All**: every question in every language against all 13,014 sentences, the 11 translations
  of the answer relevant: MAP (the LAReQA paper's main setting), nDCG@10, R@100.

Both read one topics file, ``topics/lareqa.all-languages.tsv`` (ids ``<qid>-<lang>``, a third
column tagging the language), with ``qrels/lareqa.x-en.txt`` and ``qrels/lareqa.x-all.txt``, all
written by ``python -m pyserini_kdspd.data lareqa``. Each system makes one stock
``pyserini.search.faiss`` run per setting: X -> En searches the English sentences cut out of its
end-to-end index (the cut the Table 2 driver's per-language rows share), X -> All the whole index
(the driver's, reused when it is there). mDPR and the teacher encode every question with their own
query encoder; a KD-SPD folder (KD-SPD, KD-Encoder) encodes the English questions with the teacher's
and the others with its student under the question's language prompt, told by the topics file
(``PYSERINI_KDSPD_QUERY_LANG``, see :class:`pyserini_kdspd.encoders.KdspdQueryEncoder`). Every figure
is computed from the run files by :mod:`pyserini_kdspd.evaluate`, checked against stock trec_eval,
and written to ``runs/lareqa/xlingual.md`` (and ``.json``).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Mapping

from . import io
from ._cli import POSITIVE_INT
from .data.lareqa import LANGUAGES, QUERY_LANGUAGE, LareqaPaths, split_query_id
from .evaluate import Evaluation

COLLECTION = "lareqa"
SETTINGS = {  # run folder -> (title, metrics)
    "x-en": ("X → En", ("P_1", "recip_rank")),
    "x-all": ("X → All", ("map", "ndcg_cut_10", "recall_100")),
}
MEAN = "mean"  # the column of every non-English query language together


def by_language(ev: Evaluation) -> dict[str, Evaluation]:
    """``ev`` cut by the language of its ``<qid>-<lang>`` queries, in LAReQA's language order, and
    :data:`MEAN`: the non-English queries together (every language asks the same questions, so it is
    the mean over the languages; paired tests on it pair the same question in the same language)."""
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for qid, values in ev.per_query.items():
        groups.setdefault(split_query_id(qid)[1], {})[qid] = values
    out = {lang: Evaluation(groups[lang], ev.metrics, ev.depth, name=ev.name) for lang in LANGUAGES if lang in groups}
    others = {q: v for lang, g in groups.items() if lang != QUERY_LANGUAGE for q, v in g.items()}
    out[MEAN] = Evaluation(others, ev.metrics, ev.depth, name=ev.name)
    return out


def system_runs(model, paths: LareqaPaths, root: Path, hits: int = 100, threads: int = 2,
                force: bool = False) -> dict[str, Path]:
    """The X -> En and X -> All runs of one system (a :class:`~pyserini_kdspd.search.dense.DenseModel`),
    under ``root/runs/lareqa/{x-en,x-all}/<model>.txt``, from its end-to-end index under
    ``root/indexes/lareqa/<model>`` (encoded unless the Table 2 driver already did)."""
    from .search.dense import encode_corpus, language_indexes, search

    index = encode_corpus(model, paths.corpus, root / "indexes" / COLLECTION / model.name, force=force)
    english = language_indexes(model, index, paths.corpus / "corpus.jsonl", force=force)[QUERY_LANGUAGE]
    runs = root / "runs" / COLLECTION
    return {setting: search(model, searched, paths.all_topics, runs / setting / f"{model.name}.txt", hits=hits,
                            threads=threads, force=force, query_lang=str(paths.all_topics))
            for setting, searched in (("x-en", english), ("x-all", index))}


def evaluate_runs(runs: Mapping[str, Mapping[str, Path]], paths: LareqaPaths,
                  hits: int = 100) -> dict[str, dict[str, Evaluation]]:
    """``{system: {setting: Evaluation}}`` of the runs :func:`system_runs` wrote."""
    from .evaluate import evaluate

    qrels = {"x-en": paths.x_en_qrels, "x-all": paths.x_all_qrels}
    return {label: {setting: evaluate(str(path), str(qrels[setting]), depth=hits, metrics=SETTINGS[setting][1],
                                      name=label)
                    for setting, path in per.items()}
            for label, per in runs.items()}


def trec_eval_note(runs: Mapping[str, Mapping[str, Path]], evals, paths: LareqaPaths, hits: int = 100) -> str:
    """Whether stock trec_eval gives the same means for every run (one JVM start per run)."""
    from .evaluate import trec_eval_disagreements

    qrels = {"x-en": paths.x_en_qrels, "x-all": paths.x_all_qrels}
    differ = {f"{label} {SETTINGS[setting][0]}": d for label, per in runs.items() for setting, path in per.items()
              if (d := trec_eval_disagreements(path, qrels[setting], depth=hits, metrics=SETTINGS[setting][1],
                                               ours=evals[label][setting]))}
    command = f"python -m pyserini.eval.trec_eval -c -M {hits}"
    if not differ:
        return f"Every mean over all query languages agrees with `{command}` on the same run files."
    return f"Figures that differ from `{command}` (ours, trec_eval's): " + "; ".join(
        f"{name}: " + ", ".join(f"{m} {a:.4f} vs {b:.4f}" for m, (a, b) in d.items()) for name, d in differ.items())


def render(evals: Mapping[str, Mapping[str, Evaluation]], hits: int = 100) -> str:
    """The Markdown tables: X -> En P@1 and MRR per query language, X -> All overall and its MAP per
    query language (the paper's significance marks where mDPR and KD-Encoder are rows)."""
    from .evaluate import METRIC_LABELS, render_table

    def per_language(setting: str) -> dict[str, dict[str, Evaluation]]:
        return {label: by_language(per[setting]) for label, per in evals.items() if setting in per}

    x_en = per_language("x-en")
    others = [lang for lang in next(iter(x_en.values())) if lang not in (QUERY_LANGUAGE, MEAN)]
    parts = [f"Every question in every language (ids `<qid>-<lang>`), top {hits}; `{MEAN}`: the {len(others)} "
             f"non-English query languages together ({', '.join(others)}).", ""]
    for metric in SETTINGS["x-en"][1]:
        parts += [f"### X → En {METRIC_LABELS[metric]} (the English sentences; the English answer relevant)", "",
                  render_table(x_en, metrics=(metric,))]
    x_all = {label: per["x-all"] for label, per in evals.items() if "x-all" in per}
    parts += ["### X → All (every sentence; the answer in every language relevant)", "",
              render_table(x_all, metrics=SETTINGS["x-all"][1]),
              "### X → All MAP per query language", "", render_table(per_language("x-all"), metrics=("map",))]
    return "\n".join(parts)


def write_outputs(root: Path, runs, evals, paths: LareqaPaths, hits: int, command: str) -> Path:
    """``runs/lareqa/xlingual.md`` (the tables and the trec_eval check) and ``xlingual.json`` (every mean,
    per setting and query language, with the run files): what the README and later tables read."""
    out = root / "runs" / COLLECTION / "xlingual.md"
    text = f"`{command}`\n\n{render(evals, hits)}\n{trec_eval_note(runs, evals, paths, hits)}\n"
    with io.atomic_write(out) as f:
        f.write(text)
    io.write_json(out.with_suffix(".json"), {
        "command": command, "hits": hits,
        "systems": {label: {setting: {"run": str(runs[label][setting]), "mean": ev.mean,
                                      "by_language": {lang: e.mean for lang, e in by_language(ev).items()}}
                            for setting, ev in per.items()} for label, per in evals.items()}})
    return out


def main(argv=None) -> int:
    from .table2 import STUDENTS, Settings

    d = Settings()
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.xlingual", description=__doc__.split("\n\n")[0],
                                epilog="Writes runs/lareqa/{x-en,x-all}/*.txt and runs/lareqa/xlingual.{md,json}.")
    p.add_argument("--output-root", type=Path, default=Path("."),
                   help="the Table 2 driver's --output-root: its indexes and students are reused (default .)")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--mdpr", default=d.mdpr, help=f"the multilingual dense baseline, end to end (default {d.mdpr}; "
                                                  "'none' to leave it out)")
    p.add_argument("--teacher", default=d.teacher, help=f"the English teacher (default {d.teacher}; 'none' to "
                                                        "leave it out)")
    p.add_argument("--students", nargs="*", metavar="LABEL=FOLDER",
                   default=[f"{label}=models/{folder}" for label, _, folder in STUDENTS],
                   help="KD-SPD model folders (relative to --output-root unless absolute; default: the driver's "
                        "KD-SPD and KD-Encoder); a folder that does not exist is skipped with one line")
    p.add_argument("--hits", type=POSITIVE_INT, default=d.hits)
    p.add_argument("--threads", type=POSITIVE_INT, default=d.threads)
    p.add_argument("--force", action="store_true", help="encode and search again instead of reusing")
    a = p.parse_args(argv)
    from ._cli import configure_logging, resolve_data_dir, run_cli

    students = []
    for item in a.students:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            p.error(f"--students {item!r}: expected LABEL=FOLDER")
        students.append((label, Path(folder) if Path(folder).is_absolute() else a.output_root / folder))
    data = resolve_data_dir(p, a.data_dir)
    configure_logging()
    command = shlex.join(["python", "-m", "pyserini_kdspd.xlingual", *(sys.argv[1:] if argv is None else argv)])

    def work() -> int:
        from .data.lareqa import prepare_lareqa
        from .encoders import is_kdspd_folder
        from .search.dense import DenseModel
        from .table2 import Stages

        paths = prepare_lareqa(data_dir=data, output_root=a.output_root)
        models = [(label, slug, name) for label, slug, name in (("mDPR", "mdpr", a.mdpr),
                                                                ("Teacher (English)", "teacher", a.teacher))
                  if name.lower() != "none"]
        for label, folder in students:
            if not is_kdspd_folder(folder):
                print(f"[skip] {label}: {folder} holds no trained student (python -m pyserini_kdspd.table2 trains "
                      f"KD-SPD and KD-Encoder there)")
                continue
            models.append((label, folder.name, str(folder)))
        st, runs = Stages(), {}
        for label, slug, name in models:
            with st(f"{label}: X -> En and X -> All"):
                runs[label] = system_runs(DenseModel.from_name(slug, name), paths, a.output_root, hits=a.hits,
                                          threads=a.threads, force=a.force)
        with st("evaluate"):
            evals = evaluate_runs(runs, paths, a.hits)
            out = write_outputs(a.output_root, runs, evals, paths, a.hits, command)
        print(out.read_text(encoding="utf-8"))
        print(st.summary())
        print(f"wrote {out} and {out.with_suffix('.json')}")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
