"""Development evaluation of a distilled student on FLORES-200 devtest.

Per language: embedding MSE between student(sentence) and teacher(its English
original), and parallel-sentence retrieval P@1 in both directions over the
line-aligned sentences, scored with the inner product as the dense index will:
``xx->en`` ranks teacher(en) vectors for a student(xx) query; ``en->xx`` ranks
student(xx) vectors for a teacher(en) query (the KD-SPD setting: English queries
by the teacher, multilingual documents by the student). A language the student
was not trained on is zero-shot: Finnish always (absent from the bitext), and
any language a run leaves out (``train --languages``, the zero-shot experiment).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io import FormatError, text_lines
from ..paths import data_dir
from .bitext import ENGLISH, texts_key
from .teacher import Teacher, TargetCache

FLORES_TO_ISO = {
    "eng_Latn": "en", "arb_Arab": "ar", "deu_Latn": "de", "ell_Grek": "el", "fin_Latn": "fi",
    "fra_Latn": "fr", "hin_Deva": "hi", "ind_Latn": "id", "ita_Latn": "it", "por_Latn": "pt",
    "rus_Cyrl": "ru", "spa_Latn": "es", "tha_Thai": "th", "tur_Latn": "tr", "vie_Latn": "vi",
    "zho_Hans": "zh",
}
ISO_TO_FLORES = {v: k for k, v in FLORES_TO_ISO.items()}
ZERO_SHOT = {"fi"}
SELECT_BY = "mean_seen"  # the mean over the training languages selects; Finnish (zero-shot) never does


def flores_dir(override=None, data=None) -> Path:
    """The FLORES-200 devtest folder: ``override``, else under the shared data folder ``data`` (default: found)."""
    if override is not None:
        return Path(override)
    return (Path(data) if data is not None else data_dir(required=True)) / "flores200" / "devtest"


def read_flores(folder, code: str, max_sentences: int | None = None) -> list[str]:
    """The line-aligned sentences of one FLORES-200 language (ISO or FLORES code)."""
    flores = ISO_TO_FLORES.get(code, code)
    path = Path(folder) / f"{flores}.devtest"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no FLORES-200 devtest file for {code!r}")
    lines = []
    for lineno, line in text_lines(path, blank=True):
        if not line.strip():  # every later sentence would be paired with the wrong English one
            raise FormatError(path, lineno, "empty line in a line-aligned FLORES file")
        lines.append(line)
    return lines[:max_sentences] if max_sentences else lines


def p_at_1(queries: np.ndarray, docs: np.ndarray) -> float:
    """Share of queries whose top inner-product document is the aligned one (row i <-> row i)."""
    scores = queries @ docs.T
    return float((scores.argmax(1) == np.arange(len(queries))).mean())


def pooled_map(queries: np.ndarray, pools: Sequence[np.ndarray]) -> float:
    """MAP of each query (row i) over every pool's vectors ranked together, its row i in each pool relevant.

    LAReQA's task on dev data: with teacher(English) queries and the student's vectors of every language's
    translations in one pool, a query's translations must all outrank every other sentence, so one language's
    vectors sitting closer to the teacher than another's costs MAP here, though not P@1 within a language."""
    n = len(queries)
    docs = np.concatenate([np.asarray(p, dtype=np.float32) for p in pools])
    order = np.argsort(-(np.asarray(queries, dtype=np.float32) @ docs.T), axis=1, kind="stable")
    hit = (order % n) == np.arange(n)[:, None]          # row i of some pool: a translation of query i
    ranks = np.nonzero(hit)[1].reshape(n, len(pools)) + 1  # 1-based ranks of its translations, ascending
    return float((np.arange(1, len(pools) + 1) / ranks).mean())


