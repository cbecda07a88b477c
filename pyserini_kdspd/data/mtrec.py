"""mTREC (KD-SPD, Huang et al. SIGIR 2023, sections 4.1 and 5.2): TREC DL 2020 over a four-language MS MARCO.

The queries and judgments are TREC DL 2020's passage task (54 judged English
queries, grades 0-3); the passages are mMARCO's machine translations of MS MARCO
into Arabic, Chinese, Russian and Indonesian, and every passage is in the
collection in all four translations (4 x 8.8M = 35.2M passages), except the
relevant ones: each relevant passage is kept in ONE language, so that where the
relevant documents sit is a property of the collection, which the two variants set:

* ``variant="even"`` (Table 2): for every query and every relevance grade, the
  relevant passages are spread over the languages as evenly as possible (seeded
  shuffle, then the language with the fewest so far; per-language counts differ by at most one).
* ``variant="biased"`` (section 5.2, Table 3, language bias): per query a seeded random
  *primary* language receives 60% (rounded half up) of the query's relevant
  passages, highest grade first, and the other three languages share the other 40%
  evenly: relevant documents 60/40 over languages.

Relevance is counted as the paper counts it: grade >= 1 (:data:`RELEVANT_GRADE`). On
DL20 that is 3,606 judgments over 54 queries, 66.8 relevant passages per query (the
paper's figure; grade >= 2, TREC DL's usual binary cut, would give 30.9), and each of
them is one document of the collection. Judged non-relevant passages (grade 0 for
every query) are in all four translations and judged in each. The collection thus
holds 4N - 3R passages for N MS MARCO passages of which R are relevant to some query.

A passage relevant to several queries keeps the language its first query (in qid
order) gave it; later queries balance around it. Randomness is derived from
``seed`` and the qid only, so a query's assignment does not depend on which other
queries are built.

Document ids are ``{lang}-{pid}`` (e.g. ``zh-1034183``), as LAReQA's are
``{lang}-...``: the language is visible in every run line (per-language fusion and
bias analysis need no look-up), and the original English qrels can never be
evaluated against this collection by mistake. The ids contain no ``#`` so the
passage splitter/MaxP convention stays unambiguous.

Written under ``output_root`` (``name`` = ``mtrec`` or ``mtrec-biased``):
``collections/{name}/corpus/corpus.jsonl`` (``{"id","contents","text","lang"}``),
``collections/{name}/by-lang/{lang}/corpus.jsonl``, ``topics/{name}.en.tsv``,
``qrels/{name}.txt`` and ``collections/{name}/stats.json`` (counts, relevant passages
per query and language, the primary language of each query for the biased variant,
and the build parameters).

The mMARCO collections are not distributed with this package: point
``--mmarco-dir`` at a folder holding ``{arabic,chinese,russian,indonesian}_collection.tsv``
(``pid<TAB>text``; mMARCO's Hugging Face dataset ``unicamp-dl/mmarco`` keeps them
under ``data/google/collections/``; that sub-path is searched too).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Protocol, Sequence

from .. import io
from ..io import FormatError
from ..paths import cache_dir
from ..paths import data_dir as _shared_data_dir
from . import register

log = logging.getLogger(__name__)

LANGUAGES = ("ar", "zh", "ru", "id")
NAME = "mtrec"
VARIANTS = ("even", "biased")
BIAS_SHARE = 0.6   # biased variant: the primary language's share of each query's relevant passages
RELEVANT_GRADE = 1  # grades >= 1 are relevant, as the paper counts them (66.8 per DL20 query)
# mMARCO's own language names (file prefixes); the paper uses the first four.
MMARCO_NAMES = {"ar": "arabic", "zh": "chinese", "ru": "russian", "id": "indonesian", "de": "german",
                "fr": "french", "es": "spanish", "it": "italian", "pt": "portuguese", "nl": "dutch",
                "hi": "hindi", "ja": "japanese", "vi": "vietnamese", "en": "english"}
# Where mMARCO's files sit inside a download of the HF dataset (v2 first, then v1's layout), or flat.
_MMARCO_SUBDIRS = ("", "collections", "google/collections", "data/google/collections",
                   "google/v2/collections", "data/google/v2/collections", "data/collections")
DL20_FILES = {"topics": "topics.dl20.txt", "qrels": "qrels.dl20-passage.txt"}
DL20_URL = "https://raw.githubusercontent.com/castorini/anserini-tools/master/topics-and-qrels/{name}"


class MMarcoMissing(FileNotFoundError):
    """mMARCO's translated collections are not where we looked (they cannot be shipped with the package)."""


