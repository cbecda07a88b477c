"""What language identification costs KD-SPD: gold language tags against identified ones (issue 10, section 3).

KD-SPD chooses each document's prompt by its language. A document without a ``lang`` tag gets the
language that the packaged ``py3langid`` model, restricted to the student's trained languages, finds
in its text (:meth:`pyserini_kdspd.spd.Student.lang_ids`; text without letters gets the average
prompt). Two measurements, on a collection whose documents carry gold tags (LAReQA):

* **accuracy** of that identification per gold language, with the label each language is most often
  mistaken for. The labels come from the encoder's own call (``Student.lang_ids`` on the texts as
  ``pyserini.encode`` hands them over), so they are the prompts the untagged index was encoded with;
* **retrieval**: the same model encodes the collection twice through the project's dense stage
  (:func:`pyserini_kdspd.search.dense.encode_corpus` / ``search``: stock ``pyserini.encode`` and
  ``pyserini.search.faiss``), once as the Table 2 driver does (gold tags: ``indexes/<c>/<model>``,
  ``runs/<c>/<model>.txt``, reused when the driver made them) and once with every ``lang`` emptied
  (``collections/<c>/untagged``, ``indexes/<c>/<model>.untagged``, ``runs/<c>/langid/<model>.txt``);
  MAP, nDCG@10, MRR and R@100 of both, with the project's paired t-test.

``python -m pyserini_kdspd.analysis.langid [--root .] [--model models/kdspd]`` writes
``runs/lareqa/langid.{md,json}``; ``--readme`` rewrites the README's ``<!-- langid:start -->`` block.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .. import io
from .._cli import POSITIVE_INT

AVERAGE = "(average prompt)"  # the label of a text language ID cannot place (no letters)
METRICS = ("map", "ndcg_cut_10", "recip_rank", "recall_100")
GOLD, IDENTIFIED = "Gold tags", "Language ID"


# ---------------------------------------------------------------------------- accuracy
def identify(student, corpus_dir) -> list[tuple[str, str, str]]:
    """``(docid, gold tag, identified language)`` per document of a JsonCollection: the language whose
    prompt ``student`` gives the document when its ``lang`` is empty (:data:`AVERAGE` for the average one).

    The text is the ``text`` field as ``pyserini.encode`` hands it to the encoder (stripped; an empty one is
    None, which :func:`~pyserini_kdspd.spd.documents.document_fields` turns into ""), and the prompt slots are
    the student's own ``lang_ids``, the call its ``encode`` makes for untagged documents."""
    from ..spd.documents import document_fields
    from ..spd.languages import normalize_lang

    if student.decoder is None:
        raise ValueError(f"{student.config.student!r} student (KD-Encoder): no language prompts, so language ID "
                         "changes nothing; give a KD-SPD model folder")
    docs = [rec for f in io.collection_files(corpus_dir) for rec in io.read_jsonl(f)]
    texts, langs = document_fields([(r.get("text") or "").strip() or None for r in docs], [None] * len(docs))
    names = list(student.config.languages)
    slots = student.lang_ids(langs, texts).tolist() if docs else []
    return [(str(r["id"]), normalize_lang(r.get("lang")) or "", names[i] if i < len(names) else AVERAGE)
            for r, i in zip(docs, slots)]


def accuracy(labels: Iterable[tuple[str, str, str]]) -> dict:
    """Per gold language: documents, correctly identified, accuracy and every wrong label with its count
    (most frequent first, then by name); ``"all"`` last: the same over every document."""
    found_by: dict[str, Counter] = {}
    for _, gold, found in labels:
        found_by.setdefault(gold, Counter())[found] += 1
    out = {}
    for lang in sorted(found_by):
        c = found_by[lang]
        docs = sum(c.values())
        wrong = sorted(((f, n) for f, n in c.items() if f != lang), key=lambda t: (-t[1], t[0]))
        out[lang] = {"documents": docs, "correct": c[lang], "accuracy": c[lang] / docs, "wrong": dict(wrong)}
    docs, correct = sum(a["documents"] for a in out.values()), sum(a["correct"] for a in out.values())
    out["all"] = {"documents": docs, "correct": correct, "accuracy": correct / docs if docs else None, "wrong": {}}
    return out