class DevEvaluator:
    """Evaluates a student on FLORES-200 devtest (first ``max_sentences`` lines of each language).

    ``trained``: the student's bitext languages; the others are zero-shot, kept out of ``mean_seen`` (what
    selects). None: every language but :data:`ZERO_SHOT`. ``batch_size`` and the call's ``precision`` left at
    None resolve as in ``Student.encode``.
    """

    def __init__(self, teacher: Teacher, languages: Iterable[str] | None = None, max_sentences: int | None = 200,
                 folder=None, batch_size: int | None = None, cache_dir=None, trained: Iterable[str] | None = None):
        self.folder = flores_dir(folder)
        if languages is None:
            languages = sorted(FLORES_TO_ISO[p.stem] for p in self.folder.glob("*.devtest")
                               if p.stem in FLORES_TO_ISO)
        languages = list(dict.fromkeys(languages))
        self.languages = [ENGLISH] + [l for l in languages if l != ENGLISH]
        self.max_sentences = max_sentences
        self.batch_size = batch_size
        self.zero_shot = set(ZERO_SHOT) if trained is None else set(self.languages) - set(trained) - {ENGLISH}
        self.teacher = teacher
        self.english = read_flores(self.folder, ENGLISH, max_sentences)
        self.sentences = {l: read_flores(self.folder, l, max_sentences) for l in self.languages}
        for l, s in self.sentences.items():
            if len(s) != len(self.english):
                raise ValueError(f"FLORES {l}: {len(s)} sentences, English has {len(self.english)}")
        from .losses.base import query_teacher  # the search side: the teacher's query encoder (e5: `query: `)

        def vectors(encoder: Teacher) -> np.ndarray:
            cache = TargetCache(encoder, self.english, "flores-" + texts_key(self.english), cache_dir)
            out = cache.get(np.arange(len(self.english)))
            cache.flush()
            return out

        self.targets = vectors(teacher)
        queries = query_teacher(teacher)  # the teacher itself when queries encode as documents (MiniLM)
        self.queries = self.targets if queries is teacher else vectors(queries)

    def __call__(self, student, precision: str | None = None) -> dict:
        """``{lang: {mse, p1_xx_en, p1_en_xx, zero_shot}, "mean": ..., "mean_seen": ...}``."""
        was_training = student.training
        student.eval()
        try:
            results, vectors = {}, {}
            for lang in self.languages:
                vecs = np.asarray(student.encode(self.sentences[lang], [lang] * len(self.english),
                                                 batch_size=self.batch_size, precision=precision), dtype=np.float32)
                vectors[lang] = vecs
                results[lang] = {
                    "mse": float(((vecs - self.targets) ** 2).mean()),
                    "p1_xx_en": p_at_1(vecs, self.targets),
                    "p1_en_xx": p_at_1(self.targets, vecs),
                    "zero_shot": lang in self.zero_shot,
                }
        finally:
            student.train(was_training)
        foreign = [l for l in self.languages if l != ENGLISH]
        seen = [l for l in foreign if l not in self.zero_shot]
        for name, group in (("mean", foreign), ("mean_seen", seen)):
            if group:
                results[name] = {k: float(np.mean([results[l][k] for l in group]))
                                 for k in ("mse", "p1_xx_en", "p1_en_xx")}
        pooled = [ENGLISH] + seen
        pools = [vectors[l] for l in pooled]
        results["pooled"] = {"map": pooled_map(self.targets, pools), "query_map": pooled_map(self.queries, pools),
                             "languages": pooled}
        return results


def evaluate_saved(folder, flores=None, max_sentences: int = 200, cache_dir=None) -> dict:
    """The dev results of a saved student as its training would have logged them (teacher, trained languages and
    precisions from its training log): for a student trained before a figure here existed. ``max_sentences``:
    train's ``--dev-sentences`` (its default: 200)."""
    from ..io import read_json
    from ..spd import Student
    from .trainer import LOG_NAME

    log = read_json(Path(folder) / LOG_NAME)
    settings = log["settings"]
    teacher = Teacher(log["teacher"]["name"], pooling=settings.get("teacher_pooling"),
                      max_length=settings["max_length"], precision=log["teacher_precision"])
    dev = DevEvaluator(teacher, max_sentences=max_sentences, folder=flores, cache_dir=cache_dir,
                       trained=settings["languages"])
    return dev(Student.from_pretrained(folder), precision=log["precision"])


PROMPT_SWAP_SENTENCES = 50


