"""Development evaluation of a distilled student on FLORES-200 devtest.

Per language: embedding MSE between student(sentence) and teacher(its English
original), and parallel-sentence retrieval P@1 in both directions over the
line-aligned sentences, scored with the inner product as the dense index will:
``xx->en`` ranks teacher(en) vectors for a student(xx) query; ``en->xx`` ranks
student(xx) vectors for a teacher(en) query (the KD-SPD setting: English queries
by the teacher, multilingual documents by the student). Finnish is absent from
the bitext, so its row is the zero-shot language.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

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


def flores_dir(override=None) -> Path:
    if override is not None:
        return Path(override)
    return data_dir(required=True) / "flores200" / "devtest"


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


class DevEvaluator:
    """Evaluates a student on FLORES-200 devtest (first ``max_sentences`` lines of each language).

    ``batch_size`` and the call's ``precision`` left at None resolve as in ``Student.encode``.
    """

    def __init__(self, teacher: Teacher, languages: Iterable[str] | None = None, max_sentences: int | None = 200,
                 folder=None, batch_size: int | None = None, cache_dir=None):
        self.folder = flores_dir(folder)
        if languages is None:
            languages = sorted(FLORES_TO_ISO[p.stem] for p in self.folder.glob("*.devtest")
                               if p.stem in FLORES_TO_ISO)
        languages = list(dict.fromkeys(languages))
        self.languages = [ENGLISH] + [l for l in languages if l != ENGLISH]
        self.max_sentences = max_sentences
        self.batch_size = batch_size
        self.teacher = teacher
        self.english = read_flores(self.folder, ENGLISH, max_sentences)
        self.sentences = {l: read_flores(self.folder, l, max_sentences) for l in self.languages}
        for l, s in self.sentences.items():
            if len(s) != len(self.english):
                raise ValueError(f"FLORES {l}: {len(s)} sentences, English has {len(self.english)}")
        cache = TargetCache(teacher, self.english, "flores-" + texts_key(self.english), cache_dir)
        self.targets = cache.get(np.arange(len(self.english)))
        cache.flush()

    def __call__(self, student, precision: str | None = None) -> dict:
        """``{lang: {mse, p1_xx_en, p1_en_xx, zero_shot}, "mean": ..., "mean_seen": ...}``."""
        was_training = student.training
        student.eval()
        try:
            results = {}
            for lang in self.languages:
                vecs = np.asarray(student.encode(self.sentences[lang], [lang] * len(self.english),
                                                 batch_size=self.batch_size, precision=precision), dtype=np.float32)
                results[lang] = {
                    "mse": float(((vecs - self.targets) ** 2).mean()),
                    "p1_xx_en": p_at_1(vecs, self.targets),
                    "p1_en_xx": p_at_1(self.targets, vecs),
                    "zero_shot": lang in ZERO_SHOT,
                }
        finally:
            student.train(was_training)
        foreign = [l for l in self.languages if l != ENGLISH]
        seen = [l for l in foreign if l not in ZERO_SHOT]
        for name, group in (("mean", foreign), ("mean_seen", seen)):
            if group:
                results[name] = {k: float(np.mean([results[l][k] for l in group]))
                                 for k in ("mse", "p1_xx_en", "p1_en_xx")}
        return results


def dev_summary(log: dict) -> dict:
    """The last FLORES dev evaluation of a training log, as every table reads it: the training languages'
    mean (what selects; Finnish never does) and Finnish (zero-shot) beside it."""
    last = log["dev"][-1]
    seen, fi = last["results"][SELECT_BY], last["results"].get("fi", {})
    return {"step": last["step"], "mse": seen["mse"], "p1_en_xx": seen["p1_en_xx"], "p1_xx_en": seen["p1_xx_en"],
            "mse_fi": fi.get("mse"), "p1_en_xx_fi": fi.get("p1_en_xx")}


def markdown_table(results: dict, before: dict | None = None) -> str:
    """Markdown table of a dev result (with a ``before -> after`` column pair when ``before`` is given)."""
    def cell(key, lang, fmt):
        after = fmt.format(results[lang][key])
        if before is not None and lang in before:
            return f"{fmt.format(before[lang][key])} → {after}"
        return after

    header = "| language | MSE (x1e3) | P@1 xx→en | P@1 en→xx |"
    lines = [header, "|---|---|---|---|"]
    for lang in results:
        r = results[lang]
        label = lang + (" (zero-shot)" if r.get("zero_shot") else "")
        if lang in ("mean", "mean_seen"):
            label = {"mean": "**mean (non-English)**", "mean_seen": "**mean (training languages)**"}[lang]
        mse = (f"{before[lang]['mse'] * 1e3:.3f} → " if before is not None and lang in before else "") \
            + f"{r['mse'] * 1e3:.3f}"
        lines.append(f"| {label} | {mse} | {cell('p1_xx_en', lang, '{:.3f}')} | {cell('p1_en_xx', lang, '{:.3f}')} |")
    return "\n".join(lines)
