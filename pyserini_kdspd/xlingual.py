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

mUSE (the multilingual Universal Sentence Encoder v3, ``--encoder muse``) was trained on 16 languages, 8 of
LAReQA's 11: its row is run on the LAReQA subset without el, hi and vi (sentences, questions and answers in
them left out, :func:`~pyserini_kdspd.data.lareqa.restrict_languages`). Its X -> En figures per query language
compare with the other rows (the same English sentences, the same answer); its X -> All figures, over a smaller
pool with fewer answers per question, get tables of their own, and the tables say so.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Mapping, Sequence

from . import io
from ._cli import POSITIVE_INT
from .data.lareqa import LANGUAGES, QUERY_LANGUAGE, LareqaPaths, restrict_languages, split_query_id
from .evaluate import Evaluation
from .models import MUSE, MUSE_LANGUAGES

COLLECTION = "lareqa"
SETTINGS = {  # run folder -> (title, metrics)
    "x-en": ("X → En", ("P_1", "recip_rank")),
    "x-all": ("X → All", ("map", "ndcg_cut_10", "recall_100")),
}
MUSE_LABEL = "mUSE"
MEAN = "mean"  # the column of every non-English query language together
SHARED = "shared"  # ... of the non-English query languages every row has, when a row has fewer


def by_language(ev: Evaluation, shared: Sequence[str] | None = None) -> dict[str, Evaluation]:
    """``ev`` cut by the language of its ``<qid>-<lang>`` queries, in LAReQA's language order, and
    :data:`MEAN`: the non-English queries together (every language asks the same questions, so it is
    the mean over the languages; paired tests on it pair the same question in the same language);
    with ``shared`` languages, :data:`SHARED`: the non-English queries of those languages together."""
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for qid, values in ev.per_query.items():
        groups.setdefault(split_query_id(qid)[1], {})[qid] = values
    out = {lang: Evaluation(groups[lang], ev.metrics, ev.depth, name=ev.name) for lang in LANGUAGES if lang in groups}
    others = {q: v for lang, g in groups.items() if lang != QUERY_LANGUAGE for q, v in g.items()}
    out[MEAN] = Evaluation(others, ev.metrics, ev.depth, name=ev.name)
    if shared is not None:
        out[SHARED] = Evaluation({q: v for lang, g in groups.items() if lang != QUERY_LANGUAGE and lang in shared
                                  for q, v in g.items()}, ev.metrics, ev.depth, name=ev.name)
    return out


def muse_paths(paths: LareqaPaths, output_root: Path, force: bool = False) -> LareqaPaths:
    """The LAReQA mUSE is scored on: the languages of ``paths`` it was trained on (without el, hi, vi)."""
    return restrict_languages(paths, [lang for lang in paths.topics if lang in MUSE_LANGUAGES], output_root,
                              force=force)


def _system_paths(paths: LareqaPaths, subsets: Mapping[str, LareqaPaths] | None, label: str) -> LareqaPaths:
    return (subsets or {}).get(label, paths)


def _qrels(paths: LareqaPaths) -> dict[str, Path]:
    return {"x-en": paths.x_en_qrels, "x-all": paths.x_all_qrels}


def system_runs(model, paths: LareqaPaths, root: Path, hits: int = 100, threads: int = 2,
                force: bool = False) -> dict[str, Path]:
    """The X -> En and X -> All runs of one system (a :class:`~pyserini_kdspd.search.dense.DenseModel`),
    under ``root/runs/<collection>/{x-en,x-all}/<model>.txt``, from its end-to-end index under
    ``root/indexes/<collection>/<model>`` (encoded unless the Table 2 driver already did); ``<collection>``
    is ``lareqa``, or a language subset's name (:func:`muse_paths`)."""
    from .search.dense import encode_corpus

    collection = paths.root.name
    index = encode_corpus(model, paths.corpus, root / "indexes" / collection / model.name, force=force)
    return index_runs(model, index, paths, root / "runs" / collection, hits=hits, threads=threads, force=force)