# ---------------------------------------------------------------------------- the untagged collection
def untagged_corpus(corpus_dir, out_dir) -> Path:
    """``corpus_dir`` with every document's ``lang`` set to "" (what Pyserini hands the encoder as None:
    language ID), ids, order and other fields unchanged, one file per file. A file is rewritten only when
    its content changes, so the index encoded from it stays fresh (its stamp holds the files' mtimes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in io.collection_files(corpus_dir):
        recs = [{**r, "lang": ""} for r in io.read_jsonl(f)]
        target = out_dir / f"{f.stem}.jsonl"
        tmp = target.with_name("." + target.name + ".new")
        io.write_jsonl(tmp, recs)
        if target.is_file() and target.read_bytes() == tmp.read_bytes():
            tmp.unlink()
        else:
            tmp.replace(target)
    return out_dir


# ---------------------------------------------------------------------------- retrieval
def retrieval_runs(col, s, model_dir) -> dict[str, Path]:
    """The gold-tag run of ``model_dir`` as the Table 2 driver makes it (its index and run, reused when fresh)
    and the run of the same model on the untagged collection, in an index of its own."""
    from ..search.dense import DenseModel, encode_corpus, search

    model = DenseModel.from_name(Path(model_dir).name, str(model_dir))
    if model.kind != "kdspd":
        raise ValueError(f"{model_dir}: not a KD-SPD model folder")
    idx, runs = s.root / "indexes" / col.name, s.root / "runs" / col.name
    gold = encode_corpus(model, col.corpus_dir, idx / model.name, force=s.force)
    untagged = untagged_corpus(col.corpus_dir, Path(col.corpus_dir).with_name("untagged"))
    identified = encode_corpus(model, untagged, idx / f"{model.name}.untagged", force=s.force)
    return {GOLD: search(model, gold, col.topics, runs / f"{model.name}.txt", hits=s.hits, threads=s.threads,
                         force=s.force),
            IDENTIFIED: search(model, identified, col.topics, runs / "langid" / f"{model.name}.txt", hits=s.hits,
                               threads=s.threads, force=s.force)}


def compare(runs: Mapping[str, Path], qrels, depth: int, relevance_level: int = 1) -> dict:
    """Both runs' means over the same judged queries, and the paired t-test of language ID against gold."""
    from ..evaluate import evaluate, ttest

    ev = {name: evaluate(path, qrels, depth=depth, metrics=METRICS, relevance_level=relevance_level, name=name)
          for name, path in runs.items()}
    tests = {m: dict(zip(("t", "p"), ttest(ev[IDENTIFIED], ev[GOLD], m))) for m in METRICS}
    return {"evaluations": ev, "ttest": tests}


def changed_queries(runs: Mapping[str, Path], depth: int) -> list[str]:
    """Queries whose top ``depth`` differs between the two runs (documents or their order)."""
    a, b = (io.read_run(runs[k]) for k in (GOLD, IDENTIFIED))
    return sorted(q for q in set(a) | set(b)
                  if [d for d, _ in io.ranked(a.get(q, {}), depth)] != [d for d, _ in io.ranked(b.get(q, {}), depth)])


