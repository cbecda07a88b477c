"""One Lucene analyzer per language, used identically at index time, query time and for SMT.

BM25 across languages only works if a query term lands in the index's term
space, so the analysis is a single table (``SPECS``) that indexing, searching and
the SMT translation table all read. Anserini 1.7.1's ``--language`` maps most
languages to their Lucene analyzer (``io.anserini.analysis.AnalyzerMap``) but
silently falls back to its English analyzer (Porter stemming, English stopwords)
for the rest, e.g. Greek and Vietnamese. For those we analyse the text ourselves
with the right analyzer and index the tokens with ``--pretokenized`` (Anserini's
whitespace analyzer); queries get the same analysis here in Python.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import pyserini_kdspd  # noqa: F401  (starts a suitable JVM before pyserini/jnius are used)


@dataclass(frozen=True)
class AnalyzerSpec:
    lang: str
    java: str  # Lucene analyzer class (or a description for the custom ones)
    anserini: bool  # True: Anserini's --language maps lang to exactly this analyzer; False: we pre-tokenise
    note: str = ""

    @property
    def pretokenized(self) -> bool:
        return not self.anserini


_L = "org.apache.lucene.analysis."
# Anserini 1.7.1 AnalyzerMap (checked with javap on anserini-1.7.1-fatjar.jar) plus 'en' (DefaultEnglishAnalyzer).
SPECS: dict[str, AnalyzerSpec] = {s.lang: s for s in [
    AnalyzerSpec("en", "io.anserini.analysis.DefaultEnglishAnalyzer", True, "Porter stemming, Lucene English stopwords"),
    AnalyzerSpec("ar", _L + "ar.ArabicAnalyzer", True),
    AnalyzerSpec("bn", _L + "bn.BengaliAnalyzer", True),
    AnalyzerSpec("da", _L + "da.DanishAnalyzer", True),
    AnalyzerSpec("de", _L + "de.GermanAnalyzer", True),
    AnalyzerSpec("es", _L + "es.SpanishAnalyzer", True),
    AnalyzerSpec("fa", _L + "fa.PersianAnalyzer", True),
    AnalyzerSpec("fi", _L + "fi.FinnishAnalyzer", True),
    AnalyzerSpec("fr", _L + "fr.FrenchAnalyzer", True),
    AnalyzerSpec("hi", _L + "hi.HindiAnalyzer", True),
    AnalyzerSpec("hu", _L + "hu.HungarianAnalyzer", True),
    AnalyzerSpec("id", _L + "id.IndonesianAnalyzer", True),
    AnalyzerSpec("it", _L + "it.ItalianAnalyzer", True),
    AnalyzerSpec("ja", _L + "ja.JapaneseAnalyzer", True),
    AnalyzerSpec("ko", _L + "cjk.CJKAnalyzer", True),
    AnalyzerSpec("nl", _L + "nl.DutchAnalyzer", True),
    AnalyzerSpec("no", _L + "no.NorwegianAnalyzer", True),
    AnalyzerSpec("pt", _L + "pt.PortugueseAnalyzer", True),
    AnalyzerSpec("ru", _L + "ru.RussianAnalyzer", True),
    AnalyzerSpec("sv", _L + "sv.SwedishAnalyzer", True),
    AnalyzerSpec("te", _L + "te.TeluguAnalyzer", True),
    AnalyzerSpec("th", _L + "th.ThaiAnalyzer", True, "dictionary word segmentation; needs the JVM's Thai locale data"),
    AnalyzerSpec("tr", _L + "tr.TurkishAnalyzer", True),
    AnalyzerSpec("zh", _L + "cjk.CJKAnalyzer", True, "overlapping character bigrams"),
    # Not mapped by Anserini 1.7.1 (it would use the English analyzer):
    AnalyzerSpec("el", _L + "el.GreekAnalyzer", False, "Greek lowercasing (accents, final sigma), stopwords, stemming"),
    AnalyzerSpec("vi", _L + "standard.StandardAnalyzer(no stopwords)", False,
                 "no Lucene Vietnamese analyzer: Unicode word-break tokens (syllables), lowercased; "
                 "no stemming or English stopwords, diacritics kept (they distinguish words)"),
]}


def spec(lang: str) -> AnalyzerSpec:
    try:
        return SPECS[lang]
    except KeyError:
        raise ValueError(f"no analyzer for language {lang!r}; supported: {', '.join(sorted(SPECS))}") from None


@lru_cache(maxsize=None)
def java_analyzer(lang: str):
    """The Lucene Analyzer object for ``lang`` (cached; Lucene analyzers are reusable and thread-safe)."""
    s = spec(lang)
    from pyserini.pyclass import autoclass

    if lang == "en":
        return autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
    if lang == "vi":
        empty = autoclass("org.apache.lucene.analysis.CharArraySet").EMPTY_SET
        return autoclass(_L + "standard.StandardAnalyzer")(empty)
    return autoclass(s.java)()


@lru_cache(maxsize=1)
def whitespace_analyzer():
    """For text that is already analysed: pre-tokenised indexes and pre-analysed query terms."""
    from pyserini.pyclass import autoclass

    return autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer")()


@lru_cache(maxsize=1)
def surface_analyzer():
    """English words as typed, lowercased, possessive 's dropped, no stopwords or stemming: the unit the SMT
    translator looks up (via its stem) or keeps as is when it has no translation."""
    from pyserini.pyclass import autoclass

    empty = autoclass("org.apache.lucene.analysis.CharArraySet").EMPTY_SET
    return autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newNonStemmingInstance(empty)


@lru_cache(maxsize=1)
def _utils():
    from pyserini.pyclass import autoclass

    return autoclass("io.anserini.analysis.AnalyzerUtils")


def analyze_with(janalyzer, text: str) -> list[str]:
    # NFC first: the same word typed with combining or precomposed diacritics must give one term.
    return list(_utils().analyze(janalyzer, unicodedata.normalize("NFC", text)).toArray())


def analyze(text: str, lang: str) -> list[str]:
    """Terms of ``text`` as the ``lang`` index holds them."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string to analyse, got {type(text).__name__}")
    return analyze_with(java_analyzer(lang), text)