def index_runs(model, index: Path, paths: LareqaPaths, runs_dir: Path, hits: int = 100, threads: int = 2,
               force: bool = False) -> dict[str, Path]:
    """The X -> En and X -> All runs (``runs_dir/{x-en,x-all}/<model>.txt``) of ``model`` from its end-to-end
    ``index`` of ``paths``' collection: X -> En searches the English sentences cut out of it. The questions
    are encoded once for both (``<index>.all-languages.queries``, beside the index), and only when a run
    is stale."""
    from .search.dense import encode_queries, language_indexes, run_is_current, search

    index = Path(index)
    english = language_indexes(model, index, paths.corpus / "corpus.jsonl", force=force)[QUERY_LANGUAGE]
    outs = {setting: Path(runs_dir) / setting / f"{model.name}.txt" for setting in SETTINGS}
    searched = {"x-en": english, "x-all": index}
    queries = None
    if force or not all(run_is_current(outs[s], searched[s]) for s in outs):
        queries = encode_queries(model, paths.all_topics, index.with_name(f"{index.name}.all-languages.queries"),
                                 force=force, query_lang=str(paths.all_topics), source=index / "index")
    return {setting: search(model, searched[setting], paths.all_topics, out, hits=hits, threads=threads,
                            force=force, encoded_queries=queries, query_lang=str(paths.all_topics))
            for setting, out in outs.items()}


def evaluate_runs(runs: Mapping[str, Mapping[str, Path]], paths: LareqaPaths, hits: int = 100,
                  subsets: Mapping[str, LareqaPaths] | None = None) -> dict[str, dict[str, Evaluation]]:
    """``{system: {setting: Evaluation}}`` of the runs :func:`system_runs` wrote; a system in ``subsets``
    (label -> the language subset it was run on) is judged by that subset's qrels."""
    from .evaluate import evaluate

    return {label: {setting: evaluate(str(path), str(_qrels(_system_paths(paths, subsets, label))[setting]),
                                      depth=hits, metrics=SETTINGS[setting][1], name=label)
                    for setting, path in per.items()}
            for label, per in runs.items()}


def trec_eval_note(runs: Mapping[str, Mapping[str, Path]], evals, paths: LareqaPaths, hits: int = 100,
                   subsets: Mapping[str, LareqaPaths] | None = None) -> str:
    """Whether stock trec_eval gives the same means for every run (one JVM start per run)."""
    from .evaluate import trec_eval_disagreements

    differ = {f"{label} {SETTINGS[setting][0]}": d for label, per in runs.items() for setting, path in per.items()
              if (d := trec_eval_disagreements(path, _qrels(_system_paths(paths, subsets, label))[setting],
                                               depth=hits, metrics=SETTINGS[setting][1],
                                               ours=evals[label][setting]))}
    command = f"python -m pyserini.eval.trec_eval -c -M {hits}"
    if not differ:
        return f"Every mean over all query languages agrees with `{command}` on the same run files."
    return f"Figures that differ from `{command}` (ours, trec_eval's): " + "; ".join(
        f"{name}: " + ", ".join(f"{m} {a:.4f} vs {b:.4f}" for m, (a, b) in d.items()) for name, d in differ.items())