# ---------------------------------------------------------------------------- report
def render_markdown(report: dict) -> str:
    """The accuracy table and the retrieval comparison (four decimals: the differences are small)."""
    from ..evaluate import METRIC_LABELS, MISSING

    lines = [f"# Language identification on {report['collection']}: {report['model']['label']} with gold vs "
             "identified tags", "",
             f"Language ID: py3langid restricted to the model's {len(report['languages'])} trained languages "
             f"({', '.join(report['languages'])}), as the encoder tags a document without `lang`; "
             f"{AVERAGE}: text without letters.", "",
             "| gold language | documents | identified correctly | accuracy | most frequent wrong label |",
             "|---|---:|---:|---:|---|"]
    for lang, a in report["accuracy"].items():
        wrong = next(iter(a["wrong"].items()), None)
        share = f"{100 * a['accuracy']:.2f}%" if a["accuracy"] is not None else MISSING
        lines.append(f"| {'**all**' if lang == 'all' else lang} | {a['documents']} | {a['correct']} | {share} | "
                     f"{f'{wrong[0]} ({wrong[1]})' if wrong else ''} |")
    r = report["retrieval"]
    lines += ["", f"Retrieval with the English topics, top {r['depth']}: the gold-tag run (`{r['runs'][GOLD]}`) "
              f"against the same model on the untagged collection (`{r['runs'][IDENTIFIED]}`). "
              f"{r['changed_documents']} documents get another prompt than their gold tag's; "
              f"{r['queries_with_changed_relevant']} of {r['queries']} queries have such a relevant document, and "
              f"{r['queries_changed']} rankings differ.", "",
              "| Tags | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
              "|---|" + "---:|" * len(METRICS)]
    for name in (GOLD, IDENTIFIED):
        lines.append(f"| {name} | " + " | ".join(f"{r['mean'][name][m]:.4f}" for m in METRICS) + " |")
    diff = {m: r["mean"][IDENTIFIED][m] - r["mean"][GOLD][m] for m in METRICS}
    lines.append("| difference (p) | " + " | ".join(  # a difference that 4 decimals round to zero keeps its sign
        (f"{diff[m]:+.4f}" if diff[m] == 0 or abs(diff[m]) >= 5e-5 else f"{diff[m]:+.1e}")
        + f" ({r['ttest'][m]['p']:.2g})" for m in METRICS) + " |")
    lines += ["", "Difference: language ID minus gold tags; p: two-tailed paired t-test over the "
              f"{r['queries']} judged queries (judged queries missing from a run count as 0)."]
    return "\n".join(lines) + "\n"


def langid_report(col, s, model_dir, made_from: dict | None = None) -> dict:
    """Both measurements of ``model_dir`` on ``col`` (a ``table2.Collection`` with gold ``lang`` tags),
    written as ``runs/<collection>/langid.{md,json}`` under ``s.root``; returns the report."""
    import gc

    from ..search.dense import model_fingerprint
    from ..spd import Student

    model_dir = Path(model_dir)
    student = Student.from_pretrained(model_dir)
    labels = identify(student, col.corpus_dir)
    languages = list(student.config.languages)
    del student
    gc.collect()  # the encoders below run in their own processes
    # A gold tag the model was not trained on selects the average prompt (Student.lang_id), as no letters do.
    changed = {docid for docid, gold, found in labels if found != (gold if gold in languages else AVERAGE)}
    runs = retrieval_runs(col, s, model_dir)
    qrels = io.read_qrels(col.qrels)
    cmp = compare(runs, qrels, depth=s.hits, relevance_level=col.relevance_level)
    ev = cmp["evaluations"]
    judged = list(ev[GOLD].per_query)
    hit = [q for q in judged if any(g >= col.relevance_level and d in changed for d, g in qrels[q].items())]
    report = {
        "collection": col.name,
        "model": {"label": "KD-SPD" if model_dir.name == "kdspd" else model_dir.name, "path": str(model_dir),
                  "weights": model_fingerprint(str(model_dir))["weights"]},
        "languages": languages,
        "accuracy": accuracy(labels),
        "misidentified": [[d, g, f] for d, g, f in labels if f != g],
        "retrieval": {
            "depth": s.hits, "queries": len(judged),
            "runs": {k: str(Path(v).relative_to(s.root)) if Path(v).is_relative_to(s.root) else str(v)
                     for k, v in runs.items()},
            "mean": {k: e.mean for k, e in ev.items()},
            "ttest": cmp["ttest"],
            "changed_documents": len(changed),
            "queries_with_changed_relevant": len(hit),
            "queries_changed": len(changed_queries(runs, s.hits)),
        },
        "made_from": made_from,
    }
    stem = s.root / "runs" / col.name / "langid"
    io.write_json(stem.with_suffix(".json"), report)
    with io.atomic_write(stem.with_suffix(".md")) as f:
        f.write(render_markdown(report))
    return report


