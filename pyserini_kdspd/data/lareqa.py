"""LAReQA XQuAD-R (Roy et al., EMNLP 2020) as a Pyserini collection.

XQuAD-R is the language-agnostic retrieval version of XQuAD: the 240 XQuAD
paragraphs in 11 languages are split into sentences, and a question must
retrieve its answer sentence in *every* language from the pool of all 13,014
sentences. KD-SPD (Huang et al., SIGIR 2023) evaluates English queries against
this multilingual pool, so the collection written here is:

* ``collections/lareqa/corpus/corpus.jsonl``: every sentence of every language,
  ``{"id", "contents", "text", "lang"}`` -- ``contents`` for
  ``pyserini.index.lucene --collection JsonCollection``, ``text`` and ``lang`` for
  ``pyserini.encode input --fields text lang``;
* ``collections/lareqa/by-lang/{lang}/corpus.jsonl``: the same records per language
  (BM25 needs one index per language analyzer);
* ``topics/lareqa.{lang}.tsv``: the 1190 questions in each language (the
  non-English ones are XQuAD's human translations, i.e. "human" query translations);
* ``qrels/lareqa.txt``: for each question, its answer sentence in each of the 11
  languages (grade 1);
* the two "any language" settings, every question in every language, ids ``<qid>-<lang>``:
  ``topics/lareqa.all-languages.tsv`` (``<qid>-<lang><TAB>question<TAB>lang``: the third column
  is the language tag a KD-SPD query encoder reads, Pyserini ignores it),
  ``qrels/lareqa.x-en.txt`` (X -> En: the English answer sentence only, searched among the 1,180
  English sentences) and ``qrels/lareqa.x-all.txt`` (X -> All: the 11 translations of the answer,
  among all 13,014 sentences); derived from the files above (:func:`prepare_cross_lingual`);
* ``collections/lareqa/stats.json``: counts, how each answer was located, and
  the input checksums that make re-runs skip work. It lives beside (not inside)
  ``corpus/`` because Pyserini reads every file of a collection folder.

The answer sentence is, as in LAReQA, the sentence whose ``sentence_breaks``
range holds the answer's ``answer_start``. When no range holds it, the sentence
of the same paragraph containing the answer text is used instead, and the
counts of both are reported, never silently dropped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .. import io
from ..io import FormatError
from ..paths import cache_dir
from ..paths import data_dir as _shared_data_dir
from . import register

log = logging.getLogger(__name__)

LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
QUERY_LANGUAGE = "en"
NAME = "lareqa"
# Public home of the data; the shared copy is google-research-datasets/lareqa @ 9bc8c7fb.
URL_TEMPLATE = "https://github.com/google-research-datasets/lareqa/raw/master/xquad-r/{lang}.json"
_STATS_VERSION = 1


# ------------------------------------------------------------------ structures
@dataclass(frozen=True)
class Sentence:
    docid: str
    lang: str
    text: str
    article: int
    paragraph: int
    index: int


@dataclass(frozen=True)
class Question:
    qid: str
    lang: str
    text: str
    answer: str
    answer_start: int
    article: int
    paragraph: int


@dataclass
class LareqaData:
    """XQuAD-R in memory: the sentence pool, the questions per language and the qrels."""

    sentences: list[Sentence]
    questions: dict[str, dict[str, Question]]        # lang -> qid -> question
    answers: dict[str, dict[str, str]]                # lang -> qid -> docid of its answer sentence
    qrels: dict[str, dict[str, int]]                  # English qid -> docid -> 1
    located: dict[str, Counter]                       # lang -> {"offset", "text", "unlocated", "absent"}
    answer_crosses_break: dict[str, int]              # lang -> answers running past their sentence's end
    sources: dict[str, Path]                          # lang -> input file

    def topics(self, lang: str) -> dict[str, str]:
        """Questions of ``lang`` in the order of the English topics (qids are shared)."""
        qs = self.questions[lang]
        return {qid: qs[qid].text for qid in self.questions[QUERY_LANGUAGE] if qid in qs}

    def sentences_of(self, lang: str) -> list[Sentence]:
        return [s for s in self.sentences if s.lang == lang]


@dataclass(frozen=True)
class LareqaPaths:
    """Where :func:`prepare_lareqa` wrote the collection, topics and qrels."""

    root: Path                    # collections/lareqa
    corpus: Path                  # collections/lareqa/corpus (folder, for Pyserini's --input/--corpus)
    by_lang: dict[str, Path]      # lang -> collections/lareqa/by-lang/{lang}
    topics: dict[str, Path]       # lang -> topics/lareqa.{lang}.tsv
    qrels: Path                   # qrels/lareqa.txt
    stats: Path                   # collections/lareqa/stats.json
    all_topics: Path              # topics/lareqa.all-languages.tsv: every question in every language, tagged
    x_en_qrels: Path              # qrels/lareqa.x-en.txt: X -> En (the English answer)
    x_all_qrels: Path             # qrels/lareqa.x-all.txt: X -> All (the 11 translations of the answer)


def output_paths(output_root: str | os.PathLike = ".", name: str = NAME) -> LareqaPaths:
    """Where LAReQA lives under ``output_root``; ``name``: another collection of the same layout (a
    language subset, :func:`restrict_languages`)."""
    out = Path(output_root)
    root = out / "collections" / name
    return LareqaPaths(
        root=root,
        corpus=root / "corpus",
        by_lang={lang: root / "by-lang" / lang for lang in LANGUAGES},
        topics={lang: out / "topics" / f"{name}.{lang}.tsv" for lang in LANGUAGES},
        qrels=out / "qrels" / f"{name}.txt",
        stats=root / "stats.json",
        all_topics=out / "topics" / f"{name}.all-languages.tsv",
        x_en_qrels=out / "qrels" / f"{name}.x-en.txt",
        x_all_qrels=out / "qrels" / f"{name}.x-all.txt",
    )


def make_docid(lang: str, article: int, paragraph: int, sentence: int) -> str:
    """Position-derived id (``de-a012-p03-s02``): stable across runs and identical in shape across languages."""
    return f"{lang}-a{article:03d}-p{paragraph:02d}-s{sentence:02d}"


def docid_lang(docid: str) -> str:
    """The language of a sentence id made by :func:`make_docid`."""
    return docid.split("-", 1)[0]


def in_language(docid: str, lang: str) -> str:
    """The id :func:`make_docid` gives the same sentence position in ``lang``."""
    return f"{lang}-{docid.split('-', 1)[1]}"


def _position(docid: str) -> tuple[str, tuple[int, int], int]:
    """``(lang, (article, paragraph), sentence)`` of a :func:`make_docid` id."""
    lang, article, paragraph, sentence = docid.split("-")
    return lang, (int(article[1:]), int(paragraph[1:])), int(sentence[1:])


def translations(qrels: Mapping[str, Mapping[str, int]], docids: Iterable[str]) -> dict[str, list[str]]:
    """Each English sentence's id -> the ids of its versions in every language (itself first).

    XQuAD-R splits every language's paragraph into sentences on its own, so the same position is not always the
    same sentence (Thai has 852 sentences against English's 1,180; across the ten other languages, one answer in
    seven sits at another position than the English answer). A sentence that holds a question's answer is a
    version of the English sentence that holds it (of both, when it merges two English answers' sentences); any
    other sentence is a version of the English sentence at its position in the same paragraph (that paragraph's
    last, when it is shorter)."""
    docids = list(docids)
    out: dict[str, list[str]] = {}
    english: dict[tuple[int, int], int] = {}  # (article, paragraph) -> its English sentences
    for d in docids:
        lang, para, i = _position(d)
        if lang == QUERY_LANGUAGE:
            out[d] = [d]
            english[para] = max(english.get(para, 0), i + 1)
    by_answer: dict[str, set[str]] = {}
    for judged in qrels.values():
        en = [d for d in judged if docid_lang(d) == QUERY_LANGUAGE]
        for d in judged:
            if docid_lang(d) != QUERY_LANGUAGE:
                by_answer.setdefault(d, set()).update(en)
    for d in docids:
        lang, para, i = _position(d)
        if lang == QUERY_LANGUAGE:
            continue
        if d in by_answer:
            for en in sorted(by_answer[d]):
                out[en].append(d)
        elif para in english:
            out[make_docid(QUERY_LANGUAGE, *para, min(i, english[para] - 1))].append(d)
    return out


def query_id(qid: str, lang: str) -> str:
    """``<qid>-<lang>``: one id per question and language, so that one qrels file judges every language's
    questions (XQuAD's ids are hex strings without a dash)."""
    return f"{qid}-{lang}"


def split_query_id(qid: str) -> tuple[str, str]:
    """``(qid, lang)`` of a :func:`query_id`."""
    base, sep, lang = qid.rpartition("-")
    if not sep or lang not in LANGUAGES:
        raise ValueError(f"{qid!r} is not a <qid>-<lang> query id of LAReQA's languages")
    return base, lang


# ---------------------------------------------------------------------- input
def find_source(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                url_template: str = URL_TEMPLATE) -> Path:
    """The folder holding ``{lang}.json`` for the 11 languages.

    Looked for in ``data_dir`` (the shared data folder, its ``lareqa/xquad-r``, or the
    ``xquad-r`` folder itself), else ``$PYSERINI_KDSPD_DATA`` / ``../shared/data``, else
    the cache, where the files are downloaded from their public home when missing.
    """
    if data_dir is not None:
        base = Path(data_dir)
        if not base.is_dir():
            raise FileNotFoundError(f"data folder {base} does not exist")
    else:
        base = _shared_data_dir()
    if base is not None:
        for candidate in (base / "lareqa" / "xquad-r", base / "xquad-r", base):
            if any((candidate / f"{lang}.json").is_file() for lang in LANGUAGES):
                return candidate  # a partial folder is an error, raised when it is read
    cached = cache_dir() / "lareqa" / "xquad-r"
    missing = [lang for lang in LANGUAGES if not (cached / f"{lang}.json").is_file()]
    if missing and not download:
        raise FileNotFoundError(f"LAReQA XQuAD-R not found in {base or 'any data folder'} nor in {cached}")
    for lang in missing:
        _download(url_template.format(lang=lang), cached / f"{lang}.json", searched=base)
    return cached


def _download(url: str, dest: Path, searched: Path | None) -> None:
    log.info("downloading %s -> %s", url, dest)
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "pyserini_kdspd"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError) as e:
        where = f"in {searched}/lareqa/xquad-r" if searched else "in any data folder"
        raise FileNotFoundError(
            f"LAReQA XQuAD-R is not {where}, and downloading {url} failed ({e}). Without a network, "
            f"copy {', '.join(f'{lang}.json' for lang in LANGUAGES)} from "
            f"https://github.com/google-research-datasets/lareqa (folder xquad-r) into "
            f"<data>/lareqa/xquad-r and pass --data-dir <data> (or set PYSERINI_KDSPD_DATA)") from None
    try:
        json.loads(payload)
    except ValueError as e:
        raise FormatError(url, None, f"downloaded file is not JSON ({e}); not saved") from None
    with io.atomic_write(dest, "wb") as f:
        f.write(payload)


def _fail(path: Path, where: str, expected: str):
    raise FormatError(path, None, f"{where}: expected {expected}")


def _read_language(path: Path, lang: str) -> tuple[list[Sentence], list[Question], dict[tuple[int, int], list[tuple[int, int]]], int]:
    """Strictly parse one ``{lang}.json``; returns sentences, questions, breaks per paragraph, break mismatches."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (LAReQA XQuAD-R needs {lang}.json for language {lang!r})")
    doc = io.read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list) or not doc["data"]:
        _fail(path, "top level", "a SQuAD-format object with a non-empty 'data' list")
    sentences: list[Sentence] = []
    questions: list[Question] = []
    breaks_of: dict[tuple[int, int], list[tuple[int, int]]] = {}
    mismatches = 0
    for ai, article in enumerate(doc["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            _fail(path, f"data[{ai}]", "an article with a 'paragraphs' list")
        for pi, para in enumerate(article["paragraphs"]):
            where = f"data[{ai}].paragraphs[{pi}]"
            if not isinstance(para, dict):
                _fail(path, where, "a paragraph object")
            context, sents, brks = para.get("context"), para.get("sentences"), para.get("sentence_breaks")
            if not isinstance(context, str):
                _fail(path, where, "a 'context' string")
            if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents) or not sents:
                _fail(path, where, "'sentences': a non-empty list of strings (LAReQA format)")
            if not isinstance(brks, list) or not all(
                    isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) for x in b) for b in brks):
                _fail(path, where, "'sentence_breaks': a list of [start, end] integer offsets (LAReQA format)")
            if len(sents) != len(brks):
                _fail(path, where, f"as many 'sentence_breaks' as 'sentences', got {len(brks)} and {len(sents)}")
            for si, ((b, e), text) in enumerate(zip(brks, sents)):
                if not 0 <= b <= e <= len(context):
                    _fail(path, f"{where}.sentence_breaks[{si}]",
                          f"0 <= start <= end <= {len(context)} (context length), got [{b}, {e}]")
                if not text.strip():
                    _fail(path, f"{where}.sentences[{si}]", "a non-empty sentence")
                mismatches += context[b:e] != text
                sentences.append(Sentence(make_docid(lang, ai, pi, si), lang, text.strip(), ai, pi, si))
            breaks_of[ai, pi] = [(b, e) for b, e in brks]
            qas = para.get("qas")
            if not isinstance(qas, list):
                _fail(path, where, "a 'qas' list")
            for qi, qa in enumerate(qas):
                qwhere = f"{where}.qas[{qi}]"
                if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) or not isinstance(
                        qa.get("question"), str) or not qa["question"].strip():
                    _fail(path, qwhere, "a question with string 'id' and non-empty 'question'")
                answers = qa.get("answers")
                if not isinstance(answers, list) or not answers or not isinstance(answers[0], dict) \
                        or not isinstance(answers[0].get("answer_start"), int) \
                        or not isinstance(answers[0].get("text"), str):
                    _fail(path, qwhere, "'answers': a non-empty list of {'text', 'answer_start'}")
                questions.append(Question(qa["id"], lang, qa["question"].strip(), answers[0]["text"],
                                          answers[0]["answer_start"], ai, pi))
    return sentences, questions, breaks_of, mismatches


def _locate(q: Question, sents: list[Sentence], breaks: list[tuple[int, int]]) -> tuple[Sentence | None, str]:
    """The answer sentence of ``q`` in its paragraph, and how it was found ("offset", "text" or "unlocated")."""
    for s, (b, e) in zip(sents, breaks):
        if b <= q.answer_start < e:
            return s, "offset"
    answer = q.answer.strip()
    holding = [(abs(b - q.answer_start), s) for s, (b, _) in zip(sents, breaks) if answer and answer in s.text]
    if holding:
        return min(holding, key=lambda t: (t[0], t[1].index))[1], "text"
    return None, "unlocated"


def load_lareqa(data_dir: str | os.PathLike | None = None, *, download: bool = True,
                url_template: str = URL_TEMPLATE) -> LareqaData:
    """Read the 11 ``{lang}.json`` files strictly and build the sentence pool, topics and qrels in memory."""
    src = find_source(data_dir, download=download, url_template=url_template)
    sentences: list[Sentence] = []
    questions: dict[str, dict[str, Question]] = {}
    answers: dict[str, dict[str, str]] = {}
    located: dict[str, Counter] = {}
    crosses: dict[str, int] = {}
    sources: dict[str, Path] = {}
    for lang in LANGUAGES:
        path = src / f"{lang}.json"
        sources[lang] = path
        sents, qs, breaks_of, mismatches = _read_language(path, lang)
        if mismatches:
            log.info("%s: %d sentences differ from their sentence_breaks slice of the context "
                     "(the 'sentences' text is used)", path, mismatches)
        sentences.extend(sents)
        by_para: dict[tuple[int, int], list[Sentence]] = {}
        for s in sents:
            by_para.setdefault((s.article, s.paragraph), []).append(s)
        questions[lang], answers[lang], located[lang], crosses[lang] = {}, {}, Counter(), 0
        for q in qs:
            if q.qid in questions[lang]:
                raise FormatError(path, None, f"question id {q.qid!r} occurs twice")
            questions[lang][q.qid] = q
            key = (q.article, q.paragraph)
            sent, how = _locate(q, by_para[key], breaks_of[key])
            located[lang][how] += 1
            if sent is not None:
                answers[lang][q.qid] = sent.docid
                crosses[lang] += q.answer.strip() not in sent.text
            else:
                log.warning("%s: answer of %s (%r at %d) is in no sentence of its paragraph",
                            path, q.qid, q.answer, q.answer_start)
    queries = questions[QUERY_LANGUAGE]
    qrels: dict[str, dict[str, int]] = {}
    for lang in LANGUAGES:
        absent = [qid for qid in queries if qid not in questions[lang]]
        extra = [qid for qid in questions[lang] if qid not in queries]
        located[lang]["absent"] = len(absent)
        if absent or extra:
            log.warning("%s: %d English questions are missing, %d questions are not in English "
                        "(they get no judgment in that language / no topic)", sources[lang], len(absent), len(extra))
    for qid in queries:
        qrels[qid] = {answers[lang][qid]: 1 for lang in LANGUAGES if qid in answers[lang]}
    return LareqaData(sentences, questions, answers, qrels, located, crosses, sources)


# ------------------------------------------------------------ any-language settings
@dataclass
class CrossLingual:
    """Every question in every language (ids ``<qid>-<lang>``, :func:`query_id`) and its judgments."""

    topics: dict[str, str]                 # <qid>-<lang> -> question
    langs: dict[str, str]                  # <qid>-<lang> -> lang
    x_en: dict[str, dict[str, int]]        # <qid>-<lang> -> {the English answer sentence: 1}
    x_all: dict[str, dict[str, int]]       # <qid>-<lang> -> the answer sentence in every language


def cross_lingual(topics: Mapping[str, Mapping[str, str]], qrels: Mapping[str, Mapping[str, int]]) -> CrossLingual:
    """X -> En and X -> All from the per-language topics (``lang -> qid -> question``) and the qrels of the
    English-query setting (``qid -> answer sentences``): a question keeps its judgments in every language
    it is asked in. One without an English answer sentence gets no X -> En judgment."""
    out = CrossLingual({}, {}, {}, {})
    for qid, judged in qrels.items():
        english = {d: g for d, g in judged.items() if docid_lang(d) == QUERY_LANGUAGE}
        for lang, questions in topics.items():
            if qid not in questions:
                continue
            x = query_id(qid, lang)
            out.topics[x], out.langs[x], out.x_all[x] = questions[qid], lang, dict(judged)
            if english:
                out.x_en[x] = english
    return out


def prepare_cross_lingual(paths: LareqaPaths, force: bool = False) -> LareqaPaths:
    """Write ``paths.all_topics``, ``x_en_qrels`` and ``x_all_qrels`` from the per-language topics and the
    qrels in ``paths`` (:func:`cross_lingual`); skipped while all three are newer than those."""
    inputs = [paths.qrels, *paths.topics.values()]
    outputs = [paths.all_topics, paths.x_en_qrels, paths.x_all_qrels]
    if not force and all(io.newer(o, i) for o in outputs for i in inputs):
        return paths
    data = cross_lingual({lang: io.read_topics(p) for lang, p in paths.topics.items()}, io.read_qrels(paths.qrels))
    io.write_topics(paths.all_topics, data.topics, langs=data.langs)
    io.write_qrels(paths.x_en_qrels, data.x_en)
    io.write_qrels(paths.x_all_qrels, data.x_all)
    log.info("wrote %d questions in %d languages (X -> En: %d judged, X -> All: %d judgments) to %s, %s, %s",
             len(data.topics), len(paths.topics), len(data.x_en), sum(len(d) for d in data.x_all.values()),
             paths.all_topics, paths.x_en_qrels, paths.x_all_qrels)
    return paths


def subset_name(paths: LareqaPaths, languages: Sequence[str]) -> str:
    """``lareqa-without-el-hi-vi``: a subset named by the languages it leaves out of ``paths``."""
    return f"{paths.root.name}-without-" + "-".join(lang for lang in paths.topics if lang not in languages)


def restrict_languages(paths: LareqaPaths, languages: Sequence[str], output_root: str | os.PathLike,
                       force: bool = False) -> LareqaPaths:
    """LAReQA in ``languages`` only, for a model that covers no others (mUSE has no el, hi, vi): written
    under ``output_root`` as the collection :func:`subset_name` names, in :func:`output_paths`' layout.

    Its sentences are those of ``languages`` (a corpus of its own: another language's sentences would be
    distractors the model cannot read), its questions those asked in ``languages`` (the full collection's
    topic and per-language files, not copied), its qrels the answers in ``languages``, and its X -> En /
    X -> All files are made from these by :func:`prepare_cross_lingual`. English must be kept (X -> En
    searches the English sentences). ``paths`` itself when ``languages`` are all of its languages.
    Skipped while the subset is newer than the full collection and was made for the same languages.
    """
    have = list(paths.topics)
    unknown = sorted(set(languages) - set(have))
    if unknown:
        raise ValueError(f"{unknown} are not languages of {paths.root} ({', '.join(have)})")
    if QUERY_LANGUAGE not in languages:
        raise ValueError(f"a LAReQA subset keeps {QUERY_LANGUAGE!r}: X -> En searches the English sentences")
    keep = [lang for lang in have if lang in languages]  # the collection's order
    if keep == have:
        return paths
    full_corpus = paths.corpus / "corpus.jsonl"
    base = output_paths(output_root, subset_name(paths, keep))
    out = dataclasses.replace(base, by_lang={lang: paths.by_lang[lang] for lang in keep},
                              topics={lang: paths.topics[lang] for lang in keep})
    corpus = out.corpus / "corpus.jsonl"
    inputs, outputs = [full_corpus, paths.qrels], [corpus, out.qrels, out.stats]
    fresh = all(io.newer(o, i) for o in outputs for i in inputs)
    if force or not fresh or io.read_json(out.stats).get("languages") != keep:
        sentences = io.write_jsonl(corpus, (r for r in io.read_jsonl(full_corpus) if r["lang"] in keep))
        qrels = {qid: kept for qid, judged in io.read_qrels(paths.qrels).items()
                 if (kept := {d: g for d, g in judged.items() if docid_lang(d) in keep})}
        io.write_qrels(out.qrels, qrels)
        io.write_json(out.stats, {  # last: its presence (and languages) mark a complete subset
            "name": out.root.name, "subset_of": str(paths.root.resolve()), "languages": keep,
            "left_out": [lang for lang in have if lang not in keep], "sentences": sentences,
            "queries": len(qrels), "judgments": sum(len(d) for d in qrels.values())})
        log.info("wrote %s: %d sentences and %d judgments in %s", out.root, sentences,
                 sum(len(d) for d in qrels.values()), ", ".join(keep))
    return prepare_cross_lingual(out, force=force)


# --------------------------------------------------------------------- output
def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _record(s: Sentence) -> dict:
    return {"id": s.docid, "contents": s.text, "text": s.text, "lang": s.lang}


def _is_complete(paths: LareqaPaths, output_root: Path, sources: dict[str, Path]) -> bool:
    """True when stats.json matches the current input files and every output it lists has its line count."""
    try:
        stats = json.loads(paths.stats.read_text(encoding="utf-8"))
        if stats.get("version") != _STATS_VERSION:
            return False
        if {lang: info["sha256"] for lang, info in stats["source"].items()} != \
                {lang: io.sha256_file(p) for lang, p in sources.items()}:
            return False
        return all((output_root / rel).is_file() and _count_lines(output_root / rel) == n
                   for rel, n in stats["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _sources_without_reading(data_dir, download: bool, url_template: str) -> dict[str, Path]:
    src = find_source(data_dir, download=download, url_template=url_template)
    return {lang: src / f"{lang}.json" for lang in LANGUAGES}


def _register_args(parser) -> None:
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="fail instead of downloading XQuAD-R when it is not in the data folder")


@register(NAME, help="LAReQA XQuAD-R: 13,014 sentences in 11 languages, English questions, 11 answers each",
          add_arguments=_register_args)
def prepare_lareqa(data_dir: str | os.PathLike | None = None, output_root: str | os.PathLike = ".",
                   force: bool = False, download: bool = True, url_template: str = URL_TEMPLATE) -> LareqaPaths:
    """Write the LAReQA XQuAD-R corpus, per-language sub-collections, topics and qrels under ``output_root``.

    Idempotent: when ``stats.json`` says the outputs were built from the same input
    files and they are all there and complete, nothing is rewritten (unless ``force``).
    """
    out = Path(output_root)
    paths = output_paths(out)
    sources = _sources_without_reading(data_dir, download, url_template)
    if not force and _is_complete(paths, out, sources):
        log.info("%s is complete (see %s); pass force=True / --force to rebuild", paths.root, paths.stats)
        return prepare_cross_lingual(paths)
    data = load_lareqa(data_dir, download=download, url_template=url_template)

    files: dict[Path, int] = {}
    files[paths.corpus / "corpus.jsonl"] = io.write_jsonl(paths.corpus / "corpus.jsonl",
                                                          (_record(s) for s in data.sentences))
    per_lang: dict[str, int] = {}
    for lang in LANGUAGES:
        target = paths.by_lang[lang] / "corpus.jsonl"
        files[target] = per_lang[lang] = io.write_jsonl(target, (_record(s) for s in data.sentences_of(lang)))
    for lang in LANGUAGES:
        topics = data.topics(lang)
        io.write_topics(paths.topics[lang], topics)
        files[paths.topics[lang]] = len(topics)
    io.write_qrels(paths.qrels, data.qrels)
    files[paths.qrels] = sum(len(d) for d in data.qrels.values())

    per_query = Counter(len(d) for d in data.qrels.values())
    stats = {
        "version": _STATS_VERSION,
        "name": "LAReQA XQuAD-R",
        "source": {lang: {"path": str(p.resolve()), "sha256": io.sha256_file(p)} for lang, p in data.sources.items()},
        "sentences": per_lang,
        "total_sentences": len(data.sentences),
        "questions": {lang: len(data.questions[lang]) for lang in LANGUAGES},
        "queries": len(data.qrels),
        "judgments": files[paths.qrels],
        "relevant_per_query": {str(k): v for k, v in sorted(per_query.items())},
        "answer_located_by": {lang: {k: data.located[lang].get(k, 0)
                                     for k in ("offset", "text", "unlocated", "absent")} for lang in LANGUAGES},
        "answer_crosses_sentence_break": data.answer_crosses_break,
        "files": {str(p.relative_to(out)): n for p, n in files.items()},
    }
    io.write_json(paths.stats, stats)  # last: its presence marks a complete build
    short = [qid for qid, d in data.qrels.items() if len(d) != len(LANGUAGES)]
    if short:
        log.warning("%d of %d queries have fewer than %d relevant sentences (see %s)",
                    len(short), len(data.qrels), len(LANGUAGES), paths.stats)
    log.info("wrote %d sentences, %d topics x %d languages, %d judgments under %s",
             len(data.sentences), len(data.qrels), len(LANGUAGES), files[paths.qrels], out)
    return prepare_cross_lingual(paths, force=True)