# ------------------------------------------------------------------- passages
class PassageSource(Protocol):
    """Where passage texts come from: the pid universe, and per-language streams of ``(pid, text)``."""

    langs: Sequence[str]

    def pids(self) -> Iterator[str]: ...

    def passages(self, lang: str, keep: Callable[[str], bool] | None = None) -> Iterator[tuple[str, str]]: ...


class MappingSource:
    """In-memory passages ``{lang: {pid: text}}``; the universe is the pids present in every language."""

    def __init__(self, passages: Mapping[str, Mapping[str, str]], langs: Sequence[str] | None = None):
        self.langs = tuple(langs or passages.keys())
        missing = [lang for lang in self.langs if lang not in passages]
        if missing:
            raise ValueError(f"no passages for language(s) {missing}")
        self._p = passages

    def pids(self) -> Iterator[str]:
        common = set(self._p[self.langs[0]])
        for lang in self.langs[1:]:
            common &= set(self._p[lang])
        return iter(common)

    def passages(self, lang, keep=None):
        for pid, text in self._p[lang].items():
            if keep is None or keep(pid):
                yield str(pid), text


def mmarco_files(mmarco_dir, langs: Sequence[str] = LANGUAGES) -> dict[str, Path]:
    """``{lang: path}`` of mMARCO's ``{language}_collection.tsv`` (or ``.tsv.gz``) files; one-line error if absent."""
    root = Path(mmarco_dir) if mmarco_dir else None
    files, missing = {}, []
    for lang in langs:
        if lang not in MMARCO_NAMES:
            raise ValueError(f"mMARCO has no language {lang!r} (it has {sorted(MMARCO_NAMES)})")
        name = f"{MMARCO_NAMES[lang]}_collection.tsv"
        found = None
        if root is not None:
            for sub in _MMARCO_SUBDIRS:
                for fname in (name, name + ".gz"):
                    if (root / sub / fname).is_file():
                        found = root / sub / fname
                        break
                if found:
                    break
        if found:
            files[lang] = found
        else:
            missing.append(name)
    if missing:
        where = f"in {root} (or its data/google/collections/)" if root else "(no --mmarco-dir given)"
        raise MMarcoMissing(f"mTREC needs mMARCO's translated MS MARCO collections {', '.join(missing)} {where}; "
                            "get them from the Hugging Face dataset unicamp-dl/mmarco, data/google/collections/")
    return files


class MMarcoCollection:
    """mMARCO collection files, streamed (each is ~3 GB; nothing is held in memory but what is asked for)."""

    def __init__(self, mmarco_dir, langs: Sequence[str] = LANGUAGES):
        self.langs = tuple(langs)
        self.files = mmarco_files(mmarco_dir, self.langs)

    def _lines(self, lang) -> Iterator[tuple[str, str]]:
        path = self.files[lang]
        for lineno, line in io.text_lines(path):
            pid, sep, text = line.partition("\t")
            if not sep or not pid.strip():
                raise FormatError(path, lineno, f"expected 'pid<TAB>text', got {line[:80]!r}")
            yield pid.strip(), text

    def pids(self) -> Iterator[str]:
        """Passage ids of the first language's file (mMARCO's translations share MS MARCO's pids)."""
        return (pid for pid, _ in self._lines(self.langs[0]))

    def passages(self, lang, keep=None):
        for pid, text in self._lines(lang):
            if keep is None or keep(pid):
                yield pid, " ".join(text.split())


