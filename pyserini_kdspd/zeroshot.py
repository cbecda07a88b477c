"""Zero-shot languages (the paper's section 5.5, Tables 6-7) on LAReQA: each student trained without some of its
languages, against the same student trained with them.

    python -m pyserini_kdspd.zeroshot                                  # held out: el th vi; 1200 steps (the driver's)
    python -m pyserini_kdspd.zeroshot --held-out el th vi --train-steps 300

KD-SPD gives a language it never saw the average prompt (the mean of the trained languages' u and v vectors);
KD-Encoder has no language input at all. Both are trained with the driver's command (backbone, teacher, seed,
step budget, swept learning rates) on the bitext minus the held-out languages (``train --languages``), and set
against the driver's own ``models/kdspd`` and ``models/kd-encoder`` of the same budget (reused, or trained where
the driver will find them: :mod:`.analysis.variants`). Every student encodes the whole LAReQA collection, the
held-out languages' sentences included and tagged as always, through stock ``pyserini.encode`` /
``pyserini.search.faiss``; the English questions are scored overall and per language group: a group's figures
count only the answer translations in the group's languages as relevant, in the same mixed ranking, so they say
where that group's documents land among all the others. Beside them: FLORES-200 dev P@1 in both directions from
the training log, the held-out languages' mean, the kept ones' and Finnish (in no bitext: zero-shot for every
student). Writes ``runs/lareqa/zeroshot.{md,json}``; ``--readme`` copies it between ``<!-- zeroshot:start -->``
and ``<!-- zeroshot:end -->``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from . import io
from .analysis.variants import Variant

HELD_OUT = ("el", "th", "vi")  # three scripts/families with no close relative left in the bitext
FINNISH = "fi"
METRICS = ("map", "recip_rank", "recall_100")
STUDENTS = (("KD-SPD", "spd", "kdspd"), ("KD-Encoder", "mean", "kd-encoder"))  # label, train --student, driver folder
FOLDERS = tuple(folder for _, _, folder in STUDENTS)
TABLE = "zeroshot"
PROG = "python -m pyserini_kdspd.zeroshot"


def variant_pairs(held_out: Sequence[str], kept: Sequence[str],
                  students: Sequence[str] = FOLDERS) -> list[tuple[Variant, Variant]]:
    """Per student (``students``: driver folder names): (the driver's, trained on every language; the same
    trained on ``kept`` only)."""
    tag = "-".join(held_out)
    return [(Variant(label, folder, ("--student", kind), driver=folder),
             Variant(f"{label} without {', '.join(held_out)}", f"{folder}-without-{tag}",
                     ("--student", kind, "--languages", *kept)))
            for label, kind, folder in STUDENTS if folder in students]


def split_languages(bitext_languages: Sequence[str], collection_languages: Sequence[str],
                    held_out: Sequence[str]) -> tuple[list[str], list[str]]:
    """(The bitext languages to train on, the held-out ones without repeats); a held-out language must be in both
    the bitext and the collection."""
    held = list(dict.fromkeys(held_out))
    bad = [l for l in held if l not in bitext_languages or l not in collection_languages]
    if bad or not held:
        raise ValueError(f"held-out language(s) {', '.join(bad) or '(none)'}: each must be a language "
                         f"of both the bitext ({', '.join(sorted(bitext_languages))}) and LAReQA "
                         f"({', '.join(collection_languages)})")
    kept = [l for l in sorted(bitext_languages) if l not in held]
    if not kept:
        raise ValueError("every bitext language is held out: nothing left to train on")
    return kept, held


def group_qrels(qrels: Mapping[str, Mapping[str, int]], lang_of: Mapping[str, str], langs) -> dict:
    """``qrels`` with only the judgements of documents in ``langs``: a group's figures in the mixed ranking."""
    langs = set(langs)
    return {q: {d: g for d, g in docs.items() if lang_of.get(d) in langs} for q, docs in qrels.items()}


