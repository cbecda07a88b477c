"""Parallel sentences for distillation and the per-language batch sampler.

The bitext is a folder of ``en-XX.tsv`` files (``english<TAB>other[<TAB>source]``
per line, see ``../shared/data/README.md``). KD-SPD (section 3.3) trains on
batches that hold B pairs from EVERY language, English included as self-pairs
(English sentence -> teacher(English)), so that no language's prompt is starved
by the large ones (de has 108k pairs, th 3k). The sampler is deterministic from
the seed and its position is a small dict, saved in checkpoints so that a killed
run resumes with exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io import FormatError, text_lines

ENGLISH = "en"
_FILE_RE = re.compile(r"^en-([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)?)\.tsv$")


@dataclass
class Bitext:
    """One ``en-XX.tsv`` file: row i pairs ``english[i]`` with ``other[i]`` (language ``lang``)."""

    lang: str
    path: Path
    english: list[str]
    other: list[str]
    sources: list[str] = field(default_factory=list)
    rows: np.ndarray | None = None  # the rows used for training (all, or a capped sample)

    def __post_init__(self):
        if self.rows is None:
            self.rows = np.arange(len(self.english), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def english_key(self) -> str:
        """Content hash of the English side: names this file's teacher-target cache."""
        return texts_key(self.english)

    def pairs(self, limit: int | None = None) -> list[tuple[str, str]]:
        """``(english, other)`` of the rows used, the first ``limit`` of them when given."""
        return [(self.english[i], self.other[i]) for i in self.rows[:limit]]


def texts_key(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:20]