def render(evals: Mapping[str, Mapping[str, Evaluation]], hits: int = 100,
           subsets: Mapping[str, LareqaPaths] | None = None) -> str:
    """The Markdown tables: X -> En P@1 and MRR per query language, X -> All overall and its MAP per
    query language (the paper's significance marks where mDPR and KD-Encoder are rows).

    A system run on a language subset (``subsets``: label -> its :func:`restrict_languages` paths) keeps its
    X -> En row, whose per-language cells compare with everyone's (the same English sentences and answers); its
    :data:`MEAN`, over fewer languages, is left blank, and a :data:`SHARED` column gives every row's mean over
    the non-English languages all rows have. Its X -> All (a smaller pool, fewer answers per question) goes to
    tables of its own. A note under the first paragraph says which languages each such row leaves out."""
    from .evaluate import METRIC_LABELS, render_table

    subsets = {label: p for label, p in (subsets or {}).items() if label in evals}
    x_en_evals = {label: per["x-en"] for label, per in evals.items() if "x-en" in per}
    asked = {label: [lang for lang in by_language(ev) if lang != MEAN] for label, ev in x_en_evals.items()}
    langs = [lang for lang in LANGUAGES if any(lang in a for a in asked.values())]
    others = [lang for lang in langs if lang != QUERY_LANGUAGE]
    differ = len({tuple(a) for a in asked.values()}) > 1  # rows asked in different languages: means differ too
    shared = [lang for lang in others if all(lang in a for a in asked.values())] if differ else None
    x_en = {}
    for label, ev in x_en_evals.items():
        x_en[label] = by_language(ev, shared)
        if differ and asked[label] != langs:
            del x_en[label][MEAN]
    parts = [f"Every question in every language (ids `<qid>-<lang>`), top {hits}; `{MEAN}`: the {len(others)} "
             f"non-English query languages together ({', '.join(others)}).", ""]
    if subsets:
        notes = []
        for label, p in subsets.items():
            left = ", ".join(lang for lang in LANGUAGES if lang not in p.topics)
            notes.append(f"**{label}** is scored on `{p.root.name}`: only the sentences, questions and answers in "
                         f"{', '.join(p.topics)}, the languages it covers ({left} left out of its documents, queries "
                         f"and judgments).")
        if differ:
            notes.append(f"In X → En its cells per query language compare with every row's (the same English "
                         f"sentences, the same English answer); its `{MEAN}` is left blank (–), and `{SHARED}` is "
                         f"every row's mean over the {len(shared)} non-English query languages all rows have "
                         f"({', '.join(shared)}).")
        parts += [" ".join(notes) + " Its X → All, over a smaller pool with fewer answers per question, has tables "
                  "of its own.", ""]
    for metric in SETTINGS["x-en"][1]:
        parts += [f"### X → En {METRIC_LABELS[metric]} (the English sentences; the English answer relevant)", "",
                  render_table(x_en, metrics=(metric,))]
    groups: dict[str, list[str]] = {}  # collection -> its rows: the full one first, then each subset
    for label, per in evals.items():
        if "x-all" in per:
            groups.setdefault(subsets[label].root.name if label in subsets else "", []).append(label)
    for name, labels in sorted(groups.items(), key=lambda kv: kv[0] != ""):
        where, about = "", "every sentence; the answer in every language relevant"
        if name:
            where = f" in {', '.join(subsets[labels[0]].topics)} only"
            about = (f"`{name}`: the sentences in those languages, the answer in each of them relevant; not "
                     f"comparable with X → All in all {len(LANGUAGES)} languages")
        parts += [f"### X → All{where} ({about})", "",
                  render_table({label: evals[label]["x-all"] for label in labels}, metrics=SETTINGS["x-all"][1]),
                  f"### X → All{where} MAP per query language", "",
                  render_table({label: by_language(evals[label]["x-all"]) for label in labels}, metrics=("map",))]
    return "\n".join(parts)


def write_outputs(root: Path, runs, evals, paths: LareqaPaths, hits: int, command: str,
                  subsets: Mapping[str, LareqaPaths] | None = None) -> Path:
    """``runs/lareqa/xlingual.md`` (the tables and the trec_eval check) and ``xlingual.json`` (every mean,
    per setting and query language, with the run and qrels files; a subset system's languages):
    what the README and later tables read."""
    out = root / "runs" / COLLECTION / "xlingual.md"
    text = (f"`{command}`\n\n{render(evals, hits, subsets)}\n"
            f"{trec_eval_note(runs, evals, paths, hits, subsets)}\n")
    with io.atomic_write(out) as f:
        f.write(text)

    def system(label: str, per) -> dict:
        p = _system_paths(paths, subsets, label)
        return {"collection": p.root.name, "languages": list(p.topics),
                **{setting: {"run": str(runs[label][setting]), "qrels": str(_qrels(p)[setting]), "mean": ev.mean,
                             "by_language": {lang: e.mean for lang, e in by_language(ev).items()}}
                   for setting, ev in per.items()}}

    io.write_json(out.with_suffix(".json"), {"command": command, "hits": hits,
                                             "systems": {label: system(label, per) for label, per in evals.items()}})
    return out