def score_groups(run, qrels, lang_of: Mapping[str, str], groups: Mapping[str, Sequence[str]], depth: int) -> dict:
    """``{group: Evaluation}`` of one run (file or dict): the whole qrels (group ``all``) and each group's."""
    from .evaluate import evaluate

    run = io.read_run(run) if not isinstance(run, Mapping) else run
    out = {"all": evaluate(run, qrels, depth=depth, metrics=METRICS)}
    for name, langs in groups.items():
        out[name] = evaluate(run, group_qrels(qrels, lang_of, langs), depth=depth, metrics=METRICS)
    return out


def flores(log: dict, langs: Sequence[str]) -> dict:
    """Mean FLORES dev P@1 (both directions) over ``langs`` in a training log's last evaluation (None if absent)."""
    results = log["dev"][-1]["results"] if log.get("dev") else {}
    found = [results[l] for l in langs if l in results]
    if not found:
        return {"p1_en_xx": None, "p1_xx_en": None}
    return {k: sum(r[k] for r in found) / len(found) for k in ("p1_en_xx", "p1_xx_en")}


def run_zeroshot(s, col, held_out: Sequence[str], extra: Sequence[str] = (), command: str = PROG,
                 students: Sequence[str] = FOLDERS) -> dict[str, Path]:
    """Train (or reuse) the ``students`` pairs, encode, search and score them on ``col``; write the table."""
    from .analysis.bias import languages_of
    from .analysis.variants import encode, score, train_variants
    from .distill.bitext import find_bitext_files
    from .distill.trainer import LOG_NAME
    from .evaluate import ttest
    from .paths import data_dir
    from .runtime import cpu_info

    lang_of = languages_of(col.by_lang)
    collection_langs = sorted(set(lang_of.values()))
    bitext = find_bitext_files(s.bitext if s.bitext else data_dir(s.data) / "bitext")
    kept, held = split_languages(list(bitext), collection_langs, held_out)
    groups = {"seen": [l for l in collection_langs if l not in held], "held_out": held}
    pairs = variant_pairs(held, kept, students)
    train_variants([v for pair in pairs for v in pair], s, extra, tag=TABLE)
    qrels = io.read_qrels(col.qrels)
    rows = []
    for with_all, without in pairs:
        evals = {}
        for v in (with_all, without):
            model, index, _ = encode(v, col, s)
            run = score(v, model, index, col, s, bias=False)["run"]
            log = io.read_json(v.folder(s.root) / LOG_NAME)
            scored = score_groups(run, qrels, lang_of, {**groups, **{f"lang:{l}": [l] for l in collection_langs}},
                                  s.hits)
            evals[v.slug] = ev = {g: e for g, e in scored.items() if not g.startswith("lang:")}
            rows.append({
                "name": v.name, "slug": v.slug, "student": v.train_args[1], "driver": v.driver,
                "trained_on": log["settings"]["languages"], "steps": log["steps"],
                "folder": str(v.folder(s.root).relative_to(s.root)),
                "run": {"file": str(Path(run).relative_to(s.root)), "sha256": io.sha256_file(run)},
                "lareqa": {g: dict(e.mean) for g, e in ev.items()},
                "queries": {g: e.num_queries for g, e in ev.items()},
                "flores": {"held_out": flores(log, held), "kept": flores(log, kept), FINNISH: flores(log, [FINNISH])},
                "per_language": {l: scored[f"lang:{l}"].mean["map"] for l in collection_langs},
            })
        rows[-1]["p_vs_with"] = {g: ttest(evals[without.slug][g], evals[with_all.slug][g], "map")[1]
                                 for g in evals[without.slug]}
    meta = {"command": command, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "collection": col.name,
            "held_out": held, "kept": kept, "groups": groups, "train_steps": s.train_steps, "seed": s.seed,
            "encoder": s.encoder, "teacher": s.teacher, "hits": s.hits, "cpu": cpu_info(), "rows": rows}
    out_dir = s.root / "runs" / col.name
    io.write_json(out_dir / f"{TABLE}.json", meta)
    with io.atomic_write(out_dir / f"{TABLE}.md") as f:
        f.write(markdown(meta) + "\n")
    return {"md": out_dir / f"{TABLE}.md", "json": out_dir / f"{TABLE}.json"}


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(meta: dict) -> str:
    """Two tables (groups; per language) of a :func:`run_zeroshot` record, with what the columns mean."""
    held, seen = meta["groups"]["held_out"], meta["groups"]["seen"]
    h = ", ".join(held)
    head = ["student", "trained on", "MAP", f"MAP seen ({len(seen)})", f"MAP held out ({h})", "MRR held out",
            "R@100 held out", "FLORES P@1 en→xx held out", "xx→en held out", "en→xx kept", "fi en→xx", "fi xx→en"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in meta["rows"]:
        p = r.get("p_vs_with") or {}

        def mark(g: str) -> str:
            return "*" if p.get(g, 1.0) < 0.05 else ""
        trained, fl = r["trained_on"], r["flores"]
        lines.append("| " + " | ".join([
            r["name"], f"{len(trained)} languages" + ("" if any(l in held for l in trained) else f" (no {h})"),
            f"{r['lareqa']['all']['map']:.3f}{mark('all')}", f"{r['lareqa']['seen']['map']:.3f}{mark('seen')}",
            f"{r['lareqa']['held_out']['map']:.3f}{mark('held_out')}", f"{r['lareqa']['held_out']['recip_rank']:.3f}",
            f"{r['lareqa']['held_out']['recall_100']:.3f}",
            _f(fl["held_out"]["p1_en_xx"]), _f(fl["held_out"]["p1_xx_en"]), _f(fl["kept"]["p1_en_xx"]),
            _f(fl[FINNISH]["p1_en_xx"]), _f(fl[FINNISH]["p1_xx_en"])]) + " |")
    langs = list(meta["rows"][0]["per_language"])
    per = ["| student | " + " | ".join(f"{l}{' ◦' if l in held else ''}" for l in langs) + " |",
           "|---|" + "---:|" * len(langs)]
    for r in meta["rows"]:
        per.append(f"| {r['name']} | " + " | ".join(f"{r['per_language'][l]:.3f}" for l in langs) + " |")
    notes = [
        f"{meta['train_steps']} training steps per student, seed {meta['seed']}, backbone {meta['encoder']}, teacher "
        f"{meta['teacher']}, the driver's learning rates; held out of the bitext: {h} (KD-SPD gives them the average "
        f"prompt; KD-Encoder has no language input). LAReQA XQuAD-R: the English questions against every sentence "
        f"of the collection, top {meta['hits']}, through stock `pyserini.encode` / `pyserini.search.faiss`. MAP seen "
        f"/ held out: only the answer translations in those languages count as relevant, in the same mixed ranking "
        f"(where that group's documents land among all the others); * differs from the same student trained on "
        "every language (two-tailed paired t-test on that column's MAP, p < 0.05).",
        "FLORES-200 devtest (the training log's last evaluation): P@1 of the held-out languages (mean), of the kept "
        "training languages (mean) and of Finnish, which no bitext has.",
        "Per language: MAP when only that language's answer translation counts (its mean reciprocal rank in the "
        "mixed ranking, cut at the run's depth); ◦ held out.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(per) + "\n\n" + "\n\n".join(notes)


def run(s, col, command: str = PROG) -> dict[str, Path]:
    """:func:`run_zeroshot` at the command's defaults (the driver's ``--analyses zeroshot``)."""
    return run_zeroshot(s, col, HELD_OUT, command=command)


def main(argv: Sequence[str] | None = None) -> int:
    from ._cli import train_passthrough
    from .analysis.variants import build_parser, run_command

    p = build_parser(PROG, __doc__.split("\n\n")[0], TABLE)
    p.add_argument("--held-out", nargs="+", default=list(HELD_OUT), metavar="LANG",
                   help=f"bitext languages left out of training, each also a LAReQA language (default: "
                        f"{' '.join(HELD_OUT)})")
    p.add_argument("--students", nargs="+", choices=FOLDERS, default=list(FOLDERS),
                   help="which students to compare with and without the held-out languages")
    return run_command(p, argv, PROG, TABLE, lambda a, s, col, command: run_zeroshot(
        s, col, a.held_out, extra=train_passthrough(a), command=command, students=a.students))


if __name__ == "__main__":
    sys.exit(main())