def read_bitext(path, lang: str | None = None) -> Bitext:
    """Read one bitext TSV: every line is ``english<TAB>other[<TAB>source]``; blank lines are skipped.

    Any other line (a missing side, an extra column, bytes that are not UTF-8) is a
    :class:`~pyserini_kdspd.io.FormatError` naming ``file:line``: a silently dropped pair
    would leave a language with less data than its file, unnoticed. A byte-order mark is
    dropped (:func:`~pyserini_kdspd.io.text_lines`). ``lang`` defaults to the XX of the
    file name ``en-XX.tsv``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such bitext file")
    if lang is None:
        m = _FILE_RE.match(path.name)
        if not m:
            raise ValueError(f"{path}: cannot tell the language from the file name (expected en-XX.tsv)")
        lang = m.group(1)
    english, other, sources = [], [], []
    for lineno, line in text_lines(path):
        parts = line.split("\t")
        if len(parts) not in (2, 3):
            raise FormatError(path, lineno, f"expected 'english<TAB>{lang}[<TAB>source]', "
                                            f"got {len(parts)} column(s): {line[:80]!r}")
        en, xx = parts[0].strip(), parts[1].strip()
        if not en or not xx:
            raise FormatError(path, lineno, f"empty {'English' if not en else lang} sentence: {line[:80]!r}")
        english.append(en)
        other.append(xx)
        sources.append(parts[2].strip() if len(parts) == 3 else "")
    if not english:
        raise FormatError(path, None, "no sentence pairs")
    return Bitext(lang=lang, path=path, english=english, other=other, sources=sources)


def find_bitext_files(location) -> dict[str, Path]:
    """``{lang: path}`` for a folder of ``en-XX.tsv`` files or a single such file."""
    location = Path(location)
    if location.is_file():
        m = _FILE_RE.match(location.name)
        if not m:
            raise ValueError(f"{location}: expected a file named en-XX.tsv")
        return {m.group(1): location}
    if not location.is_dir():
        raise FileNotFoundError(f"{location}: no such bitext folder or file")
    files = {}
    for p in sorted(location.iterdir()):
        m = _FILE_RE.match(p.name)
        if m and p.is_file():
            files[m.group(1)] = p
    if not files:
        raise FileNotFoundError(f"{location}: no en-XX.tsv files")
    return files


def load_bitexts(location, languages: Iterable[str] | None = None, max_pairs: int | None = None,
                 seed: int = 42) -> dict[str, Bitext]:
    """Read the bitext files of ``languages`` (all in the folder when None).

    ``max_pairs`` caps the pairs used per language with a seeded random sample
    (the files are grouped by source, so the first N lines would be one source).
    Row numbers keep referring to the full file, so the teacher-target cache of a
    file is shared by capped and uncapped runs.
    """
    files = find_bitext_files(location)
    if languages is not None:
        languages = [l for l in languages if l != ENGLISH]
        missing = [l for l in languages if l not in files]
        if missing:
            raise FileNotFoundError(f"{location}: no en-XX.tsv for language(s) {', '.join(missing)} "
                                    f"(have {', '.join(files)})")
        files = {l: files[l] for l in languages}
    out = {}
    for i, (lang, path) in enumerate(sorted(files.items())):
        b = read_bitext(path, lang)
        if max_pairs is not None and max_pairs < len(b.english):
            rng = np.random.default_rng([seed, _stable_int(lang)])
            b.rows = np.sort(rng.choice(len(b.english), size=max_pairs, replace=False)).astype(np.int64)
        out[lang] = b
    return out


def _stable_int(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little")


@dataclass(frozen=True)
class Example:
    """One training pair: ``text`` in ``lang`` whose target is teacher(``english``).

    ``source_lang``/``row`` say which bitext file and row it came from (the target
    cache is indexed by them); an English self-pair has ``lang == 'en'``.
    """

    lang: str
    text: str
    english: str
    source_lang: str
    row: int


class LanguageBatchSampler:
    """Endless batches of ``batch_per_language`` pairs from every language (English included).

    Each language walks through a seeded permutation of its pairs, re-shuffled
    each epoch; English self-pairs are drawn from the English sides of all files.
    ``state_dict()`` is the position (epoch and offset per language) for resume.
    """

    def __init__(self, bitexts: dict[str, Bitext], batch_per_language: int = 4, seed: int = 42,
                 include_english: bool = True):
        if batch_per_language < 1:
            raise ValueError("batch_per_language must be >= 1")
        if not bitexts:
            raise ValueError("no bitext")
        self.bitexts = bitexts
        self.batch_per_language = batch_per_language
        self.seed = seed
        self.languages = sorted(bitexts)
        # English self-pairs: global row space over the (capped) English sides of all files.
        self._en_offsets = np.cumsum([0] + [len(bitexts[l]) for l in self.languages])
        self.include_english = include_english
        self.batch_languages = ([ENGLISH] if include_english else []) + self.languages
        self._pos = {l: [0, 0] for l in self.batch_languages}  # language -> [epoch, offset]
        self._perm_cache: dict[tuple[str, int], np.ndarray] = {}

    def _size(self, lang: str) -> int:
        return int(self._en_offsets[-1]) if lang == ENGLISH else len(self.bitexts[lang])

    def _perm(self, lang: str, epoch: int) -> np.ndarray:
        key = (lang, epoch)
        if key not in self._perm_cache:
            self._perm_cache = {k: v for k, v in self._perm_cache.items() if k[0] != lang}
            rng = np.random.default_rng([self.seed, _stable_int(lang), epoch])
            self._perm_cache[key] = rng.permutation(self._size(lang))
        return self._perm_cache[key]

    def _example(self, lang: str, k: int) -> Example:
        if lang == ENGLISH:
            f = int(np.searchsorted(self._en_offsets, k, side="right") - 1)
            src = self.languages[f]
            b = self.bitexts[src]
            row = int(b.rows[k - self._en_offsets[f]])
            return Example(ENGLISH, b.english[row], b.english[row], src, row)
        b = self.bitexts[lang]
        row = int(b.rows[k])
        return Example(lang, b.other[row], b.english[row], lang, row)

    def next_batch(self) -> list[Example]:
        batch = []
        for lang in self.batch_languages:
            epoch, offset = self._pos[lang]
            for _ in range(self.batch_per_language):
                perm = self._perm(lang, epoch)
                if offset >= len(perm):
                    epoch, offset = epoch + 1, 0
                    perm = self._perm(lang, epoch)
                batch.append(self._example(lang, int(perm[offset])))
                offset += 1
            self._pos[lang] = [epoch, offset]
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "batch_per_language": self.batch_per_language,
                "languages": list(self.batch_languages),
                "position": {l: list(p) for l, p in self._pos.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["languages"] != self.batch_languages or state["seed"] != self.seed \
                or state["batch_per_language"] != self.batch_per_language:
            raise ValueError(f"sampler state is for languages={state['languages']} seed={state['seed']} "
                             f"B={state['batch_per_language']}, this run has languages={self.batch_languages} "
                             f"seed={self.seed} B={self.batch_per_language}")
        self._pos = {l: [int(e), int(o)] for l, (e, o) in state["position"].items()}