def main(argv=None) -> int:
    from .table2 import STUDENTS, Settings

    d = Settings()
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.xlingual", description=__doc__.split("\n\n")[0],
                                epilog="Writes runs/lareqa/{x-en,x-all}/*.txt (mUSE's: runs/lareqa-without-el-hi-vi/) and "
                                       "runs/lareqa/xlingual.{md,json}.")
    p.add_argument("--output-root", type=Path, default=Path("."),
                   help="the Table 2 driver's --output-root: its indexes and students are reused (default .)")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--mdpr", default=d.mdpr, help=f"the multilingual dense baseline, end to end (default {d.mdpr}; "
                                                  "'none' to leave it out)")
    p.add_argument("--teacher", default=d.teacher, help=f"the English teacher (default {d.teacher}; 'none' to "
                                                        "leave it out)")
    p.add_argument("--muse", choices=(MUSE, "none"), default=MUSE,
                   help="the multilingual Universal Sentence Encoder v3 row, on the languages it covers (default "
                        f"{MUSE}; 'none' to leave it out)")
    p.add_argument("--students", nargs="*", metavar="LABEL=FOLDER",
                   default=[f"{label}=models/{folder}" for label, _, folder in STUDENTS],
                   help="KD-SPD model folders (relative to --output-root unless absolute; default: the driver's "
                        "KD-SPD and KD-Encoder); a folder that does not exist is skipped with one line")
    p.add_argument("--hits", type=POSITIVE_INT, default=d.hits)
    p.add_argument("--threads", type=POSITIVE_INT, default=d.threads)
    p.add_argument("--force", action="store_true", help="encode and search again instead of reusing")
    p.add_argument("--readme", type=Path, nargs="?", const=Path("README.md"), default=None, metavar="README",
                   help="run nothing: rewrite the block between <!-- xlingual:start --> and <!-- xlingual:end --> of "
                        "README (default README.md) from runs/lareqa/xlingual.md under --output-root")
    a = p.parse_args(argv)
    from ._cli import configure_logging, report_block, resolve_data_dir, rewrite_readme_block, run_cli

    if a.readme is not None:
        return rewrite_readme_block(a.readme, "xlingual", lambda: report_block(
            a.output_root, f"runs/{COLLECTION}/xlingual.md", "python -m pyserini_kdspd.xlingual"), "xlingual block")

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
        subsets = {}
        if a.muse != "none":
            models.append((MUSE_LABEL, MUSE, MUSE))
            if (restricted := muse_paths(paths, a.output_root, force=a.force)) != paths:
                subsets[MUSE_LABEL] = restricted
        for label, folder in students:
            if not is_kdspd_folder(folder):
                print(f"[skip] {label}: {folder} holds no trained student (python -m pyserini_kdspd.table2 trains "
                      f"KD-SPD and KD-Encoder there)")
                continue
            models.append((label, folder.name, str(folder)))
        st, runs, made = Stages(), {}, {}
        for label, slug, name in models:
            model = DenseModel.from_name(slug, name)
            same = next((other for other, m in made.items()
                         if model.encodes_as(m) and subsets.get(other) == subsets.get(label)), None)
            if same is not None:  # the default teacher is mDPR's model with the same prefixes: one encoding, one run
                print(f"[reuse] {label} encodes queries and documents exactly as {same}: its runs are {same}'s",
                      flush=True)
                runs[label] = runs[same]
                continue
            with st(f"{label}: X -> En and X -> All"):
                runs[label] = system_runs(model, subsets.get(label, paths), a.output_root, hits=a.hits,
                                          threads=a.threads, force=a.force)
            made[label] = model
        with st("evaluate"):
            evals = evaluate_runs(runs, paths, a.hits, subsets)
            out = write_outputs(a.output_root, runs, evals, paths, a.hits, command, subsets)
        print(out.read_text(encoding="utf-8"))
        print(st.summary())
        print(f"wrote {out} and {out.with_suffix('.json')}")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