def prompt_swap(folder, flores=None, max_sentences: int = PROMPT_SWAP_SENTENCES) -> dict | None:
    """How much a saved student's language prompts change its vectors: 1 - cosine between a FLORES dev sentence's
    vector under its own language's prompt and under the next trained language's (in the student's order), averaged
    over the first ``max_sentences`` sentences of every trained language (fp32, so that a small change is not
    rounding). 0: the prompts are interchangeable and the student is language-agnostic whatever its decoder does;
    None for a student without prompts (KD-Encoder). Cached beside the weights (``prompt_swap.json``), reused while
    the weights and the sentence count are unchanged."""
    from ..io import read_json, sha256_file, write_json
    from ..spd import Student
    from ..spd.student import WEIGHTS_NAME

    folder = Path(folder)
    cache, key = folder / "prompt_swap.json", {"weights_sha256": sha256_file(folder / WEIGHTS_NAME),
                                                 "max_sentences": max_sentences}
    if cache.is_file() and (hit := read_json(cache)).get("key") == key:
        return hit["result"]
    student = Student.from_pretrained(folder)
    result = None
    if student.decoder is not None:
        langs = [lang for lang in student.config.languages if lang in ISO_TO_FLORES]
        flores = flores_dir(flores)
        per = {}
        for i, lang in enumerate(langs):
            texts = read_flores(flores, lang, max_sentences)
            own = student.encode(texts, langs=lang, precision="fp32")
            other = student.encode(texts, langs=langs[(i + 1) % len(langs)], precision="fp32")
            cos = (own * other).sum(1) / (np.linalg.norm(own, axis=1) * np.linalg.norm(other, axis=1))
            per[lang] = float(np.mean(np.clip(1.0 - cos, 0.0, None)))  # below 0: rounding
        result = {"mean": float(np.mean(list(per.values()))), "by_language": per}
    write_json(cache, {"key": key, "result": result})
    return result


def dev_summary(log: dict) -> dict:
    """The last FLORES dev evaluation of a training log, as every table reads it: the training languages'
    mean (what selects; Finnish never does) and Finnish (zero-shot) beside it."""
    last = log["dev"][-1]
    seen, fi = last["results"][SELECT_BY], last["results"].get("fi", {})
    return {"step": last["step"], "mse": seen["mse"], "p1_en_xx": seen["p1_en_xx"], "p1_xx_en": seen["p1_xx_en"],
            "mse_fi": fi.get("mse"), "p1_en_xx_fi": fi.get("p1_en_xx"),
            "pooled_map": last["results"].get("pooled", {}).get("map"),
            "pooled_query_map": last["results"].get("pooled", {}).get("query_map")}


def markdown_table(results: dict, before: dict | None = None) -> str:
    """Markdown table of a dev result (with a ``before -> after`` column pair when ``before`` is given)."""
    def cell(key, lang, fmt):
        after = fmt.format(results[lang][key])
        if before is not None and lang in before:
            return f"{fmt.format(before[lang][key])} → {after}"
        return after

    header = "| language | MSE (x1e3) | P@1 xx→en | P@1 en→xx |"
    lines = [header, "|---|---|---|---|"]
    for lang in (k for k in results if k != "pooled"):
        r = results[lang]
        label = lang + (" (zero-shot)" if r.get("zero_shot") else "")
        if lang in ("mean", "mean_seen"):
            label = {"mean": "**mean (non-English)**", "mean_seen": "**mean (training languages)**"}[lang]
        mse = (f"{before[lang]['mse'] * 1e3:.3f} → " if before is not None and lang in before else "") \
            + f"{r['mse'] * 1e3:.3f}"
        lines.append(f"| {label} | {mse} | {cell('p1_xx_en', lang, '{:.3f}')} | {cell('p1_en_xx', lang, '{:.3f}')} |")
    if "pooled" in results:
        was = f"{before['pooled']['map']:.3f} → " if before is not None and "pooled" in before else ""
        lines += ["", f"Pooled MAP (English queries by the teacher against {', '.join(results['pooled']['languages'])} "
                      f"by the student, all in one pool; LAReQA's task on dev data): {was}{results['pooled']['map']:.3f}"]
        if "query_map" in results["pooled"]:  # logs written before the query side was measured have none
            was = f"{before['pooled']['query_map']:.3f} → " if before and "query_map" in before.get("pooled", {}) else ""
            lines.append(f"Pooled MAP with the teacher's query encoder (how searches encode English queries): "
                         f"{was}{results['pooled']['query_map']:.3f}")
    return "\n".join(lines)
