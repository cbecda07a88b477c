"""Query translation for per-language BM25: English topics into each sub-collection's language.

Two kinds of translators, one interface:

* whole-query translators (``nmt``): ``translate(texts, target_lang) -> list[str]``;
  :class:`~.nmt.HFTranslator` (a Hugging Face MT model), :class:`~.nmt.FileTranslator`
  (translations computed elsewhere) and :class:`~.nmt.HumanTranslator` (reference
  human translations, e.g. XQuAD's for LAReQA: an upper bound for MT, never "NMT");
* the term translator (``smt``): :class:`~.smt.SMTTranslator` returns a weighted bag of
  target index terms per query (top-10 IBM Model 1 translations per term).

:func:`translate_topics` maps ``{qid: text}`` through any of them; its output is
what :func:`pyserini_kdspd.search.bm25.search` takes.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Union, runtime_checkable


@runtime_checkable
class Translator(Protocol):
    name: str

    def translate(self, texts: list[str], target_lang: str) -> list[str]:
        ...


def translate_topics(translator, topics: Mapping[str, str], target_lang: str) -> dict[str, Union[str, dict]]:
    """``{qid: translation}``; translators that look translations up by qid do so (``translate_topics``)."""
    own = getattr(translator, "translate_topics", None)
    if own is not None:
        return own(topics, target_lang)
    qids = list(topics)
    out = translator.translate([topics[q] for q in qids], target_lang)
    if len(out) != len(qids):
        raise RuntimeError(f"{translator.name}: {len(out)} translations for {len(qids)} queries")
    return dict(zip(qids, out))


__all__ = ["Translator", "translate_topics"]