def load_mmarco(mmarco_dir, langs: Sequence[str] = LANGUAGES, pids=None) -> dict[str, dict[str, str]]:
    """``{lang: {pid: text}}`` from mMARCO's files, keeping only ``pids`` (all when None) while streaming."""
    src = MMarcoCollection(mmarco_dir, langs)
    wanted = None if pids is None else {str(p) for p in pids}
    return {lang: dict(src.passages(lang, None if wanted is None else wanted.__contains__)) for lang in src.langs}


# ----------------------------------------------------------------- assignment
def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _balanced_fill(pids, order: Sequence[str], assign: dict[str, str], group: Counter, query: Counter) -> None:
    """Give each pid the language with the fewest passages in its group (then in its query, then ``order``)."""
    rank = {lang: i for i, lang in enumerate(order)}
    for pid in pids:
        lang = min(order, key=lambda lg: (group[lg], query[lg], rank[lg]))
        assign[pid] = lang
        group[lang] += 1
        query[lang] += 1


def assign_relevant(qrels: Mapping[str, Mapping[str, int]], langs: Sequence[str] = LANGUAGES,
                    variant: str = "even", seed: int = 0, bias_share: float = BIAS_SHARE,
                    relevant_grade: int = RELEVANT_GRADE) -> tuple[dict[str, str], dict[str, str]]:
    """The one language of every relevant passage, and (biased variant) each query's primary language."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if len(set(langs)) != len(langs) or len(langs) < 2:
        raise ValueError(f"need at least two distinct languages, got {list(langs)}")
    assign: dict[str, str] = {}
    primary: dict[str, str] = {}
    for qid in sorted(qrels):
        rng = random.Random(f"mtrec:{seed}:{qid}")
        by_grade: dict[int, list[str]] = defaultdict(list)
        for pid, grade in sorted(qrels[qid].items()):
            if grade >= relevant_grade:
                by_grade[int(grade)].append(pid)
        if not by_grade:
            continue
        for grade in by_grade:
            rng.shuffle(by_grade[grade])
        query = Counter(assign[p] for ps in by_grade.values() for p in ps if p in assign)
        grades = sorted(by_grade, reverse=True)
        if variant == "biased":
            primary[qid] = rng.choice(list(langs))
            _assign_biased([by_grade[g] for g in grades], primary[qid], langs, bias_share, rng, assign, query)
            continue
        for g in grades:
            order = rng.sample(list(langs), len(langs))
            group = Counter(assign[p] for p in by_grade[g] if p in assign)
            _balanced_fill([p for p in by_grade[g] if p not in assign], order, assign, group, query)
    return assign, primary


def _assign_biased(relevant_by_grade: list[list[str]], prim: str, langs: Sequence[str], bias_share: float,
                   rng: random.Random, assign: dict[str, str], query: Counter) -> None:
    """``bias_share`` of one query's relevant passages (highest grade first) to ``prim``; the rest even over
    the other languages, per grade and in total."""
    relevant = [p for pids in relevant_by_grade for p in pids]
    target = _round_half_up(bias_share * len(relevant))
    have = sum(1 for p in relevant if assign.get(p) == prim)
    others = [lg for lg in rng.sample(list(langs), len(langs)) if lg != prim]
    rel_total = Counter(assign[p] for p in relevant if p in assign)
    for pids in relevant_by_grade:
        free = [p for p in pids if p not in assign]
        take = free[:max(0, target - have)]
        for p in take:
            assign[p] = prim
            query[prim] += 1
        have += len(take)
        group = Counter(assign[p] for p in pids if p in assign and assign[p] != prim)
        _balanced_fill(free[len(take):], others, assign, group, rel_total)
        for p in free[len(take):]:
            query[assign[p]] += 1


def make_docid(lang: str, pid: str) -> str:
    return f"{lang}-{pid}"


# --------------------------------------------------------------------- output
@dataclass(frozen=True)
class MTrecPaths:
    """Where :func:`build_mtrec` wrote the collection, topics and qrels."""

    name: str
    root: Path                  # collections/{name}
    corpus: Path                # collections/{name}/corpus (folder, for Pyserini's --input/--corpus)
    by_lang: dict[str, Path]    # lang -> collections/{name}/by-lang/{lang}
    topics: Path                # topics/{name}.en.tsv
    qrels: Path                 # qrels/{name}.txt
    stats: Path                 # collections/{name}/stats.json


def output_paths(output_root=".", variant: str = "even", langs: Sequence[str] = LANGUAGES) -> MTrecPaths:
    name = NAME if variant == "even" else f"{NAME}-{variant}"
    out = Path(output_root)
    root = out / "collections" / name
    return MTrecPaths(name, root, root / "corpus", {lg: root / "by-lang" / lg for lg in langs},
                      out / "topics" / f"{name}.en.tsv", out / "qrels" / f"{name}.txt", root / "stats.json")


def build_params(variant: str, seed: int, langs: Sequence[str], bias_share: float = BIAS_SHARE,
                 relevant_grade: int = RELEVANT_GRADE) -> dict:
    """What a build depends on besides its input files; a build recorded with other values is rebuilt."""
    return {"variant": variant, "seed": seed, "languages": list(langs), "relevant_grade": relevant_grade,
            "bias_share": bias_share if variant == "biased" else None,
            "layout": "every passage in every language, each relevant passage in one"}


def build_mtrec(topics, qrels, passages, variant: str = "even", seed: int = 0, output_root=".",
                langs: Sequence[str] | None = None, bias_share: float = BIAS_SHARE,
                relevant_grade: int = RELEVANT_GRADE, missing: str = "error") -> MTrecPaths:
    """Build mTREC from DL20 ``topics``/``qrels`` (mappings or file paths) and translated ``passages``.

    ``passages`` is ``{lang: {pid: text}}`` or a :class:`PassageSource` (e.g. :class:`MMarcoCollection`).
    Judged passages without a translation they need (a relevant one in its language, another in
    every language) are an error (``missing="error"``) or are dropped from the qrels
    (``missing="drop"``, for partial copies); relevant ones are dropped before the languages are assigned.
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', got {missing!r}")
    topics, qrels = _read_topics_and_qrels(topics, qrels)
    source = passages if hasattr(passages, "passages") and hasattr(passages, "pids") \
        else MappingSource(passages, langs)
    langs = tuple(langs or source.langs)
    paths = output_paths(output_root, variant, langs)
    judged = {p for docs in qrels.values() for p in docs}
    qrels, dropped = _judged_with_text(qrels, {p for p in source.pids() if p in judged}, missing)
    assign, primary = assign_relevant(qrels, langs, variant, seed, bias_share, relevant_grade)
    counts, written = _write_collection(source, langs, assign, {p for docs in qrels.values() for p in docs}, paths)
    out_qrels, lacking = _qrels_of_written(qrels, assign, written, langs)
    if lacking:
        if missing == "error":
            raise ValueError(f"{len(lacking)} judged passages lack a translation they need (a relevant one in "
                             f"its language, another in every language), e.g. {lacking[:5]} (pass missing='drop' "
                             "to build on a partial collection)")
        log.warning("dropping the judgments of %d translations that are missing", len(lacking))
        dropped += len(lacking)
    out_topics = {q: topics[q] for q in out_qrels}
    io.write_topics(paths.topics, out_topics)
    io.write_qrels(paths.qrels, out_qrels)

    judgments = sum(len(d) for d in out_qrels.values())
    relevant = {q: sum(g >= relevant_grade for g in docs.values()) for q, docs in out_qrels.items()}
    stats = {
        "name": paths.name, **build_params(variant, seed, langs, bias_share, relevant_grade),
        "docid": "{lang}-{pid}",
        "passages": {lg: counts[lg] for lg in langs}, "total_passages": sum(counts.values()),
        "queries": len(out_topics), "judgments": judgments,
        "relevant_passages": len(assign), "relevant_per_query": round(sum(relevant.values()) / max(1, len(relevant)), 2),
        "dropped_judgments": dropped,
        "relevant_by_grade_and_language": _grade_language_table(qrels, assign, langs, relevant_grade),
        "primary_language": primary,
        "files": {str(p.relative_to(Path(output_root))): n for p, n in
                  [(paths.corpus / "corpus.jsonl", sum(counts.values()))] +
                  [(paths.by_lang[lg] / "corpus.jsonl", counts[lg]) for lg in langs] +
                  [(paths.topics, len(out_topics)), (paths.qrels, judgments)]},
    }
    io.write_json(paths.stats, stats)
    log.info("%s: %d passages (%s), %d queries, %d judgments, %.1f relevant per query", paths.name,
             sum(counts.values()), ", ".join(f"{lg} {counts[lg]}" for lg in langs), len(out_topics), judgments,
             stats["relevant_per_query"])
    return paths