def readme_block(root: Path, collection: str) -> str:
    """The README block of ``runs/<collection>/langid.{json,md}``."""
    stem = root / "runs" / collection / "langid"
    for suffix in (".json", ".md"):
        if not stem.with_suffix(suffix).is_file():
            raise FileNotFoundError(f"{stem.with_suffix(suffix)}: missing; run `python -m pyserini_kdspd.analysis.langid "
                                    f"--root {root}` (after the Table 2 driver) first")
    report = io.read_json(stem.with_suffix(".json"))
    made = report.get("made_from")
    source = (f"the model of `{made['command']}` (seed {made['seed']}, {made['train_steps']} training steps, "
              f"finished {made['finished']})" if made else f"the model in `{report['model']['path']}`")
    body = stem.with_suffix(".md").read_text(encoding="utf-8").strip().splitlines()
    if body and body[0].startswith("#"):
        body = body[1:]  # the README has its own heading
    return "\n".join(["<!-- written by `python -m pyserini_kdspd.analysis.langid --readme` from "
                      f"runs/{collection}/langid.* ; edits here are overwritten -->",
                      f"Measured on {source}.", *body])


def main(argv: Sequence[str] | None = None) -> int:
    from .._cli import configure_logging, resolve_data_dir, rewrite_readme_block, run_cli
    from ..table2 import Settings, lareqa

    d = Settings()
    p = argparse.ArgumentParser(prog="python -m pyserini_kdspd.analysis.langid",
                                description="What language identification costs KD-SPD on LAReQA: accuracy per "
                                            "language, and retrieval with gold vs identified tags "
                                            "(runs/lareqa/langid.{md,json}).")
    p.add_argument("--root", type=Path, default=Path("."), help="the driver's --output-root (default .)")
    p.add_argument("--model", type=Path, default=None,
                   help="a KD-SPD model folder (default <root>/models/kdspd, the driver's)")
    p.add_argument("--data-dir", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    p.add_argument("--hits", type=POSITIVE_INT, default=d.hits, help=f"search depth, as the driver's (default {d.hits})")
    p.add_argument("--threads", type=POSITIVE_INT, default=d.threads, help=f"search threads (default {d.threads})")
    p.add_argument("--force", action="store_true", help="encode and search again instead of reusing indexes and runs")
    p.add_argument("--readme", type=Path, nargs="?", const=Path("README.md"), default=None, metavar="README",
                   help="run nothing: rewrite README's block between <!-- langid:start --> and <!-- langid:end --> "
                        "from runs/lareqa/langid.*")
    a = p.parse_args(argv)
    if a.readme is not None:
        return rewrite_readme_block(a.readme, "langid", lambda: readme_block(a.root, "lareqa"),
                                    "language-identification block")
    data = resolve_data_dir(p, a.data_dir)
    model = a.model if a.model is not None else a.root / "models" / "kdspd"
    configure_logging()
    s = Settings(root=a.root, data=data, hits=a.hits, threads=a.threads, force=a.force)

    def work() -> int:
        from ..spd.documents import is_kdspd_folder

        if not is_kdspd_folder(model):
            raise FileNotFoundError(f"{model}: no trained KD-SPD model (run the Table 2 driver, or give --model)")
        col = lareqa(s)
        if col is None:
            return 2
        driver = s.root / "runs" / col.name / "table2.json"  # what trained the model, when it is the driver's
        made_from = ({k: v for k, v in io.read_json(driver).items()
                      if k in ("command", "finished", "seed", "train_steps")}
                     if driver.is_file() and a.model is None else None)
        langid_report(col, s, model, made_from=made_from)
        stem = s.root / "runs" / col.name / "langid"
        print(stem.with_suffix(".md").read_text(encoding="utf-8"))
        print(f"wrote {stem.with_suffix('.md')}, {stem.with_suffix('.json')}")
        return 0
    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