def _read_topics_and_qrels(topics, qrels) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Topics and qrels from files or mappings; every judged query must have a topic text."""
    topics = io.read_topics(topics) if isinstance(topics, (str, os.PathLike)) else dict(topics)
    qrels = io.read_qrels(qrels) if isinstance(qrels, (str, os.PathLike)) else {
        str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    absent = sorted(q for q in qrels if q not in topics)
    if absent:
        raise ValueError(f"{len(absent)} judged queries have no topic text, e.g. {absent[:5]}")
    return topics, qrels


def _judged_with_text(qrels: dict, present: set, missing: str) -> tuple[dict, int]:
    """``qrels`` without the judged passages that have no text (``missing="drop"``), and how many were dropped.

    With ``missing="error"`` such a passage is an error: the collection would silently lose judgments.
    """
    judged = {p for docs in qrels.values() for p in docs}
    lacking = judged - present
    if not lacking:
        return qrels, 0
    if missing == "error":
        raise ValueError(f"{len(lacking)} judged passages are not in the passage collection, e.g. "
                         f"{sorted(lacking)[:5]} (pass missing='drop' to build on a partial collection)")
    log.warning("dropping %d of %d judged passages that have no text", len(lacking), len(judged))
    kept = {q: {p: g for p, g in docs.items() if p not in lacking} for q, docs in qrels.items()}
    return {q: docs for q, docs in kept.items() if docs}, sum(len(d) for d in qrels.values()) - \
        sum(len(d) for d in kept.values())


def _write_collection(source: PassageSource, langs: Sequence[str], assign: Mapping[str, str], judged: set[str],
                      paths: MTrecPaths) -> tuple[Counter, dict[str, set[str]]]:
    """Every passage in every language, but a relevant one only in the language ``assign`` gives it,
    to the corpus and its language's corpus.

    Returns the passages written per language and, for the judged pids, the languages they were written in.
    """
    counts: Counter = Counter()
    written: dict[str, set[str]] = defaultdict(set)
    with io.atomic_write(paths.corpus / "corpus.jsonl") as fc:
        for lang in langs:
            seen: set[str] = set()
            with io.atomic_write(paths.by_lang[lang] / "corpus.jsonl") as fl:
                for pid, text in source.passages(lang, keep=lambda p, lg=lang: assign.get(p, lg) == lg):
                    if pid in seen:
                        raise ValueError(f"passage {pid} appears twice in the {lang} collection")
                    seen.add(pid)
                    if pid in judged:
                        written[pid].add(lang)
                    line = json.dumps({"id": make_docid(lang, pid), "contents": text, "text": text,
                                       "lang": lang}, ensure_ascii=False) + "\n"
                    fc.write(line)
                    fl.write(line)
                    counts[lang] += 1
    return counts, written


def _qrels_of_written(qrels, assign: Mapping[str, str], written: Mapping[str, set[str]], langs: Sequence[str]):
    """The qrels over the collection's docids (a relevant passage once, any other in each language), and the
    ``(qid, pid, lang)`` whose translation is missing."""
    out, lacking = {}, []
    for q in sorted(qrels):
        docs = {}
        for p, g in sorted(qrels[q].items()):
            for lang in ([assign[p]] if p in assign else langs):
                if lang in written.get(p, ()):
                    docs[make_docid(lang, p)] = g
                else:
                    lacking.append((q, p, lang))
        if docs:
            out[q] = docs
    return out, lacking


def _grade_language_table(qrels: Mapping[str, Mapping[str, int]], assign: Mapping[str, str],
                          langs: Sequence[str], relevant_grade: int) -> dict[str, dict[str, int]]:
    """Relevant judgments per grade (highest first) and language."""
    grades = Counter((g, assign[p]) for docs in qrels.values() for p, g in docs.items() if g >= relevant_grade)
    return {str(g): {lg: grades[(g, lg)] for lg in langs} for g in sorted({g for g, _ in grades}, reverse=True)}


# ------------------------------------------------------------------ DL20 input
def dl20_files(data_dir=None, download: bool = True) -> dict[str, Path]:
    """TREC DL 2020 topics and passage qrels: the shared data folder, else a cached download from anserini-tools."""
    shared = _shared_data_dir(data_dir)
    if shared is not None and all((shared / "trec-dl20" / f).is_file() for f in DL20_FILES.values()):
        return {k: shared / "trec-dl20" / f for k, f in DL20_FILES.items()}
    cached = cache_dir() / "trec-dl20"
    out = {}
    for key, fname in DL20_FILES.items():
        target = cached / fname
        if not target.is_file():
            if not download:
                raise FileNotFoundError(f"TREC DL 2020 {fname} is neither in {shared or 'a data folder'}/trec-dl20 "
                                        f"nor in {cached}")
            url = DL20_URL.format(name=fname)
            log.info("downloading %s", url)
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    data = r.read()
            except OSError as e:
                raise FileNotFoundError(f"TREC DL 2020 {fname} not found locally and the download of {url} "
                                        f"failed ({e})") from None
            with io.atomic_write(target, "wb") as f:
                f.write(data)
        out[key] = target
    return out


def _register_args(parser) -> None:
    parser.add_argument("--mmarco-dir", default=None,
                        help="folder with mMARCO's {arabic,chinese,russian,indonesian}_collection.tsv "
                             "(or the unicamp-dl/mmarco dataset folder, data/google/collections/)")
    parser.add_argument("--variant", choices=VARIANTS, default="even",
                        help="even: Table 2's mTREC (relevant passages spread evenly over the languages); "
                             "biased: section 5.2 / Table 3 (60%% of each query's relevant passages in one "
                             "language, 40%% in the others)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), metavar="LANG")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="fail instead of downloading the DL20 topics/qrels when they are not local")


@register(NAME, help="mTREC: TREC DL 2020 queries over MS MARCO passages in mMARCO's ar/zh/ru/id "
                     "(needs --mmarco-dir)", add_arguments=_register_args)
def prepare_mtrec(data_dir=None, output_root=".", force: bool = False, mmarco_dir=None, variant: str = "even",
                  seed: int = 0, languages: Sequence[str] = LANGUAGES, download: bool = True) -> MTrecPaths:
    """Build mTREC from the shared DL20 files and the user's mMARCO collection files.

    Raises :class:`MMarcoMissing` (a FileNotFoundError: the CLI prints its one line) when
    the mMARCO files are absent, so scripts can skip the collection.
    """
    source = MMarcoCollection(mmarco_dir, languages)  # fails first and fast when mMARCO is absent
    paths = output_paths(output_root, variant, source.langs)
    if not force and _is_complete(paths, Path(output_root), build_params(variant, seed, source.langs)):
        log.info("%s is complete (see %s); pass --force to rebuild", paths.root, paths.stats)
        return paths
    files = dl20_files(data_dir, download)
    return build_mtrec(files["topics"], files["qrels"], source, variant=variant, seed=seed,
                       output_root=output_root, langs=source.langs)


def _is_complete(paths: MTrecPaths, root: Path, params: dict) -> bool:
    """True when stats.json records the same build parameters (layout included) and lists files that are there."""
    try:
        stats = io.read_json(paths.stats)
        return all(stats[k] == v for k, v in params.items()) and all((root / rel).is_file() for rel in stats["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
